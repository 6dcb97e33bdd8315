import numpy as np
import pytest

from tf_lottery.core import masks as M


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"a/kernel": rng.normal(size=(40, 30)), "b/kernel": rng.normal(scale=0.1, size=(30, 10)),
            "c/kernel": rng.normal(size=(3, 3, 8, 4))}


def _full(weights):
    return M.Masks.full({k: v.shape for k, v in weights.items()})


def test_layerwise_magnitude_keeps_the_largest_per_layer_to_the_exact_count():
    w = _weights()
    masks = _full(w)
    for k in range(1, 6):
        sparsity = {key: 1 - 0.8 ** k for key in w}
        nxt = M.magnitude(w, masks, sparsity, scope="layer")
        for key, mask in nxt.items():
            assert mask.sum() == M.kept_count(mask.size, 0.8 ** k)
            kept, pruned = np.abs(w[key][mask]), np.abs(w[key][masks[key] & ~mask])
            assert pruned.size == 0 or kept.min() >= pruned.max()
        assert nxt.is_nested_in(masks)
        masks = nxt


def test_magnitude_ranks_only_survivors():
    w = {"a/kernel": np.array([[5.0, 4.0, 3.0, 2.0]])}
    masks = M.Masks({"a/kernel": np.array([[False, True, True, True]])})
    nxt = M.magnitude(w, masks, {"a/kernel": 0.5})
    # two of four kept; the pruned 5.0 stays pruned even though it is the largest
    assert nxt["a/kernel"].tolist() == [[False, True, True, False]]


def test_global_magnitude_uses_one_threshold():
    w = _weights()
    masks = _full(w)
    sparsity = {key: 0.7 for key in w}
    nxt = M.magnitude(w, masks, sparsity, scope="global")
    kept = np.concatenate([np.abs(w[k][nxt[k]]) for k in w])
    pruned = np.concatenate([np.abs(w[k][~nxt[k]]) for k in w])
    assert kept.min() >= pruned.max()
    assert sum(nxt.kept().values()) == sum(M.kept_count(v.size, 0.3) for v in w.values())
    layer_sparsity = nxt.sparsity()
    # b/kernel has weights ten times smaller: one threshold prunes it far more
    assert layer_sparsity["b/kernel"] > 0.95 > 0.7 > layer_sparsity["a/kernel"]


def test_random_pruning_hits_the_target_and_is_seeded():
    w = _weights()
    masks = _full(w)
    sparsity = {key: 0.6 for key in w}
    first = M.random_pruning(masks, sparsity, seed=3)
    assert first.kept() == {k: M.kept_count(v.size, 0.4) for k, v in w.items()}
    again = M.random_pruning(masks, sparsity, seed=3)
    other = M.random_pruning(masks, sparsity, seed=4)
    assert all(np.array_equal(first[k], again[k]) for k in w)
    assert not all(np.array_equal(first[k], other[k]) for k in w)
    nested = M.random_pruning(first, {key: 0.8 for key in w}, seed=5)
    assert nested.is_nested_in(first)


