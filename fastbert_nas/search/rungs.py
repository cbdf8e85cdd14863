"""Which students go up a rung: successive halving for two objectives, on plain numbers (no optuna, no torch).

A search trains most students at a short budget (the first rung) and trains the most promising again at
longer ones. Successive halving promotes the best 1/ETA of a rung by one metric; with a metric to raise and
a cost to lower, "best" is a front, not a ranking. So students are ordered by Pareto rank (the front first,
then the front of what is left, ...), and within a rank by their share of that rank's hypervolume (on log
cost, as `pruning.front_hypervolume` measures it): a student that alone holds a stretch of the front,
cheap or costly, goes before one that nearly duplicates a neighbour. Cheap students are promoted too, as
long as they are on the front or near it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from fastbert_nas.config import AUGMENT_COPIES, DistillConfig
from fastbert_nas.config import RUNG_ETA as ETA
from fastbert_nas.search.pruning import front_hypervolume


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Each (metric, cost) point's Pareto rank, metric maximized and cost minimized: 0 for the points no
    other point dominates, 1 for those only rank-0 points dominate, and so on. Equal points share a rank."""
    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and a != b

    ranks = [-1] * len(points)
    left, rank = set(range(len(points))), 0
    while left:
        front = {i for i in left if not any(dominates(points[j], points[i]) for j in left)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def hv_contributions(points: Sequence[tuple[float, float]], teacher_cost: float, floor_metric: float) -> list[float]:
    """Each point's share of the hypervolume of the points of its own Pareto rank: that rank's hypervolume
    less the hypervolume without the point (front_hypervolume's units). A point that ties another exactly
    adds nothing of its own."""
    return _contributions(points, pareto_ranks(points), teacher_cost, floor_metric)


def _contributions(points: Sequence[tuple[float, float]], ranks: list[int], teacher_cost: float,
                   floor_metric: float) -> list[float]:
    """hv_contributions, given the points' Pareto ranks."""
    out = []
    for i, point in enumerate(points):
        peers = [p for j, p in enumerate(points) if ranks[j] == ranks[i]]
        rest = [p for j, p in enumerate(points) if ranks[j] == ranks[i] and j != i]
        out.append(front_hypervolume(peers, teacher_cost, floor_metric)
                   - front_hypervolume(rest, teacher_cost, floor_metric))
    return out


def promotion_order(points: Sequence[tuple[float, float]], teacher_cost: float, floor_metric: float) -> list[int]:
    """Indices of (metric, cost) points, the first to promote first: by Pareto rank, then by hypervolume
    contribution (largest first), then the cheaper, then the earlier."""
    ranks = pareto_ranks(points)
    share = _contributions(points, ranks, teacher_cost, floor_metric)
    return sorted(range(len(points)), key=lambda i: (ranks[i], -share[i], points[i][1], i))


def promotable(finished: int, eta: int = ETA) -> int:
    """How many of a rung's `finished` students may have gone up: one in eta, counted as they finish, so
    that a study promotes while it runs (after eta students, one; after 2 x eta, two; ...)."""
    return finished // eta


def to_promote(points: Sequence[tuple[float, float]], promoted: set[int], teacher_cost: float,
               floor_metric: float, finished: int | None = None, eta: int = ETA) -> int | None:
    """The index of the next student of a rung to send up, or None: the first in promotion_order not yet
    promoted, while fewer than promotable(finished) have gone up.

    points: (metric, cost) of every student that completed the rung; promoted: the indices already sent up;
    finished: the students that finished the rung, those stopped early included (default len(points))."""
    if len(promoted) >= promotable(len(points) if finished is None else finished, eta):
        return None
    return next((i for i in promotion_order(points, teacher_cost, floor_metric) if i not in promoted), None)


def rung_steps(kd_steps: int, eval_every: int, rung: int, eta: int = ETA) -> tuple[int, int]:
    """(KD steps, steps between checkpoints) at `rung`, given the first rung's: both eta^rung times longer,
    so that every rung has as many checkpoints."""
    return kd_steps * eta ** rung, eval_every * eta ** rung


def rung_config(cfg: DistillConfig, rung: int, rungs: int, eta: int = ETA) -> DistillConfig:
    """The budget of a trial at `rung` of `rungs`, from the first rung's `cfg`: rung_steps's KD steps and
    checkpoints, and at the top rung of a ladder (rungs > 1) the export budgets' augmentation
    (config.AUGMENT_COPIES word-replaced copies of each sentence-like example), as export trains."""
    kd_steps, eval_every = rung_steps(cfg.kd_steps, cfg.eval_every, rung, eta)
    augment = AUGMENT_COPIES if rungs > 1 and rung == rungs - 1 else cfg.augment
    return replace(cfg, kd_steps=kd_steps, eval_every=eval_every, augment=augment)
