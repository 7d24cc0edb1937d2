"""Release tooling: the release zip and index, download by name, and the Model Zoo checks."""

from e2enet_monai.release.download import BundleDownloadError, download
from e2enet_monai.release.packaging import package_bundle, update_index

__all__ = ["BundleDownloadError", "download", "package_bundle", "update_index"]
