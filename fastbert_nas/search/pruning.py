"""Pareto-aware pruning, the collapse check and the 2-D hypervolume, on plain numbers (no optuna, no torch).

Optuna cannot prune multi-objective trials (`trial.report` raises), so the search
applies this rule itself at each checkpoint and raises `optuna.TrialPruned` when
it says so. The rule: a running trial is stopped when its validation metric is
clearly below what finished trials of no higher cost had reached by the same
checkpoint; such a trial is very unlikely to end on the (metric, cost) front,
since a cheaper trial already beats it. Cheaper-or-equal only: a costlier trial
being better says nothing about whether this one can join the front.

Checkpoints that do not line up (e.g. a study resumed with another --eval-every):
a finished trial is compared by the last metric it had at or before `step`, i.e.
what it had reached by then. Earlier metrics are usually lower, so a mismatch
only makes the rule more lenient, never harsher. Finished trials with no
checkpoint at or before `step` are left out, and do not count for the warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

# Metric units (accuracy or MCC): a trial is stopped as soon as it is below a cheaper finished trial at the same
# checkpoint. Chosen on validation by bench pruning's replay of the rule over an unpruned 30-trial SST-2 study
# (thin-deep, cpu budget, seed 0): margin 0 stopped 20 of 30 trials, saving 46% of the training steps and keeping
# 99.7% of the hypervolume; 0.01 saved 39% and 0.03 (about 1.7 standard deviations of the difference of two
# accuracies on 1,000 rows) 20%, both keeping all of it. A trial behind a cheaper one rarely overtakes it by the
# end, and if it only draws level it is dominated anyway.
PRUNE_MARGIN = 0.0
# Metric units. A trial whose final validation metric is no more than this above the majority-class level
# (always predicting the most frequent class) learned nothing: 0.02 is 20 of 1,000 validation rows, about
# 1.3 standard errors of an accuracy near 0.5; an MCC of 0.02 is no skill either.
COLLAPSE_MARGIN = 0.02
# Finished trials with a metric at the checkpoint before anything is pruned (MedianPruner's
# n_startup_trials default): the first trials only set the bar.
PRUNE_WARMUP_TRIALS = 5


def metric_by(curve: Mapping, step: int) -> tuple[int, float] | None:
    """(checkpoint, metric) of the last checkpoint at or before `step`, or None.

    curve: {step: metric}; keys may be strings (as they come back from JSON user attrs).
    Non-finite metrics are ignored.
    """
    points = [(int(s), float(m)) for s, m in curve.items()
              if int(s) <= step and m is not None and math.isfinite(float(m))]
    return max(points) if points else None


def should_prune(step: int, metric: float, cost: float, finished: Iterable[tuple[float, Mapping]], *,
                 warmup_trials: int = PRUNE_WARMUP_TRIALS, margin: float = PRUNE_MARGIN) -> str | None:
    """Why the running trial should stop now (a sentence for its user attrs), or None to go on.

    step: the checkpoint (stage-2 steps); metric: the running trial's validation metric there
    (higher is better); cost: its cost (FLOPs or latency, lower is better, the same unit as the
    finished trials'); finished: (cost, {step: metric}) of each COMPLETED trial.
    """
    reached = []  # (metric, cost, checkpoint) of finished trials with a metric by `step`
    for f_cost, curve in finished:
        point = metric_by(curve, step)
        if point is not None:
            reached.append((point[1], float(f_cost), point[0]))
    if len(reached) < warmup_trials:
        return None
    cheaper = [r for r in reached if r[1] <= cost]
    if not cheaper:
        return None
    best, best_cost, at = max(cheaper, key=lambda r: (r[0], -r[1]))  # best metric, the cheapest on ties
    if metric < best - margin:
        return (f"pruned at step {step}: metric {metric:.4f} is more than {margin:g} below {best:.4f}, "
                f"reached by step {at} by a finished trial of cost {best_cost:.4g} <= {cost:.4g}")
    return None


def collapse_reason(metric: float, majority: float, teacher: float, margin: float = COLLAPSE_MARGIN) -> str | None:
    """Why a finished trial counts as having learned nothing (a sentence), or None: its validation metric
    is at most `margin` above `majority`, the metric of always predicting the most frequent class on the
    same rows, while the teacher's (`teacher`, same rows) is more than `margin` above it. A teacher at the
    majority level itself has nothing to teach, and gives no verdict; a negative margin turns the check off."""
    if margin < 0 or metric > majority + margin or teacher <= majority + margin:
        return None
    return (f"final metric {metric:.4f} is within {margin:g} of the majority-class level "
            f"{majority:.4f} (always predicting the most frequent class); the teacher has {teacher:.4f}")


def hypervolume_2d(points: Iterable[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (metric, cost) points, metric maximized and cost minimized, bounded by ref.

    ref: (worst metric, worst cost), e.g. (0.5, teacher FLOPs). Points no better than ref in
    both objectives add nothing. Units: metric units x cost units.
    """
    ref_metric, ref_cost = ref
    inside = sorted((c, m) for m, c in points if m > ref_metric and c < ref_cost)  # cheapest first
    area, best = 0.0, ref_metric
    for c, m in inside:
        if m > best:  # a slab of metric (best, m], reachable from cost c up to ref_cost
            area += (m - best) * (ref_cost - c)
            best = m
    return area


def front_hypervolume(points: Iterable[tuple[float, float]], teacher_cost: float, floor_metric: float) -> float:
    """The hypervolume of (metric, cost) points on a log cost axis, with the reference at the teacher's cost and
    the metric a student that learned nothing has (the majority-class level).

    Each point counts for log10(teacher_cost / cost), the decades of cost it saves, so that a front of students
    at 1-25% of the teacher's FLOPs is measured where it lies (a linear axis gives nearly all the area to the
    cheapest point). Units: metric above floor_metric x decades of cost saved; points no cheaper than the
    teacher, or no better than floor_metric, add nothing.
    """
    logged = [(m, math.log10(c / teacher_cost)) for m, c in points if c > 0]
    return hypervolume_2d(logged, (floor_metric, 0.0))


def replay_pruning(trials: Iterable[Mapping], teacher_cost: float, floor_metric: float, *,
                   margin: float = PRUNE_MARGIN, warmup_trials: int = PRUNE_WARMUP_TRIALS) -> dict:
    """What the rule would have done to a study run without pruning: its trials, in the order they finished,
    each checked at its checkpoints against the trials finished before it, as the search checks them.

    trials: {"state", "cost", "curve" ({step: metric}), "metric" (final), "train_steps", "hint_steps"} per
    finished trial; a trial stopped at KD step s keeps hint_steps + s of its steps and leaves the front, and
    the trials after it no longer see it. Only COMPLETE trials set the bar or make the front (a collapsed or
    rejected one is neither, with pruning or without). The sampler is not replayed: with pruning it would
    have learnt from the stopped trials and drawn other students after the first, so this is the rule's
    verdict on one sequence of students, not a second study.
    Returns {"train_steps", "pruned" (trial count), "hypervolume" (front_hypervolume of what is left)}.
    """
    finished: list[tuple[float, Mapping]] = []
    steps, pruned, points = 0, 0, []
    for t in trials:
        stopped = None
        if t["state"] == "COMPLETE":
            for step in sorted(int(s) for s in t["curve"]):
                metric = metric_by(t["curve"], step)
                if metric and should_prune(step, metric[1], t["cost"], finished, warmup_trials=warmup_trials,
                                           margin=margin):
                    stopped = step
                    break
        if stopped is None:
            steps += t["train_steps"]
            if t["state"] == "COMPLETE":
                finished.append((t["cost"], t["curve"]))
                points.append((t["metric"], t["cost"]))
        else:
            steps += t["hint_steps"] + stopped
            pruned += 1
    return {"train_steps": steps, "pruned": pruned,
            "hypervolume": front_hypervolume(points, teacher_cost, floor_metric)}
