"""End-of-run figures: training curves and ranked retrieval results, in ``OUTPUT_DIR``.

A run on a remote machine is often judged from its output folder alone; three PNGs and a
handful of ranked lists say at a glance whether the clusters grew, the loss fell and the
retrieval works, without opening TensorBoard.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np

from ..utils import comm
from ..utils import torchreid_compat as tr
from .evaluation import protocol_cameras
from .hooks import HookBase

if TYPE_CHECKING:  # pragma: no cover
    from ..data import UnlabeledData
    from .hhcl_engine import HHCLEngine

logger = logging.getLogger(__name__)

NUM_RANKED_QUERIES = 8


def plot_training_curves(metrics: Dict, folder: str) -> List[str]:
    """``loss.png``, ``retrieval.png`` and ``clusters.png`` from ``metrics.json``'s content."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    os.makedirs(folder, exist_ok=True)
    epochs = metrics.get("epochs", [])
    evals = ([{"epoch": 0, **metrics["initial"]}] if "initial" in metrics else []) + metrics.get("evaluations", [])
    written = []

    def save(fig, name: str) -> None:
        for ax in fig.axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        path = os.path.join(folder, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if epochs:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        x = [e["epoch"] for e in epochs]
        # all epochs' terms: a run resumed with another MEMORY.MODE has other terms after the resume
        terms = sorted({k for e in epochs for k in e if k.startswith("loss_")})
        for key in terms + (["loss"] if len(terms) > 1 else []):  # the total only when it adds something
            ax.plot(x, [e.get(key, float("nan")) for e in epochs], marker="o", label=key)
        ax.set(xlabel="epoch", ylabel="mean loss over the epoch", title="Training loss")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "loss.png")

        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(x, [e.get("clusters", 0) for e in epochs], marker="o", color="tab:blue", label="clusters")
        ax.set(xlabel="epoch", ylabel="clusters", title="Pseudo labels")
        ax2 = ax.twinx()
        ax2.plot(x, [100 * e.get("outlier_ratio", 0) for e in epochs], marker="s", color="tab:red",
                 label="outliers (%)")
        ax2.set_ylabel("outliers (% of train images)")
        ax.legend(handles=ax.get_lines() + ax2.get_lines(), loc="center right")
        ax.grid(alpha=0.3)
        save(fig, "clusters.png")
    if evals:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        x = [e["epoch"] for e in evals]
        for key, label in (("mAP", "mAP"), ("rank1", "rank-1"),
                           ("mAP_rerank", "mAP, re-ranked"), ("rank1_rerank", "rank-1, re-ranked")):
            if key in evals[0]:
                ax.plot(x, [e[key] for e in evals], marker="o", linestyle="--" if "rerank" in key else "-",
                        label=label)
        ax.set(xlabel="epoch (0 = before training)", ylabel="%", title="Retrieval on the test split")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "retrieval.png")
    return written


def save_ranked_results(data: "UnlabeledData", distmat: np.ndarray, folder: str, num_queries: Optional[int] = None,
                        topk: int = 10) -> str:
    """torchreid's ranked-results figures of the first ``num_queries`` queries (all when ``None``) in ``folder``."""
    n = len(data.query) if num_queries is None else min(num_queries, len(data.query))
    # the evaluation's cameras, so that with one camera the true matches are shown, not dropped
    q_cams, g_cams, _ = protocol_cameras(np.asarray([c for *_, c in data.query]),
                                         np.asarray([c for *_, c in data.gallery]))
    query = [(p, pid, cam, 0) for (p, pid, _), cam in zip(data.query[:n], q_cams)]
    gallery = [(p, pid, cam, 0) for (p, pid, _), cam in zip(data.gallery, g_cams)]
    with contextlib.redirect_stdout(io.StringIO()):  # torchreid prints its progress
        tr.visualize_ranked_results(distmat[:n], (query, gallery), "image", save_dir=folder, topk=topk)
    return folder


class ReportHook(HookBase):
    """After training (rank 0): the curves, and torchreid's ranked lists for a few queries."""

    def after_train(self) -> None:
        eng: "HHCLEngine" = self.engine
        if not comm.is_main_process():
            return
        written = plot_training_curves(eng.metrics, os.path.join(eng.cfg.OUTPUT_DIR, "plots"))
        if eng.last_distmat is not None:
            written.append(save_ranked_results(eng.data, eng.last_distmat, os.path.join(eng.cfg.OUTPUT_DIR, "ranked"),
                                               NUM_RANKED_QUERIES))
        logger.info("figures: %s", ", ".join(written))
