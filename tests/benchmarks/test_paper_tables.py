"""The full protocol's claim checks (benchmarks/paper_tables.py) on made-up levels."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from paper_tables import claims  # noqa: E402

PERCENTS = [100.0, 80.0, 64.1, 51.3, 41.1, 32.9, 26.3, 21.1, 16.9, 13.5, 10.8, 8.7, 7.0,
            5.6, 4.5, 3.6, 2.9, 2.3, 1.9]


def _levels(ticket, controls=97.0, early_stop=(3000, 2000), rounds=len(PERCENTS)):
    """Levels of two trials: the dense net at 98.0 (early stop 3000 / 2000), tickets at
    ``ticket(percent)``, both controls at ``controls``."""
    levels = []
    for index, percent in enumerate(PERCENTS[:rounds]):
        accuracy = 98.0 if index == 0 else ticket(percent)
        variants = {"ticket": {"accuracy": [accuracy - 0.1, accuracy + 0.1],
                               "early_stop": list(early_stop) if index == 0 else [1500, 1700]}}
        if index:
            for control in ("random_reinit", "random_pruning"):
                variants[control] = {"accuracy": [controls, controls], "early_stop": [9000, 9000]}
        levels.append({"round": index, "percent": percent, "variants": variants})
    return levels


def _verdicts(levels):
    return [claim["holds"] for claim in claims(levels)]


def test_the_paper_s_findings_hold():
    assert _verdicts(_levels(lambda p: 98.4 if p >= 13.5 else 98.0)) == [True] * 4
    early = claims(_levels(lambda p: 98.4))[2]
    assert early["earlier_by"] == 1 - 1600 / 2500  # means over trials


def test_a_failing_level_is_a_no_before_the_protocol_ends():
    levels = _levels(lambda p: 98.2 if p == 64.1 else 98.4, rounds=9)  # down to 16.9%
    above, at, early, controls = claims(levels)
    assert above["holds"] is False and above["not_at"] == ["64.1%"]
    assert at["holds"] is None and at["ticket_minus_dense"]["64.1%"] == 0.2
    assert early["holds"] is True
    assert controls["holds"] is None  # below so far, but not yet down to 1.9%


def test_tickets_below_dense_and_controls_at_dense_fail():
    verdicts = _verdicts(_levels(lambda p: 97.85, controls=98.0))
    assert verdicts[:2] == [False, False] and verdicts[3] is False
