from e2enet_monai.networks.nets.baselines import NETWORKS, build_network, nnunet_like_dynunet
from e2enet_monai.networks.nets.e2enet import E2ENet
from e2enet_monai.networks.nets.nmsw import NMSWNet, NMSWOutput

__all__ = ["E2ENet", "NETWORKS", "NMSWNet", "NMSWOutput", "build_network", "nnunet_like_dynunet"]
