"""Trials as the search and the reports read them: costs, states, rungs, one line per trial, the front. (No torch.)

Rungs (search/rungs.py): a trial at rung 0 samples a student; a trial at a higher rung trains that student
again, longer (user attrs RUNG_ATTR, STUDENT_ATTR = the rung-0 trial's number, PARENT_ATTR = the trial it was
promoted from). Every report takes a student's figures from its highest finished rung (`top_rung_trials`).
"""

from __future__ import annotations

import math
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from fastbert_nas.core.metrics import others_text

OBJECTIVE_COSTS = ("flops", "latency", "params")   # costs an objective may minimize after the metric
COST_ATTRS = {"flops": "flops", "latency": "latency_ms", "params": "params"}  # cost -> trial user attr
COST_LABELS = {"flops": "FLOPs", "latency": "latency ms", "params": "params"}
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
RUNG_ATTR, STUDENT_ATTR, PARENT_ATTR = "rung", "student", "parent"
DUPLICATE = "duplicate"  # prune_reason of a promotion another worker had already started


def rung_of(t: FrozenTrial) -> int:
    """The trial's rung: 0 for a sampled (or queued) student."""
    return t.user_attrs.get(RUNG_ATTR, 0)


def student_of(t: FrozenTrial) -> int:
    """The number of the rung-0 trial whose student this trial trains."""
    return t.user_attrs.get(STUDENT_ATTR, t.number)


def is_duplicate(t: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """Whether another trial of the same student and rung, started (not failed) before `t`, holds that rung:
    two workers that promote a student at once both queue it, and the later start gives way."""
    if rung_of(t) == 0 or t.datetime_start is None:
        return False
    key = (student_of(t), rung_of(t))
    return any(o.number != t.number and (student_of(o), rung_of(o)) == key and o.datetime_start is not None
               and o.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
               and o.user_attrs.get("prune_reason") != DUPLICATE
               and (o.datetime_start, o.number) < (t.datetime_start, t.number) for o in trials)


def top_rung_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Each student's trial at the highest rung it finished (COMPLETE or PRUNED; not a duplicate), by number:
    the figures the front, the plots and --pick go by. A student a longer rung stopped (collapsed) is
    judged by that rung."""
    top: dict[int, FrozenTrial] = {}
    for t in trials:
        hold_top_rung(top, t)
    return sorted(top.values(), key=lambda t: t.number)


def hold_top_rung(top: dict[int, FrozenTrial], t: FrozenTrial) -> None:
    """Update `top` (student -> its trial at the highest finished rung so far) with trial `t`."""
    if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or t.user_attrs.get("prune_reason") == DUPLICATE:
        return
    held = top.get(student_of(t))
    if held is None or rung_of(t) > rung_of(held):
        top[student_of(t)] = t


def trials_used(trials: list[FrozenTrial]) -> int:
    """Trials that count toward --trials: rung-0 trials (students) COMPLETE, PRUNED and FAIL, a retried FAIL
    only through its retry. Promotions to higher rungs come on top."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials if t.state in COUNTED and rung_of(t) == 0
               and not (t.state == TrialState.FAIL and t.number in retried))


def trial_metric(t: FrozenTrial) -> float | None:
    """The trial's final metric (COMPLETE) or the last one it reached (PRUNED at a checkpoint)."""
    if t.state == TrialState.COMPLETE and t.values:
        return t.values[0]
    curve = t.user_attrs.get("curve") or {}
    return curve[max(curve, key=int)] if curve else None


def trial_line(t: FrozenTrial, metric_name: str) -> str:
    """One line per finished trial: number, state, student, metric, costs, time, why."""
    a = t.user_attrs
    metric = trial_metric(t)
    parts = [f"trial {t.number} {t.state.name}", f"{a.get('name', '?')} hints {a.get('hints', '?')}"]
    if rung_of(t):
        parts.append(f"rung {rung_of(t)} ({a.get('kd_steps', '?')} KD steps) of trial {student_of(t)}")
    parts.append(f"{metric_name} {metric:.4f}" if metric is not None else f"{metric_name} -")
    beside = others_text(a.get("val"), metric_name)
    if beside:
        parts.append(beside)
    if "flops" in a:
        parts.append(f"FLOPs {a['flops'] / 1e9:.4g} G")
    if "params" in a:
        parts.append(f"params {a['params'] / 1e6:.2f} M")
    if "latency_ms" in a:
        parts.append(f"latency {a['latency_ms']:.2f} ms")
    parts.append(f"{a.get('wall_s', 0):.0f} s")
    line = "  ".join(parts)
    if t.state == TrialState.PRUNED and "prune_reason" in a:
        line += f"  ({a['prune_reason']}: {a.get('prune_detail', '')})"
    if t.state == TrialState.FAIL:
        line += f"  ({a.get('fail_reason', 'worker died')})"
    if "baseline" in a:
        line += f"  [{a['baseline']}]"
    if "failed_trial" in t.system_attrs:
        line += f"  [retry of trial {t.system_attrs['failed_trial']}]"
    return line


class ProgressLine:
    """optimize() callback printing `trial_line` as each trial ends."""

    def __init__(self, metric_name: str, log: Callable[[str], None]):
        self.metric_name, self.log = metric_name, log

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.log(trial_line(trial, self.metric_name))


def front_trials(trials: list[FrozenTrial], n_objectives: int) -> list[FrozenTrial]:
    """The Pareto front (metric maximized, costs minimized) of the feasible COMPLETE trials of
    `top_rung_trials`: each student once, at its highest rung (what study.best_trials would be without the
    lower rungs)."""
    done = [t for t in top_rung_trials(trials) if t.state == TrialState.COMPLETE and t.values
            and len(t.values) == n_objectives and all(c <= 0 for c in t.constraints.values())]
    loss = {t.number: (-t.values[0], *t.values[1:]) for t in done}

    def dominated(t: FrozenTrial) -> bool:
        mine = loss[t.number]
        return any(all(a <= b for a, b in zip(loss[o.number], mine)) and loss[o.number] != mine for o in done)

    return [t for t in done if not dominated(t)]


def front_rows(study: optuna.Study, objectives: tuple[str, ...]) -> list[dict]:
    """The current front (front_trials) as plain rows, cheapest first."""
    rows = []
    for t in front_trials(study.get_trials(deepcopy=False), len(study.directions)):
        a = t.user_attrs
        rows.append({"trial": t.number, "name": a.get("name"), "hints": a.get("hints"), "metric": t.values[0],
                     "flops": a.get("flops"), "params": a.get("params"), "latency_ms": a.get("latency_ms"),
                     "latency_device": a.get("latency_device"), "baseline": a.get("baseline", ""),
                     "rung": rung_of(t), "kd_steps": a.get("kd_steps")})
    key = COST_ATTRS[objectives[1]] if len(objectives) > 1 else "flops"
    return sorted(rows, key=lambda r: (r[key] if r[key] is not None else math.inf, -r["metric"]))


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