@pytest.mark.parametrize("block_size", [4, 16])
def test_block_magnitude_prunes_whole_blocks_along_the_input_axis(block_size):
    rng = np.random.default_rng(1)
    w = {"fc/kernel": rng.normal(size=(64, 12)), "odd/kernel": rng.normal(size=(30, 5))}
    masks = _full(w)
    for k in (1, 2, 3):
        sparsity = {key: 1 - 0.5 ** k for key in w}
        nxt = M.block_magnitude(w, masks, sparsity, block_size)
        blocks = nxt["fc/kernel"].reshape(64 // block_size, block_size, 12)
        # every block (block_size consecutive inputs of one output) is all kept or all pruned
        assert np.all(blocks.all(axis=1) == blocks.any(axis=1))
        n_blocks = (64 // block_size) * 12
        assert blocks.all(axis=1).sum() == M.kept_count(n_blocks, 0.5 ** k)
        assert nxt.is_nested_in(masks)
        masks = nxt
    # a ragged last block (30 rows, blocks of 4 or 16) is still pruned as one unit
    ragged = masks["odd/kernel"][(30 // block_size) * block_size:]
    assert np.all(ragged.all(axis=0) == ragged.any(axis=0))


def test_block_scores_are_summed_magnitudes():
    w = {"fc/kernel": np.array([[1.0, 0.1], [1.0, 0.1], [0.1, 3.0], [0.1, 0.0]])}
    nxt = M.block_magnitude(w, _full(w), {"fc/kernel": 0.5}, block_size=2)
    # blocks (rows 0-1, col 0)=2.0 and (rows 2-3, col 1)=3.0 win over 0.2 and 0.2
    assert nxt["fc/kernel"].tolist() == [[True, False], [True, False], [False, True], [False, True]]


def test_block_needs_a_kernel():
    with pytest.raises(ValueError, match="rank >= 2"):
        M.block_magnitude({"b": np.ones(8)}, M.Masks.full({"b": (8,)}), {"b": 0.5}, 4)


def test_next_masks_dispatches_and_validates():
    w = _weights()
    masks = _full(w)
    sparsity = {key: 0.5 for key in w}
    assert M.next_masks(w, masks, sparsity).kept() == M.magnitude(w, masks, sparsity).kept()
    with pytest.raises(ValueError, match="criterion must be one of"):
        M.next_masks(w, masks, sparsity, criterion="smallest")
    with pytest.raises(ValueError, match="scope must be one of"):
        M.next_masks(w, masks, sparsity, scope="model")
    with pytest.raises(KeyError, match="no target sparsity"):
        M.magnitude(w, masks, {"a/kernel": 0.5})


def test_masks_report_save_and_load(tmp_path):
    masks = M.Masks({"a/kernel": np.array([[1, 0], [0, 0]]), "b/kernel": np.ones((2, 2))})
    assert masks.sparsity() == {"a/kernel": 0.75, "b/kernel": 0.0}
    assert masks.fraction_kept() == 5 / 8
    path = tmp_path / "round_1" / "masks.npz"
    masks.save(path)
    loaded = M.Masks.load(path)
    assert set(loaded) == set(masks)
    assert all(np.array_equal(loaded[k], masks[k]) and loaded[k].dtype == bool for k in masks)
    assert [p.name for p in path.parent.iterdir()] == ["masks.npz"]  # no temporary left
    with pytest.raises(ValueError):
        masks["a/kernel"][0, 0] = False  # masks are read-only


def _reference_top(scores, alive, count):
    """NumPy reference: the ``count`` highest scores among alive entries (ties: lower index)."""
    flat = np.where(alive.ravel(), scores.ravel(), -np.inf)
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:count]] = True
    return keep.reshape(scores.shape)


def test_magnitude_increase_keeps_the_weights_that_grew_most():
    trained, initial = _weights(1), _weights(2)
    masks = M.Masks({k: np.random.default_rng(3).random(v.shape) < 0.8 for k, v in
                     trained.items()})
    sparsity = {k: 0.5 for k in trained}
    nxt = M.next_masks(trained, masks, sparsity, criterion="magnitude_increase",
                       initial=initial)
    for key in trained:
        growth = np.abs(trained[key]) - np.abs(initial[key])
        expected = _reference_top(growth, masks[key], M.kept_count(growth.size, 0.5))
        np.testing.assert_array_equal(nxt[key], expected)
        assert not np.any(nxt[key] & ~masks[key])
    # it is not magnitude: a large weight that shrank in training goes first
    assert any(not np.array_equal(nxt[k], M.magnitude(trained, masks, sparsity)[k])
               for k in trained)


def test_every_criterion_takes_blocks_and_global_scope():
    trained, initial = _weights(4), _weights(5)
    masks = _full(trained)
    sparsity = {k: 0.75 for k in trained}
    for name in M.CRITERIA:
        nxt = M.next_masks(trained, masks, sparsity, criterion=name, initial=initial,
                           block_size=4, scope="global", seed=1)
        kept = sum(int(m.sum()) for m in nxt.values())
        target = sum(M.kept_count(m.size, 0.25) for m in masks.values())
        assert abs(kept - target) <= 4 * len(masks), name
        for key, mask in nxt.items():  # whole blocks of 4 along axis -2
            rows = np.moveaxis(mask, -2, 0)
            whole = rows[: rows.shape[0] // 4 * 4].reshape((-1, 4) + rows.shape[1:])
            assert np.all(whole.all(axis=1) == whole.any(axis=1)), (name, key)
