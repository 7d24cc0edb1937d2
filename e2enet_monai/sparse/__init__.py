from e2enet_monai.sparse.density import DENSITY_MODES, kernel_densities
from e2enet_monai.sparse.dynamic import GROWTH_MODES, DynamicSparsity, cosine_death_rate
from e2enet_monai.sparse.export import load_sparse_state_dict, save_sparse_state_dict
from e2enet_monai.sparse.masks import KernelMasks, default_sparse_parameters, select_parameters

__all__ = [
    "DENSITY_MODES",
    "GROWTH_MODES",
    "DynamicSparsity",
    "KernelMasks",
    "cosine_death_rate",
    "default_sparse_parameters",
    "kernel_densities",
    "load_sparse_state_dict",
    "save_sparse_state_dict",
    "select_parameters",
]
