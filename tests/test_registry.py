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


def test_importing_a_subpackage_alone_registers_its_parts():
    """A fresh interpreter: nothing else has imported the subpackages for it (``import hhcl_plugin``
    imports none of them; each registers its parts when it is first imported)."""
    code = ("import hhcl_plugin\n"
            "from hhcl_plugin.memory import MEMORY_REGISTRY\n"
            "from hhcl_plugin.utils import torchreid_compat as tr\n"
            "known = getattr(tr.data.datasets, '__image_datasets')\n"
            "print(len(MEMORY_REGISTRY.names()), 'synthreid' in known)\n"
            "import hhcl_plugin.data\n"
            "print('synthreid' in known)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["4", "False", "True"]


def test_a_source_install_layout_of_torchreid_is_used_when_torchreid_reid_is_absent():
    """deep-person-reid from source has the modules at ``torchreid.*`` and no ``torchreid.reid``.

    Simulated in a fresh interpreter: the PyPI layout's modules are re-exposed at the top level,
    with a marker ``evaluate_rank``, and ``torchreid.reid`` made unimportable.
    """
    code = ("import sys, types\n"
            "import torchreid\n"
            "try:\n"
            "    import torchreid.reid as reid\n"
            "except ImportError:  # already a source install\n"
            "    reid = torchreid\n"
            "for name in ('data', 'engine', 'models', 'optim', 'utils'):\n"
            "    setattr(torchreid, name, getattr(reid, name))\n"
            "metrics = types.ModuleType('metrics')\n"
            "metrics.evaluate_rank = marker = lambda *a, **k: None\n"
            "metrics.compute_distance_matrix = reid.metrics.compute_distance_matrix\n"
            "torchreid.metrics = metrics\n"
            "sys.modules['torchreid.reid'] = None  # import torchreid.reid now raises ImportError\n"
            "import hhcl_plugin.data  # registers the plugin's datasets with torchreid\n"
            "from hhcl_plugin.utils import torchreid_compat as tr\n"
            "print(tr.evaluate_rank is marker, 'synthreid' in getattr(tr.data.datasets, '__image_datasets'),\n"
            "      'resnet50' in tr.torchreid_model_names())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "True"]
