import subprocess
import sys

import pytest

from hhcl_plugin.utils.registry import Registry


def test_register_decorator_and_lookup():
    reg = Registry("THING")

    @reg.register()
    class Alpha:
        pass

    @reg.register(name="beta")
    def make_beta():
        return "b"

    assert reg.get("Alpha") is Alpha
    assert reg.get("beta")() == "b"
    assert reg.names() == ["Alpha", "beta"]
    assert "Alpha" in reg and "gamma" not in reg


def test_unknown_name_lists_registered_names():
    reg = Registry("THING")
    reg.register(lambda: None, name="one")
    reg.register(lambda: None, name="two")
    with pytest.raises(KeyError) as err:
        reg.get("three")
    msg = str(err.value)
    assert "three" in msg and "THING" in msg and "one, two" in msg


def test_duplicate_registration_is_refused():
    reg = Registry("THING")
    reg.register(lambda: None, name="x")
    with pytest.raises(KeyError, match="already registered"):
        reg.register(lambda: None, name="x")


def test_plugin_registries_are_populated():
    import hhcl_plugin  # noqa: F401
    from hhcl_plugin.clustering import CLUSTERER_REGISTRY
    from hhcl_plugin.data import SAMPLER_REGISTRY
    from hhcl_plugin.engine import ENGINE_REGISTRY
    from hhcl_plugin.memory import MEMORY_REGISTRY
    from hhcl_plugin.modeling import BACKBONE_REGISTRY

    assert "HHCLEngine" in ENGINE_REGISTRY
    assert set(MEMORY_REGISTRY.names()) >= {"CM", "CMhard", "CMhybrid", "CMhybrid_v2"}
    assert "CameraAwarePKSampler" in SAMPLER_REGISTRY
    assert "dbscan_jaccard" in CLUSTERER_REGISTRY
    assert {"resnet50", "resnet50_ibn_a", "osnet_x1_0", "efficientnet_lite0", "timm"} <= set(BACKBONE_REGISTRY.names())


def test_importing_the_package_alone_registers_its_parts():
    """A fresh interpreter: nothing else has imported the subpackages for it."""
    code = ("import hhcl_plugin\n"
            "from hhcl_plugin.memory import MEMORY_REGISTRY\n"
            "from hhcl_plugin.utils import torchreid_compat as tr\n"
            "print(len(MEMORY_REGISTRY.names()), 'synthreid' in getattr(tr.data.datasets, '__image_datasets'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["4", "True"]
