"""Channel tickets' selection: whole channels, their members masked, refill (no Keras)."""

import numpy as np
import pytest

from tf_lottery.core.channels import ChannelGroup, ChannelPlan
from tf_lottery.core.masks import Masks, keep_highest, next_masks, random_pruning
from tf_lottery.core.settings import ImpSettings
from tf_lottery.foundations.errors import SettingError

# conv (3x3, 2 in, 4 out) -> BN -> depthwise (3x3) ; dense (4 in, 3 out) on its own
CONV = ChannelGroup(4, ("conv/kernel",), (("conv/kernel", -1), ("conv/bias", -1),
                                          ("bn/gamma", -1), ("bn/beta", -1),
                                          ("depthwise/depthwise_kernel", -2)))
DENSE = ChannelGroup(3, ("dense/kernel",), (("dense/kernel", -1),))
PLAN = ChannelPlan((CONV, DENSE), {"output/kernel": "its channels are the model's output"})
SHAPES = {"conv/kernel": (3, 3, 2, 4), "conv/bias": (4,), "bn/gamma": (4,), "bn/beta": (4,),
          "depthwise/depthwise_kernel": (3, 3, 4, 1), "dense/kernel": (4, 3)}


def _weights(conv_scale, dense_scale):
    rng = np.random.default_rng(0)
    weights = {path: rng.uniform(0.5, 1.0, shape) for path, shape in SHAPES.items()}
    weights["conv/kernel"] = weights["conv/kernel"] * np.asarray(conv_scale)
    weights["dense/kernel"] = weights["dense/kernel"] * np.asarray(dense_scale)
    return weights


def _kept_channels(mask, axis=-1):
    moved = np.moveaxis(mask, axis, -1)
    return moved.reshape(-1, moved.shape[-1]).all(axis=0), \
        moved.reshape(-1, moved.shape[-1]).any(axis=0)


def _sparsity(value):
    return dict.fromkeys(SHAPES, value)


def test_channels_are_kept_by_filter_norm_and_every_member_follows():
    weights = _weights([1.0, 0.1, 3.0, 0.2], [1.0, 2.0, 0.1])
    masks = next_masks(weights, Masks.full(SHAPES), _sparsity(0.5), channels=PLAN)
    for path, axis in CONV.members:
        whole, anywhere = _kept_channels(masks[path], axis)
        assert whole.tolist() == anywhere.tolist() == [True, False, True, False], path
    whole, anywhere = _kept_channels(masks["dense/kernel"])
    assert whole.tolist() == anywhere.tolist() == [True, True, False]  # 3 * 0.5 -> 2 kept


def test_rounds_stay_nested_and_pruned_channels_never_return():
    weights = _weights([1.0, 0.1, 3.0, 0.2], [1.0, 2.0, 0.1])
    first = next_masks(weights, Masks.full(SHAPES), _sparsity(0.5), channels=PLAN)
    regrown = _weights([0.1, 9.0, 1.0, 9.0], [1.0, 2.0, 0.1])  # pruned channels score high
    second = next_masks(regrown, first, _sparsity(0.75), channels=PLAN)
    assert second.is_nested_in(first)
    assert _kept_channels(second["conv/kernel"])[0].tolist() == [False, False, True, False]


def test_global_scope_compares_mean_scores_per_entry():
    plan = ChannelPlan((CONV, DENSE))
    weights = _weights([0.1, 0.1, 0.1, 0.1], [5.0, 5.0, 5.0])  # every dense channel is larger
    masks = keep_highest({p: np.abs(w) for p, w in weights.items()}, Masks.full(SHAPES),
                         {"conv/kernel": 0.5, "dense/kernel": 0.5, **_sparsity(0.5)},
                         scope="global", channels=plan)
    assert _kept_channels(masks["conv/kernel"])[1].sum() == 1   # 2 + 2 kept of 7 in all
    assert _kept_channels(masks["dense/kernel"])[1].sum() == 3


def test_refill_keeps_the_channels_with_most_surviving_weights():
    # channel 0: one huge weight (the largest L1 norm) among tiny ones; channel 1: many
    # moderate weights, most of which survive unstructured pruning
    group = ChannelGroup(2, ("k",), (("k", -1),))
    kernel = np.full((10, 2), 0.01)
    kernel[0, 0] = 100.0
    kernel[:, 1] = np.linspace(1.0, 2.0, 10)
    plain = next_masks({"k": kernel}, Masks.full({"k": (10, 2)}), {"k": 0.5},
                       channels=ChannelPlan((group,)))
    refilled = next_masks({"k": kernel}, Masks.full({"k": (10, 2)}), {"k": 0.5},
                          channels=ChannelPlan((group,)), refill=True)
    assert plain["k"][:, 0].all() and not plain["k"][:, 1].any()        # by norm
    assert refilled["k"][:, 1].all() and not refilled["k"][:, 0].any()  # by survivors


def test_random_channel_pruning_keeps_the_same_number_of_channels():
    ticket = next_masks(_weights([1, 2, 3, 4], [1, 2, 3]), Masks.full(SHAPES),
                        _sparsity(0.5), channels=PLAN)
    for seed in range(5):
        control = random_pruning(Masks.full(SHAPES), ticket.sparsity(), seed=seed,
                                 channels=PLAN)
        assert control.kept() == ticket.kept()
        whole, anywhere = _kept_channels(control["conv/kernel"])
        assert whole.tolist() == anywhere.tolist()


def test_plan_round_trips_through_its_config():
    assert ChannelPlan.from_config(PLAN.to_config()) == PLAN


def test_channel_settings_refuse_what_they_cannot_honour():
    assert ImpSettings(granularity="channel", refill=True).structure("plan")["channels"] \
        == "plan"
    assert ImpSettings().structure("plan")["channels"] is None
    for bad, words in [({"granularity": "filter"}, "granularity must be one of"),
                       ({"refill": True}, "needs granularity"),
                       ({"granularity": "channel", "block_size": 4}, "choose one"),
                       ({"granularity": "channel", "prunable": ["*/bias"]}, "prunable")]:
        with pytest.raises(SettingError, match=words):
            ImpSettings(**bad)
    with pytest.raises(SettingError, match="choose one"):
        keep_highest({"k": np.ones((4, 2))}, Masks.full({"k": (4, 2)}), {"k": 0.5},
                     block_size=4, channels=ChannelPlan((ChannelGroup(2, ("k",),
                                                                      (("k", -1),)),)))


def test_early_bird_draws_channel_masks_as_the_round_end_does():
    from tf_lottery.core.early_bird import EarlyBird

    weights = _weights([1.0, 0.1, 3.0, 0.2], [1.0, 2.0, 0.1])
    settings = ImpSettings(granularity="channel", refill=True)
    bird = EarlyBird(0.1, 2, _sparsity(0.5), structure=settings.structure(PLAN),
                     refill=settings.refill)
    drawn = bird.draw(weights, Masks.full(SHAPES))
    assert drawn.kept() == next_masks(weights, Masks.full(SHAPES), _sparsity(0.5),
                                      channels=PLAN, refill=True).kept()
    assert _kept_channels(drawn["conv/kernel"])[0].sum() == 2
