"""The hint mapping as a trial's parameters: which teacher layer guides which student layer (no torch).

Two schemes; a study records its own (study user attr HINT_SCHEME_ATTR) and keeps it when resumed.

slots (a new study): one parameter per slot k = 1..max_hints, a fixed length whatever the depth:

    hint_slot<k>   int  [0, teacher_layers]   the teacher layer guiding the student layer at depth
                                              fraction k / max_hints (layer ceil(k * layers / max_hints)),
                                              0 for none; the last slot guides the last layer: [1, T]

  Every parameter means what ran: nothing is sorted or clipped, so a sampler and the parameter
  importances see the real mapping. Teacher layers need not rise with the student's (the FitNets hint
  is any guided/hint layer pair). A student shallower than max_hints has slots that share a layer: the
  later slot guides it, and the earlier one has no effect for that student.

sorted (studies made before the slots): n_hints in [1, max_hints], clipped to the depth, and
hint_t1..hint_t<n> in [1, T], sorted into a monotone mapping on n evenly spread student layers.
"""

from __future__ import annotations

import math

from fastbert_nas.config import UserError

HINT_SCHEME_ATTR = "hint_scheme"
SCHEMES = ("slots", "sorted")
DEFAULT_SCHEME = "slots"      # what a new study uses
UNRECORDED_SCHEME = "sorted"  # what a study that records no scheme was made with


def slot_name(k: int) -> str:
    return f"hint_slot{k}"


def slot_layers(layers: int, slots: int) -> tuple[int, ...]:
    """The student layer of each slot k = 1..slots: ceil(k * layers / slots); the last is `layers`.

    E.g. (8, 3) -> (3, 6, 8); (2, 3) -> (1, 2, 2); (4, 4) -> (1, 2, 3, 4)."""
    return tuple(math.ceil(k * layers / slots - 1e-9) for k in range(1, slots + 1))


def hint_student_layers(layers: int, n: int) -> tuple[int, ...]:
    """The sorted scheme's n student layers spread evenly over 1..layers, the last one always included
    (1 <= n <= layers). E.g. (8, 4) -> (2, 4, 6, 8); (6, 4) -> (1, 3, 4, 6); (5, 1) -> (5,)."""
    return tuple(i * layers // n for i in range(1, n + 1))


def sample_hints(trial, layers: int, max_hints: int, teacher_layers: int,
                 scheme: str = DEFAULT_SCHEME) -> tuple[tuple[int, int], ...]:
    """The hint pairs ((student layer, teacher layer), ...) of a trial's parameters (trial.suggest_int)."""
    if scheme == "sorted":
        n_hints = min(trial.suggest_int("n_hints", 1, max_hints), layers)
        teacher = sorted(trial.suggest_int(f"hint_t{k}", 1, teacher_layers) for k in range(1, n_hints + 1))
        return tuple(zip(hint_student_layers(layers, n_hints), teacher))
    decided: dict[int, int] = {}
    for k, s in enumerate(slot_layers(layers, max_hints), start=1):
        decided[s] = trial.suggest_int(slot_name(k), 1 if k == max_hints else 0, teacher_layers)  # later slot wins
    return tuple(sorted((s, t) for s, t in decided.items() if t))


def hint_params(hints: tuple[tuple[int, int], ...], layers: int, max_hints: int,
                scheme: str = DEFAULT_SCHEME) -> dict:
    """The parameters sample_hints reads to produce `hints` (for study.enqueue_trial); UserError (naming
    the student layers the scheme can hint) when no parameters produce them."""
    if scheme == "sorted":
        want = hint_student_layers(layers, len(hints))
        if tuple(s for s, _ in hints) != want or [t for _, t in hints] != sorted(t for _, t in hints):
            raise UserError(f"hints must sit on student layers {list(want)} (evenly, last on last), teacher "
                            "layers rising")
        return {"n_hints": len(hints), **{f"hint_t{k}": t for k, (_, t) in enumerate(hints, start=1)}}
    slots = slot_layers(layers, max_hints)
    last_slot = {s: k for k, s in enumerate(slots, start=1)}  # the slot that decides each layer
    given = dict(hints)
    if not set(given) <= set(slots) or given.get(layers) is None:
        raise UserError(f"hints must sit on student layers among {sorted(set(slots))}, one of them on the "
                        f"last ({layers})")
    return {slot_name(k): given.get(s, 0) if last_slot[s] == k else 0 for k, s in enumerate(slots, start=1)}
