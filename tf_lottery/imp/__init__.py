"""IMP procedures on the engines: rewind points, round boundaries, the round controller
and the one-call path (``prune_with_rewinding``)."""
