"""Start-up: the package and the command lines' --help import nothing heavy; every registry still finds its parts.

No timings here (they go to the report's commands): what is asserted is which modules a start-up imports.
"""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "torchvision", "torchreid", "numpy", "sklearn", "faiss", "matplotlib", "PIL", "tensorboard")


def run_python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def imported_heavy(code: str) -> list:
    out = run_python(code + f"\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    return eval(out.strip().splitlines()[-1])


def test_importing_the_package_imports_nothing_heavy():
    assert imported_heavy("import hhcl_plugin, hhcl_plugin.config") == []


@pytest.mark.parametrize("tool", ["train", "train_source", "cluster", "embed", "export", "gallery"])
def test_help_of_every_command_line_imports_nothing_heavy(tool):
    code = (f"from hhcl_plugin.tools.{tool} import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n")
    assert imported_heavy(code) == []


def test_every_registry_finds_its_built_in_parts_on_first_use():
    out = run_python(
        "import hhcl_plugin\n"
        "print(hhcl_plugin.engine.ENGINE_REGISTRY.get('HHCLEngine').__name__)\n"
        "from hhcl_plugin.memory.build import MEMORY_REGISTRY\n"
        "print(MEMORY_REGISTRY.names())\n"
        "from hhcl_plugin.clustering.build import CLUSTERER_REGISTRY\n"
        "print(CLUSTERER_REGISTRY.names())\n"
        "from hhcl_plugin.data.samplers import SAMPLER_REGISTRY\n"
        "print(SAMPLER_REGISTRY.names())\n"
        "from hhcl_plugin.modeling.backbones import BACKBONE_REGISTRY\n"
        "print('efficientnet_lite0' in BACKBONE_REGISTRY, 'resnet50' in BACKBONE_REGISTRY)\n"
        "import hhcl_plugin.data\n"
        "from hhcl_plugin.utils import torchreid_compat as tr\n"
        "known = vars(tr.data.datasets)['__image_datasets']\n"  # torchreid's own dataset registry
        "print(all(name in known for name in ('synthreid', 'folder', 'personx', 'celebreid')))\n")
    lines = out.strip().splitlines()[-6:]
    assert lines[0] == "ImageHHCLEngine"
    assert eval(lines[1]) == ["CM", "CMhard", "CMhybrid", "CMhybrid_v2"]
    assert {"dbscan_jaccard", "infomap"} <= set(eval(lines[2]))
    assert eval(lines[3]) == ["CameraAwarePKSampler"]
    assert lines[4:] == ["True True", "True"]


@pytest.mark.parametrize("first", ["clustering", "data", "deploy", "engine", "memory", "modeling", "tools.train"])
def test_each_subpackage_imports_first_without_a_cycle(first):
    """With the package importing nothing, any subpackage may be the first one a program imports."""
    run_python(f"import hhcl_plugin.{first}")
