from e2enet_monai.sparse.density import DENSITY_MODES, kernel_densities
from e2enet_monai.sparse.masks import KernelMasks, default_sparse_parameters, select_parameters

__all__ = ["DENSITY_MODES", "KernelMasks", "default_sparse_parameters", "kernel_densities", "select_parameters"]
