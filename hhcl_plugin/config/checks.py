"""What each config value may be, declared per key and checked before any work.

yacs checks only types; a size of ``[256]`` or ``SOLVER.MAX_EPOCH 0`` would otherwise fail
deep in the transforms or end a run as if it had trained. Every key of the defaults has
one rule in :data:`RULES` (a test walks them all), so a new key is a one-line addition,
e.g. ``"SOLVER.WARMUP_EPOCHS": Number(lo=0, integer=True),``. A project that adds its
own keys adds their rules to its config with ``cfg.add_rules({...})`` (``config.HHCLConfig``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from yacs.config import CfgNode

from ..utils.errors import ConfigError


class Rule:
    """A set of valid values; ``expected`` says which, for the error message."""

    expected = "any value of the key's type"

    def accepts(self, value: Any) -> bool:
        return True


class Flag(Rule):
    """True or False: yacs already refuses anything else."""

    expected = "True or False"


class Text(Rule):
    def __init__(self, allow_empty: bool = False) -> None:
        self.allow_empty = allow_empty
        self.expected = "a string" if allow_empty else "a non-empty string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and (self.allow_empty or bool(value.strip()))


class Number(Rule):
    """A finite number within optional bounds, ``lo``/``hi`` included unless ``open_lo``/``open_hi``."""

    def __init__(self, lo: Optional[float] = None, hi: Optional[float] = None, integer: bool = False,
                 open_lo: bool = False, open_hi: bool = False) -> None:
        self.lo, self.hi, self.integer, self.open_lo, self.open_hi = lo, hi, integer, open_lo, open_hi
        kind = "an integer" if integer else "a number"
        if lo is not None and hi is not None:
            self.expected = f"{kind} in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
        elif lo is not None:
            self.expected = f"{kind} {'>' if open_lo else '>='} {lo}"
        elif hi is not None:
            self.expected = f"{kind} {'<' if open_hi else '<='} {hi}"
        else:
            self.expected = f"a finite {'integer' if integer else 'number'}"

    def accepts(self, value: Any) -> bool:
        types = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, types) or not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.open_lo else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.open_hi else value <= self.hi)


class OneOf(Rule):
    def __init__(self, *choices: Any) -> None:
        self.choices = choices
        self.expected = "one of " + ", ".join(map(str, choices))

    def accepts(self, value: Any) -> bool:
        return value in self.choices


class ListOf(Rule):
    """A list or tuple whose items all pass ``item``, of a given length or at least ``min_length`` long."""

    def __init__(self, item: Rule, length: Optional[int] = None, min_length: int = 1, meaning: str = "") -> None:
        self.item, self.length, self.min_length = item, length, min_length
        count = f"{length} item(s)" if length is not None else f"a list of at least {min_length} item(s)"
        self.expected = f"{count}, each {item.expected}" + (f" ({meaning})" if meaning else "")

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (list, tuple)):
            return False
        if len(value) != self.length if self.length is not None else len(value) < self.min_length:
            return False
        return all(self.item.accepts(v) for v in value)


class NumberOrWord(Rule):
    """A number that ``number`` accepts, or the one word ``word`` (``CLUSTER.EPS auto``)."""

    def __init__(self, word: str, number: Number) -> None:
        self.word, self.number = word, number
        self.expected = f"{number.expected} or '{word}'"

    def accepts(self, value: Any) -> bool:
        return value == self.word or self.number.accepts(value)


POSITIVE_INT = Number(lo=1, integer=True)
PROBABILITY = Number(lo=0, hi=1)
IMAGE_SIZE = ListOf(POSITIVE_INT, length=2, meaning="height, width in pixels")
AUTO = "auto"  # CLUSTER.EPS auto: the radius chosen per clustering (hhcl_plugin.clustering.eps_rule)
EPS = NumberOrWord(AUTO, Number(lo=0, hi=1, open_lo=True, open_hi=True))  # Jaccard distances lie in [0, 1]

# One rule per key of the defaults. Registry names (ENGINE, CLUSTER.NAME, DATALOADER.SAMPLER,
# MEMORY.MODE) are non-empty here; the registries check that they are registered.
RULES: Dict[str, Rule] = {
    "ENGINE": Text(),
    "OUTPUT_DIR": Text(),
    "SEED": Number(lo=0, hi=2**32 - 1, integer=True),
    "DETERMINISTIC": Flag(),
    "DATASETS.NAMES": ListOf(Text(), length=1, meaning="one dataset name, e.g. ('market1501',)"),
    "DATASETS.ROOT": Text(),
    "DATASETS.SYNTH_PRESET": OneOf("tiny", "default"),
    "DATASETS.FOLDER.CAMERA": Text(),  # none | dir | a regex with one group: compiled by data.datasets.folder
    "DATASETS.SYNTH_SEED": Number(lo=0, integer=True),
    "INPUT.SIZE_TRAIN": IMAGE_SIZE,
    "INPUT.SIZE_TEST": IMAGE_SIZE,
    "INPUT.TRANSFORMS": ListOf(OneOf("random_flip", "random_crop", "random_erase", "color_jitter", "random_patch",
                                       "pad_crop"),
                               min_length=0),
    "INPUT.PIXEL_MEAN": ListOf(Number(), length=3, meaning="R, G, B"),
    "INPUT.PADDING": Number(lo=0, integer=True),
    "INPUT.INTERPOLATION": OneOf("bilinear", "bicubic"),
    "INPUT.PIXEL_STD": ListOf(Number(lo=0, open_lo=True), length=3, meaning="R, G, B"),
    "DATALOADER.SAMPLER": Text(),
    "DATALOADER.NUM_INSTANCES": POSITIVE_INT,
    "DATALOADER.NUM_WORKERS": Number(lo=0, integer=True),
    "DATALOADER.ON_BAD_IMAGE": OneOf("error", "skip"),
    "MODEL.DEVICE": OneOf("auto", "cpu", "cuda"),
    "MODEL.WEIGHTS": Text(allow_empty=True),
    "MODEL.BACKBONE.NAME": Text(),
    "MODEL.BACKBONE.PRETRAINED": Flag(),
    "MODEL.BACKBONE.LAST_STRIDE": OneOf(1, 2),
    "MODEL.POOLING": OneOf("avg", "gem", "max"),
    "MODEL.GEM_P": Number(lo=0, open_lo=True),
    "MODEL.EMBEDDING_DIM": Number(lo=0, integer=True),
    "MODEL.CHANNELS_LAST": Flag(),
    "MODEL.SYNC_BN": Flag(),
    "MODEL.BN_SPLIT": POSITIVE_INT,
    "CLUSTER.NAME": Text(),
    "CLUSTER.JACCARD": OneOf("sparse", "dense"),
    "CLUSTER.K1": POSITIVE_INT,
    "CLUSTER.K2": POSITIVE_INT,
    "CLUSTER.EPS": EPS,
    "CLUSTER.MIN_SAMPLES": POSITIVE_INT,
    "CLUSTER.KNN_INDEX": OneOf("exact", "ivf", "auto"),
    "CLUSTER.KNN_BF16_SCREEN": Flag(),
    "CLUSTER.INFOMAP.K": POSITIVE_INT,
    "CLUSTER.INFOMAP.MIN_SIM": Number(lo=-1, hi=1),
    "CLUSTER.INFOMAP.MIN_SIZE": POSITIVE_INT,
    "CLUSTER.INFOMAP.TRIALS": POSITIVE_INT,
    "MEMORY.MODE": Text(),
    "MEMORY.TEMP": Number(lo=0, open_lo=True),
    "MEMORY.MOMENTUM": PROBABILITY,
    "MEMORY.HARD_WEIGHT": PROBABILITY,
    "MEMORY.LABEL_SMOOTH": Number(lo=0, hi=1, open_hi=True),
    "MEMORY.CM_UPDATE": OneOf("per_sample", "mean"),
    "LOSS.NAMES": ListOf(Text(), meaning="registered loss terms, e.g. ('memory', 'camera_proxy')"),
    "LOSS.MEMORY.WEIGHT": Number(lo=0),
    "LOSS.CAMERA.WEIGHT": Number(lo=0),
    "LOSS.CAMERA.TEMP": Number(lo=0, open_lo=True),
    "LOSS.CAMERA.INTER_WEIGHT": Number(lo=0),
    "LOSS.CAMERA.HARD_NEGATIVES": POSITIVE_INT,
    "LOSS.CAMERA.MOMENTUM": PROBABILITY,
    "SOURCE.LOSS": OneOf("softmax_triplet", "softmax"),
    "SOURCE.TRIPLET_MARGIN": Number(lo=0, open_lo=True),
    "SOURCE.LABEL_SMOOTH": Flag(),
    "SOLVER.OPTIMIZER": OneOf("adam", "amsgrad", "sgd", "rmsprop", "radam"),  # torchreid's
    "SOLVER.BASE_LR": Number(lo=0, open_lo=True),
    "SOLVER.WEIGHT_DECAY": Number(lo=0),
    "SOLVER.LR_SCHEDULER": OneOf("single_step", "cosine"),  # torchreid's multi_step needs a list of steps
    "SOLVER.STEP_SIZE": POSITIVE_INT,
    "SOLVER.GAMMA": Number(lo=0, open_lo=True),
    "SOLVER.MAX_EPOCH": POSITIVE_INT,
    "SOLVER.ITERS": POSITIVE_INT,
    "SOLVER.IMS_PER_BATCH": POSITIVE_INT,
    "SOLVER.LOG_PERIOD": POSITIVE_INT,
    "SOLVER.AMP": OneOf("off", "fp16", "bf16"),
    "TEST.EVAL_PERIOD": Number(lo=0, integer=True),  # 0: only after the last epoch
    "TEST.IMS_PER_BATCH": POSITIVE_INT,
    "TEST.RANKS": ListOf(POSITIVE_INT),
    "TEST.RERANK": Flag(),
    "TEST.RERANK_K1": POSITIVE_INT,
    "TEST.RERANK_K2": POSITIVE_INT,
    "TEST.RERANK_LAMBDA": PROBABILITY,
    "TEST.START_EVAL": Number(lo=0, integer=True),
    "TEST.DIST_METRIC": OneOf("cosine", "euclidean"),
    "TEST.METRIC_CUHK03": Flag(),
}

# Checks that involve several keys: (keys, holds, what should hold). Run once every key is valid alone.
RELATIONS: List[Tuple[Tuple[str, ...], Callable[..., bool], str]] = [
    (("SOLVER.IMS_PER_BATCH", "DATALOADER.NUM_INSTANCES"), lambda batch, k: batch % k == 0,
     "SOLVER.IMS_PER_BATCH must be a multiple of DATALOADER.NUM_INSTANCES"),
    (("CLUSTER.K2", "CLUSTER.K1"), lambda k2, k1: k2 <= k1, "CLUSTER.K2 cannot exceed CLUSTER.K1"),
    (("SOLVER.IMS_PER_BATCH", "MODEL.BN_SPLIT"), lambda batch, n: batch % n == 0,
     "SOLVER.IMS_PER_BATCH must be a multiple of MODEL.BN_SPLIT (equal BatchNorm sub-batches)"),
    (("MODEL.SYNC_BN", "MODEL.BN_SPLIT"), lambda sync, n: not (sync and n > 1),
     "MODEL.SYNC_BN True and MODEL.BN_SPLIT > 1 exclude each other (SyncBatchNorm would replace the split one)"),
    (("LOSS.NAMES", "DATASETS.NAMES", "DATASETS.FOLDER.CAMERA"),
     lambda losses, names, camera: not ("camera_proxy" in losses and "folder" in names and camera == "none"),
     "LOSS.NAMES has 'camera_proxy', which needs cameras, but DATASETS.FOLDER.CAMERA is none (one camera): "
     "set DATASETS.FOLDER.CAMERA dir or a regex, or drop 'camera_proxy'"),
]


def value_of(cfg: CfgNode, key: str) -> Any:
    """``cfg.A.B`` for ``key = "A.B"``."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def config_keys(cfg: CfgNode, prefix: str = "") -> List[str]:
    """Every leaf key of ``cfg``, dotted."""
    keys = []
    for name, value in cfg.items():
        key = prefix + name
        keys += config_keys(value, key + ".") if isinstance(value, CfgNode) else [key]
    return keys


def check_values(cfg: CfgNode, rules: Optional[Dict[str, Rule]] = None,
                 relations: Sequence[Tuple[Tuple[str, ...], Callable[..., bool], str]] = RELATIONS) -> None:
    """Raise a one-line :class:`ConfigError` for the first value its rule refuses."""
    for key, rule in (RULES if rules is None else rules).items():
        value = value_of(cfg, key)
        if not rule.accepts(value):
            raise ConfigError(f"{key} is {value!r}, expected {rule.expected}")
    for keys, holds, should in relations:
        values = [value_of(cfg, key) for key in keys]
        if not holds(*values):
            got = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
            raise ConfigError(f"{should}; got {got}")
