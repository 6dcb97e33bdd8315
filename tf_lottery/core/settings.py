"""ImpSettings: how each round end chooses masks and where the next round starts.

Declared once: ``prune_with_rewinding(model, schedule, **settings)``,
``LotteryTicketSearch(build, schedule, run_dir, **options)`` and the YAML config's keys of
the same names all build an ``ImpSettings`` (:mod:`tf_lottery.foundations.declared`), and
every value is checked here.

Example::

    settings = ImpSettings(rewind_to="lr", scope="global", criterion="magnitude_increase")
    settings.policy                 # LearningRateRewind('lr')
    ImpSettings(**settings.to_config()) == settings   # True
"""

from __future__ import annotations

import dataclasses
from typing import Union

from tf_lottery.core.channels import ChannelGroup, ChannelPlan
from tf_lottery.core.masks import CRITERIA, SCOPES
from tf_lottery.core.rewind_policy import RewindPolicy, policy_for
from tf_lottery.foundations.checks import names, one_of, whole_number
from tf_lottery.foundations.errors import SettingError

GRANULARITIES = ("weight", "channel")


@dataclasses.dataclass(frozen=True)
class ImpSettings:
    """The choices of an IMP run besides its schedule.

    Args:
      rewind_to: 0 or "init" (θ0), an iteration k (late rewinding), "lr" (learning-rate
        rewinding) or None (fine-tuning): see :mod:`tf_lottery.core.rewind_policy`.
      scope: "layer" (each layer meets its own rate) or "global" (one threshold).
      criterion: a registered criterion (:data:`tf_lottery.core.masks.CRITERIA`): "magnitude",
        "magnitude_increase", or "random" (random pruning, a control).
      block_size: prune blocks of this many weights along a kernel's input dimension
        (4 for float TFLite, 16 for int8) instead of single weights; TF-MOT's
        ``block_size=(n, 1)`` of a Dense kernel is n.
      granularity: "weight" (single weights, or blocks) or "channel": whole output
        channels of Conv, Dense and SeparableConv layers (with their bias and the
        BatchNormalization after them), scored by the filter's L1 norm, in the groups
        the model's graph joins (:mod:`tf_lottery.engines.channel_graph`): a network
        ``tfl.shrink`` makes smaller, faster on CPUs.
      refill: with granularity "channel", Chen et al. 2022's IMP-Refill: each round
        prunes single weights, then keeps whole the channels with the most survivors.
      channel_groups: with granularity "channel", the groups of a model whose graph cannot
        be traced (a subclassed model): :class:`~tf_lottery.core.channels.ChannelGroup`
        objects (or their configs), checked against the model's weights.
      exclude: names of layers to leave dense (their weights are still rewound).
      prunable: weight paths (``fnmatch`` patterns such as ``"block/*"``) to prune besides
        the default kernels; Keras 3 models only.
      seed: seeds the random criterion.
    """

    rewind_to: Union[int, str, None] = 0
    scope: str = "layer"
    criterion: str = "magnitude"
    block_size: int = 1
    granularity: str = "weight"
    refill: bool = False
    channel_groups: tuple = ()
    exclude: tuple = ()
    prunable: tuple = ()
    seed: int = 0

    def __post_init__(self):
        policy = policy_for(self.rewind_to)
        object.__setattr__(self, "rewind_to", policy.value)
        one_of(self.scope, "scope", SCOPES)
        one_of(self.criterion, "criterion", CRITERIA)
        if isinstance(self.block_size, (tuple, list)):  # TF-MOT's (rows, columns)
            object.__setattr__(self, "block_size", _tfmot_block_size(tuple(self.block_size)))
        object.__setattr__(self, "block_size", whole_number(self.block_size, "block_size"))
        one_of(self.granularity, "granularity", GRANULARITIES)
        if not isinstance(self.refill, bool):
            raise SettingError(f"refill must be True or False, got {self.refill!r}")
        if self.granularity == "channel" and self.block_size > 1:
            raise SettingError(
                f"block_size={self.block_size} and granularity=\"channel\" are two "
                "structures; choose one (block_size=1 for channel tickets)")
        if self.refill and self.granularity != "channel":
            raise SettingError("refill=True keeps whole channels: it needs "
                               "granularity=\"channel\"")
        object.__setattr__(self, "channel_groups", tuple(
            group if isinstance(group, ChannelGroup) else ChannelGroup(**group)
            for group in self.channel_groups))
        if self.channel_groups and self.granularity != "channel":
            raise SettingError("channel_groups names the channels a channel ticket prunes: "
                               "it needs granularity=\"channel\"")
        if self.granularity == "channel" and self.prunable:
            raise SettingError("prunable= adds single weights to prune; channel tickets "
                               "prune the channels the model's graph joins, so leave it "
                               "out with granularity=\"channel\"")
        object.__setattr__(self, "exclude", names(self.exclude, "exclude"))
        object.__setattr__(self, "prunable", names(self.prunable, "prunable"))
        object.__setattr__(self, "seed", whole_number(self.seed, "seed", minimum=0))

    def structure(self, channels=None) -> dict:
        """How masks are selected (:func:`tf_lottery.core.masks.keep_highest`'s options),
        with the model's ``channels`` (a ChannelPlan) for channel tickets."""
        return {"scope": self.scope, "block_size": self.block_size,
                "channels": channels if self.granularity == "channel" else None}

    @property
    def policy(self) -> RewindPolicy:
        """The rewind policy ``rewind_to`` names."""
        return policy_for(self.rewind_to)

    def to_config(self) -> dict:
        """The settings as plain data; ``granularity`` and ``refill`` only when set, so a
        run directory written before they existed resumes with the same config."""
        config = dataclasses.asdict(self) | {
            "exclude": list(self.exclude), "prunable": list(self.prunable),
            "channel_groups": [ChannelPlan([group]).to_config()["groups"][0]
                               for group in self.channel_groups]}
        for key in _RECORDED_WHEN_SET:
            if config[key] == _DEFAULTS[key] or config[key] == []:
                del config[key]
        return config


_RECORDED_WHEN_SET = ("granularity", "refill", "channel_groups")
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(ImpSettings)}


def _tfmot_block_size(value: tuple) -> int:
    """TF-MOT's (rows, columns) blocks of a Dense kernel as a block_size: (n, 1) is n (n
    inputs of one output); any other pair is refused with the number to pass."""
    if len(value) == 2 and value[1] == 1:
        return value[0]  # checked as a whole number next
    sizes = [n for n in value if isinstance(n, int) and not isinstance(n, bool) and n >= 1]
    length = max(sizes) if len(sizes) == len(value) == 2 else 4
    raise SettingError(
        f"block_size must be a whole number >= 1, got {value!r}: TF-MOT's (rows, columns) "
        "of a Dense kernel. tf_lottery prunes blocks of block_size weights along a kernel's "
        f"input dimension (a Dense kernel's rows: TF-MOT's ({length}, 1), the 1x{length} "
        f"blocks TFLite's sparse kernels run; TF-MOT's (1, {length}) blocks {length} outputs "
        f"instead). Pass block_size={length}.")
