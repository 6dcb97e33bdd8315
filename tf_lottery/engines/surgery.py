"""Shrink a channel ticket: a smaller network without its pruned channels, the same outputs.

A channel of a group (:mod:`tf_lottery.engines.channel_graph`) whose member weights are
all exactly 0 at it (as channel masks leave them) outputs exact zeros wherever it goes, so
removing it, with the input rows of every layer it feeds, changes no output. The smaller
network is built from the model's config with fewer ``filters``/``units`` and gets the
model's weights with the removed channels sliced out (BatchNormalization's moving
statistics included); every group keeps at least one channel.

Example::

    small = shrink(plain_ticket)         # a plain model of the same Keras
    shrink_summary(plain_ticket, small)  # {'conv1': (32, 12), 'conv2': (64, 20), ...}
"""

from __future__ import annotations

import copy

import numpy as np

from tf_lottery.engines.channel_graph import trace_channels
from tf_lottery.engines.lottery_model import LotteryModel
from tf_lottery.engines.registry import engine_for
from tf_lottery.foundations.errors import SettingTypeError


def shrink(model):
    """A copy of the plain Sequential or functional ``model`` (tf_keras or Keras 3)
    without the channels whose member weights are all exactly 0, computing the same outputs
    (not compiled: compile it to train or evaluate it).

    Example::

        small = shrink(model)
        small.count_params() < model.count_params()
    """
    if isinstance(model, LotteryModel):
        raise SettingTypeError("shrink takes a plain model; strip the LotteryModel's masking "
                               "first (tfl.strip_pruning), or call tfl.shrink, which does")
    engine = engine_for(model)
    trace = trace_channels(model)
    values = {path: np.asarray(variable.numpy())
              for path, variable in engine.model_weights(model).items()}
    removed, widths = {}, {}  # path -> {axis: indices removed}; layer name -> (key, width)
    for traced in trace.groups:
        pruned = _pruned_channels(traced.group, values)
        for path, axis in (*traced.group.members, *traced.carried):
            _remove(removed, values, path, axis, pruned)
        for rows in traced.inputs:
            _remove(removed, values, rows.path, rows.axis, rows.indices(pruned))
        for name, key in traced.widths:
            widths[name] = (key, traced.group.size - len(pruned))
    smaller = type(model).from_config(_resized(model.get_config(), widths))
    for path, variable in engine.model_weights(smaller).items():
        value = values[path]
        for axis, indices in removed.get(path, {}).items():
            value = np.delete(value, sorted(indices), axis=axis)
        variable.assign(value)
    return smaller


def shrink_summary(before, after) -> dict:
    """Layer name -> (channels before, channels after) of every layer of ``before`` with
    ``filters`` or ``units`` (convolutions, Dense), for the export report.

    Example::

        for name, (old, new) in shrink_summary(model, shrink(model)).items():
            print(f"{name}: {old} -> {new} channels")
    """
    summary = {}
    for layer in before.layers:
        config = layer.get_config()
        for key in ("filters", "units"):
            if key in config:
                summary[layer.name] = (config[key], after.get_layer(layer.name).get_config()[key])
    return summary


def _pruned_channels(group, values) -> list:
    """The channels of ``group`` at which every member weight is exactly 0 (all but the
    first when all are)."""
    zero = np.ones(group.size, bool)
    for path, axis in group.members:
        zero &= ~np.moveaxis(values[path], axis, -1).reshape(-1, group.size).any(axis=0)
    pruned = np.flatnonzero(zero).tolist()
    return pruned[1:] if len(pruned) == group.size else pruned


def _remove(removed: dict, values: dict, path: str, axis: int, indices) -> None:
    axis %= values[path].ndim
    removed.setdefault(path, {}).setdefault(axis, set()).update(indices)


def _resized(config: dict, widths: dict) -> dict:
    """A model config with each named layer's width (``filters``/``units``) set, and no
    layer's build shape (the layers are built again from their new inputs)."""
    config = copy.deepcopy(config)
    for layer in config["layers"]:
        layer.pop("build_config", None)
        if layer["config"]["name"] in widths:
            key, width = widths[layer["config"]["name"]]
            layer["config"][key] = width
    return config
