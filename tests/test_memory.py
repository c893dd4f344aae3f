"""Cluster memories against the per-sample loop reference, which follows the official semantics."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hhcl_plugin.config.config import get_cfg
from hhcl_plugin.memory import (MEMORY_REGISTRY, CMhard, CMhybrid, CMhybrid_v2, batch_groups, batch_instance_slots,
                               build_memory)
from hhcl_plugin.testing.memory_reference import banks_of, reference_loss, reference_update_, smoothed_cross_entropy

MODES = ["CM", "CMhard", "CMhybrid", "CMhybrid_v2"]
C, D, K, B = 7, 16, 3, 24


def make_cfg(mode, hard_weight=0.5, label_smooth=0.0, momentum=0.1, temp=0.05):
    cfg = get_cfg()
    cfg.MEMORY.MODE = mode
    cfg.MEMORY.HARD_WEIGHT = hard_weight
    cfg.MEMORY.LABEL_SMOOTH = label_smooth
    cfg.MEMORY.MOMENTUM = momentum
    cfg.MEMORY.TEMP = temp
    cfg.DATALOADER.NUM_INSTANCES = K
    return cfg


def clustered_features(seed=0, n_per=6, dtype=torch.float64):
    """Features around C centres, labels 0..C-1, plus a few outliers (-1)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, D, generator=g, dtype=dtype)
    labels = torch.arange(C).repeat_interleave(n_per)
    feats = centres[labels] + 0.5 * torch.randn(len(labels), D, generator=g, dtype=dtype)
    outliers = torch.randn(3, D, generator=g, dtype=dtype)
    feats = F.normalize(torch.cat([feats, outliers]), dim=1)
    labels = torch.cat([labels, torch.full((3,), -1)])
    return feats, labels.numpy()


def batch(seed, dtype=torch.float64):
    """A batch where cluster 0 appears more than K times and clusters 5, 6 are absent."""
    g = torch.Generator().manual_seed(1000 + seed)
    targets = torch.cat([torch.zeros(K + 2, dtype=torch.long), torch.randint(1, 5, (B - K - 2,), generator=g)])
    targets = targets[torch.randperm(B, generator=g)]
    feats = F.normalize(torch.randn(B, D, generator=g, dtype=dtype), dim=1)
    return feats, targets


def build(mode, **kw):
    feats, labels = clustered_features()
    return build_memory(make_cfg(mode, **kw), feats, labels, generator=torch.Generator().manual_seed(0))


def step_both(memory, banks, x, targets, mode, **kw):
    """One memory step and one reference step; returns (loss, grad, ref_loss, ref_grad)."""
    x1 = x.clone().requires_grad_()
    loss = sum(memory(x1, targets).values())
    loss.backward()
    x2 = x.clone().requires_grad_()
    ref = reference_loss(mode, banks, x2, targets, temp=memory.temp, hard_weight=kw.get("hard_weight", 0.5),
                         label_smooth=kw.get("label_smooth", 0.0))
    ref.backward()
    reference_update_(banks, x2, targets, momentum=memory.momentum, centroid_update=memory.centroid_update)
    return loss.detach(), x1.grad, ref.detach(), x2.grad


def assert_banks_equal(memory, banks, atol=1e-10):
    for name, expected in banks.items():
        torch.testing.assert_close(banks_of(memory)[name], expected, atol=atol, rtol=0, msg=f"bank {name}")


