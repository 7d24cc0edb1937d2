from e2enet_monai.handlers.checkpoint import AtomicDiskSaver, BestModelSaver, EpochCheckpointSaver
from e2enet_monai.handlers.metrics import NamedMetricsSaver
from e2enet_monai.handlers.progress import TrainingProgress, random_transforms

__all__ = ["AtomicDiskSaver", "BestModelSaver", "EpochCheckpointSaver", "NamedMetricsSaver", "TrainingProgress",
           "random_transforms"]
