from collections import Counter

import pytest

from csetgraph.data.samplers import CrossModalityIdentitySampler

# 10 identities; visible images 0..59 (6 each), infrared 0..29 (3 each; fewer than K=4).
VIS = [i // 6 for i in range(60)]
IR = [i // 3 for i in range(30)]


def make(**kw):
    kw.setdefault("num_ids_per_batch", 3)
    kw.setdefault("num_instances", 4)
    return CrossModalityIdentitySampler(VIS, IR, **kw)


def test_batches_are_p_ids_by_k_aligned_pairs():
    sampler = make(seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-60 // 12)
    for batch in batches:
        assert len(batch) == 12
        pids = [VIS[v] for v, _ in batch]
        assert [IR[i] for _, i in batch] == pids  # pair b shares its identity
        assert sorted(Counter(pids).values()) == [4, 4, 4]  # P=3 ids x K=4
        for pid in set(pids):  # K visible images without replacement when there are enough
            vis = [v for v, _ in batch if VIS[v] == pid]
            assert len(set(vis)) == 4


def test_same_seed_and_epoch_reproduce_and_epochs_differ():
    a, b = make(seed=5), make(seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(make(seed=6)) != list(make(seed=5))


def test_distributed_shares_are_disjoint_and_make_the_global_batch():
    kw = dict(seed=2, batches_per_epoch=4)
    r0 = list(make(num_replicas=2, rank=0, **kw))
    r1 = list(make(num_replicas=2, rank=1, **kw))
    for b0, b1 in zip(r0, r1, strict=True):
        assert not {VIS[v] for v, _ in b0} & {VIS[v] for v, _ in b1}
    # Together the two processes draw exactly what one process with 2P identities draws.
    single = list(make(num_ids_per_batch=6, **kw))
    assert [b0 + b1 for b0, b1 in zip(r0, r1, strict=True)] == single


def test_identities_missing_a_modality_are_never_drawn():
    vis = VIS + [99] * 5  # identity 99 has no infrared image
    sampler = CrossModalityIdentitySampler(vis, IR, 2, 2, seed=0)
    assert 99 not in {vis[v] for batch in sampler for v, _ in batch}


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than num_ids_per_batch"):
        make(num_ids_per_batch=11)
