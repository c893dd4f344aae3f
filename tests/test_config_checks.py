"""Every key of the defaults is checked at config time: a wrong value is one line naming the key."""
import os

import pytest

from hhcl_plugin.config import get_cfg, setup_cfg
from hhcl_plugin.config.checks import RULES, Flag, ListOf, Number, NumberOrWord, OneOf, Text, config_keys, value_of
from hhcl_plugin.tools.train import main
from hhcl_plugin.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = get_cfg()
KEYS = config_keys(DEFAULTS)


def wrong_values(rule, example):
    """Values of ``example``'s type that ``rule`` must refuse, made from the bounds and choices it declares."""
    kind = type(example)
    if isinstance(rule, Number):
        out = []
        if rule.lo is not None:
            out.append(kind(rule.lo if rule.open_lo else rule.lo - 1))
        if rule.hi is not None:
            out.append(kind(rule.hi if rule.open_hi else rule.hi + 1))
        if kind is float:
            out.append(float("inf"))
        return out
    if isinstance(rule, NumberOrWord):
        return wrong_values(rule.number, example) + ([] if isinstance(example, str) else [rule.word + "s"])
    if isinstance(rule, OneOf):
        return [max(rule.choices) + 1] if kind is int else ["no-such-choice"]
    if isinstance(rule, Text):
        return [] if rule.allow_empty else ["", "   "]
    if isinstance(rule, ListOf):
        item = example[0] if len(example) else rule.item.choices[0]
        out = [kind([bad] * max(rule.length or 1, 1)) for bad in wrong_values(rule.item, item)]
        if rule.length is not None:
            out += [kind([item] * (rule.length - 1)), kind([item] * (rule.length + 1))]
        elif rule.min_length > 0:
            out.append(kind([item] * (rule.min_length - 1)))
        return out
    if isinstance(rule, Flag):
        return []  # any bool is valid; other types are refused by yacs (see the type test below)
    raise AssertionError(f"no wrong values known for a {type(rule).__name__} rule; teach wrong_values() about it")


def wrong_type(example):
    if isinstance(example, bool):
        return "maybe"
    return 7 if isinstance(example, (str, list, tuple)) else "many"


def assert_one_line_error(key, value):
    with pytest.raises(ConfigError) as info:
        setup_cfg("", [key, value])
    message = str(info.value)
    assert "\n" not in message and key in message, message


def test_every_key_of_the_defaults_has_a_rule():
    missing = [key for key in KEYS if key not in RULES]
    assert not missing, (f"config keys without a value rule: {missing}; add one line per key to RULES in "
                         "hhcl_plugin/config/checks.py, e.g. \"SOLVER.X\": Number(lo=1, integer=True)")
    stale = sorted(set(RULES) - set(KEYS))
    assert not stale, f"rules for keys the defaults do not have: {stale}"


@pytest.mark.parametrize("key", KEYS)
def test_wrong_values_of_every_key_are_one_line_errors(key):
    default = value_of(DEFAULTS, key)
    assert RULES[key].accepts(default), f"the default of {key} ({default!r}) breaks its own rule"
    assert_one_line_error(key, wrong_type(default))
    for value in wrong_values(RULES[key], default):
        assert_one_line_error(key, value)


@pytest.mark.parametrize("opts, message", [
    (["INPUT.SIZE_TRAIN", "[256]"], "INPUT.SIZE_TRAIN is [256], expected 2 item(s), each an integer >= 1 "
                                    "(height, width in pixels)"),
    (["SOLVER.MAX_EPOCH", "0"], "SOLVER.MAX_EPOCH is 0, expected an integer >= 1"),
    (["SOLVER.ITERS", "-1"], "SOLVER.ITERS is -1, expected an integer >= 1"),
    (["CLUSTER.EPS", "1.0"], "CLUSTER.EPS is 1.0, expected a number in (0, 1)"),
    (["TEST.RANKS", "[]"], "TEST.RANKS is [], expected a list of at least 1 item(s), each an integer >= 1"),
    (["INPUT.TRANSFORMS", "['random_flip', 'flip']"], "INPUT.TRANSFORMS is ['random_flip', 'flip']"),
    (["SOLVER.IMS_PER_BATCH", "66"], "SOLVER.IMS_PER_BATCH must be a multiple of DATALOADER.NUM_INSTANCES; "
                                     "got SOLVER.IMS_PER_BATCH=66, DATALOADER.NUM_INSTANCES=4"),
    (["CLUSTER.K1", "5", "CLUSTER.K2", "6"], "CLUSTER.K2 cannot exceed CLUSTER.K1; got CLUSTER.K2=6, CLUSTER.K1=5"),
])
def test_the_cli_refuses_before_any_work(tmp_path, capsys, opts, message):
    out = tmp_path / "out"
    # a dataset that is not there: were a check missing, the run would stop at once instead of training
    code = main(["--config-file", f"{REPO}/configs/hhcl_synth.yml", "OUTPUT_DIR", str(out), "DATASETS.NAMES",
                 "('market1501',)", "DATASETS.ROOT", str(tmp_path / "none"), *opts])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"hhcl-train: error: {message}")
    assert not out.exists()  # nothing was written


def test_choices_follow_the_parts_they_name():
    from hhcl_plugin.data.datasets.synthreid import SYNTH_PRESETS
    from hhcl_plugin.utils import torchreid_compat as tr

    assert set(RULES["DATASETS.SYNTH_PRESET"].choices) == set(SYNTH_PRESETS)
    assert set(RULES["SOLVER.OPTIMIZER"].choices) == set(tr.optim.optimizer.AVAI_OPTIMS)
    assert set(RULES["SOLVER.LR_SCHEDULER"].choices) == set(tr.optim.lr_scheduler.AVAI_SCH) - {"multi_step"}
