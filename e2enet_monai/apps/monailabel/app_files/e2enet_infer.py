"""
Copied by ``tools/monailabel_app.py`` into a MONAI Label ``monaibundle`` app as ``lib/infers/e2enet_infer.py``; runs in
MONAI Label's own environment (it imports ``monailabel``, which ``e2enet_monai`` itself never does).

MONAI Label names a bundle's labels after ``network_data_format.outputs.<first>.channel_def``, i.e. the network's
output channels. For a sigmoid model such as the BraTS bundle those are the TC/WT/ET regions, not the values of the
label map its postprocessing writes (1 necrotic core, 2 edema, 3 or 4 enhancing). Our bundles describe that label
map under ``network_data_format.post_processed_outputs``; this task takes the labels from there when present and
otherwise behaves as MONAI Label's ``BundleInferTask``.

It also works around a clash between MONAI 1.6's ``Spacingd`` and MONAI Label: ``Spacingd`` treats every key
starting with ``image_`` as a metadata dict and calls ``.update`` on it, and MONAI Label puts the string
``image_path`` in the request, so any bundle resampling ``image`` fails; ``image_path`` is set aside during the
pre-transforms. An image that cannot be read (a truncated or corrupt upload) is answered with HTTP 422 and the
reader's message, and an image with another number of channels than the bundle takes (a 4-channel BraTS case sent
to a CT model, a CT to the BraTS model) with HTTP 422 naming both counts, before the network runs, where MONAI
Label would answer a bare 500.
"""

import json
import os

from fastapi import HTTPException
from monailabel.tasks.infer.bundle import BundleInferTask as _MonaiLabelBundleInferTask


class BundleInferTask(_MonaiLabelBundleInferTask):
    def __init__(self, path, conf, **kwargs):
        super().__init__(path, conf, **kwargs)
        if not self.valid:
            return
        with open(os.path.join(path, "configs", self.const.metadata_json())) as f:
            post = json.load(f).get("network_data_format", {}).get("post_processed_outputs")
        if post:
            _, label_map = next(iter(post.items()))
            self.labels = {name.lower(): int(value) for value, name in label_map.get("channel_def", {}).items()
                           if name.lower() != "background"}

    def run_pre_transforms(self, data, transforms):
        path = data.pop("image_path", None)
        image = data.get("image")
        if isinstance(image, str):
            self._check_channels(image)
        try:
            data = super().run_pre_transforms(data, transforms)
        except Exception as error:  # the loader is the first transform; anything it raises means an unusable file
            if isinstance(image, str) and not _readable(image):
                raise HTTPException(status_code=422, detail=f"cannot read the image {os.path.basename(image)!r}: "
                                                            f"{type(error).__name__}: {error}") from error
            raise
        if path is not None:
            data["image_path"] = path
        return data

    def _check_channels(self, image):
        """422 for an image with another number of channels than the bundle's ``in_channels``, from its header."""
        expected, got = self.bundle_config.get("in_channels"), _channels(image)
        if expected is not None and got is not None and got != int(expected):
            form = "one 4-D NIfTI, channels last" if int(expected) > 1 else "a 3-D image"
            raise HTTPException(status_code=422, detail=f"{os.path.basename(image)!r} has {got} channel(s); model "
                                                        f"{os.path.basename(self.bundle_path)!r} takes {int(expected)} "
                                                        f"({form}).")


def _channels(path):
    """Channels of the image file at ``path`` from its header (NIfTI: a 4th axis; ITK's components otherwise), or
    None when the header cannot be read (the reader then says why)."""
    try:
        if path.endswith((".nii", ".nii.gz")):
            import nibabel

            shape = nibabel.load(path).shape
            return int(shape[3]) if len(shape) > 3 else 1
        import itk

        reader = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
        reader.SetFileName(path)
        reader.ReadImageInformation()
        return int(reader.GetNumberOfComponents())
    except Exception:
        return None


def _readable(path):
    """Whether the image file at ``path`` reads completely (nibabel for NIfTI, ITK for the rest)."""
    try:
        if path.endswith((".nii", ".nii.gz")):
            import nibabel

            nibabel.load(path).get_fdata()
        else:
            import itk

            itk.imread(path)
        return True
    except Exception:
        return False
