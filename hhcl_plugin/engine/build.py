from ..utils.registry import Registry

ENGINE_REGISTRY = Registry("ENGINE")
ENGINE_REGISTRY.__doc__ = "Training engines, built as ``ENGINE_REGISTRY.get(cfg.ENGINE)(cfg, data, model, device)``."
