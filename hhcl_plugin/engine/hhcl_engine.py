"""The HHCL training engine, a torchreid ``Engine`` driven by hooks, with torchreid's signature.

The same engine serves ``hhcl-train`` and a torchreid-style script::

    engine = ImageHHCLEngine(datamanager, model, optimizer, scheduler, use_gpu=True, cfg=cfg)
    engine.run(save_dir="log/hhcl", max_epoch=60, eval_freq=10, print_freq=20)
"""
from __future__ import annotations

import logging
import math
import os
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from tabulate import tabulate
from yacs.config import CfgNode

from ..config.config import setup_cfg, with_values
from ..data import build_test_loader, data_from_datamanager
from ..losses import build_losses
from ..modeling import as_embedding_model
from ..utils import comm
from ..utils import torchreid_compat as tr
from ..utils.errors import ConfigError, TrainingError
from ..utils.progress import progress
from .build import ENGINE_REGISTRY
from .checkpoint import load_checkpoint_or_previous, rng_state, save_checkpoint, set_rng_state
from .cluster_grid_hook import ClusterGridHook
from .defaults import check_registered_parts
from .evaluation import distance_matrix, evaluate_retrieval
from .features import extract_features
from .hooks import CheckpointHook, ClusteringHook, EvalHook, HookBase, check_hook_order
from .loop_hooks import IterationTimer, LRScheduler, NoWriter, TensorBoardWriter
from .report import ReportHook, save_ranked_results

logger = logging.getLogger(__name__)


