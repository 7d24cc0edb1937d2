"""e2enet-monai: E2ENet and top-k patch inference as MONAI components and MONAI Bundles."""

__version__ = "0.1.0"
