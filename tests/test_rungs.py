"""Rungs: which students go up a rung (search.rungs: Pareto rank, then hypervolume contribution, on plain
numbers), due promotions and duplicates on a study's trials (search.promotion, search.trials)."""

from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from fastbert_nas.config import AUGMENT_COPIES, DistillConfig
from fastbert_nas.search.promotion import due_promotion, enqueue_promotion
from fastbert_nas.search.rungs import (
    hv_contributions,
    pareto_ranks,
    promotable,
    promotion_order,
    rung_config,
    rung_steps,
    to_promote,
)
from fastbert_nas.search.trials import DUPLICATE, front_trials, is_duplicate, top_rung_trials, trials_used

TEACHER = 1000.0  # teacher cost: the hypervolume's reference
FLOOR = 0.5       # majority-class metric: the other reference


def test_pareto_ranks_peel_fronts():
    points = [(0.90, 100), (0.80, 10), (0.85, 100), (0.70, 50), (0.80, 10), (0.60, 5)]
    # (0.90,100), (0.80,10) twice (equal points share a rank), (0.60,5) are the front; (0.85,100) and
    # (0.70,50) are dominated only by front points
    assert pareto_ranks(points) == [0, 0, 1, 1, 0, 0]
    assert pareto_ranks([]) == []
    assert pareto_ranks([(0.9, 1), (0.8, 2), (0.7, 3)]) == [0, 1, 2]


def test_contribution_is_what_the_front_loses_without_the_point():
    # log10 decades saved: cost 10 saves 2, cost 100 saves 1
    points = [(0.80, 10), (0.90, 100)]
    # together they hold (0.80-0.5) x 2 + (0.90-0.80) x 1 = 0.7; (0.90,100) alone 0.4, (0.80,10) alone 0.6
    assert hv_contributions(points, TEACHER, FLOOR) == pytest.approx([0.7 - 0.4, 0.7 - 0.6])
    # a duplicate adds nothing of its own, and neither does its twin
    assert hv_contributions([(0.8, 10), (0.8, 10)], TEACHER, FLOOR) == pytest.approx([0.0, 0.0])


def test_cheap_students_on_the_front_go_up_before_dominated_costly_ones():
    points = [(0.88, 400), (0.85, 390), (0.70, 8), (0.86, 300), (0.62, 2)]  # (0.85,390): (0.86,300) beats it
    order = promotion_order(points, TEACHER, FLOOR)
    ranks = pareto_ranks(points)
    assert ranks == [0, 1, 0, 0, 0]
    # the cheap, weak students of the front go up before the strong one that a cheaper student beats
    assert order.index(2) < order.index(1) and order.index(4) < order.index(1)
    assert order[-1] == 1
    # within the front, by contribution: the two cheap ones save the most decades
    shares = hv_contributions(points, TEACHER, FLOOR)
    assert [shares[i] for i in order[:4]] == sorted((shares[i] for i in order[:4]), reverse=True)


def test_one_in_eta_goes_up_as_students_finish():
    assert [promotable(n, eta=3) for n in range(8)] == [0, 0, 0, 1, 1, 1, 2, 2]
    points = [(0.80, 10), (0.70, 20), (0.60, 30)]
    first = to_promote(points, set(), TEACHER, FLOOR, eta=3)
    assert first == 0                                   # the only front point
    assert to_promote(points, {first}, TEACHER, FLOOR, eta=3) is None   # one of three already went up
    points.append((0.90, 500))
    assert to_promote(points, {0}, TEACHER, FLOOR, eta=2) == 3            # four finished: a second may go
    assert to_promote(points, {0, 3}, TEACHER, FLOOR, eta=2) is None


def test_a_rung_is_eta_times_longer_with_as_many_checkpoints_and_the_top_one_augments():
    assert [rung_steps(500, 100, r, eta=3) for r in range(3)] == [(500, 100), (1500, 300), (4500, 900)]
    cfg = DistillConfig(kd_steps=500, eval_every=100)
    ladder = [rung_config(cfg, r, 3) for r in range(3)]
    assert [(c.kd_steps, c.eval_every, c.augment) for c in ladder] == [(500, 100, 0), (1500, 300, 0),
                                                                      (4500, 900, AUGMENT_COPIES)]
    assert rung_config(cfg, 0, 1) == cfg  # one rung: the trial budget as it is


# ---------------------------------------------------------------------------
# On a study's trials (search/promotion.py, search/trials.py)

