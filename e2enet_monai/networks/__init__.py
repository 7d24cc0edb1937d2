from e2enet_monai.networks.nets import E2ENet

__all__ = ["E2ENet"]
