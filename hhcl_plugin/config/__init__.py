"""yacs configuration: defaults, file loading with ``_BASE_``, overrides."""
from .config import HHCLConfig, get_cfg, merge_from_file, merge_from_list, setup_cfg

__all__ = ["HHCLConfig", "get_cfg", "merge_from_file", "merge_from_list", "setup_cfg"]