# ---------------------------------------------------------------------------- against the reference

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label_smooth", [0.0, 0.1])
def test_one_and_several_steps_match_reference(mode, label_smooth):
    memory = build(mode, label_smooth=label_smooth)
    banks = banks_of(memory)
    before = banks_of(memory)
    for s in range(5):
        x, targets = batch(s)
        loss, grad, ref, ref_grad = step_both(memory, banks, x, targets, mode, label_smooth=label_smooth)
        torch.testing.assert_close(loss, ref, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(grad, ref_grad, atol=1e-10, rtol=1e-10)
        assert_banks_equal(memory, banks)
    changed = [name for name in banks if not torch.equal(before[name], banks_of(memory)[name])]
    assert changed == list(banks)  # every bank moved, so the comparison above was not vacuous


@pytest.mark.parametrize("mode", MODES)
def test_gradient_uses_bank_before_update(mode):
    memory = build(mode)
    x, targets = batch(0)
    old = memory.bank.clone()
    # dLoss/dlogits from the same loss head on a leaf tensor of logits against the old bank
    logits = (x @ old.t()).requires_grad_()
    sum(memory.losses(logits / memory.temp, targets).values()).backward()
    x1 = x.clone().requires_grad_()
    sum(memory(x1, targets).values()).backward()
    assert not torch.equal(memory.bank, old)  # the update did happen
    torch.testing.assert_close(x1.grad, logits.grad @ old, atol=1e-10, rtol=1e-10)
    assert not torch.allclose(x1.grad, logits.grad @ memory.bank, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_explicit_update_matches_reference_and_forward_alone_does_not_update(mode):
    memory = build(mode)
    banks = banks_of(memory)
    x, targets = batch(3)
    memory(x.clone().requires_grad_(), targets)  # never backpropagated
    assert_banks_equal(memory, banks, atol=0)
    memory.update_in_backward = False
    sum(memory(x.clone().requires_grad_(), targets).values()).backward()
    assert_banks_equal(memory, banks, atol=0)
    before = memory.bank.clone()
    memory.update(x, targets)
    reference_update_(banks, x, targets, momentum=memory.momentum, centroid_update=memory.centroid_update)
    assert_banks_equal(memory, banks)
    assert not torch.equal(memory.bank, before)


@pytest.mark.parametrize("mode", MODES)
def test_changing_bank_between_forward_and_backward_raises(mode):
    memory = build(mode)
    x, targets = batch(0)
    loss = sum(memory(x.clone().requires_grad_(), targets).values())
    memory.update(x, targets)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ---------------------------------------------------------------------------- specific semantics

def test_hybrid_uses_official_bracketed_weighting():
    hw = 0.3
    memory = build("CMhybrid", hard_weight=hw)
    x, targets = batch(0)
    terms = memory(x, targets)
    ce_hard = F.cross_entropy(x @ memory.hard_bank.t() / memory.temp, targets)
    ce_mean = F.cross_entropy(x @ memory.centroid_bank.t() / memory.temp, targets)
    total = sum(terms.values())
    torch.testing.assert_close(total, hw * (ce_hard + (1 - hw) * ce_mean))
    torch.testing.assert_close(terms["loss_hard"], hw * ce_hard)
    torch.testing.assert_close(terms["loss_centroid"], hw * (1 - hw) * ce_mean)
    assert abs(float(total - (hw * ce_hard + (1 - hw) * ce_mean))) > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_label_smoothing_matches_smoothed_targets(mode):
    eps = 0.1
    smooth, plain = build(mode, label_smooth=eps), build(mode)
    x, targets = batch(1)
    got = sum(smooth(x, targets).values())
    expected = reference_loss(mode, banks_of(smooth), x, targets, temp=smooth.temp, label_smooth=eps)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    assert abs(float(got - sum(plain(x, targets).values()))) > 1e-3
    logits = torch.randn(5, 4, dtype=torch.float64)
    t = torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(smoothed_cross_entropy(logits, t, eps), F.cross_entropy(logits, t, label_smoothing=eps))


def test_cmhard_picks_least_similar_sample_and_first_on_ties():
    memory = CMhard(2, 3, momentum=0.5, dtype=torch.float64)
    memory.bank.copy_(torch.eye(3, dtype=torch.float64)[:2])
    s = 0.6
    x = torch.tensor([[0.0, 1, 0], [0, 0, 1], [s, 0.8, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.float64)
    targets = torch.tensor([0, 0, 0, 1, 1])
    memory.update(x, targets)
    # cluster 0: sims to e0 are 0, 0, 0.6 -> tie between samples 0 and 1, the first wins
    torch.testing.assert_close(memory.bank[0], F.normalize(0.5 * torch.eye(3, dtype=torch.float64)[0] + 0.5 * x[0], dim=0))
    # cluster 1: sims to e1 are 0 (sample 3) and 0 (sample 4): first wins again
    torch.testing.assert_close(memory.bank[1], F.normalize(0.5 * torch.eye(3, dtype=torch.float64)[1] + 0.5 * x[3], dim=0))


@pytest.mark.parametrize("mode", ["CMhard", "CMhybrid"])
def test_hard_update_follows_the_similarities_it_is_given(mode):
    """The training step hands the forward's own-cluster logits to the update; they must be the ones used."""
    x, targets = batch(1)
    computed, given = build(mode), build(mode)
    computed.update(x, targets)
    own_rows = given.hard_bank.index_select(0, targets)
    given.update(x, targets, hard_sims=(x * own_rows).sum(1))
    assert_banks_equal(given, banks_of(computed))
    # reversed similarities make each cluster's *most* similar sample the hardest one
    reversed_sims, fresh = build(mode), build(mode)
    reversed_sims.update(x, targets, hard_sims=-(x * own_rows).sum(1))
    fresh.update(x, targets)
    present = torch.unique(targets)
    assert not torch.allclose(reversed_sims.hard_bank[present], fresh.hard_bank[present])


@pytest.mark.parametrize("cpu_groups", [False, True], ids=["fixed-shapes", "numpy-from-groups"])
def test_instance_slots_match_a_batch_order_count(cpu_groups):
    g = torch.Generator().manual_seed(3)
    for num_instances, size in ((1, 40), (2, 40), (4, 40), (4, 12), (64, 40)):
        targets = torch.randint(0, 5, (size,), generator=g)
        slot, source = batch_instance_slots(targets, num_instances, batch_groups(targets) if cpu_groups else None)
        if source is None:  # no cluster past K: every sample writes its own feature
            assert cpu_groups and int(torch.bincount(targets).max()) <= num_instances
            source = torch.arange(size)
        seen = {}
        for i, c in enumerate(targets.tolist()):
            rank = seen.setdefault(c, [])
            rank.append(i)
            k = len(rank) - 1
            assert int(slot[i]) == min(k, num_instances - 1)
            kth = rank[num_instances - 1] if k >= num_instances else i
            assert int(source[i]) == kth, (num_instances, i)


@pytest.mark.parametrize("overflow", [True, False])
def test_v2_slot_overwrite_rules(overflow):
    memory = build("CMhybrid_v2")
    old = memory.instance_bank.clone()
    old_centroids = memory.centroid_bank.clone()
    x, targets = batch(0)
    if not overflow:  # a P x K batch: clusters 0..4, K samples each, shuffled
        targets = torch.arange(5).repeat_interleave(K)[torch.randperm(5 * K, generator=torch.Generator().manual_seed(0))]
        x = x[: len(targets)]
    memory.update(x, targets)
    slots = memory.instance_bank
    for c in range(C):
        members = (targets == c).nonzero().flatten().tolist()
        for k in range(K):
            if k < len(members):
                assert torch.equal(slots[k, c], x[members[k]]), (c, k)  # first K samples, in batch order
            else:
                assert torch.equal(slots[k, c], old[k, c]), (c, k)  # slots past the count untouched
    assert ((targets == 0).sum() > K) == overflow  # cluster 0 overflowed: its extra samples were ignored
    for c in (5, 6):  # absent clusters: bit-for-bit unchanged
        assert torch.equal(slots[:, c], old[:, c])
        assert torch.equal(memory.centroid_bank[c], old_centroids[c])


def test_v2_samples_past_k_are_ignored_even_when_many():
    memory = CMhybrid_v2(3, 4, num_instances=2, dtype=torch.float64)
    targets = torch.tensor([1] * 20 + [2])
    x = F.normalize(torch.randn(21, 4, dtype=torch.float64), dim=1)
    memory.update(x, targets)
    assert torch.equal(memory.instance_bank[0, 1], x[0]) and torch.equal(memory.instance_bank[1, 1], x[1])
    assert torch.equal(memory.instance_bank[0, 2], x[20])
    assert torch.equal(memory.instance_bank[1, 2], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(memory.instance_bank[:, 0], torch.zeros(2, 4, dtype=torch.float64))


def test_v2_instance_logits_take_hardest_positive_and_negative():
    memory = CMhybrid_v2(2, 2, num_instances=2, hard_weight=0.0, temp=1.0, dtype=torch.float64)
    e0, e1 = torch.eye(2, dtype=torch.float64)
    a = F.normalize(torch.tensor([1.0, 1.0], dtype=torch.float64), dim=0)
    memory.bank.copy_(torch.stack([e0, e1, e0, a, a, e1]))  # slots: cluster0 {e0, a}, cluster1 {a, e1}
    x, targets = e0.unsqueeze(0), torch.tensor([0])
    # own cluster 0: min(1, 0.707); other cluster 1: max(0.707, 0) -> both 0.707, CE = log 2
    loss = memory(x, targets)["loss_instance"]
    torch.testing.assert_close(loss, torch.log(torch.tensor(2.0, dtype=torch.float64)))


@pytest.mark.parametrize("mode", MODES)
def test_banks_stay_unit_norm_and_float32_with_half_inputs(mode):
    feats, labels = clustered_features(dtype=torch.float32)
    memory = build_memory(make_cfg(mode), feats, labels)
    assert memory.bank.dtype == torch.float32
    before = memory.bank.clone()
    for s in range(4):
        x, targets = batch(s, dtype=torch.float32)
        xh = x.to(torch.bfloat16).requires_grad_()
        sum(memory(xh, targets).values()).backward()
        assert xh.grad.dtype == torch.bfloat16
    assert memory.bank.dtype == torch.float32 and not torch.equal(memory.bank, before)
    norms = memory.bank.norm(dim=1)
    # v2 slots hold the (bf16-rounded) features as given; momentum-updated rows are renormalised in float32
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-2 if mode == "CMhybrid_v2" else 1e-6, rtol=0)


# ---------------------------------------------------------------------------- construction

@pytest.mark.parametrize("mode", MODES)
def test_banks_start_at_cluster_means(mode):
    feats, labels = clustered_features()
    memory = build(mode)
    centres = torch.stack([F.normalize(feats[labels == c].mean(0), dim=0) for c in range(C)])
    for name, bank in banks_of(memory).items():
        if name != "instances":
            torch.testing.assert_close(bank, centres)
    assert memory.num_clusters == C


def test_v2_slots_are_seeded_member_features():
    feats, labels = clustered_features()
    cfg = make_cfg("CMhybrid_v2")
    a = build_memory(cfg, feats, labels, generator=torch.Generator().manual_seed(5)).instance_bank
    b = build_memory(cfg, feats, labels, generator=torch.Generator().manual_seed(5)).instance_bank
    other = build_memory(cfg, feats, labels, generator=torch.Generator().manual_seed(6)).instance_bank
    assert a.shape == (K, C, D)
    assert torch.equal(a, b) and not torch.equal(a, other)
    for c in range(C):
        members = feats[labels == c]
        for k in range(K):
            assert (members - a[k, c]).abs().sum(1).min() < 1e-12, (k, c)


def test_v2_small_clusters_sample_with_replacement():
    feats = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    memory = build_memory(make_cfg("CMhybrid_v2"), feats, np.array([0, 1, 1]),
                          generator=torch.Generator().manual_seed(0))
    unit = F.normalize(feats, dim=1)
    torch.testing.assert_close(memory.instance_bank[:, 0], unit[0].expand(K, 4))  # one member fills K slots
    picks = [int((unit - s).abs().sum(1).argmin()) for s in memory.instance_bank[:, 1]]
    assert set(picks) <= {1, 2}
    torch.testing.assert_close(memory.instance_bank[:, 1], unit[picks])


def test_construction_errors():
    feats, labels = clustered_features()
    with pytest.raises(KeyError) as err:
        build_memory(make_cfg("CMnope"), feats, labels)
    for name in MODES:
        assert name in str(err.value)
    assert set(MODES) <= set(MEMORY_REGISTRY.names())  # projects may register more (projects/hard_mining_example)
    with pytest.raises(ValueError, match="no member"):
        build_memory(make_cfg("CM"), feats[:2], np.array([0, 2]))
    with pytest.raises(ValueError, match="all labels are -1"):
        build_memory(make_cfg("CM"), feats[:2], np.array([-1, -1]))
    with pytest.raises(ValueError, match="labels for"):
        build_memory(make_cfg("CM"), feats, labels[:-1])
    with pytest.raises(ValueError, match="HARD_WEIGHT"):
        CMhybrid(2, 3, hard_weight=1.5)
    with pytest.raises(ValueError, match="TEMP"):
        build_memory(make_cfg("CM", temp=0.0), feats, labels)


@pytest.mark.parametrize("mode", MODES)
def test_empty_batch_changes_nothing(mode):
    memory = build(mode)
    before = memory.bank.clone()
    memory.update(torch.zeros(0, D, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    assert torch.equal(memory.bank, before)


def test_state_dict_round_trip():
    memory = build("CMhybrid_v2")
    x, targets = batch(0)
    memory.update(x, targets)
    fresh = CMhybrid_v2(C, D, num_instances=K, dtype=torch.float64)
    fresh.load_state_dict(memory.state_dict())
    assert torch.equal(fresh.bank, memory.bank)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host synchronisation")
@pytest.mark.parametrize("mode", MODES)
def test_update_does_not_synchronise_with_host(mode):
    feats, labels = clustered_features(dtype=torch.float32)
    cfg = make_cfg(mode)
    cfg.MEMORY.CM_UPDATE = "mean"  # per_sample reads its number of steps once (tests/test_parity.py)
    memory = build_memory(cfg, feats.cuda(), labels)
    # the banks before the update: CMhybrid_v2 fills its instance slots at random, so a second
    # memory built from the same features would start from other slots
    ref = {name: bank.cpu() for name, bank in banks_of(memory).items()}
    x, targets = batch(0, dtype=torch.float32)
    x, targets = x.cuda(), targets.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        memory.update(x, targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    banks = banks_of(memory.cpu())
    reference_update_(ref, x.cpu(), targets.cpu(), momentum=memory.momentum,
                      centroid_update=memory.centroid_update)
    for name in ref:
        torch.testing.assert_close(banks[name], ref[name], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_fixed_shape_update_used_on_gpu_matches_reference(mode):
    """Every memory's whole update through the GPU's fixed-shape groups, run here on CPU tensors."""
    memory = build(mode)
    memory.fixed_shapes = True
    banks = banks_of(memory)
    for seed in range(3):  # cluster 0 has more than K samples in each batch
        x, targets = batch(seed)
        step_both(memory, banks, x, targets, mode)
        assert_banks_equal(memory, banks, atol=1e-12)


def test_fixed_shape_groups_used_on_gpu_give_the_same_update_as_per_cluster_groups():
    """The GPU layout (one group per sample, no torch.unique) is checked here on CPU tensors."""
    from hhcl_plugin.memory import batch_cluster_means, batch_groups, batch_hardest_features, momentum_update_

    g = torch.Generator().manual_seed(5)
    bank = F.normalize(torch.randn(30, 16, generator=g), dim=1)
    targets = torch.tensor([7, 3, 7, 7, 12, 3, 0, 12, 7, 0, 3, 3])  # unsorted, uneven clusters
    feats = F.normalize(torch.randn(len(targets), 16, generator=g), dim=1)
    banks = []
    for fixed in (False, True):
        groups = batch_groups(targets, fixed_shapes=fixed)
        assert groups.clusters.shape[0] == (len(targets) if fixed else 4)
        new_bank = bank.clone()
        hardest = batch_hardest_features(feats, groups, new_bank)
        means = batch_cluster_means(feats, groups)
        for cluster, row_hard, row_mean in zip(groups.clusters.tolist(), hardest, means):
            members = feats[targets == cluster]
            assert torch.allclose(row_mean, members.mean(0), atol=1e-6)
            assert torch.equal(row_hard, members[(members @ bank[cluster]).argmin()])
        if fixed:  # one row per sample: a cluster's duplicate writes must carry bitwise equal values
            for cluster in set(targets.tolist()):
                members = (targets == cluster).nonzero().squeeze(1)
                assert (means[members] == means[members[0]]).all() and (hardest[members] == hardest[members[0]]).all()
        momentum_update_(new_bank, groups.clusters, means, 0.2)
        banks.append(new_bank)
    # the fixed-shape sums are a matrix product, the per-cluster ones an index_add_: rounding may differ
    torch.testing.assert_close(banks[1], banks[0], atol=1e-6, rtol=0)
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[targets] = False
    assert torch.equal(banks[0][untouched], bank[untouched])