def student(number: int, metric: float | None, flops: float, rung: int = 0, of: int | None = None,
            state: TrialState = TrialState.COMPLETE, start: int = 0, **attrs) -> FrozenTrial:
    """A finished trial of the student of trial `of` (itself by default) at `rung`, started at second `start`."""
    user = {"flops": flops, "kd_steps": 4 * 3 ** rung, **attrs}
    if rung:
        user.update(rung=rung, student=of, parent=of)
    t = create_trial(state=state, values=[metric, flops] if state == TrialState.COMPLETE else None,
                     params={"layers": number}, distributions={"layers": IntDistribution(0, 100)}, user_attrs=user)
    t.number, t.datetime_start = number, datetime(2026, 1, 1) + timedelta(seconds=start)
    return t


ATTRS = {"teacher_flops": TEACHER, "majority_val": FLOOR}


def test_due_promotion_sends_up_one_in_three_cheap_front_students_included():
    trials = [student(0, 0.70, 8), student(1, 0.85, 390), student(2, 0.86, 300)]
    assert due_promotion(trials[:2], 3, "flops", ATTRS) is None            # two finished: none yet
    parent, rung = due_promotion(trials, 3, "flops", ATTRS)
    assert (parent.number, rung) == (0, 1)  # the cheap student holds most of the front; (0.85, 390) is beaten
    trials.append(student(3, 0.75, 8, rung=1, of=0))                        # promoted and finished
    assert due_promotion(trials, 3, "flops", ATTRS) is None                 # one in three has gone up
    # a pruned student counts as one that finished the rung (a rejected one does not)
    trials += [student(4, None, 50, state=TrialState.PRUNED, curve={"2": 0.6}),
               student(5, None, 5000, state=TrialState.PRUNED, prune_reason="constraint"),
               student(6, 0.84, 20), student(7, 0.50, 600)]                  # six finished: two go up
    parent, rung = due_promotion(trials, 3, "flops", ATTRS)
    assert (parent.number, rung) == (6, 1)
    assert due_promotion(trials, 2, "flops", ATTRS) == (parent, 1)           # two rungs: only 0 -> 1
    assert due_promotion(trials, 1, "flops", ATTRS) is None                  # one rung: no promotion


def test_the_highest_rung_promotes_first():
    trials = [student(n, 0.6 + n / 100, 10 + n) for n in range(9)]
    trials += [student(9 + i, 0.7 + i / 100, 10 + n, rung=1, of=n) for i, n in enumerate((0, 4, 8))]
    parent, rung = due_promotion(trials, 3, "flops", ATTRS)
    assert rung == 2 and parent.number in (9, 10, 11)


def test_a_promotion_started_twice_runs_once_and_failures_give_way_to_their_retry():
    first = student(5, 0.8, 10, rung=1, of=0, state=TrialState.RUNNING, start=2)
    later = student(6, None, 10, rung=1, of=0, state=TrialState.RUNNING, start=3)
    trials = [student(0, 0.7, 10), first, later]
    assert not is_duplicate(first, trials) and is_duplicate(later, trials)
    assert not is_duplicate(trials[0], trials)                                  # rung 0: never
    failed = student(5, None, 10, rung=1, of=0, state=TrialState.FAIL, start=1)
    retry = student(7, None, 10, rung=1, of=0, state=TrialState.RUNNING, start=9)
    assert not is_duplicate(retry, [trials[0], failed, retry])


def test_reports_take_each_student_at_its_highest_finished_rung():
    trials = [student(0, 0.70, 10), student(1, 0.80, 100), student(2, 0.65, 5),
              student(3, 0.90, 100, rung=1, of=1), student(4, None, 10, rung=1, of=0, state=TrialState.RUNNING),
              student(5, None, 100, rung=2, of=1, state=TrialState.PRUNED, prune_reason=DUPLICATE)]
    assert [t.number for t in top_rung_trials(trials)] == [0, 2, 3]
    assert [t.number for t in front_trials(trials, 2)] == [0, 2, 3]
    trials.append(student(6, 0.60, 10, rung=1, of=0))                          # longer, and worse: it counts
    assert [t.number for t in front_trials(trials, 2)] == [2, 3]
    assert trials_used(trials) == 3                                             # students, not promotions


def test_a_promoted_baseline_keeps_its_name():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"layers": 2}, user_attrs={"baseline": "TinyBERT-4-like"})
    study.enqueue_trial({"layers": 3})
    for _ in range(2):
        study.optimize(lambda t: (t.suggest_int("layers", 1, 4) / 10, 1.0), n_trials=1)
    named, plain = study.trials
    enqueue_promotion(study, named, 1)
    enqueue_promotion(study, plain, 1)
    up_named, up_plain = study.get_trials(states=(TrialState.WAITING,))
    assert up_named.user_attrs["baseline"] == "TinyBERT-4-like"
    assert up_named.system_attrs["fixed_params"] == named.params
    assert "baseline" not in up_plain.user_attrs and up_plain.system_attrs["fixed_params"] == plain.params
