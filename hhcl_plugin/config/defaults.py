"""Default configuration of the plugin.

Every key a config file may set is declared here, so that a misspelt key in a YAML
file or on the command line is an error instead of a silently ignored setting.
"""
from yacs.config import CfgNode as CN

_C = CN()
_C.ENGINE = "HHCLEngine"
_C.OUTPUT_DIR = "output/hhcl"
_C.SEED = 1
_C.DETERMINISTIC = False

# ---------------------------------------------------------------------------- data
_C.DATASETS = CN()
# torchreid dataset names (market1501, dukemtmcreid, msmt17, ...), "synthreid", "folder",
# "personx" or "celebreid".
_C.DATASETS.NAMES = ("market1501",)
_C.DATASETS.ROOT = "datasets"
# Built-in procedural dataset: preset ("tiny" | "default") and generation seed.
_C.DATASETS.SYNTH_PRESET = "default"
_C.DATASETS.SYNTH_SEED = 0
# "folder" dataset (ROOT/train/**, optional ROOT/query/<identity>/**, ROOT/gallery/<identity>/**):
# camera of each image: "none" (one camera for all) | "dir" (its parent folder) | a regular
# expression with one group, searched in the image's path relative to its split, e.g. "c(\d+)"
_C.DATASETS.FOLDER = CN()
_C.DATASETS.FOLDER.CAMERA = "none"

_C.INPUT = CN()
_C.INPUT.SIZE_TRAIN = [256, 128]  # height, width
_C.INPUT.SIZE_TEST = [256, 128]
# train augmentations (hhcl_plugin.data.transforms): random_flip, random_crop (torchreid's: enlarge
# 1.125x, crop), pad_crop (official: pad INPUT.PADDING, crop), random_patch, color_jitter, random_erase
_C.INPUT.TRANSFORMS = ["random_flip", "random_crop", "random_erase"]
_C.INPUT.PADDING = 10  # pixels padded by pad_crop
_C.INPUT.INTERPOLATION = "bilinear"  # resize filter, train and test: bilinear (torchreid) | bicubic (official)
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]

_C.DATALOADER = CN()
_C.DATALOADER.SAMPLER = "CameraAwarePKSampler"
_C.DATALOADER.NUM_INSTANCES = 16  # K of the P x K batches
_C.DATALOADER.NUM_WORKERS = 4
# Unreadable image files (corrupt, truncated, not images): "error" stops with the file's
# name when it is first read; "skip" checks every image once at start-up, logs and drops them.
_C.DATALOADER.ON_BAD_IMAGE = "error"

# ---------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.DEVICE = "auto"  # auto | cpu | cuda
# Local path, http(s) URL or zoo:NAME of a checkpoint to start from (or evaluate).
_C.MODEL.WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
# A registered backbone (see hhcl_plugin.modeling.BACKBONE_REGISTRY), any torchreid
# model name, or "timm:<model>" for any timm model.
_C.MODEL.BACKBONE.NAME = "resnet50"
_C.MODEL.BACKBONE.PRETRAINED = True
_C.MODEL.BACKBONE.LAST_STRIDE = 1
_C.MODEL.POOLING = "gem"  # avg | gem | max
_C.MODEL.GEM_P = 3.0
_C.MODEL.EMBEDDING_DIM = 0  # 0: no projection, the neck works on the backbone width
_C.MODEL.CHANNELS_LAST = False  # channels_last memory format (GPU only; faster convolutions with AMP)
_C.MODEL.SYNC_BN = False  # under DDP: batch statistics over the global batch
# Training BatchNorm statistics over n equal consecutive sub-batches of each process's batch
# (1: the whole batch). 4 on one GPU normalises as the official 4-GPU DataParallel run did.
_C.MODEL.BN_SPLIT = 1

# ---------------------------------------------------------------------------- clustering
_C.CLUSTER = CN()
_C.CLUSTER.NAME = "dbscan_jaccard"
_C.CLUSTER.JACCARD = "sparse"  # sparse | dense
_C.CLUSTER.K1 = 30
_C.CLUSTER.K2 = 6
_C.CLUSTER.EPS = 0.45
_C.CLUSTER.MIN_SAMPLES = 4
# exact | ivf (approximate, neighbours re-scored exactly) | auto (exact below 250,000 features, where it
# finishes in minutes; ivf above: docs/clustering.md)
_C.CLUSTER.KNN_INDEX = "auto"
# exact search on CPU: screen block products in bfloat16 where the CPU has bf16 matrix units,
# then re-score survivors in float32 (same neighbours, ~2x faster); ivf picks its candidates in bfloat16
# there; False: float32 products only
_C.CLUSTER.KNN_BF16_SCREEN = True
# CLUSTER.NAME infomap: InfoMap on the k-NN graph (links to the K nearest with cosine >= MIN_SIM);
# modules smaller than MIN_SIZE are outliers; TRIALS: InfoMap restarts, the best one kept
_C.CLUSTER.INFOMAP = CN()
_C.CLUSTER.INFOMAP.K = 15
_C.CLUSTER.INFOMAP.MIN_SIM = 0.5
_C.CLUSTER.INFOMAP.MIN_SIZE = 2
_C.CLUSTER.INFOMAP.TRIALS = 1

