from e2enet_monai.networks.nets import E2ENet, NMSWNet, NMSWOutput

__all__ = ["E2ENet", "NMSWNet", "NMSWOutput"]
