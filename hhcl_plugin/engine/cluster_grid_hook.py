"""Each epoch's pseudo labels as a picture, for runs that cannot be judged by a test split."""
from __future__ import annotations

import logging
import os

from ..clustering.summary import has_ground_truth
from ..utils import comm
from .cluster_grid import draw_cluster_grid
from .hooks import HookBase

logger = logging.getLogger(__name__)


class ClusterGridHook(HookBase):
    """``OUTPUT_DIR/plots/clusters_epoch{N}.png`` after each epoch's clustering (rank 0).

    Registered after the clustering hook, whose labels it draws, when the dataset has no
    query / gallery: there the grid is the only view of whether the clusters are people.
    """

    reads = ("pseudo_labels", "epoch_stats")

    def before_epoch(self) -> None:
        eng = self.engine
        if not comm.is_main_process():
            return
        stats, gt = eng.epoch_stats, eng.data.train_ground_truth
        eps = f", eps {stats['eps']:.3f}" if "eps" in stats else ""
        path = draw_cluster_grid(
            [path for path, _, _ in eng.data.train], eng.pseudo_labels,
            os.path.join(eng.cfg.OUTPUT_DIR, "plots", f"clusters_epoch{eng.epoch + 1:03d}.png"),
            title=f"epoch {eng.epoch + 1}{eps}: {stats['clusters']} clusters, "
                  f"{100 * stats['outlier_ratio']:.0f}% outliers",
            seed=eng.cfg.SEED + eng.epoch, ground_truth=gt if has_ground_truth(gt) else None)
        logger.info("epoch %d: cluster grid in %s", eng.epoch + 1, path)
