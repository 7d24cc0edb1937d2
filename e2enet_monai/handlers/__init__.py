from e2enet_monai.handlers.checkpoint import AtomicDiskSaver, BestModelSaver, EpochCheckpointSaver
from e2enet_monai.handlers.metrics import NamedMetricsSaver
from e2enet_monai.handlers.progress import TrainingProgress, random_transforms
from e2enet_monai.handlers.sparse import SparseTrainingHandler

__all__ = ["AtomicDiskSaver", "BestModelSaver", "EpochCheckpointSaver", "NamedMetricsSaver", "SparseTrainingHandler",
           "TrainingProgress", "random_transforms"]
