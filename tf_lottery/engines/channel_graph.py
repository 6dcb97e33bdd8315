"""The channel groups of a Keras model, traced through its functional graph.

A layer's output channels (a convolution's filters, a Dense layer's units) start a group;
the layers they flow through unchanged (BatchNormalization, a depthwise convolution,
activations that are 0 at 0, pooling, padding, dropout) add their per-channel weights to
it; an Add (Subtract, Multiply, Maximum, Minimum, Average) joins the groups of its inputs
into one; a Concatenate lays its inputs' groups side by side. A pruned channel (every
member weight 0 at it) then outputs exact zeros wherever it goes, so
:mod:`tf_lottery.engines.surgery` can remove it, with the input rows of every layer it
feeds. A group whose channels reach a model output or go into a layer whose channel
layout is not followed (Reshape, LayerNormalization, a custom layer, an activation that is
not 0 at 0, ...) is left dense, with the reason.

Example::

    plan = channel_plan(model)
    plan.groups[0].scored     # ('conv1/kernel',)
    plan.left_dense           # {'output/kernel': "its channels reach the model's output ..."}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple, Optional

import numpy as np

from tf_lottery.core.channels import ChannelGroup, ChannelPlan
from tf_lottery.engines.registry import engine_for
from tf_lottery.foundations.errors import SettingError, SettingTypeError


@dataclasses.dataclass(frozen=True)
class InputRows:
    """Where a group's channels sit along the input axis of a weight that takes them:
    channel ``c`` is index ``(s * total + offset + c) * repeat + m`` for every position
    ``s < spatial`` a Flatten spread the channels over and every copy ``m < repeat`` (a
    separable convolution's depth multiplier)."""

    path: str
    axis: int
    offset: int  # the group's first channel among the weight's input channels
    total: int   # how many input channels the weight takes (every group's)
    spatial: int = 1
    repeat: int = 1

    def indices(self, channels) -> list:
        return [(s * self.total + self.offset + c) * self.repeat + m
                for s in range(self.spatial) for c in channels for m in range(self.repeat)]


@dataclasses.dataclass(frozen=True)
class TracedGroup:
    """A channel group with everything its channels are sliced out of: ``group`` (what
    masks see), ``carried`` ((path, axis) sliced with the channels but not masked:
    BatchNormalization's moving statistics), ``inputs`` (the :class:`InputRows` of every
    weight taking the channels) and ``widths`` ((layer name, config key) of every layer
    whose ``filters``/``units`` is the group's size)."""

    group: ChannelGroup
    carried: tuple = ()
    inputs: tuple = ()
    widths: tuple = ()


@dataclasses.dataclass(frozen=True)
class ChannelTrace:
    """The prunable groups of a model, traced, and the kernels left dense with the reason."""

    groups: tuple
    left_dense: Mapping

    @property
    def plan(self) -> ChannelPlan:
        return ChannelPlan(tuple(traced.group for traced in self.groups), self.left_dense)


def channel_plan(model, groups=None) -> ChannelPlan:
    """The channel groups of a Sequential or functional model (tf_keras or Keras 3), in
    the order of their first layer in ``model.layers``.

    A subclassed model has no graph to trace: name its groups (``groups``, ChannelGroup
    objects; they are checked against the model's weights and returned as the plan).

    Example::

        plan = channel_plan(model)
        [group.scored for group in plan.groups]   # [('conv1/kernel',), ('conv2/kernel',)]
    """
    if groups is not None:
        return ChannelPlan(_checked_groups(model, groups))
    return trace_channels(model).plan


def trace_channels(model) -> ChannelTrace:
    """The groups of ``model`` with the weights each one is sliced out of (what
    :func:`channel_plan` and the surgery read)."""
    return _Tracer(engine_for(model), model).trace()


def functional_graph(model) -> tuple:
    """``(inputs, outputs)`` of a Sequential or functional model; a SettingError naming
    the fix for a model without a graph (a subclassed model)."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise SettingError(
            f"{type(model).__name__} {model.name!r} has no functional graph (a subclassed "
            "model, or one not built on an Input), so its channels cannot be traced through "
            "its Python code. Build it with keras.Sequential or keras.Model(inputs, "
            "outputs), or name its channel groups: prune_with_rewinding(model, schedule, "
            "granularity=\"channel\", channel_groups=[tfl.ChannelGroup(size, scored, "
            "members), ...])")
    return list(inputs), list(outputs)


def _checked_groups(model, groups) -> tuple:
    """``groups`` as given, once every member is a weight of ``model`` with ``size``
    channels along its axis, every scored kernel a member, and no channel axis in two
    groups."""
    weights = engine_for(model).model_weights(model)
    seen = set()
    for group in groups:
        if not isinstance(group, ChannelGroup):
            raise SettingTypeError(f"groups takes ChannelGroup objects, got "
                                   f"{type(group).__name__} {group!r}")
        for path, axis in group.members:
            if path not in weights:
                raise SettingError(f"the channel group member {path!r} is not a weight of the "
                                   f"model; its weights are {', '.join(weights)}")
            shape = tuple(weights[path].shape)
            if not -len(shape) <= axis < len(shape) or shape[axis] != group.size:
                raise SettingError(
                    f"the channel group member {path!r} (shape {shape}) has no axis {axis} of "
                    f"{group.size} channels; give the axis holding the group's channels")
            key = (path, axis % len(shape))
            if key in seen:
                raise SettingError(f"axis {axis} of {path!r} is a member of two channel "
                                   "groups; a weight's channels belong to one group")
            seen.add(key)
        missing = set(group.scored) - set(group.paths())
        if missing or not group.scored:
            raise SettingError(f"a channel group's scored kernels must be among its members; "
                               f"{sorted(missing) or 'none'} are not (members: "
                               f"{group.paths()})")
    return tuple(groups)


class _Segment(NamedTuple):
    """Consecutive channels of a tensor: those of one group, or untraced ones (None)."""

    group: Optional[int]
    size: int


class _Channels(NamedTuple):
    """The channels of a tensor (its last axis), segment by segment; ``spatial``: how many
    positions a Flatten spread them over (None before a Flatten)."""

    segments: tuple
    spatial: Optional[int] = None

    def groups(self) -> list:
        return [segment.group for segment in self.segments if segment.group is not None]


class _Group:
    """A group being traced (union-find node: merged groups live in their root)."""

    def __init__(self, size: int):
        self.size, self.reason = size, None
        self.scored, self.members, self.carried, self.inputs, self.widths = [], [], [], [], []

    def absorb(self, other: _Group) -> None:
        for name in ("scored", "members", "carried", "inputs", "widths"):
            getattr(self, name).extend(getattr(other, name))
        self.reason = self.reason or other.reason


class _Kinds:
    """The layer classes of one Keras, by what they do to channels."""

    def __init__(self, keras):
        def classes(*names):
            return tuple(getattr(keras.layers, name) for name in names
                         if hasattr(keras.layers, name))

        dims = ("1D", "2D", "3D")
        self.input = classes("InputLayer")
        self.model = (keras.Model,)
        self.transpose = classes(*(f"Conv{d}Transpose" for d in dims))
        self.separable = classes("SeparableConv1D", "SeparableConv2D")
        self.depthwise = classes("DepthwiseConv1D", "DepthwiseConv2D")
        self.conv = classes(*(f"Conv{d}" for d in dims))
        self.dense = classes("Dense")
        self.batch_norm = classes("BatchNormalization")
        self.activation = classes("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax",
                                  "ThresholdedReLU")
        self.elementwise = classes("Dropout", *(f"SpatialDropout{d}" for d in dims),
                                   "Identity")
        self.spatial = classes(*(f"{kind}{d}" for d in dims for kind in (
            "MaxPooling", "AveragePooling", "GlobalMaxPooling", "GlobalAveragePooling",
            "ZeroPadding", "Cropping", "UpSampling")))
        self.join = classes("Add", "Subtract", "Maximum", "Minimum", "Average", "Multiply")
        self.concatenate = classes("Concatenate")
        self.flatten = classes("Flatten")


def _value_at_zero(function) -> float:
    """The largest ``|f(0)|`` of an activation (a function or a layer), computed."""
    return float(np.max(np.abs(np.asarray(function(np.zeros((1, 4), np.float32))))))


def _activation_name(function) -> str:
    return getattr(function, "__name__", type(function).__name__)


def _kind(layer) -> str:
    return f"{layer.name!r} ({type(layer).__name__})"


class _Tracer:
    """One walk over a model's functional graph, node by node in graph order."""

    def __init__(self, engine, model):
        self.engine, self.model = engine, model
        self.kinds = _Kinds(engine.keras)
        self.groups: list = []  # _Group by id; merged ones point to their root via parent
        self.parent: list = []
        self.states: dict = {}  # id(tensor) -> _Channels, or None where the size is unknown
        self.made_by: dict = {}  # id(tensor) -> the layer that output it
        self.left_dense: dict = {}  # kernels outside every group -> why

    # --- the walk -----------------------------------------------------------------------

    def trace(self) -> ChannelTrace:
        inputs, outputs = functional_graph(self.model)
        for tensor in inputs:
            self.states[id(tensor)] = self._untraced(tensor)
        nodes = self._nodes_in_order(inputs, outputs)
        calls = {}
        for layer, _ in nodes:
            calls[id(layer)] = calls.get(id(layer), 0) + 1
        for layer, node in nodes:
            ins = [self.states.get(id(t)) for t in self.engine.node_inputs(node)]
            outs = self.engine.node_outputs(node)
            for tensor in outs:
                self.made_by[id(tensor)] = layer
            if calls[id(layer)] > 1:
                states = self._opaque(layer, ins, outs, f"its channels go into {_kind(layer)}, "
                                      "a layer called more than once")
            else:
                states = self._visit(layer, node, ins, outs)
            for tensor, state in zip(outs, states):
                self.states[id(tensor)] = state
        for tensor in outputs:
            self._stop(self.states.get(id(tensor)), "its channels reach the model's output "
                       f"through {_kind(self.made_by.get(id(tensor), self.model))}")
        return self._result()

    def _nodes_in_order(self, inputs, outputs) -> list:
        """``(layer, node)`` of every call computing the outputs, in the order of
        ``model.layers``, each after the calls it takes tensors from (calls of the model's
        layers elsewhere, in other models or in a Sequential's earlier builds, left out)."""
        computing, stack = set(), list(outputs)
        while stack:
            layer, index, _ = stack.pop()._keras_history
            node = layer._inbound_nodes[index]
            if id(node) not in computing:
                computing.add(id(node))
                stack.extend(self.engine.node_inputs(node))
        known = {id(t) for t in inputs}
        pending = [(layer, node) for layer in self.model.layers
                   for node in layer._inbound_nodes if id(node) in computing]
        ordered, progress = [], True
        while progress:
            progress = False
            for layer, node in list(pending):
                if all(id(t) in known for t in self.engine.node_inputs(node)):
                    ordered.append((layer, node))
                    pending.remove((layer, node))
                    known.update(id(t) for t in self.engine.node_outputs(node))
                    progress = True
        return ordered

    def _visit(self, layer, node, ins, outs) -> list:
        """The channels of a call's outputs, given its inputs'."""
        k = self.kinds
        state = ins[0] if ins else None
        channels_first = getattr(layer, "data_format", "channels_last") != "channels_last"
        if isinstance(layer, k.input):
            return [self._untraced(t) for t in outs]
        if channels_first:
            return self._opaque(layer, ins, outs, f"its channels go into {_kind(layer)}, whose "
                                "channels are its first axis (data_format='channels_first')")
        if isinstance(layer, k.model):
            return self._opaque(layer, ins, outs, f"its channels go into {_kind(layer)}, a "
                                "nested model, which channel tickets do not descend into")
        if isinstance(layer, k.transpose) or \
                isinstance(layer, k.conv) and not isinstance(layer, k.separable + k.depthwise) \
                and layer.groups != 1:
            return self._opaque(layer, ins, outs, f"its channels go into {_kind(layer)}, whose "
                                "kernel channel layout tf_lottery cannot follow")
        if isinstance(layer, k.separable + k.conv + k.dense) and \
                not isinstance(layer, k.depthwise):
            return [self._produce(layer, state, node)]
        if isinstance(layer, k.depthwise):
            if layer.depth_multiplier != 1:
                return self._opaque(layer, ins, outs, f"its channels go into {_kind(layer)} "
                                    f"with depth_multiplier={layer.depth_multiplier}")
            kernel = layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else \
                layer.kernel  # Keras 3's name
            return [self._pass(layer, state, outs[0], [(kernel, -2)]
                               + ([(layer.bias, -1)] if layer.use_bias else []))]
        if isinstance(layer, k.batch_norm):
            return [self._batch_norm(layer, state, outs[0])]
        if isinstance(layer, k.activation):
            value = _value_at_zero(layer)
            if value:
                name = _activation_name(getattr(layer, "activation", layer))
                return self._opaque(layer, ins, outs, f"its channels go into {_kind(layer)}, "
                                    f"whose {name}(0) = {value:g}: a pruned channel would not "
                                    "stay zero")
            return [state]
        if isinstance(layer, k.elementwise):
            return [state]
        if isinstance(layer, k.spatial):
            return [self._pass(layer, state, outs[0], [])]
        if isinstance(layer, k.join):
            return [self._join(layer, ins, outs[0])]
        if isinstance(layer, k.concatenate):
            return [self._concatenate(layer, ins, outs[0])]
        if isinstance(layer, k.flatten):
            return [self._flatten(layer, state, node, outs[0])]
        return self._opaque(layer, ins, outs, f"its channels go into {_kind(layer)}, whose "
                            "channel layout tf_lottery cannot follow")

    # --- what layers do to channels -----------------------------------------------------

    def _produce(self, layer, state, node) -> _Channels:
        """A convolution or Dense layer: takes its input's channels, starts a group."""
        if isinstance(layer, self.kinds.separable):
            kernel = layer.pointwise_kernel
            taking = [(layer.depthwise_kernel, 1), (layer.pointwise_kernel,
                                                    layer.depth_multiplier)]
        else:
            kernel, taking = layer.kernel, [(layer.kernel, 1)]
        if state is not None and state.spatial is not None and \
                not isinstance(layer, self.kinds.dense):
            self._stop(state, f"its channels go flattened into {_kind(layer)}")
        elif state is not None:
            for variable, repeat in taking:
                self._take(state, self._path(layer, variable), repeat)
        group = self._new_group(int(kernel.shape[-1]))
        group.scored.append(self._path(layer, kernel))
        group.members.append((self._path(layer, kernel), -1))
        if layer.use_bias:
            group.members.append((self._path(layer, layer.bias), -1))
        group.widths.append((layer.name, "units" if isinstance(layer, self.kinds.dense)
                             else "filters"))
        value = _value_at_zero(layer.activation)
        if value:
            group.reason = (f"{_kind(layer)} has activation {_activation_name(layer.activation)}"
                            f", which is {value:g} at 0: a pruned channel would not be zero")
        return _Channels((_Segment(len(self.groups) - 1, group.size),))

    def _take(self, state, path: str, repeat: int) -> None:
        total = sum(segment.size for segment in state.segments)
        offset = 0
        for segment in state.segments:
            if segment.group is not None:
                self._group(segment.group).inputs.append(InputRows(
                    path, -2, offset, total, state.spatial or 1, repeat))
            offset += segment.size

    def _pass(self, layer, state, out, weights) -> Optional[_Channels]:
        """A layer that keeps its input's channels, ``weights`` ((variable, axis)) per
        channel: they join the group (one group only: their index is the group's)."""
        if state is None or state.spatial is not None or \
                (weights and len(state.segments) != 1):
            why = "flattened" if state is not None and state.spatial is not None else \
                "concatenated"
            self._stop(state, f"its channels go {why} into {_kind(layer)}")
            return self._untraced(out)
        group = state.segments[0].group
        if group is not None:
            self._group(group).members.extend(
                (self._path(layer, variable), axis) for variable, axis in weights)
        return state

    def _batch_norm(self, layer, state, out) -> Optional[_Channels]:
        axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
        if axis not in (-1, [len(out.shape) - 1], len(out.shape) - 1) or not layer.scale:
            why = "without scale (a pruned channel would be -mean/std, not zero)" \
                if layer.scale else f"normalizing axis {layer.axis}, not the channels"
            self._stop(state, f"its channels go into {_kind(layer)} {why}")
            return self._untraced(out)
        state = self._pass(layer, state, out, [(layer.gamma, -1)] + (
            [(layer.beta, -1)] if layer.center else []))
        if state is not None and state.segments[0].group is not None:
            self._group(state.segments[0].group).carried.extend(
                (self._path(layer, variable), -1)
                for variable in (layer.moving_mean, layer.moving_variance))
        return state

    def _join(self, layer, ins, out) -> Optional[_Channels]:
        """An element-wise join of equally shaped channels: one group per position."""
        layouts = {tuple(segment.size for segment in state.segments)
                   if state is not None and state.spatial is None else None for state in ins}
        if len(layouts) != 1 or None in layouts or \
                any(segment.group is None for state in ins for segment in state.segments):
            for state in ins:
                self._stop(state, f"its channels are joined in {_kind(layer)} with channels "
                           "tf_lottery does not trace")
            return self._untraced(out)
        for state in ins[1:]:
            for mine, theirs in zip(ins[0].segments, state.segments):
                self._union(mine.group, theirs.group)
        return ins[0]

    def _concatenate(self, layer, ins, out) -> Optional[_Channels]:
        if layer.axis not in (-1, len(out.shape) - 1) or \
                any(state is None or state.spatial is not None for state in ins):
            for state in ins:
                self._stop(state, f"its channels go into {_kind(layer)}, which does not join "
                           "channels along their last axis")
            return self._untraced(out)
        return _Channels(tuple(segment for state in ins for segment in state.segments))

    def _flatten(self, layer, state, node, out) -> Optional[_Channels]:
        shape = tuple(self.engine.node_inputs(node)[0].shape)[1:-1]
        if state is None or state.spatial is not None or None in shape:
            self._stop(state, f"its channels go into {_kind(layer)} from a shape that is not "
                       "static")
            return self._untraced(out)
        return _Channels(state.segments, math.prod(shape))

    def _opaque(self, layer, ins, outs, reason: str) -> list:
        """A layer whose channels are not followed: its inputs' groups and its own kernel
        are left dense."""
        for state in ins:
            self._stop(state, reason)
        if isinstance(layer, self.kinds.model):
            kernels = [(prefix, inner) for prefix, inner in
                       self.engine.layers(layer, f"{layer.name}/")]
            why = f"it is inside the nested model {layer.name!r}, which channel tickets do " \
                  "not descend into"
        else:
            kernels = [("", layer)]
            why = f"{_kind(layer)} is not a layer whose channels tf_lottery follows"
        for prefix, inner in kernels:
            path = self._path(inner, getattr(inner, "kernel", None), prefix)
            if path:
                self.left_dense.setdefault(path, why)
        return [self._untraced(t) for t in outs]

    # --- groups -------------------------------------------------------------------------

    def _new_group(self, size: int) -> _Group:
        self.groups.append(_Group(size))
        self.parent.append(len(self.parent))
        return self.groups[-1]

    def _root(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = index = self.parent[self.parent[index]]
        return index

    def _group(self, index: int) -> _Group:
        return self.groups[self._root(index)]

    def _union(self, a: int, b: int) -> None:
        a, b = sorted((self._root(a), self._root(b)))
        if a != b:
            self.parent[b] = a
            self.groups[a].absorb(self.groups[b])

    def _stop(self, state, reason: str) -> None:
        """Leave the groups of ``state`` dense (a first reason stays)."""
        for index in state.groups() if state is not None else ():
            group = self._group(index)
            group.reason = group.reason or reason

    def _result(self) -> ChannelTrace:
        roots = [group for index, group in enumerate(self.groups) if self._root(index) == index]
        left_dense = dict(self.left_dense)
        traced = []
        for group in roots:
            if group.reason:
                left_dense.update(dict.fromkeys(group.scored, group.reason))
            else:
                traced.append(TracedGroup(
                    ChannelGroup(group.size, group.scored, group.members),
                    tuple(group.carried), tuple(group.inputs), tuple(group.widths)))
        return ChannelTrace(tuple(traced), MappingProxyType(left_dense))

    # --- tensors and paths --------------------------------------------------------------

    def _untraced(self, tensor) -> Optional[_Channels]:
        shape = tuple(tensor.shape)
        return _Channels((_Segment(None, shape[-1]),)) if shape and shape[-1] else None

    def _path(self, layer, variable, prefix: str = "") -> Optional[str]:
        """The path of one of ``layer``'s own weights (None for anything else)."""
        paths = self.engine.weight_paths(layer, prefix)
        return next((path for path, v in paths.items() if v is variable), None)
