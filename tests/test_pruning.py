"""The Pareto-aware pruning rule and the 2-D hypervolume, on plain numbers."""

from __future__ import annotations

import random

import pytest

from fastbert_nas.search.pruning import (
    PRUNE_MARGIN,
    PRUNE_WARMUP_TRIALS,
    front_hypervolume,
    hypervolume_2d,
    metric_by,
    replay_pruning,
    should_prune,
)

# Five finished trials: (cost, {checkpoint: metric})
FINISHED = [
    (1.0, {100: 0.60, 200: 0.70}),
    (2.0, {100: 0.70, 200: 0.80}),
    (3.0, {100: 0.75, 200: 0.85}),
    (4.0, {100: 0.80, 200: 0.90}),
    (5.0, {100: 0.85, 200: 0.92}),
]


def test_defaults():
    """Without keywords, should_prune waits for PRUNE_WARMUP_TRIALS finished trials and allows PRUNE_MARGIN."""
    same = [(1.0, {100: 0.8})] * PRUNE_WARMUP_TRIALS
    below = 0.8 - PRUNE_MARGIN - 1e-6
    assert should_prune(100, below, 1.0, same[:-1]) is None                   # one short of the warm-up
    assert should_prune(100, below, 1.0, same).startswith("pruned at step 100")
    assert should_prune(100, below + 2e-6, 1.0, same) is None                 # just within the margin


def test_warm_up():
    kw = dict(warmup_trials=5, margin=0.01)
    assert should_prune(200, 0.1, 10.0, FINISHED[:4], **kw) is None     # 4 finished: no pruning yet
    assert should_prune(200, 0.1, 10.0, FINISHED, **kw) is not None      # 5: prune
    # trials without a checkpoint by `step` do not count
    assert should_prune(50, 0.1, 10.0, FINISHED, **kw) is None


def test_cost_filter():
    kw = dict(warmup_trials=1, margin=0.01)
    # cost 2.0: the bar is the best of costs <= 2.0, i.e. 0.80 at step 200
    assert should_prune(200, 0.785, 2.0, FINISHED, **kw) is not None
    assert should_prune(200, 0.795, 2.0, FINISHED, **kw) is None          # within the margin
    assert should_prune(200, 0.795, 1.9, FINISHED, **kw) is None          # only cost 1.0 is cheaper: bar 0.70
    assert should_prune(200, 0.10, 0.5, FINISHED, **kw) is None           # nothing cheaper: never pruned
    assert should_prune(200, 0.79, 2.0, FINISHED, **kw) is None           # equal cost counts; 0.79 >= 0.80-0.01


def test_margin():
    assert should_prune(200, 0.84, 3.0, FINISHED, warmup_trials=1, margin=0.0) is not None
    assert should_prune(200, 0.84, 3.0, FINISHED, warmup_trials=1, margin=0.02) is None
    assert should_prune(200, 0.82, 3.0, FINISHED, warmup_trials=1, margin=0.02) is not None
    assert should_prune(200, 0.84, 3.0, FINISHED) is not None             # the defaults: 0.84 < 0.85, no margin
    assert should_prune(200, 0.85, 3.0, FINISHED) is None                 # level with the bar goes on


def test_checkpoint_mismatch():
    """Finished trials are compared by the last metric they had at or before the step."""
    odd = [(1.0, {150: 0.9, 300: 0.95})]
    kw = dict(warmup_trials=1, margin=0.01)
    assert should_prune(100, 0.1, 1.0, odd, **kw) is None                # no checkpoint by step 100
    assert should_prune(200, 0.85, 1.0, odd, **kw) is not None           # vs 0.9 at step 150
    assert should_prune(200, 0.895, 1.0, odd, **kw) is None              # not 0.95 from step 300
    assert metric_by({150: 0.9, 300: 0.95}, 299) == (150, 0.9)
    assert metric_by({"150": 0.9, "300": 0.95}, 300) == (300, 0.95)       # JSON keys are strings
    assert metric_by({100: float("nan"), 50: 0.5}, 100) == (50, 0.5)      # NaN is ignored
    assert metric_by({}, 100) is None


