"""Hooks run by the engine around each epoch (detectron2 style).

The clustering hook is the heart of unsupervised training: before every epoch it
turns the current model's features into pseudo labels, a fresh memory and a fresh
P x K loader.  Evaluation and checkpointing are hooks too.  The engine builds its
hooks in :meth:`HHCLEngine.build_hooks`, so a project adds, removes or replaces
steps by overriding that method, without editing the engine.
"""
from __future__ import annotations

import logging
import os
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..clustering import build_clusterer, cluster_on_all_ranks
from ..clustering.base import format_distance_stats
from ..clustering.summary import ground_truth_scores, has_ground_truth
from ..data import build_test_loader, build_train_loader, build_train_sampler
from ..losses import Clustering
from ..memory import build_memory
from ..utils import comm
from ..utils.errors import ClusteringError
from .features import extract_features
from .run_dir import write_json

if TYPE_CHECKING:  # pragma: no cover
    from ..memory.cluster_memory import ClusterMemory
    from .hhcl_engine import HHCLEngine

logger = logging.getLogger(__name__)


class HookBase:
    """One step of training, called by the engine at six points of the run.

    Call order, for the hooks in the order :meth:`HHCLEngine.build_hooks` lists them::

        before_train                       every hook, once (after a resume too)
        for each epoch:
            before_epoch                   every hook
            for each batch (the engine's loop; it reads ``memory`` and ``train_loader``):
                before_step                every hook, once the batch is fetched
                (the engine's step: ``step_losses``, added to ``epoch_loss_sums``)
                after_step                 every hook
            after_epoch                    every hook
        after_train                        every hook, once, also when training raised

    Every hook may read the engine's own state: ``cfg``, ``data`` (train, query and gallery
    items, transforms), ``model``, ``device``, ``epoch`` (0-based), ``iter`` (0-based, within
    the epoch), ``max_epoch``, ``metrics`` (what ``metrics.json`` holds), ``best_mAP``,
    ``writer`` (TensorBoard), ``step_losses`` and ``epoch_loss_sums``, and call ``evaluate()``,
    ``save()``, ``update_lr()``.  What one hook hands to another goes through the engine
    attributes named in ``writes`` (by the producer) and ``reads`` (by the consumer); the
    engine refuses a hook list in which a hook reads what no earlier hook writes, so a
    hand-off never depends on an order nobody checks.  The defaults:

    ==================  =======================================  ==============================
    hook                writes                                   reads
    ==================  =======================================  ==============================
    ClusteringHook      memory, train_loader, pseudo_labels,     (engine state only)
                        epoch_stats (before_epoch)
    ClusterGridHook     ``plots/clusters_epochNNN.png``          pseudo_labels, epoch_stats
    (no query/gallery)  (before_epoch)
    IterationTimer      speed (after_step)                       (engine state only)
    TensorBoardWriter   ``tensorboard/``, the log lines          speed
    LRScheduler         (steps the LR after_epoch)               (engine state only)
    EvalHook            evaluation (after_epoch; None when the   epoch_stats
                        epoch is not evaluated)
    CheckpointHook      best_mAP, ``last.pth``, ``best.pth``     evaluation
    ReportHook          ``plots/``, ``ranked/`` (after_train)    (engine state only)
    ==================  =======================================  ==============================

    A hook holds its engine through a weak reference (the engine holds its hooks), and may
    keep state of its own across epochs: what :meth:`state_dict` returns (numbers, strings,
    tensors, and lists and dicts of them) is saved in every checkpoint and handed back to
    :meth:`load_state_dict` by ``--resume``.
    """

    reads: Tuple[str, ...] = ()
    writes: Tuple[str, ...] = ()
    _engine: Optional["weakref.ReferenceType[HHCLEngine]"] = None

    @property
    def engine(self) -> "HHCLEngine":
        engine = self._engine() if self._engine is not None else None
        if engine is None:
            raise RuntimeError(f"{type(self).__name__} is not registered with a live engine (register_hooks)")
        return engine

    @engine.setter
    def engine(self, engine: "HHCLEngine") -> None:
        self._engine = weakref.ref(engine)

    def before_train(self) -> None: ...
    def before_epoch(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_train(self) -> None: ...

    def state_dict(self) -> Dict[str, Any]:
        """The hook's own state, for checkpoints; empty (nothing saved) by default."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned, on ``--resume``."""


def check_hook_order(hooks: Sequence[HookBase], engine_reads: Sequence[str]) -> None:
    """Every value a hook (or the engine's training step) reads is written by an earlier hook."""
    written: List[str] = []
    for hook in hooks:
        for name in hook.reads:
            if name not in written:
                raise ValueError(f"{type(hook).__name__} reads engine.{name}, which no hook before it writes; "
                                 f"put the hook that writes it earlier in build_hooks()")
        written.extend(hook.writes)
    missing = [name for name in engine_reads if name not in written]
    if missing:
        raise ValueError(f"the training step reads engine.{', engine.'.join(missing)}, which no hook writes; "
                         f"keep ClusteringHook (or a hook that writes them) in build_hooks()")


@dataclass
class PseudoLabels:
    """One clustering of the training set, the same on every rank."""

    labels: np.ndarray  # per training image, -1 for outliers
    stats: Dict[str, float]  # clusters, outliers, outlier_ratio, eps (and nmi, ari when identities are known)
    distances: Dict[str, float]  # nearest-neighbour Jaccard distance statistics, for error messages


class ClusteringHook(HookBase):
    """Pseudo labels, memory and train loader for the coming epoch.

    ``before_epoch`` runs five steps, each passing its result to the next:
    :meth:`extract_features` -> :meth:`cluster` -> :meth:`build_memory` and
    :meth:`build_loader` -> :meth:`log`.
    """

    writes = ("memory", "train_loader", "pseudo_labels", "epoch_stats")

    def __init__(self) -> None:
        self.clusterer = None

    def before_train(self) -> None:
        self.clusterer = build_clusterer(self.engine.cfg)

    def before_epoch(self) -> None:
        eng = self.engine
        start = time.perf_counter()
        features = self.extract_features()
        clusters = self.cluster(features)
        eng.memory = self.build_memory(features, clusters.labels)
        self.build_losses(features, clusters.labels)
        eng.train_loader = self.build_loader(clusters)
        eng.pseudo_labels, eng.epoch_stats = clusters.labels, clusters.stats
        self.log(clusters, time.perf_counter() - start)

    def extract_features(self) -> torch.Tensor:
        """Features of every training image, in dataset order, on every rank (each rank extracts a slice).

        They stay on the training device: on a GPU the clustering's k-NN then runs there
        (faiss ``GpuIndexFlatIP``, or blocked torch matmuls), the one stage that grows as N^2.
        """
        eng = self.engine
        train = eng.data.train
        bounds = np.linspace(0, len(train), comm.get_world_size() + 1).astype(int)
        mine = train[bounds[comm.get_rank()]:bounds[comm.get_rank() + 1]]
        loader = build_test_loader(eng.cfg, mine, eng.data.transform_test)
        features = extract_features(eng.model, loader, eng.device, desc=f"epoch {eng.epoch + 1}: train features")
        return comm.all_gather_tensor(features.to(eng.device))

    def cluster(self, features: torch.Tensor) -> PseudoLabels:
        """Cluster once, on rank 0, and hand every rank the same labels, statistics (or error)."""
        eng = self.engine
        outcome: Dict = {}
        result = cluster_on_all_ranks(self.clusterer, features)  # every rank searches its share of the k-NN
        if comm.is_main_process():
            outcome = {"labels": np.asarray(result.labels, dtype=np.int64), "error": None}
            if result.num_clusters == 0:  # the clusterer knows its own settings and what to change
                outcome["error"] = self.clusterer.no_clusters_hint(result)
            outcome["stats"] = {"clusters": result.num_clusters, "outliers": result.num_outliers,
                                "outlier_ratio": result.num_outliers / len(result.labels)}
            if result.eps is not None:  # the radius used: CLUSTER.EPS auto picks it per epoch
                outcome["stats"]["eps"] = result.eps
            outcome["distances"] = result.distance_stats
            gt = eng.data.train_ground_truth
            if has_ground_truth(gt):  # identity labels exist (never used for training)
                outcome["stats"].update(ground_truth_scores(outcome["labels"], gt))
        outcome = comm.broadcast_object(outcome)
        if outcome["error"]:
            raise ClusteringError(outcome["error"])
        clusters = PseudoLabels(outcome["labels"], outcome["stats"], outcome["distances"])
        # reachable with P = 1 identity per batch; a softmax over one class is constant
        if clusters.stats["clusters"] == 1:
            logger.warning("epoch %d: one cluster only, so every memory loss is 0 and the model will not change; %s",
                           eng.epoch + 1, self.clusterer.few_clusters_hint())
        return clusters

    def build_memory(self, features: torch.Tensor, labels: np.ndarray) -> "ClusterMemory":
        """The cluster memory, initialised from the features that were clustered, identical on every rank."""
        eng, cfg = self.engine, self.engine.cfg
        memory = build_memory(cfg, features, labels, generator=torch.Generator().manual_seed(cfg.SEED + eng.epoch))
        # every rank builds the banks from the same gathered features, but a GPU's index_add_
        # sums them in a varying order: all ranks start the epoch from rank 0's bits
        comm.broadcast_buffers(memory)
        # under DDP the memory is updated with the batches of all ranks, after backward
        memory.update_in_backward = comm.get_world_size() == 1
        return memory

    def build_losses(self, features: torch.Tensor, labels: np.ndarray) -> None:
        """The loss terms' state for the epoch (e.g. camera proxies), identical on every rank."""
        eng = self.engine
        cameras = np.asarray([cam for _, _, cam in eng.data.train])
        eng.losses.on_clustering(Clustering(features, labels, cameras, eng.memory))
        comm.broadcast_buffers(eng.losses)  # built from the same features; GPU sums may round differently

    def build_loader(self, clusters: PseudoLabels) -> DataLoader:
        """P x K batches over the clustered images (outliers left out)."""
        eng, cfg = self.engine, self.engine.cfg
        items = [(path, int(label), cam) for (path, _, cam), label in zip(eng.data.train, clusters.labels)
                 if label >= 0]
        try:
            sampler = build_train_sampler(cfg, items, seed=cfg.SEED + eng.epoch)
        except ValueError as e:  # e.g. fewer clusters than identities per batch
            raise ClusteringError(
                f"epoch {eng.epoch + 1}: {e} ({clusters.stats['clusters']} clusters, nearest-neighbour distances: "
                f"{format_distance_stats(clusters.distances)}; {self.clusterer.few_clusters_hint()})") from None
        return build_train_loader(cfg, items, eng.data.transform_train, sampler)

    def log(self, clusters: PseudoLabels, seconds: float) -> None:
        eng, stats = self.engine, clusters.stats
        diag = f", pseudo-label NMI {stats['nmi']:.3f} ARI {stats['ari']:.3f} (diagnostic)" if "nmi" in stats else ""
        logger.info("epoch %d: %d clusters, %d outliers (%.1f%%) in %.1fs%s", eng.epoch + 1, stats["clusters"],
                    stats["outliers"], 100 * stats["outlier_ratio"], seconds, diag)
        for key, value in stats.items():
            eng.writer.add_scalar(f"cluster/{key}", value, eng.epoch)


class EvalHook(HookBase):
    """Evaluate every ``TEST.EVAL_PERIOD`` epochs from ``TEST.START_EVAL`` on, and after the last one;
    keep ``metrics.json`` (rank 0).

    ``engine.evaluation`` is the epoch's result on rank 0, ``None`` on epochs without
    evaluation and on the other ranks.
    """

    reads = ("epoch_stats",)
    writes = ("evaluation",)

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
        eng, test = self.engine, self.engine.cfg.TEST
        epoch, last = eng.epoch + 1, eng.epoch + 1 == eng.max_epoch
        due = test.EVAL_PERIOD > 0 and epoch % test.EVAL_PERIOD == 0 and epoch >= test.START_EVAL
        eng.evaluation = None
        if not eng.data.has_evaluation:
            if comm.is_main_process():
                self._write()  # the epoch's cluster statistics, appended by the engine
            return
        if (last or due) and comm.is_main_process():
            eng.evaluation = eng.evaluate(f"epoch {eng.epoch + 1}")
            eng.metrics["evaluations"].append({"epoch": eng.epoch + 1, **eng.evaluation, **eng.epoch_stats})
            if last:
                eng.metrics["final"] = eng.evaluation
            self._write()

    def _write(self) -> None:
        write_json(os.path.join(self.engine.cfg.OUTPUT_DIR, "metrics.json"), self.engine.metrics)


class CheckpointHook(HookBase):
    """``last.pth`` after every epoch, ``best.pth`` when the epoch's evaluated mAP is the best so far (rank 0)."""

    reads = ("evaluation",)

    def after_epoch(self) -> None:
        eng = self.engine
        if comm.is_main_process():
            evaluation: Optional[Dict[str, float]] = eng.evaluation
            is_best = evaluation is not None and evaluation["mAP"] > eng.best_mAP
            if is_best:
                eng.best_mAP = evaluation["mAP"]
            eng.save("last.pth")
            if is_best:
                eng.save("best.pth")
        comm.synchronize()