@ENGINE_REGISTRY.register(name="HHCLEngine")  # the name cfg.ENGINE selects it by
class ImageHHCLEngine(tr.Engine):
    """Cluster, then contrast against the cluster memory, every epoch.

    Arguments as torchreid's ``ImageSoftmaxEngine``: ``datamanager`` is a torchreid image
    datamanager (its train split is used without its identity labels, its test split for
    evaluation, its transforms for both) or the plugin's ``build_data(cfg)``; ``model`` is a
    plugin model or any ``torchreid.models.build_model`` model (see ``TorchreidEmbedding``);
    ``optimizer``/``scheduler`` default to ``cfg.SOLVER``'s (a given optimizer without a
    scheduler keeps its learning rate, as in torchreid).  ``cfg`` is the plugin's config, for
    clustering, memory, sampler and batches (defaults when ``None``).

    Reuses torchreid's engine plumbing (model registry, LR stepping, batch parsing),
    CMC/mAP evaluation and ranked-results figures.  The steps around each epoch are the
    hooks of :meth:`build_hooks`.
    """

    # what the engine takes from the hooks (see HookBase): the step's memory and batches, the
    # epoch's cluster statistics for metrics.json, the labels for checkpoints
    reads = ("memory", "train_loader", "pseudo_labels", "epoch_stats")

    def __init__(self, datamanager: Any, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                 scheduler: Optional[Any] = None, use_gpu: bool = True, cfg: Optional[CfgNode] = None) -> None:
        cfg = setup_cfg() if cfg is None else cfg
        check_registered_parts(cfg)
        self.cfg = cfg
        self.data = data = data_from_datamanager(datamanager, cfg)
        self.device = device = (torch.device("cuda", torch.cuda.current_device())
                                if use_gpu and torch.cuda.is_available() else torch.device("cpu"))
        query_loader = build_test_loader(cfg, data.query, data.transform_test)
        gallery_loader = build_test_loader(cfg, data.gallery, data.transform_test)
        view = SimpleNamespace(train_loader=None, sources=data.sources, targets=data.targets,
                               test_loader={data.name: {"query": query_loader, "gallery": gallery_loader}})
        super().__init__(view, use_gpu=device.type == "cuda")
        self.model = as_embedding_model(model).to(device)  # the plain module: evaluation, features, checkpoints
        self.channels_last = bool(cfg.MODEL.CHANNELS_LAST) and device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model = self._wrap_distributed(self.model)  # what the training step calls
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.SOLVER.AMP)
        # fp16 needs loss scaling; bf16 has float32's range and does not
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype is torch.float16)
        if optimizer is None:
            if scheduler is not None:
                raise ConfigError("a scheduler was given without its optimizer; pass optimizer= too, or neither "
                                  "to use cfg.SOLVER's")
            optimizer = tr.build_optimizer(self.model, optim=cfg.SOLVER.OPTIMIZER, lr=cfg.SOLVER.BASE_LR,
                                           weight_decay=cfg.SOLVER.WEIGHT_DECAY, adam_beta2=0.999)
            scheduler = tr.build_lr_scheduler(optimizer, lr_scheduler=cfg.SOLVER.LR_SCHEDULER,
                                              stepsize=cfg.SOLVER.STEP_SIZE, gamma=cfg.SOLVER.GAMMA,
                                              max_epoch=cfg.SOLVER.MAX_EPOCH)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.register_model("model", self.model, self.optimizer, self.scheduler)
        # the terms of the training loss (LOSS.NAMES); the clustering hook hands them each clustering
        self.losses = build_losses(cfg).to(device)
        self.losses.check_data([cam for _, _, cam in data.train])
        self.writer: Any = NoWriter()  # TensorBoard's, in OUTPUT_DIR, while TensorBoardWriter holds it open
        self.start_epoch, self.max_epoch = 0, cfg.SOLVER.MAX_EPOCH
        self.iter = 0
        self.best_mAP = -1.0
        self.metrics: Dict = {"evaluations": []}
        self.step_losses: Dict[str, float] = {}  # the last step's loss terms
        self.epoch_loss_sums: Dict[str, float] = {}  # their sums over the epoch so far
        self.progress_bar: Any = None
        self.last_distmat: Optional[np.ndarray] = None
        # written by the hooks (see HookBase)
        self.memory = None
        self.pseudo_labels: Optional[np.ndarray] = None
        self.epoch_stats: Dict = {}
        self.evaluation: Optional[Dict[str, float]] = None
        self.speed: Dict[str, float] = {}
        self.hooks: List[HookBase] = []
        self.register_hooks(self.build_hooks())

    def _wrap_distributed(self, model: torch.nn.Module) -> torch.nn.Module:
        if comm.get_world_size() == 1:
            return model
        if self.cfg.MODEL.SYNC_BN:
            if self.device.type != "cuda":  # torch would raise only at the first training forward
                raise ConfigError(f"MODEL.SYNC_BN True needs GPU processes: SyncBatchNorm has no {self.device.type} "
                                  "implementation; set MODEL.SYNC_BN False")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def build_hooks(self) -> List[HookBase]:
        """The hooks, in call order; a project overrides this, e.g. ``return super().build_hooks() + [MyHook()]``."""
        hooks = [ClusteringHook(), IterationTimer(), TensorBoardWriter(), LRScheduler(), EvalHook(), CheckpointHook(),
                 ReportHook()]
        if not (self.data.query and self.data.gallery):  # no test split: the pictures are the view of the clusters
            hooks.insert(1, ClusterGridHook())
        return hooks

    def register_hooks(self, hooks: List[HookBase]) -> None:
        """Append ``hooks``; refused when a hook would read a value before the hook that writes it."""
        check_hook_order(self.hooks + list(hooks), self.reads)
        for hook in hooks:
            hook.engine = self
        self.hooks.extend(hooks)

    def _call(self, stage: str) -> None:
        for hook in self.hooks:
            getattr(hook, stage)()

    def _hooks_by_key(self) -> Dict[str, HookBase]:
        """Each hook under its class name (``Name.2`` for a second one): its key in the checkpoint."""
        keyed: Dict[str, HookBase] = {}
        for hook in self.hooks:
            name = type(hook).__name__
            key, n = name, 1
            while key in keyed:
                n += 1
                key = f"{name}.{n}"
            keyed[key] = hook
        return keyed

    # ------------------------------------------------------------------ training
    def run(self, save_dir: Optional[str] = None, max_epoch: Optional[int] = None, start_epoch: Optional[int] = None,
            print_freq: Optional[int] = None, fixbase_epoch: int = 0, open_layers: Optional[Sequence[str]] = None,
            start_eval: Optional[int] = None, eval_freq: Optional[int] = None, test_only: bool = False,
            dist_metric: Optional[str] = None, normalize_feature: bool = True, visrank: bool = False,
            visrank_topk: int = 10, use_metric_cuhk03: Optional[bool] = None, ranks: Optional[Sequence[int]] = None,
            rerank: Optional[bool] = None) -> Dict:
        """Train (or with ``test_only`` only evaluate); the arguments of torchreid's ``Engine.run``.

        An argument left at ``None`` takes its config key: ``save_dir`` OUTPUT_DIR, ``max_epoch``
        SOLVER.MAX_EPOCH, ``print_freq`` SOLVER.LOG_PERIOD, ``start_eval`` TEST.START_EVAL,
        ``eval_freq`` TEST.EVAL_PERIOD, ``dist_metric`` TEST.DIST_METRIC, ``use_metric_cuhk03``
        TEST.METRIC_CUHK03, ``ranks`` TEST.RANKS, ``rerank`` TEST.RERANK; ``start_epoch`` is the
        epoch to continue from (what :meth:`resume` sets).  ``fixbase_epoch``/``open_layers`` train
        the identity classifier alone and ``normalize_feature=False`` asks for features the memory
        cannot use: they are refused.  Returns the figures (``test_only``) or ``metrics.json``'s content.
        """
        if fixbase_epoch or open_layers:
            raise ConfigError("fixbase_epoch and open_layers train the new identity classifier alone for the first "
                              "epochs; HHCL has no identity labels to train it with: drop them")
        if not normalize_feature:
            raise ConfigError("normalize_feature=False: the clustering and the memory need L2-normalised features, "
                              "so the engine always normalises them; drop normalize_feature")
        self.cfg = with_values(self.cfg, {
            "OUTPUT_DIR": save_dir, "SOLVER.MAX_EPOCH": max_epoch, "SOLVER.LOG_PERIOD": print_freq,
            "TEST.START_EVAL": start_eval, "TEST.EVAL_PERIOD": eval_freq, "TEST.DIST_METRIC": dist_metric,
            "TEST.METRIC_CUHK03": use_metric_cuhk03, "TEST.RANKS": ranks, "TEST.RERANK": rerank})
        self.max_epoch = self.cfg.SOLVER.MAX_EPOCH
        if start_epoch is not None:
            self.start_epoch = start_epoch
        if test_only:
            writers = [hook for hook in self.hooks if isinstance(hook, TensorBoardWriter)]
            for writer in writers:
                writer.open()
            try:
                result = self.evaluate("evaluation")
            finally:
                for writer in writers:
                    writer.close()
        else:
            result = self.train()
        if visrank and comm.is_main_process():
            folder = os.path.join(self.cfg.OUTPUT_DIR, f"visrank_{self.data.name}")
            save_ranked_results(self.data, self.last_distmat, folder, topk=visrank_topk)
        return result

    def train(self) -> Dict:
        logger.info("training %d epochs x %d iterations on %s", self.max_epoch, self.cfg.SOLVER.ITERS, self.device)
        start = time.perf_counter()
        try:
            self._call("before_train")
            for self.epoch in range(self.start_epoch, self.max_epoch):
                self._call("before_epoch")
                self.train_one_epoch()
                comm.broadcast_buffers(self.model)
                self._call("after_epoch")
        finally:  # figures of a stopped run too
            self._call("after_train")
        logger.info("training done in %.1f min", (time.perf_counter() - start) / 60)
        self.log_summary()
        return self.metrics

    def train_one_epoch(self) -> None:
        """One pass over ``train_loader``: the hooks' ``before_step``/``after_step`` around each step."""
        self.set_model_mode("train")
        self.memory.train()
        self.epoch_loss_sums = sums = {}
        self.progress_bar = progress(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.max_epoch}", unit="it")
        for self.iter, data in enumerate(self.progress_bar):
            self._call("before_step")
            self.step_losses = losses = self.forward_backward(data)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            self._call("after_step")
        self.metrics.setdefault("epochs", []).append(
            {"epoch": self.epoch + 1, **{k: v / len(self.train_loader) for k, v in sums.items()},
             "lr": self.get_current_lr(), **self.epoch_stats})

    def forward_backward(self, data: Dict) -> Dict[str, float]:
        images, targets = self.parse_data_for_train(data)
        images, targets = images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            features = self.train_model(images)
        cameras = data["camid"].to(self.device, non_blocking=True)
        terms = self.losses(features.float(), targets, cameras)  # LOSS.NAMES; banks and proxies stay float32
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if not self.memory.update_in_backward or self.losses.has_batch_state:
            # after the gradient: under DDP every rank updates with the global batch
            feats, labels = comm.all_gather_equal(features.detach().float()), comm.all_gather_equal(targets)
            if not self.memory.update_in_backward:
                self.memory.update(feats, labels)
            if self.losses.has_batch_state:
                self.losses.update(feats, labels, comm.all_gather_equal(cameras))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at epoch {self.epoch + 1}; training stopped and the last good checkpoint "
                f"in {self.cfg.OUTPUT_DIR} is untouched. Lower SOLVER.BASE_LR or raise MEMORY.TEMP")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["loss"] = value
        return out

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, when: str = "") -> Dict[str, float]:
        loaders = self.test_loader[self.data.name]
        qf = extract_features(self.model, loaders["query"], self.device, desc="query features")
        gf = extract_features(self.model, loaders["gallery"], self.device, desc="gallery features")
        ids = lambda items: (np.asarray([p for _, p, _ in items]), np.asarray([c for _, _, c in items]))  # noqa: E731
        (q_pids, q_cams), (g_pids, g_cams) = ids(self.data.query), ids(self.data.gallery)
        test = self.cfg.TEST
        rerank = (test.RERANK_K1, test.RERANK_K2, test.RERANK_LAMBDA) if test.RERANK else None
        self.last_distmat = distance_matrix(qf, gf, test.DIST_METRIC)  # kept for the ranked-results figures
        result = evaluate_retrieval(qf, gf, q_pids, g_pids, q_cams, g_cams, test.RANKS, rerank, test.DIST_METRIC,
                                    test.METRIC_CUHK03, distmat=self.last_distmat)
        logger.info("%s on %s: %s", when, self.data.name, "  ".join(f"{k} {v:.1f}" for k, v in result.items()))
        for key, value in result.items():
            self.writer.add_scalar(f"test/{key}", value, self.epoch + 1 if when != "before training" else 0)
        return result

    def log_summary(self) -> None:
        if not self.data.has_evaluation:  # nothing to score against: what the clusterings did
            rows = [[e["epoch"], e["clusters"], e["outliers"], 100 * e["outlier_ratio"]]
                    for e in self.metrics.get("epochs", [])]
            logger.info("clusters per epoch on %s (no query/gallery, no evaluation):\n%s", self.data.name,
                        tabulate(rows, headers=["epoch", "clusters", "outliers", "outliers (%)"], floatfmt=".1f"))
            return
        rows = []
        if "initial" in self.metrics:
            rows.append(["before training", *self.metrics["initial"].values()])
        for ev in self.metrics["evaluations"]:
            rows.append([f"epoch {ev['epoch']}", *(ev[k] for k in self.metrics["initial"])])
        headers = ["", *self.metrics.get("initial", {}).keys()]
        logger.info("results on %s:\n%s", self.data.name, tabulate(rows, headers=headers, floatfmt=".1f"))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict:
        """Everything an exact resume needs; all tensors, numbers, strings (``weights_only`` loads it)."""
        model = self.model.state_dict()
        state = {"model": model, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                 "epoch": self.epoch + 1, "best_mAP": self.best_mAP,
                 "metrics": self.metrics, "rng": rng_state(), "config": self.cfg.dump(),
                 "state_dict": model}  # torchreid's key (load_pretrained_weights); the same tensors, stored once
        if self.memory is not None:  # the epoch's memory and labels, for inspection and tools
            state["memory"] = {"mode": type(self.memory).__name__, "bank": self.memory.bank.detach().cpu()}
            state["pseudo_labels"] = torch.as_tensor(self.pseudo_labels)
        hooks = {key: hook.state_dict() for key, hook in self._hooks_by_key().items()}
        state["hooks"] = {key: value for key, value in hooks.items() if value}
        losses = self.losses.state_dict()
        if losses:  # e.g. the camera proxies
            state["losses"] = {k: v.detach().cpu() for k, v in losses.items()}
        return state

    def save(self, name: str) -> None:
        save_checkpoint(self.state_dict(), os.path.join(self.cfg.OUTPUT_DIR, name), keep_previous=name == "last.pth")

    def resume(self, path: str) -> None:
        """Continue after the epoch ``path`` ends; the next epoch re-clusters, as an uninterrupted run does."""
        ckpt = load_checkpoint_or_previous(path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.start_epoch, self.best_mAP, self.metrics = ckpt["epoch"], ckpt["best_mAP"], ckpt["metrics"]
        if "pseudo_labels" in ckpt:
            self.pseudo_labels = ckpt["pseudo_labels"].numpy()
        for key, hook in self._hooks_by_key().items():
            if key in ckpt.get("hooks", {}):
                hook.load_state_dict(ckpt["hooks"][key])
        if "losses" in ckpt:
            self.losses.load_epoch_state(ckpt["losses"])
        set_rng_state(ckpt["rng"])
        logger.info("resumed from %s at epoch %d", path, self.start_epoch)


HHCLEngine = ImageHHCLEngine  # its registered name
