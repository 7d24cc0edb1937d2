"""Factories for the networks E2ENet is compared with, configured as in our specs and MONAI's bundles."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
from monai.networks.nets import DynUNet, SegResNet, SwinUNETR

from e2enet_monai.networks.nets.e2enet import E2ENet

__all__ = ["NETWORKS", "build_network", "nnunet_like_dynunet"]


def nnunet_like_dynunet(in_channels: int, out_channels: int, deep_supervision: bool = True) -> DynUNet:
    """nnU-Net 3d_fullres-like DynUNet: 3x3x3 kernels, 5 isotropic pools, filters 32-64-128-256-320-320."""
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3] * 6,
        strides=[1, 2, 2, 2, 2, 2],
        upsample_kernel_size=[2] * 5,
        filters=[32, 64, 128, 256, 320, 320],
        norm_name=("instance", {"affine": True}),
        deep_supervision=deep_supervision,
        deep_supr_num=3,
    )


def _segresnet(in_channels: int, out_channels: int) -> SegResNet:
    # the configuration of MONAI's brats_mri_segmentation bundle
    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, init_filters=16,
                     blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))


def _swinunetr(in_channels: int, out_channels: int) -> SwinUNETR:
    # the configuration of MONAI's swin_unetr_btcv_segmentation bundle
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=48)


def _e2enet(in_channels: int, out_channels: int) -> E2ENet:
    return E2ENet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels)


NETWORKS: dict[str, Callable[[int, int], nn.Module]] = {
    "e2enet": _e2enet,
    "dynunet": nnunet_like_dynunet,
    "segresnet": _segresnet,
    "swinunetr": _swinunetr,
}


def build_network(name: str, in_channels: int, out_channels: int) -> nn.Module:
    """Build one of :data:`NETWORKS` by name for the given channel counts."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose from {sorted(NETWORKS)}.")
    return NETWORKS[name](in_channels, out_channels)
