"""The Pareto-aware pruning rule and the 2-D hypervolume, on plain numbers."""

from __future__ import annotations

import pytest

from fastbert_nas.pruning import PRUNE_MARGIN, PRUNE_WARMUP_TRIALS, hypervolume_2d, metric_by, should_prune

# Five finished trials: (cost, {checkpoint: metric})
FINISHED = [
    (1.0, {100: 0.60, 200: 0.70}),
    (2.0, {100: 0.70, 200: 0.80}),
    (3.0, {100: 0.75, 200: 0.85}),
    (4.0, {100: 0.80, 200: 0.90}),
    (5.0, {100: 0.85, 200: 0.92}),
]


def test_defaults():
    assert 0 < PRUNE_MARGIN < 0.1 and PRUNE_WARMUP_TRIALS >= 1


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
    assert should_prune(200, 0.84, 3.0, FINISHED) is None                 # the defaults


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


def test_hypervolume_matches_optuna():
    np = pytest.importorskip("numpy")
    wfg = pytest.importorskip("optuna._hypervolume.wfg")
    rng = np.random.default_rng(0)
    pts = [(float(m), float(c)) for m, c in zip(rng.uniform(0.4, 1.0, 30), rng.uniform(0.0, 5.0, 30))]
    ref = (0.5, 4.0)
    inside = [(-m, c) for m, c in pts if m > ref[0] and c < ref[1]]   # as losses: minimize both
    expected = wfg.compute_hypervolume(np.array(inside), np.array([-ref[0], ref[1]]))
    assert hypervolume_2d(pts, ref) == pytest.approx(expected)


def test_pure_modules_import_neither_torch_nor_optuna():
    import subprocess
    import sys

    code = ("import sys, fastbert_nas.pruning, fastbert_nas.space; "
            "print(sorted({'torch', 'optuna'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
