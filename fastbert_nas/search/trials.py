"""Trials as the search and the reports read them: costs, states, one line per trial, the front. (No torch.)
"""

from __future__ import annotations

import math
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

OBJECTIVE_COSTS = ("flops", "latency", "params")   # costs an objective may minimize after the metric
COST_ATTRS = {"flops": "flops", "latency": "latency_ms", "params": "params"}  # cost -> trial user attr
COST_LABELS = {"flops": "FLOPs", "latency": "latency ms", "params": "params"}
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def trials_used(trials: list[FrozenTrial]) -> int:
    """Trials that count toward --trials: COMPLETE, PRUNED and FAIL, a retried FAIL only through its retry."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials
               if t.state in COUNTED and not (t.state == TrialState.FAIL and t.number in retried))


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
    parts = [f"trial {t.number} {t.state.name}", f"{a.get('name', '?')} hints {a.get('hints', '?')}",
             f"{metric_name} {metric:.4f}" if metric is not None else f"{metric_name} -"]
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


def front_rows(study: optuna.Study, objectives: tuple[str, ...]) -> list[dict]:
    """The current front (study.best_trials, feasible only) as plain rows, cheapest first."""
    rows = []
    for t in study.best_trials:
        a = t.user_attrs
        rows.append({"trial": t.number, "name": a.get("name"), "hints": a.get("hints"), "metric": t.values[0],
                     "flops": a.get("flops"), "params": a.get("params"), "latency_ms": a.get("latency_ms"),
                     "latency_device": a.get("latency_device"), "baseline": a.get("baseline", "")})
    key = COST_ATTRS[objectives[1]] if len(objectives) > 1 else "flops"
    return sorted(rows, key=lambda r: (r[key] if r[key] is not None else math.inf, -r["metric"]))


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
