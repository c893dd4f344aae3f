"""The P x K sampler over pseudo labels."""
import itertools
from collections import Counter

import numpy as np
import pytest

from hhcl_plugin.data import CameraAwarePKSampler, build_train_sampler
from hhcl_plugin.config import setup_cfg


def items(seed=0, num_ids=20, outliers=15):
    rng = np.random.default_rng(seed)
    out = []
    for pid in range(num_ids):
        cams = rng.choice(6, size=rng.integers(1, 5), replace=False)
        for _ in range(rng.integers(2, 14)):
            out.append((f"img{len(out)}.jpg", pid, int(rng.choice(cams))))
    out += [(f"junk{i}.jpg", -1, 0) for i in range(outliers)]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def batches(sampler, batch_size):
    indices = list(sampler)
    return [indices[a:a + batch_size] for a in range(0, len(indices), batch_size)]


def test_batches_are_p_distinct_identities_of_k_instances():
    data = items()
    sampler = CameraAwarePKSampler(data, batch_size=24, num_instances=4, num_iters=30, seed=1)
    got = batches(sampler, 24)
    assert len(got) == 30 and len(sampler) == 30 * 24
    for batch in got:
        pids = [data[i][1] for i in batch]
        assert -1 not in pids
        counts = Counter(pids)
        assert len(counts) == 6 and set(counts.values()) == {4}
        for pid in counts:  # consecutive K-runs: one identity at a time
            run = [data[i][1] for i in batch if data[i][1] == pid]
            assert len(run) == 4


def test_instances_are_distinct_when_possible_and_spread_over_cameras():
    data = items(seed=2)
    by_pid = {}
    for i, (_, pid, cam) in enumerate(data):
        if pid >= 0:
            by_pid.setdefault(pid, []).append(cam)
    sampler = CameraAwarePKSampler(data, batch_size=16, num_instances=4, num_iters=50, seed=3)
    for batch in batches(sampler, 16):
        for a in range(0, 16, 4):
            chunk = batch[a:a + 4]
            pid = data[chunk[0]][1]
            n, cams = len(by_pid[pid]), set(by_pid[pid])
            if n >= 4:
                assert len(set(chunk)) == 4
            assert len({data[i][2] for i in chunk}) == min(4, len(cams))


def test_identities_are_used_evenly_and_order_is_seeded():
    data = items(seed=4)
    a = CameraAwarePKSampler(data, batch_size=20, num_instances=4, num_iters=40, seed=7)
    b = CameraAwarePKSampler(data, batch_size=20, num_instances=4, num_iters=40, seed=7)
    assert list(a) == list(b)
    c = CameraAwarePKSampler(data, batch_size=20, num_instances=4, num_iters=40, seed=8)
    assert list(a) != list(c)
    a.set_epoch(1)
    assert list(a) != list(b)
    uses = Counter(data[i][1] for i in itertools.islice(iter(b), 0, None, 4))
    assert max(uses.values()) - min(uses.values()) <= 1


def test_too_few_identities_and_bad_shapes_are_clear_errors():
    data = items(num_ids=3)
    with pytest.raises(ValueError, match="needs P = 4 distinct identities"):
        CameraAwarePKSampler(data, batch_size=16, num_instances=4, num_iters=1)
    with pytest.raises(ValueError, match="multiple of num_instances"):
        CameraAwarePKSampler(data, batch_size=10, num_instances=4, num_iters=1)


def test_sampler_comes_from_the_registry():
    cfg = setup_cfg("", ["DATASETS.NAMES", "('synthreid',)", "SOLVER.IMS_PER_BATCH", "8",
                         "DATALOADER.NUM_INSTANCES", "4", "SOLVER.ITERS", "3"])
    sampler = build_train_sampler(cfg, items(), seed=0)
    assert isinstance(sampler, CameraAwarePKSampler) and len(sampler) == 24


def test_ranks_split_the_global_batch_without_overlap():
    data = items(seed=5, num_ids=30)
    kw = dict(num_instances=4, num_iters=12, seed=3)
    single = batches(CameraAwarePKSampler(data, batch_size=24, **kw), 24)
    ranks = [batches(CameraAwarePKSampler(data, batch_size=12, rank=r, world_size=2, **kw), 12) for r in range(2)]
    for step, whole in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == whole
        assert not {data[i][1] for i in ranks[0][step]} & {data[i][1] for i in ranks[1][step]}
    with pytest.raises(ValueError, match="on each of 2 processes"):
        CameraAwarePKSampler(items(num_ids=5), batch_size=12, rank=0, world_size=2, **kw)