# ---------------------------------------------------------------------------- memory
_C.MEMORY = CN()
_C.MEMORY.MODE = "CMhybrid"  # CM | CMhard | CMhybrid | CMhybrid_v2
_C.MEMORY.TEMP = 0.05
_C.MEMORY.MOMENTUM = 0.1
_C.MEMORY.HARD_WEIGHT = 0.5
_C.MEMORY.LABEL_SMOOTH = 0.0
# CM's bank update: per_sample (official: one momentum step per sample, in batch order) | mean
# (one step per cluster towards its batch mean). The hybrid modes' centroid banks always use the mean.
_C.MEMORY.CM_UPDATE = "per_sample"

# ---------------------------------------------------------------------------- loss
# The training loss: the sum of the registered terms named here (hhcl_plugin.losses.LOSS_REGISTRY),
# each with its own weight: "memory" (the MEMORY.MODE memory's loss) | "camera_proxy"
_C.LOSS = CN()
_C.LOSS.NAMES = ("memory",)
_C.LOSS.MEMORY = CN()
_C.LOSS.MEMORY.WEIGHT = 1.0
# camera-aware proxies (one per cluster and camera): WEIGHT * (intra-camera + INTER_WEIGHT * inter-camera),
# TEMP their softmax temperature, HARD_NEGATIVES other-cluster proxies in the inter-camera softmax,
# MOMENTUM the proxies' update (new = MOMENTUM * old + (1 - MOMENTUM) * batch mean); CAP's values
_C.LOSS.CAMERA = CN()
_C.LOSS.CAMERA.WEIGHT = 1.0
_C.LOSS.CAMERA.TEMP = 0.07
_C.LOSS.CAMERA.INTER_WEIGHT = 0.5
_C.LOSS.CAMERA.HARD_NEGATIVES = 50
_C.LOSS.CAMERA.MOMENTUM = 0.2

# ---------------------------------------------------------------------------- source stage
# hhcl-train-source (domain adaptation's labelled source dataset, torchreid's supervised engines):
# softmax_triplet (ImageTripletEngine) | softmax (ImageSoftmaxEngine); the triplet margin; label smoothing
_C.SOURCE = CN()
_C.SOURCE.LOSS = "softmax_triplet"
_C.SOURCE.TRIPLET_MARGIN = 0.3
_C.SOURCE.LABEL_SMOOTH = True

# ---------------------------------------------------------------------------- solver
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "adam"
_C.SOLVER.BASE_LR = 3.5e-4
_C.SOLVER.WEIGHT_DECAY = 5e-4
_C.SOLVER.LR_SCHEDULER = "single_step"
_C.SOLVER.STEP_SIZE = 20
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.MAX_EPOCH = 60
_C.SOLVER.ITERS = 200
_C.SOLVER.IMS_PER_BATCH = 256
_C.SOLVER.LOG_PERIOD = 20
# Mixed precision for the network: off | fp16 (with loss scaling) | bf16. The memory banks,
# their logits and their update always run in float32.
_C.SOLVER.AMP = "off"

# ---------------------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 10
_C.TEST.IMS_PER_BATCH = 256
_C.TEST.RANKS = [1, 5, 10]
# k-reciprocal re-ranking of the query-gallery distances (Zhong et al., CVPR 2017), reported next to
# the plain figures as mAP_rerank, rank1_rerank, ...; the plain mAP still picks best.pth (the paper's
# figures are without re-ranking). torchreid's implementation is dense in Q + G: at Market-1501's size
# (3,368 + 15,913) it peaked at 10 GB of RAM and added 75 s on a 2-core CPU, besides a second CMC/mAP pass.
_C.TEST.RERANK = False
_C.TEST.RERANK_K1 = 20
_C.TEST.RERANK_K2 = 6
_C.TEST.RERANK_LAMBDA = 0.3  # weight of the original distance against the Jaccard distance
# torchreid's Engine.run() evaluation arguments (start_eval, dist_metric, use_metric_cuhk03), as config keys:
# evaluate only from epoch START_EVAL on (the last epoch always); cosine | euclidean (the same ranking on the
# L2-normalised features, other re-ranked figures); CUHK03's single-gallery-shot CMC
_C.TEST.START_EVAL = 0
_C.TEST.DIST_METRIC = "cosine"
_C.TEST.METRIC_CUHK03 = False
