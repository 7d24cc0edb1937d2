"""e2enet-monai: E2ENet and top-k patch inference as MONAI components and MONAI Bundles."""

__version__ = "0.5.0"

# bundle configs use "$import e2enet_monai" and then refer to e2enet_monai.<module>.<name>
from e2enet_monai import bundle, data, handlers, inferers, losses, networks, sparse, transforms  # noqa: E402,F401