def test_reason_string():
    reason = should_prune(200, 0.5, 2.5, FINISHED, warmup_trials=1, margin=0.05)
    assert reason == ("pruned at step 200: metric 0.5000 is more than 0.05 below 0.8000, "
                      "reached by step 200 by a finished trial of cost 2 <= 2.5")


def test_ties_name_the_cheapest():
    tied = [(2.0, {100: 0.8}), (1.0, {100: 0.8})]
    assert "cost 1 <=" in should_prune(100, 0.5, 3.0, tied, warmup_trials=1, margin=0.0)


# ---------------------------------------------------------------------------
# Hypervolume: metric maximized, cost minimized

def unpruned(cost: float, curve: dict, state: str = "COMPLETE") -> dict:
    """A finished trial of an unpruned study: 10 hint steps, then KD to its last checkpoint."""
    return {"state": state, "cost": cost, "curve": curve, "metric": curve[max(curve)], "hint_steps": 10,
            "train_steps": 10 + max(curve)}


def test_replay_stops_what_the_rule_stops_and_drops_it_from_the_front():
    """Replayed over an unpruned study, the rule stops a trial at the first checkpoint where it is more than the
    margin below a cheaper finished trial; the stopped trial keeps only its steps to there and leaves the front,
    and what it reached no longer sets the bar for the trials after it."""
    trials = [unpruned(1.0, {100: 0.70, 200: 0.80}),
              unpruned(2.0, {100: 0.60, 200: 0.85}),           # 0.10 below at 100: stopped at 100 (110 steps)
              unpruned(3.0, {100: 0.58, 200: 0.60}),           # 0.12 below the first's 0.70: stopped at 100
              unpruned(0.5, {100: 0.90, 200: 0.60}, "PRUNED")]  # collapsed: all its steps, never the bar
    kw = dict(warmup_trials=1, teacher_cost=10.0, floor_metric=0.5)
    kept = replay_pruning(trials, margin=0.05, **kw)
    assert kept["pruned"] == 2
    assert kept["train_steps"] == 210 + 110 + 110 + 210
    assert kept["hypervolume"] == pytest.approx(front_hypervolume([(0.80, 1.0)], 10.0, 0.5))
    # a margin past every gap stops nothing: the unpruned study's steps and front
    everything = replay_pruning(trials, margin=1.0, **kw)
    assert everything == {"pruned": 0, "train_steps": sum(t["train_steps"] for t in trials),
                          "hypervolume": front_hypervolume([(0.80, 1.0), (0.85, 2.0), (0.60, 3.0)], 10.0, 0.5)}
    # without a finished trial to warm up on, nothing is stopped either
    assert replay_pruning(trials, margin=0.0, **(kw | {"warmup_trials": 5}))["pruned"] == 0


def test_hypervolume_by_hand():
    ref = (0.5, 3.0)
    assert hypervolume_2d([], ref) == 0.0
    assert hypervolume_2d([(0.9, 1.0)], ref) == pytest.approx(0.4 * 2.0)
    # (0.8, 1): 0.3 x 2 = 0.6; (0.9, 2) adds the slab 0.8..0.9 x (3 - 2) = 0.1
    assert hypervolume_2d([(0.8, 1.0), (0.9, 2.0)], ref) == pytest.approx(0.7)
    # a dominated point and a duplicate change nothing; order does not matter
    assert hypervolume_2d([(0.9, 2.0), (0.7, 1.5), (0.8, 1.0), (0.8, 1.0)], ref) == pytest.approx(0.7)
    # points not better than ref in both objectives add nothing
    assert hypervolume_2d([(0.4, 1.0), (0.9, 3.0), (0.95, 4.0)], ref) == 0.0
    # staircase of three: 0.1*2.5 + 0.1*1.5 + 0.2*0.5 = 0.5
    assert hypervolume_2d([(0.6, 0.5), (0.7, 1.5), (0.9, 2.5)], ref) == pytest.approx(0.5)


