"""``tfl.shrink``: a ticket without its pruned channels, as a smaller plain Keras model.

Channel IMP prunes whole output channels; shrinking removes them (and the input rows of
the layers they fed) so the network computes the same outputs with fewer filters, and runs
faster on CPUs. The Keras surgery is :mod:`tf_lottery.engines.surgery`; this strips a
LotteryModel's masking first.

Example::

    small = tfl.shrink(ticket)
    for name, (old, new) in tfl.shrink_summary(ticket, small).items():
        print(f"{name}: {old} -> {new} channels")
"""

from __future__ import annotations

from tf_lottery.engines import LotteryModel, surgery
from tf_lottery.imp.wrap import strip_pruning


def shrink(model):
    """A smaller plain model (same Keras) without the channels pruned to exact zeros,
    computing the same outputs.

    Args:
      model: a LotteryModel (its masks are applied to a copy first; it is left as it is)
        or a plain Sequential or functional Keras model (tf_keras, or Keras 3).

    Example::

        small = tfl.shrink(ticket)
        small.count_params()     # fewer than ticket's
    """
    return surgery.shrink(_plain(model))


def shrink_summary(before, after) -> dict:
    """Layer name -> (channels before, channels after) of every convolution and Dense
    layer of ``before`` (what was given to :func:`shrink`): ``{"conv1": (32, 12), ...}``.

    Example::

        tfl.shrink_summary(ticket, tfl.shrink(ticket))
    """
    return surgery.shrink_summary(_plain(before), after)


def _plain(model):
    return strip_pruning(model) if isinstance(model, LotteryModel) else model
