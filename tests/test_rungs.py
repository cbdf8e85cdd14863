"""search.rungs: which students go up a rung (Pareto rank, then hypervolume contribution), on plain numbers."""

import pytest

from fastbert_nas.search.rungs import hv_contributions, pareto_ranks, promotable, promotion_order, to_promote

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
