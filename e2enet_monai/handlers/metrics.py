"""Per-case metric reports whose columns carry the bundle's class names."""

from __future__ import annotations

from collections.abc import Mapping

import ignite.distributed as idist
from ignite.engine import Engine
from monai.handlers import MetricsSaver
from monai.handlers.utils import write_metrics_reports
from monai.utils import string_list_all_gather

__all__ = ["NamedMetricsSaver"]


class NamedMetricsSaver(MetricsSaver):
    """
    MONAI's ``MetricsSaver`` with the per-class columns of ``<metric>_raw.csv`` named after the bundle's
    ``channel_def`` (``spleen, right kidney, ...``) instead of ``class0, class1, ...``, which are off by one from
    the label values when the background is left out. MONAI's ``write_metrics_reports`` takes the names
    (``class_labels``), but ``MetricsSaver`` does not pass them on, so this saver does.

    Args:
        channel_def: ``{"0": "background", "1": "spleen", ...}`` from the metadata; when a metric has one column
            fewer than the channels (background excluded), the first name is dropped.
        kwargs: ``MetricsSaver``'s arguments.
    """

    def __init__(self, channel_def: Mapping[str, str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = [name for _, name in sorted(channel_def.items(), key=lambda kv: int(kv[0]))]

    def __call__(self, engine: Engine) -> None:
        images = string_list_all_gather(strings=self._filenames) if idist.get_world_size() > 1 else self._filenames
        if idist.get_rank() != self.save_rank:
            return
        metrics = {k: v for k, v in engine.state.metrics.items()
                   if self.metrics is not None and (k in self.metrics or "*" in self.metrics)}
        details = {k: v for k, v in getattr(engine.state, "metric_details", {}).items()
                   if self.metric_details is not None and (k in self.metric_details or "*" in self.metric_details)}
        columns = {int(v.shape[1]) for v in details.values() if getattr(v, "ndim", 0) == 2}
        labels = None
        if len(columns) == 1:
            n = columns.pop()
            labels = self.names[1:] if n == len(self.names) - 1 else self.names if n == len(self.names) else None
        write_metrics_reports(save_dir=self.save_dir, images=images or None, metrics=metrics, metric_details=details,
                              summary_ops=self.summary_ops, deli=self.deli, output_type=self.output_type,
                              class_labels=labels)
