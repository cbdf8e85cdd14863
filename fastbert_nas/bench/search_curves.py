"""The search benchmark's curves and goals on plain numbers: a curve is a study's list of
{"steps", "wall_s", "hypervolume", ...} points in the order its trials finished (bench.search.arm_figures).
"""

from __future__ import annotations

import math
import statistics

from fastbert_nas.bench.common import spread

GOAL_STEP_SHARE = 1 / 3  # the default search should reach random's final hypervolume within this share of its steps


def hv_at(curve: list[dict], x: float, key: str = "steps") -> float:
    """The hypervolume a curve (`key` non-decreasing) had reached by x (training steps, or wall seconds with
    key="wall_s"); 0 before its first trial."""
    reached = 0.0
    for p in curve:
        if p[key] > x:
            break
        reached = p["hypervolume"]
    return reached


def steps_to_reach(curve: list[dict], target: float, key: str = "steps") -> float | None:
    """The training steps (or `key`) at which a curve first reaches `target`, or None when it never does."""
    if target <= 0:
        return 0
    return next((p[key] for p in curve if p["hypervolume"] >= target), None)


def final(curve: list[dict], key: str) -> float:
    return curve[-1][key] if curve else 0


def ranks(values: list[float | None]) -> dict:
    """min, median, max and count of figures where None means "never" (infinitely many); None again out."""
    inf = [math.inf if v is None else v for v in values]
    back = lambda x: None if math.isinf(x) else x  # noqa: E731
    return {"min": back(min(inf)), "median": back(statistics.median(inf)), "max": back(max(inf)), "n": len(inf),
            "reached": sum(v is not None for v in values)}


def reach_goal(arm: list[list[dict]], random: list[list[dict]], share: float = GOAL_STEP_SHARE) -> dict:
    """Whether `arm` reaches random's final hypervolume within `share` of random's training steps.

    arm, random: a curve per seed. Target: the median over random's seeds of its final hypervolume; for each
    seed of `arm`, the steps its curve first reaches it (None: never); met when the median of those (never =
    infinitely many) is at most `share` x the median of random's total steps."""
    target = statistics.median(final(c, "hypervolume") for c in random)
    random_steps = statistics.median(final(c, "steps") for c in random)
    allowed = share * random_steps
    needed = [steps_to_reach(c, target) for c in arm]
    median_needed = ranks(needed)["median"]
    return {
        "target_hypervolume": target, "random_total_steps": random_steps, "step_share": share,
        "allowed_steps": allowed, "steps_to_target": needed, "steps_to_target_spread": ranks(needed),
        "share_of_random_steps": ranks([n / random_steps if n is not None and random_steps else None
                                        for n in needed]),
        "wall_minutes_to_target": ranks([None if (w := steps_to_reach(c, target, "wall_s")) is None else w / 60
                                         for c in arm]),
        "hypervolume_at_allowed": spread([hv_at(c, allowed) for c in arm]),
        "random_hypervolume_at_allowed": spread([hv_at(c, allowed) for c in random]),
        "met": median_needed is not None and median_needed <= allowed,
    }


def equal_steps_goal(arm: list[list[dict]], other: list[list[dict]]) -> dict:
    """Whether `arm` is ahead of `other` at equal training steps: at the fewer of the two arms' median total
    steps, the median over seeds of arm's hypervolume is above other's."""
    steps = min(statistics.median(final(c, "steps") for c in curves) for curves in (arm, other))
    mine, theirs = spread([hv_at(c, steps) for c in arm]), spread([hv_at(c, steps) for c in other])
    return {"steps": steps, "hypervolume": mine, "other_hypervolume": theirs,
            "met": mine["median"] > theirs["median"]}


def search_goals(curves: dict[str, list[list[dict]]]) -> dict:
    """The goals the arms run allow: `reach` (default against random), `beat_tpe` (default against TPE without
    rungs), and, not a goal, `gp_vs_default` (which sampler to default to); `met` when both goals were judged
    and met."""
    goals = {}
    if {"default", "random"} <= curves.keys():
        goals["reach"] = reach_goal(curves["default"], curves["random"])
    if {"default", "tpe"} <= curves.keys():
        goals["beat_tpe"] = equal_steps_goal(curves["default"], curves["tpe"])
    if {"default", "gp"} <= curves.keys():
        goals["gp_vs_default"] = equal_steps_goal(curves["gp"], curves["default"])
    goals["met"] = all(k in goals and goals[k]["met"] for k in ("reach", "beat_tpe"))
    return goals


def median_curve(curves: list[list[dict]], key: str = "steps") -> list[tuple[float, float]]:
    """(x, median hypervolume over the curves) at every x (`key`) any curve changes, up to the least total
    among them (beyond that, some seed has no figure)."""
    if not curves or not all(curves):
        return []
    end = min(final(c, key) for c in curves)
    grid = sorted({0, *(p[key] for c in curves for p in c if p[key] <= end)})
    return [(x, statistics.median(hv_at(c, x, key) for c in curves)) for x in grid]
