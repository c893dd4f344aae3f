from ..utils.registry import Registry

ENGINE_REGISTRY = Registry("ENGINE")
ENGINE_REGISTRY.__doc__ = "Training engines, built by ``build_engine`` as ``cls(cfg, data, model, device)``."
