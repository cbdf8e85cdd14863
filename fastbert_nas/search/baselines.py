"""Students queued first in a new study: the published baselines scaled to the teacher, and --enqueue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import optuna

from fastbert_nas.config import StudentArch, UserError, trial_recipe
from fastbert_nas.core.family import config_shape
from fastbert_nas.search.hints import slot_layers
from fastbert_nas.search.space import CHOICE_KEYS, SearchSpace, fixed_params

# Baselines (enqueued first in a new study): a width more than this far from the target
# (relative) means the space cannot represent the baseline.
BASELINE_WIDTH_TOLERANCE = 0.25


@dataclass(frozen=True)
class BaselineTarget:
    """A published student's shape, scaled to the teacher where the paper scaled it to BERT-base."""

    name: str
    layers: int
    hidden: float
    heads: int
    ffn_ratio: float


def baseline_targets(space: SearchSpace, teacher_layers: int, teacher_hidden: int, teacher_heads: int,
                     teacher_ffn: int) -> list[BaselineTarget]:
    ratio = teacher_ffn / teacher_hidden
    deep = min(2 * teacher_layers, space.layers[1])  # MobileBERT: 24 layers for BERT-base's 12
    return [
        BaselineTarget("DistilBERT-like", max(1, teacher_layers // 2), teacher_hidden, teacher_heads, ratio),
        BaselineTarget("TinyBERT-4-like", 4, 312, 12, 1200 / 312),
        BaselineTarget("MobileBERT-like", deep if deep > teacher_layers else 2 * teacher_layers, 128, 4, 4.0),
        BaselineTarget("teacher-depth-half-width", teacher_layers, teacher_hidden / 2, teacher_heads, ratio),
    ]


def baseline_arch(space: SearchSpace, target: BaselineTarget, teacher_layers: int) -> StudentArch:
    """The space's nearest student to `target`, a hint on each of its hint slots' layers (hints.slot_layers),
    each guided by the teacher layer at the same depth fraction; UserError when the space cannot hold it."""
    lo, hi = space.layers
    if not lo <= target.layers <= hi:
        raise UserError(f"{target.layers} layers, the space allows {lo}-{hi}")
    hidden = min(space.hidden, key=lambda h: (abs(h - target.hidden), h))
    if abs(hidden - target.hidden) > BASELINE_WIDTH_TOLERANCE * target.hidden:
        raise UserError(f"width {target.hidden:g}, the nearest the space allows is {hidden}")
    heads = min(space.heads_for(hidden), key=lambda a: (abs(a - target.heads), -a))
    ratio = min(space.ffn_ratio, key=lambda r: (abs(r - target.ffn_ratio), -r))
    students = sorted(set(slot_layers(target.layers, space.max_hints)))
    hints = tuple((s, min(teacher_layers, max(1, math.ceil(s * teacher_layers / target.layers - 1e-9))))
                  for s in students)
    return StudentArch(target.layers, hidden, heads, round(ratio * hidden), hints)


def baseline_params(space: SearchSpace, teacher_config) -> tuple[list[tuple[str, StudentArch, dict]], list[str]]:
    """[(name, arch, params for enqueue_trial)] and a note per baseline skipped."""
    tl = teacher_config.num_hidden_layers
    targets = baseline_targets(space, *config_shape(teacher_config))
    queued, notes, seen = [], [], {}
    settings = {"init": "teacher"} if space.init and "teacher" in space.init else {}  # None: not sampled
    for target in targets:
        try:
            arch = baseline_arch(space, target, tl)
            params = fixed_params(space, arch, tl, **settings)
        except UserError as exc:
            notes.append(f"baseline {target.name} skipped: space {space.name!r} cannot represent it ({exc})")
            continue
        key = tuple(sorted(params.items()))
        if key in seen:
            notes.append(f"baseline {target.name} skipped: same student as {seen[key]} ({arch.name})")
            continue
        seen[key] = target.name
        queued.append((target.name, arch, params))
    return queued, notes


def parse_student(text: str, option: str = "--enqueue") -> StudentArch:
    """'L3-H320-A10-I640' or 'L3-H320-A10-I640@1:2,2:4,3:6' -> StudentArch (not yet validated); a UserError
    names `option`."""
    arch, _, hints = text.partition("@")
    try:
        return StudentArch.parse(arch, hints or None)
    except UserError as exc:
        raise UserError(f"{option} {text!r}: {str(exc).split(': ', 1)[-1]}; "
                        "the form is ARCH or ARCH@HINTS, e.g. L3-H320-A10-I640@1:2,2:4,3:6") from None


def enqueued_params(space: SearchSpace, students: tuple[StudentArch, ...],
                    teacher_layers: int) -> list[tuple[StudentArch, dict]]:
    """[(student with its hints, enqueue_trial params)] for --enqueue, trained with config.trial_recipe (where the
    space samples the recipe, its params are set to that recipe, when it allows them); UserError naming the student
    if the space cannot hold it."""
    out = []
    for arch in students:
        arch = arch.with_default_hints(teacher_layers)
        recipe = trial_recipe(arch)
        settings = {k: recipe[k] for k in space.sampled_recipe
                    if k not in CHOICE_KEYS or recipe[k] in getattr(space, k)}
        try:
            out.append((arch, fixed_params(space, arch, teacher_layers, **settings)))
        except UserError as exc:
            raise UserError(f"--enqueue {arch.name}@{arch.hints_str}: {str(exc).split(': ', 1)[-1]}") from None
    return out


def enqueue_students(study: optuna.Study, queued: list[tuple[StudentArch, dict]], log: Callable[[str], None],
                     room: int) -> int:
    """Queue the --enqueue students, at most `room` of them (the --trials left); how many were queued."""
    for arch, params in queued[:room]:
        study.enqueue_trial(params, user_attrs={"enqueued": True})
        log(f"student {arch.name} hints {arch.hints_str} queued (--enqueue)")
    for arch, _ in queued[room:]:
        log(f"note: student {arch.name} not queued: the students queued before it use all of --trials")
    return min(room, len(queued))


def enqueue_baselines(study: optuna.Study, space: SearchSpace, teacher_config, log: Callable[[str], None],
                      room: int) -> int:
    """Queue the baselines the space holds, at most `room` of them (--trials); how many were queued. (Queued
    trials beyond --trials would run once a promotion is due: Optuna runs the oldest queued trial first.)"""
    queued, notes = baseline_params(space, teacher_config)
    for name, arch, params in queued[:room]:
        study.enqueue_trial(params, user_attrs={"baseline": name})
        log(f"baseline {name}: {arch.name} hints {arch.hints_str} queued")
    for name, arch, _ in queued[room:]:
        log(f"note: baseline {name} not queued: the baselines before it use all of --trials")
    for note in notes:
        log(note)
    return min(room, len(queued))
