"""The engine issue's speed targets, checked on a benchmark's ratios.

A target is printed as reached or not reached and saved with the figures;
it is never asserted: figures from a busy machine are indicative only.
"""

import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def check(label, value, limit, at_least=False):
    """Print whether ``value`` (a ratio) meets ``limit``; return a record.

    Parameters
    ----------
    label : str
        What the ratio is, e.g. ``'identity GET p50 / plain GET p50'``.
    value : float
    limit : float
    at_least : bool
        The ratio must be at least ``limit`` (a speed-up) rather than at
        most (a slow-down).
    """
    reached = value >= limit if at_least else value <= limit
    print(
        "target: %s = %.2fx, %s %gx: %s"
        % (
            label,
            value,
            "at least" if at_least else "at most",
            limit,
            "reached" if reached else "NOT reached",
        )
    )
    return {
        "target": label,
        "value": value,
        "limit": limit,
        "at_least": at_least,
        "reached": reached,
    }


def save(name, result):
    """Write ``result`` to ``benchmarks/results/<name>.json``."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name + ".json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print("saved %s" % os.path.relpath(path))
    return path
