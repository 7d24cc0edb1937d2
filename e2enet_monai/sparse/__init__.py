from e2enet_monai.sparse.compact import compact_model, load_compact_checkpoint, save_compact_checkpoint
from e2enet_monai.sparse.density import kernel_densities
from e2enet_monai.sparse.dynamic import DynamicSparsity, cosine_death_rate
from e2enet_monai.sparse.export import load_sparse_state_dict, save_sparse_state_dict
from e2enet_monai.sparse.masks import (
    KernelMasks,
    channel_mask,
    default_sparse_parameters,
    input_channel_axis,
    kept_channels,
    select_parameters,
)
from e2enet_monai.sparse.settings import (
    DENSITY_MODES,
    GROWTH_MODES,
    STRUCTURES,
    check_sparse_settings,
    sparse_setting_problems,
)

__all__ = [
    "DENSITY_MODES",
    "GROWTH_MODES",
    "STRUCTURES",
    "DynamicSparsity",
    "KernelMasks",
    "channel_mask",
    "check_sparse_settings",
    "compact_model",
    "cosine_death_rate",
    "default_sparse_parameters",
    "input_channel_axis",
    "kernel_densities",
    "kept_channels",
    "load_compact_checkpoint",
    "load_sparse_state_dict",
    "save_compact_checkpoint",
    "save_sparse_state_dict",
    "select_parameters",
    "sparse_setting_problems",
]
