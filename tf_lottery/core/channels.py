"""Channel tickets: whole output channels pruned together, as plain data over NumPy masks.

A convolutional ticket runs faster on CPUs only when whole channels go (design notes,
"Sparse inference for convolutional networks"). A :class:`ChannelGroup` is a set of
channels that must be kept or pruned as one: channel ``i`` of the group is index ``i``
along the given axis of every member weight (a Conv2D kernel's output axis, its bias, the
BatchNormalization gamma and beta after it, a depthwise kernel's channel axis; the kernels
of every layer joined through an Add). The engines find the groups in a model's graph
(:mod:`tf_lottery.engines.channel_graph`); this module chooses which channels survive.

Example::

    group = ChannelGroup(size=4, scored=("conv/kernel",),
                         members=(("conv/kernel", -1), ("conv/bias", -1)))
    plan = ChannelPlan(groups=(group,), left_dense={"output/kernel": "the model's output"})
    plan.paths()     # ['conv/kernel', 'conv/bias']: the weights channel IMP masks
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels kept or pruned as one.

    Args:
      size: how many channels the group has.
      scored: the kernel paths whose trained values score the channels (their last axis
        is the group's channels): a layer's output channels, or every layer joined through
        an Add or a Multiply.
      members: ``(path, axis)`` of every weight masked with the channels, the scored
        kernels included: channel ``i`` is index ``i`` along ``axis``.
    """

    size: int
    scored: tuple
    members: tuple

    def __post_init__(self):
        object.__setattr__(self, "scored", tuple(self.scored))
        object.__setattr__(self, "members", tuple((str(p), int(a)) for p, a in self.members))

    def paths(self) -> list:
        return [path for path, _ in self.members]


@dataclasses.dataclass(frozen=True)
class ChannelPlan:
    """The channel groups of a model, and the prunable kernels left dense with the reason
    (``left_dense``: path -> why, e.g. "its channels are the model's output")."""

    groups: tuple
    left_dense: Mapping = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "left_dense", MappingProxyType(dict(self.left_dense)))

    def paths(self) -> list:
        """Every weight path channel pruning masks, in group order."""
        return [path for group in self.groups for path in group.paths()]

    def to_config(self) -> dict:
        return {"groups": [{"size": g.size, "scored": list(g.scored),
                            "members": [list(member) for member in g.members]}
                           for g in self.groups],
                "left_dense": dict(self.left_dense)}

    @classmethod
    def from_config(cls, config: dict) -> ChannelPlan:
        return cls(tuple(ChannelGroup(**group) for group in config["groups"]),
                   config.get("left_dense", {}))
