"""A name -> object registry in the detectron2 / fast-reid style.

Parts of the method (engines, memories, samplers, clusterers, backbones) register
themselves with a decorator, and configs select them by name.  Keeping the lookup
in one place gives every "unknown name" the same helpful error.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import RegistryError


class Registry:
    """Maps names to classes or factory functions.

    Usage::

        MEMORY_REGISTRY = Registry("MEMORY")

        @MEMORY_REGISTRY.register()
        class CMhybrid(...): ...

        MEMORY_REGISTRY.get("CMhybrid")
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: Dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map:
            raise KeyError(f"An object named '{name}' is already registered in the {self._name} registry")
        self._obj_map[name] = obj

    def register(self, obj: Any = None, *, name: Optional[str] = None) -> Any:
        """Register ``obj`` under ``name`` (default: ``obj.__name__``); usable as a decorator."""
        if obj is None:
            def deco(func_or_class: Any) -> Any:
                self._do_register(name or func_or_class.__name__, func_or_class)
                return func_or_class
            return deco
        self._do_register(name or obj.__name__, obj)
        return obj

    def get(self, name: str) -> Any:
        try:
            return self._obj_map[name]
        except KeyError:
            raise RegistryError(
                f"No object named '{name}' in the {self._name} registry. "
                f"Registered names: {', '.join(sorted(self._obj_map)) or '(none)'}"
            ) from None

    def names(self) -> List[str]:
        return sorted(self._obj_map)

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        return iter(self._obj_map.items())

    def __len__(self) -> int:
        return len(self._obj_map)

    def __repr__(self) -> str:
        return f"Registry(name={self._name!r}, items={self.names()})"
