"""Promotions between rungs, on a study: which student is due to go up a rung, and queueing it.

Asynchronous successive halving: whenever a worker is free, it looks from the highest rung down for a
student rungs.to_promote sends up, and queues it as a trial with the student's parameters and the user
attrs RUNG_ATTR, STUDENT_ATTR and PARENT_ATTR (search/trials.py); else it samples a new student. A promoted
trial is a trial like any other: it is recorded, retried after a crash and shared by the workers through
the storage. Two workers that queue the same promotion at once both run it; the one started later stops
at once as a duplicate (trials.is_duplicate).

Students are compared on the metric and the first cost objective (FLOPs in a single-objective study), with
the hypervolume reference of the reports: the teacher's cost and the majority-class level.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from fastbert_nas.search.rungs import to_promote
from fastbert_nas.search.trials import COST_ATTRS, DUPLICATE, PARENT_ATTR, RUNG_ATTR, STUDENT_ATTR, rung_of, student_of

TEACHER_COST_ATTRS = {"flops": "teacher_flops", "latency": "teacher_latency_ms", "params": "teacher_params"}
NOT_AT_THE_RUNG = ("constraint", DUPLICATE)  # prune reasons of trials that never trained at their rung


def due_promotion(trials: list[FrozenTrial], rungs: int, cost: str, attrs: dict) -> tuple[FrozenTrial, int] | None:
    """(the trial to promote, the rung it goes to), or None: the first student rungs.to_promote sends up,
    looking from the highest rung that can promote down to rung 0.

    trials: the study's; rungs: how many the search climbs; cost: the cost compared (a key of COST_ATTRS);
    attrs: the study's user attrs (the teacher's cost, the majority-class level)."""
    for rung in reversed(range(rungs - 1)):
        at = [t for t in trials if rung_of(t) == rung and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
              and t.user_attrs.get("prune_reason") not in NOT_AT_THE_RUNG]
        done = [t for t in at if t.state == TrialState.COMPLETE and t.values and COST_ATTRS[cost] in t.user_attrs]
        if not done:
            continue
        up = {student_of(t) for t in trials if rung_of(t) == rung + 1}
        points = [(t.values[0], t.user_attrs[COST_ATTRS[cost]]) for t in done]
        teacher_cost = attrs.get(TEACHER_COST_ATTRS[cost]) or max(c for _, c in points)
        i = to_promote(points, {i for i, t in enumerate(done) if student_of(t) in up}, teacher_cost,
                       attrs.get("majority_val", 0.0), finished=len(at))
        if i is not None:
            return done[i], rung + 1
    return None


def promotions_waiting(trials: list[FrozenTrial]) -> int:
    """Promoted trials queued and not yet started (by any worker)."""
    return sum(1 for t in trials if t.state == TrialState.WAITING and rung_of(t) > 0)


def enqueue_promotion(study: optuna.Study, parent: FrozenTrial, rung: int) -> None:
    """Queue `parent`'s student at `rung`: its parameters, and the rung, the student and the parent as user
    attrs, and the parent's baseline name if it is one (reports label the student at its highest rung)."""
    named = {"baseline": parent.user_attrs["baseline"]} if "baseline" in parent.user_attrs else {}
    study.enqueue_trial(parent.params, user_attrs={RUNG_ATTR: rung, STUDENT_ATTR: student_of(parent),
                                                   PARENT_ATTR: parent.number, **named})
