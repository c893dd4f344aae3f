"""One import point for torchreid.

The PyPI package ``torchreid`` 0.2.5 repackages deep-person-reid under
``torchreid.reid``; a source install of deep-person-reid exposes the same modules at
``torchreid.*``.  Everything in the plugin imports torchreid through here so both work.
"""
import warnings

with warnings.catch_warnings():
    # Both layouts warn at import time when the Cython ranking extension is absent;
    # the pure-Python evaluation is correct, only slower.
    warnings.filterwarnings("ignore", message=".*Cython evaluation.*")
    try:
        from torchreid.reid import data, engine, metrics, models, optim, utils  # PyPI 0.2.5 layout
    except ImportError:  # a source install of deep-person-reid
        from torchreid import data, engine, metrics, models, optim, utils  # type: ignore[no-redef]

Engine = engine.Engine
ImageSoftmaxEngine = engine.ImageSoftmaxEngine  # supervised engines: the source stage of domain adaptation
ImageTripletEngine = engine.ImageTripletEngine
ImageDataset = data.ImageDataset
build_transforms = data.transforms.build_transforms
reid_transforms = data.transforms  # Random2DTranslation, RandomPatch, RandomErasing
register_image_dataset = data.register_image_dataset
init_image_dataset = data.datasets.init_image_dataset
Market1501 = data.datasets.image.Market1501
evaluate_rank = metrics.evaluate_rank
compute_distance_matrix = metrics.compute_distance_matrix
build_torchreid_model = models.build_model
build_optimizer = optim.build_optimizer
build_lr_scheduler = optim.build_lr_scheduler
visualize_ranked_results = utils.visualize_ranked_results
re_ranking = utils.re_ranking


def torchreid_model_names() -> list:
    """Names accepted by torchreid's ``build_model``."""
    return list(getattr(models, "__model_factory"))


__all__ = [
    "Engine", "ImageSoftmaxEngine", "ImageTripletEngine", "ImageDataset", "build_transforms", "reid_transforms", "register_image_dataset", "init_image_dataset",
    "Market1501", "evaluate_rank", "compute_distance_matrix", "build_torchreid_model",
    "torchreid_model_names", "build_optimizer", "build_lr_scheduler", "visualize_ranked_results", "re_ranking",
]
