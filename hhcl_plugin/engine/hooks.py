"""Hooks run by the engine around each epoch (detectron2 style).

The clustering hook is the heart of unsupervised training: before every epoch it
turns the current model's features into pseudo labels, a fresh memory and a fresh
P x K loader.  Evaluation and checkpointing are hooks too, so a project can add its
own steps without editing the engine.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Dict, Tuple

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from ..clustering import build_clusterer
from ..data import build_test_loader, build_train_loader, build_train_sampler
from ..memory import build_memory
from ..utils import comm
from ..utils.errors import ClusteringError
from .evaluation import extract_features

if TYPE_CHECKING:  # pragma: no cover
    from .hhcl_engine import HHCLEngine

logger = logging.getLogger(__name__)


class HookBase:
    engine: "HHCLEngine"

    def before_train(self) -> None: ...
    def before_epoch(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_train(self) -> None: ...


def singletons_for_outliers(labels: np.ndarray) -> np.ndarray:
    """Give every outlier its own cluster id, so clustering scores count them as unmatched."""
    out = labels.copy()
    outliers = out < 0
    out[outliers] = out.max(initial=-1) + 1 + np.arange(outliers.sum())
    return out


class ClusteringHook(HookBase):
    """Pseudo labels, memory and train loader for the coming epoch."""

    def __init__(self) -> None:
        self.clusterer = None

    def before_train(self) -> None:
        self.clusterer = build_clusterer(self.engine.cfg)

    def before_epoch(self) -> None:
        eng, cfg = self.engine, self.engine.cfg
        data = eng.data
        start = time.perf_counter()
        features = self._extract_all(eng)
        labels, stats, distances = self._cluster_on_main(features)
        eng.epoch_stats = stats
        eng.pseudo_labels = labels
        if stats["clusters"] == 1:  # reachable with P = 1 identity per batch; a softmax over one class is constant
            logger.warning("epoch %d: one cluster only, so every memory loss is 0 and the model will not change; "
                           "lower CLUSTER.EPS (now %s) or CLUSTER.MIN_SAMPLES", eng.epoch + 1, cfg.CLUSTER.EPS)
        eng.memory = build_memory(cfg, features, labels,
                                  generator=torch.Generator().manual_seed(cfg.SEED + eng.epoch))
        # every rank builds the banks from the same gathered features, but a GPU's index_add_
        # sums them in a varying order: all ranks start the epoch from rank 0's bits
        comm.broadcast_buffers(eng.memory)
        # under DDP the memory is updated with the batches of all ranks, after backward
        eng.memory.update_in_backward = comm.get_world_size() == 1
        items = [(path, int(label), cam) for (path, _, cam), label in zip(data.train, labels) if label >= 0]
        try:
            sampler = build_train_sampler(cfg, items, seed=cfg.SEED + eng.epoch)
        except ValueError as e:  # e.g. fewer clusters than identities per batch
            raise ClusteringError(
                f"epoch {eng.epoch + 1}: {e} (CLUSTER.EPS={cfg.CLUSTER.EPS}, {stats['clusters']} clusters; "
                f"nearest-neighbour Jaccard distances: {_format_stats(distances)})") from None
        eng.train_loader = build_train_loader(cfg, items, data.transform_train, sampler)
        diag = f", pseudo-label NMI {stats['nmi']:.3f} ARI {stats['ari']:.3f} (diagnostic)" if "nmi" in stats else ""
        logger.info("epoch %d: %d clusters, %d outliers (%.1f%%) in %.1fs%s", eng.epoch + 1, stats["clusters"],
                    stats["outliers"], 100 * stats["outlier_ratio"], time.perf_counter() - start, diag)
        for key, value in stats.items():
            eng.writer.add_scalar(f"cluster/{key}", value, eng.epoch)

    @staticmethod
    def _extract_all(eng: "HHCLEngine") -> torch.Tensor:
        """Features of every training image, in dataset order, on every rank (each rank extracts a slice).

        They stay on the training device: on a GPU the clustering's k-NN then runs there
        (faiss ``GpuIndexFlatIP``, or blocked torch matmuls), the one stage that grows as N^2.
        """
        cfg, train = eng.cfg, eng.data.train
        bounds = np.linspace(0, len(train), comm.get_world_size() + 1).astype(int)
        mine = train[bounds[comm.get_rank()]:bounds[comm.get_rank() + 1]]
        loader = build_test_loader(cfg, mine, eng.data.transform_test)
        features = extract_features(eng.model, loader, eng.device, desc=f"epoch {eng.epoch + 1}: train features")
        return comm.all_gather_tensor(features.to(eng.device))

    def _cluster_on_main(self, features: torch.Tensor) -> Tuple[np.ndarray, Dict, Dict]:
        """Cluster once, on rank 0, and hand every rank the same labels, statistics (or error)."""
        eng, cfg = self.engine, self.engine.cfg
        outcome: Dict = {}
        if comm.is_main_process():
            result = self.clusterer(features)
            outcome = {"labels": np.asarray(result.labels, dtype=np.int64), "error": None}
            if result.num_clusters == 0:
                outcome["error"] = (
                    f"no clusters found with CLUSTER.EPS={cfg.CLUSTER.EPS} and CLUSTER.MIN_SAMPLES="
                    f"{cfg.CLUSTER.MIN_SAMPLES} (nearest-neighbour Jaccard distances: "
                    f"{_format_stats(result.distance_stats)}); raise CLUSTER.EPS")
            outcome["stats"] = {"clusters": result.num_clusters, "outliers": result.num_outliers,
                                "outlier_ratio": result.num_outliers / len(result.labels)}
            outcome["distances"] = result.distance_stats
            gt = eng.data.train_ground_truth
            if len(np.unique(gt)) > 1:  # identity labels exist (never used for training)
                dense = singletons_for_outliers(outcome["labels"])
                outcome["stats"]["nmi"] = float(normalized_mutual_info_score(gt, dense))
                outcome["stats"]["ari"] = float(adjusted_rand_score(gt, dense))
        outcome = comm.broadcast_object(outcome)
        if outcome["error"]:
            raise ClusteringError(outcome["error"])
        return outcome["labels"], outcome["stats"], outcome["distances"]


def _format_stats(stats: Dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in (stats or {}).items()) or "n/a"


class EvalHook(HookBase):
    """Evaluate every ``TEST.EVAL_PERIOD`` epochs and after the last one; keep ``metrics.json`` (rank 0)."""

    def before_train(self) -> None:
        eng = self.engine
        if not eng.data.has_evaluation:
            logger.info("no query/gallery: training without evaluation; metrics.json holds every epoch's "
                        "cluster statistics, last.pth is written every epoch")
            return
        if "initial" not in eng.metrics and comm.is_main_process():
            eng.metrics["initial"] = eng.evaluate("before training")
            self._write()
        comm.synchronize()

    def after_epoch(self) -> None:
        eng, period = self.engine, self.engine.cfg.TEST.EVAL_PERIOD
        last = eng.epoch + 1 == eng.max_epoch
        if not eng.data.has_evaluation:
            if comm.is_main_process():
                self._write()  # the epoch's cluster statistics, appended by the engine
            return
        if (last or (period > 0 and (eng.epoch + 1) % period == 0)) and comm.is_main_process():
            result = eng.evaluate(f"epoch {eng.epoch + 1}")
            eng.metrics["evaluations"].append({"epoch": eng.epoch + 1, **result, **eng.epoch_stats})
            eng.is_best = result["mAP"] > eng.best_mAP
            eng.best_mAP = max(eng.best_mAP, result["mAP"])
            if last:
                eng.metrics["final"] = result
            self._write()

    def _write(self) -> None:
        path = os.path.join(self.engine.cfg.OUTPUT_DIR, "metrics.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.engine.metrics, f, indent=2)
        os.replace(tmp, path)


class CheckpointHook(HookBase):
    """``last.pth`` after every epoch, ``best.pth`` when the evaluated mAP improves (rank 0)."""

    def after_epoch(self) -> None:
        eng = self.engine
        if comm.is_main_process():
            eng.save("last.pth")
            if eng.is_best:
                eng.save("best.pth")
                eng.is_best = False
        comm.synchronize()