def union_area(points, ref) -> float:
    """The area of the union of the boxes [ref metric, m] x [c, ref cost], by brute force: cut the plane at
    every coordinate of every box, and add up the cells whose centre lies inside some box."""
    ref_m, ref_c = ref
    boxes = [(ref_m, m, c, ref_c) for m, c in points if m > ref_m and c < ref_c]  # (m_lo, m_hi, c_lo, c_hi)
    ms = sorted({v for b in boxes for v in b[:2]})
    cs = sorted({v for b in boxes for v in b[2:]})
    area = 0.0
    for m0, m1 in zip(ms, ms[1:]):
        for c0, c1 in zip(cs, cs[1:]):
            mid_m, mid_c = (m0 + m1) / 2, (c0 + c1) / 2
            if any(lo <= mid_m <= hi and clo <= mid_c <= chi for lo, hi, clo, chi in boxes):
                area += (m1 - m0) * (c1 - c0)
    return area


def grid_cells(points, ref) -> int:
    """Integer points only: the unit cells [i, i+1] x [j, j+1] dominated by some point, counted one by one."""
    ref_m, ref_c = ref
    return sum(any(m >= i + 1 and c <= j for m, c in points)
               for i in range(ref_m, max([m for m, _ in points] + [ref_m]))
               for j in range(min([c for _, c in points] + [ref_c]), ref_c))


def test_union_area_by_hand():
    """The brute force itself, on figures worked out by hand (those of test_hypervolume_by_hand)."""
    assert union_area([(0.8, 1.0), (0.9, 2.0)], (0.5, 3.0)) == pytest.approx(0.7)
    assert union_area([(0.6, 0.5), (0.7, 1.5), (0.9, 2.5)], (0.5, 3.0)) == pytest.approx(0.5)
    assert grid_cells([(3, 1), (5, 4)], (0, 6)) == 3 * 5 + 2 * 2 == 19
    assert union_area([], (0.5, 3.0)) == grid_cells([], (0, 6)) == 0


@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_matches_the_union_of_boxes(seed):
    """Random point sets, with dominated points, duplicates, ties on one objective and points beyond the
    reference point (worse metric, costlier, or both)."""
    rng = random.Random(seed)
    ref = (0.5, 4.0)
    pts = [(rng.uniform(0.3, 1.0), rng.uniform(0.0, 5.0)) for _ in range(rng.randint(1, 40))]
    pts += rng.sample(pts, min(5, len(pts)))                                    # duplicates
    pts += [(m, rng.uniform(0.0, 5.0)) for m, _ in rng.sample(pts, 3)]          # ties on the metric
    pts += [(rng.uniform(0.3, 1.0), c) for _, c in rng.sample(pts, 3)]          # ties on the cost
    pts += [(0.5, 1.0), (0.9, 4.0), (0.2, 0.5), (1.0, 6.0)]                     # on or beyond the reference
    rng.shuffle(pts)
    assert any(m <= ref[0] or c >= ref[1] for m, c in pts)
    assert hypervolume_2d(pts, ref) == pytest.approx(union_area(pts, ref), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_of_integer_points_counts_grid_cells(seed):
    """Integer points: the area is a whole number of unit cells, counted without any sweep."""
    rng = random.Random(100 + seed)
    ref = (2, 15)
    pts = [(rng.randint(0, 12), rng.randint(0, 18)) for _ in range(rng.randint(1, 30))]  # many duplicates, ties
    expected = grid_cells(pts, ref)
    assert hypervolume_2d(pts, ref) == expected
    assert hypervolume_2d(pts, ref) == pytest.approx(union_area(pts, ref))


def test_pure_modules_import_neither_torch_nor_optuna():
    import subprocess
    import sys

    code = ("import sys, fastbert_nas.search.pruning, fastbert_nas.search.space; "
            "print(sorted({'torch', 'optuna'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
