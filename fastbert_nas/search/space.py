"""Search spaces: `search_spaces/*.yaml` -> SearchSpace, and one trial's sample of it (no torch here).

A space file lists what a trial may pick: depth, width, heads, FFN ratio, how
many FitNets hint pairs, the student init and the distillation settings, plus
the per-trial step budget for each `--budget` preset. It is read and checked in
one place, `load_space`; every mistake is one `UserError` naming the file and
the key.

Parameter names (stable, so that TPE learns across the conditional parts;
a name always has the same distribution within a study):

    layers          int   [layers.min, layers.max]       transformer blocks
    hidden          cat   hidden choices                 model width
    heads_h<W>      cat   heads choices that divide W    one name per width W, since the valid
                                                         heads differ per width (e.g. heads_h256)
    ffn_ratio       cat   ffn_ratio choices              FFN size = round(ratio * hidden)
    hint_slot<k>    int   [0, teacher_layers]            k = 1..max_hints: the teacher layer guiding the
                                                         student layer at depth fraction k/max_hints
                                                         (0: none; the last slot is >= 1); hints.py
    init            cat   init choices                   "teacher" or "random"
    temperature     float [min, max]                     KD softmax temperature
    kd_alpha        float [min, max]                     weight of KD against hard labels
    hint_weight     cat   hint_weight choices            hint loss kept in stage 2 (0 = off)
    relation_weight cat   relation_weight choices        MiniLM-v2 attention relation loss in stage 2 (0 = off)
    lr              float [min, max], log scale          stage-2 peak learning rate

(Studies made before the slots draw n_hints and hint_t<k> instead, sorted; hints.py has both.)

The last six (the training recipe, RECIPE_KEYS) are sampled only when the space file
lists them: the shipped spaces search architectures and hint mappings, and train every
student with `config.trial_recipe`, so that a trial's verdict is on the student, not on
a learning rate it happened to draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fastbert_nas.config import (
    BUDGETS,
    INITS,
    TRIAL_BUDGETS,
    TRIAL_RUNGS,
    DistillConfig,
    StudentArch,
    UserError,
    trial_recipe,
)
from fastbert_nas.search.hints import DEFAULT_SCHEME, hint_params, sample_hints

# Where bare space names are looked up: the checkout's top-level folder, else the copy
# installed inside the package (pyproject maps search_spaces/ to fastbert_nas/search_spaces/).
SPACES_DIRS = (Path(__file__).resolve().parents[2] / "search_spaces",
               Path(__file__).resolve().parents[1] / "search_spaces")
DEFAULT_SPACE = "thin-deep"  # students deeper than they are wide


# What a space's budget section may set: DistillConfig's step budget (not the recipe), and the rungs.
STEP_KEYS = ("hint_steps", "kd_steps", "eval_every", "batch_size", "examples", "eval_examples")
BUDGET_KEYS = STEP_KEYS + ("rungs",)

# Keys of a space file: required ones, then optional ones. The recipe keys, when given, make the
# search sample that part of the recipe; else every student trains with config.trial_recipe's value.
REQUIRED_KEYS = ("layers", "hidden", "heads", "ffn_ratio", "max_hints")
RECIPE_KEYS = ("init", "temperature", "kd_alpha", "hint_weight", "relation_weight", "lr")
CHOICE_KEYS = ("init", "hint_weight", "relation_weight")  # recipe keys given as lists of choices; the others are {min, max} ranges
OPTIONAL_KEYS = RECIPE_KEYS + ("description", "budget")
NUMBER_LIMIT = 1e9  # largest size of any number in a space file: far past any width, step count or rate


@dataclass(frozen=True)
class SearchSpace:
    """One search space, as read from its YAML file (see search_spaces/thin-deep.yaml)."""

    name: str                              # the file's stem, e.g. "thin-deep"
    path: str                              # the file it came from
    layers: tuple[int, int]                # (min, max) transformer blocks, inclusive
    hidden: tuple[int, ...]                # width choices (d_model)
    heads: tuple[int, ...]                 # attention-head choices; per width, only its divisors
    ffn_ratio: tuple[float, ...]           # FFN size / hidden choices
    max_hints: int                         # most FitNets hint pairs (at most `layers` per student)
    # The recipe, sampled when given; None: config.trial_recipe's value for every student.
    init: tuple[str, ...] | None = None              # student init choices: "teacher", "random"
    temperature: tuple[float, float] | None = None   # (min, max) KD softmax temperature
    kd_alpha: tuple[float, float] | None = None      # (min, max) weight of KD against the hard labels, in [0, 1]
    hint_weight: tuple[float, ...] | None = None     # choices of the stage-2 hint-loss weight (0 = off)
    relation_weight: tuple[float, ...] | None = None  # choices of the stage-2 relation-loss weight (0 = off)
    lr: tuple[float, float] | None = None            # (min, max) stage-2 peak learning rate, log scale
    description: str = ""
    budget: dict[str, dict[str, int]] = field(default_factory=dict, hash=False)  # preset -> BUDGET_KEYS

    @property
    def sampled_recipe(self) -> tuple[str, ...]:
        """The recipe keys this space samples (the others take config.trial_recipe's value)."""
        return tuple(k for k in RECIPE_KEYS if getattr(self, k) is not None)

    def heads_for(self, hidden: int) -> tuple[int, ...]:
        """The heads choices that divide `hidden` (never empty for a loaded space's widths)."""
        return tuple(a for a in self.heads if hidden % a == 0)


# ---------------------------------------------------------------------------
# Loading and checking

def space_path(name_or_path: str | Path) -> Path:
    """A bare name ("thin-deep") -> the shipped file; anything else is a path to a YAML file."""
    text = str(name_or_path)
    if "/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml")):
        folder = spaces_dir()
        if folder and (folder / f"{text}.yaml").is_file():
            return folder / f"{text}.yaml"
        raise UserError(f"--space {text!r}: no such search space; shipped: {', '.join(shipped_spaces())} "
                        "(or give a path to a .yaml file)")
    path = Path(text)
    if not path.is_file():
        raise UserError(f"--space {text!r}: file not found")
    return path


def spaces_dir() -> Path | None:
    """The folder of the shipped space files (the checkout's, else the installed copy)."""
    return next((d for d in SPACES_DIRS if d.is_dir()), None)


def shipped_spaces() -> list[str]:
    """Names of the space files shipped with the tool."""
    folder = spaces_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def load_space(name_or_path: str | Path = DEFAULT_SPACE) -> SearchSpace:
    """Read and check a space file; each mistake is a UserError naming the file and the key."""
    path = space_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # PyYAML: bad dates raise ValueError, deep nesting
        raise UserError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys (layers, hidden, ...) at the top level")
    return _Checker(path).space(data)


class _Checker:
    """Reads one file's values; `fail(key, why)` raises a UserError naming file and key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, why: str):
        raise UserError(f"{self.path}: {key}: {why}")

    def known(self, data: dict, allowed: tuple[str, ...], where: str = "") -> None:
        for key in data:
            if key not in allowed:
                self.fail(f"{where}{key}", f"unknown key; expected one of {', '.join(allowed)}")

    def number(self, key: str, value: Any, kind: type = float, low: float = 0.0, open_low: bool = True):
        """A number > low (>= low if not open_low); PyYAML reads 1e-4 as a string, so strings are tried."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"{value!r} is not a number")
        if not abs(value) <= NUMBER_LIMIT:  # NaN and infinity too
            self.fail(key, f"{value!r:.40} is not a number (at most {NUMBER_LIMIT:g} in size)")
        if kind is int:
            if value != int(value):
                self.fail(key, f"{value!r} is not a whole number")
            value = int(value)
        if value < low or (open_low and value == low):
            self.fail(key, f"{value!r} must be {'>' if open_low else '>='} {low:g}")
        return kind(value)

    def choices(self, key: str, value: Any, item) -> tuple:
        if not isinstance(value, list):
            self.fail(key, f"expected a list of choices, got {value!r}")
        if not value:
            self.fail(key, "empty list of choices")
        out = tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))
        if len(set(out)) != len(out):
            self.fail(key, f"duplicate choices in {list(out)}")
        return out

    def range(self, key: str, value: Any, item) -> tuple:
        if not isinstance(value, dict):
            self.fail(key, f"expected a range {{min: ..., max: ...}}, got {value!r}")
        self.known(value, ("min", "max"), f"{key}.")
        for end in ("min", "max"):
            if end not in value:
                self.fail(f"{key}.{end}", "missing")
        low, high = item(f"{key}.min", value["min"]), item(f"{key}.max", value["max"])
        if low > high:
            self.fail(key, f"min {low:g} is greater than max {high:g}")
        return low, high

    def space(self, data: dict) -> SearchSpace:
        self.known(data, REQUIRED_KEYS + OPTIONAL_KEYS)
        for key in REQUIRED_KEYS:
            if key not in data:
                self.fail(key, "missing")
        pos_int = lambda k, v: self.number(k, v, int)                    # noqa: E731  >= 1
        pos = lambda k, v: self.number(k, v)                             # noqa: E731  > 0
        nonneg = lambda k, v: self.number(k, v, low=0.0, open_low=False)  # noqa: E731  >= 0

        def init(k, v):
            if v not in INITS:
                self.fail(k, f"{v!r}: choose among {', '.join(INITS)}")
            return v

        def fraction(k, v):
            v = nonneg(k, v)
            if v > 1:
                self.fail(k, f"{v:g} must be at most 1")
            return v

        hidden = self.choices("hidden", data["hidden"], pos_int)
        heads = self.choices("heads", data["heads"], pos_int)
        for h in hidden:
            if not any(h % a == 0 for a in heads):
                self.fail("hidden", f"width {h} is divided by none of the heads choices {list(heads)}")
        ffn_ratio = self.choices("ffn_ratio", data["ffn_ratio"], pos)
        for h in hidden:
            for r in ffn_ratio:
                if round(r * h) < 1:
                    self.fail("ffn_ratio", f"ratio {r:g} gives an empty FFN at width {h}")
        description = data.get("description", "")
        if not isinstance(description, str):
            self.fail("description", "expected text")
        readers = {"init": lambda k, v: self.choices(k, v, init), "temperature": lambda k, v: self.range(k, v, pos),
                   "kd_alpha": lambda k, v: self.range(k, v, fraction),
                   "hint_weight": lambda k, v: self.choices(k, v, nonneg),
                   "relation_weight": lambda k, v: self.choices(k, v, nonneg), "lr": lambda k, v: self.range(k, v, pos)}
        recipe = {k: readers[k](k, data[k]) for k in RECIPE_KEYS if k in data}
        return SearchSpace(
            name=self.path.stem, path=str(self.path),
            layers=self.range("layers", data["layers"], pos_int),
            hidden=hidden, heads=heads, ffn_ratio=ffn_ratio,
            max_hints=pos_int("max_hints", data["max_hints"]),
            **recipe,
            description=description,
            budget=self.budget(data.get("budget") or {}),
        )

    def budget(self, section: Any) -> dict[str, dict[str, int]]:
        """budget: {preset: {hint_steps: ..., ...}}; each preset, merged with config.TRIAL_BUDGETS, must make sense."""
        if not isinstance(section, dict):
            self.fail("budget", f"expected a mapping preset -> steps, got {section!r}")
        out = {}
        for preset, steps in section.items():
            key = f"budget.{preset}"
            if preset not in TRIAL_BUDGETS:
                self.fail(key, f"unknown trial budget; choose among {', '.join(TRIAL_BUDGETS)}")
            if not isinstance(steps, dict):
                self.fail(key, f"expected a mapping of {', '.join(BUDGET_KEYS)}, got {steps!r}")
            self.known(steps, BUDGET_KEYS, f"{key}.")
            out[preset] = {k: self.number(f"{key}.{k}", v, int, open_low=k != "hint_steps")
                           for k, v in steps.items()}  # hint_steps may be 0 (no stage 1)
            merged = {**TRIAL_BUDGETS[preset], **out[preset]}
            if merged["eval_every"] > merged["kd_steps"]:
                self.fail(f"{key}.eval_every", f"{merged['eval_every']} exceeds kd_steps={merged['kd_steps']}: "
                          "no checkpoint would be evaluated")
        return out


# ---------------------------------------------------------------------------
# Budgets

def space_budget(space: SearchSpace, preset: str, **overrides) -> DistillConfig:
    """config.TRIAL_BUDGETS[preset], then the space's budget section for it, then the non-None overrides."""
    if preset not in TRIAL_BUDGETS:
        raise UserError(f"--budget {preset!r}: unknown trial budget; choose one of {', '.join(TRIAL_BUDGETS)} "
                        f"(distill and export take {', '.join(BUDGETS)})")
    known = {f.name for f in fields(DistillConfig)}
    for key in overrides:
        if key not in known:
            raise UserError(f"budget override {key!r}: unknown; expected one of {', '.join(sorted(known))}")
    # Trials do not augment (no trial budget sets `augment`, and it is not one of BUDGET_KEYS) unless
    # `search --augment` asks, but at the top rung (rungs.rung_config): it pays off over long runs only.
    steps = {k: v for k, v in space.budget.get(preset, {}).items() if k in STEP_KEYS}
    cfg = DistillConfig(**{**TRIAL_BUDGETS[preset], **steps, **{k: v for k, v in overrides.items() if v is not None}})
    for key in ("kd_steps", "eval_every", "batch_size", "examples", "eval_examples"):
        if getattr(cfg, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} {getattr(cfg, key)}: must be at least 1")
    if cfg.eval_every > cfg.kd_steps:
        raise UserError(f"--eval-every {cfg.eval_every}: exceeds kd_steps={cfg.kd_steps}, "
                        "so no checkpoint would be evaluated")
    return cfg


def space_rungs(space: SearchSpace, preset: str, override: int | None = None) -> int:
    """How many rungs a search climbs: `override` (--rungs), else the space's budget section, else
    config.TRIAL_RUNGS."""
    if override is not None:
        if override < 1:
            raise UserError(f"--rungs {override}: must be at least 1 (1: no promotion)")
        return override
    return space.budget.get(preset, {}).get("rungs", TRIAL_RUNGS[preset])


# ---------------------------------------------------------------------------
# Sampling one trial

def heads_param(hidden: int) -> str:
    """The per-width name of the heads parameter, e.g. 256 -> 'heads_h256'."""
    return f"heads_h{hidden}"


def sample(space: SearchSpace, trial, teacher_layers: int,
           hint_scheme: str = DEFAULT_SCHEME) -> tuple[StudentArch, dict]:
    """One student and its distillation settings from `trial.suggest_*` (any optuna Trial or FixedTrial).

    Returns (arch, overrides): a StudentArch that passes `validate(teacher_layers)`, with the hint
    mapping of `hint_scheme` (hints.py), and a dict of DistillConfig fields (init, temperature, kd_alpha,
    hint_weight, relation_weight, lr) to apply with `dataclasses.replace`: sampled where the space lists them,
    else config.trial_recipe's for this student.
    """
    layers = trial.suggest_int("layers", *space.layers)
    hidden = trial.suggest_categorical("hidden", list(space.hidden))
    heads = trial.suggest_categorical(heads_param(hidden), list(space.heads_for(hidden)))
    ffn = round(trial.suggest_categorical("ffn_ratio", list(space.ffn_ratio)) * hidden)
    hints = sample_hints(trial, layers, space.max_hints, teacher_layers, hint_scheme)
    arch = StudentArch(layers, hidden, heads, ffn, hints).validate(teacher_layers)
    overrides = trial_recipe(arch)
    for key in space.sampled_recipe:
        options = getattr(space, key)
        if key in CHOICE_KEYS:
            overrides[key] = trial.suggest_categorical(key, list(options))
        else:
            overrides[key] = trial.suggest_float(key, *options, log=key == "lr")
    return arch, overrides


def fixed_params(space: SearchSpace, arch: StudentArch, teacher_layers: int, hint_scheme: str = DEFAULT_SCHEME,
                 **settings) -> dict:
    """The params `sample` reads to produce `arch` (and `settings`), for `study.enqueue_trial`.

    settings: any of the recipe keys the space samples; those left out are sampled by the
    study as usual (the others are config.trial_recipe's, and are no params). A student
    without hints gets the default one (last student layer -> last teacher layer). Numbers
    outside the space's ranges are kept (Optuna warns); choices the space lacks, or hints on student
    layers the scheme cannot hint (hints.hint_params), cannot be represented: UserError.
    """
    arch = arch.with_default_hints(teacher_layers).validate(teacher_layers)
    where = f"baseline {arch.name} hints {arch.hints_str} in space {space.name!r}"

    def choice(key: str, value, options) -> Any:
        if value not in options:
            raise UserError(f"{where}: {key}={value!r} is not among the space's choices {list(options)}")
        return value

    ratio = next((r for r in space.ffn_ratio if round(r * arch.hidden) == arch.ffn), None)
    if ratio is None:
        raise UserError(f"{where}: ffn={arch.ffn} is no ffn_ratio choice {list(space.ffn_ratio)} "
                        f"times hidden={arch.hidden}")
    try:
        hints = hint_params(arch.hints, arch.layers, space.max_hints, hint_scheme)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    params = {
        "layers": arch.layers,
        "hidden": choice("hidden", arch.hidden, space.hidden),
        heads_param(arch.hidden): choice("heads", arch.heads, space.heads_for(arch.hidden)),
        "ffn_ratio": ratio,
        **hints,
    }
    for key, value in settings.items():
        if key not in space.sampled_recipe:
            raise UserError(f"{where}: setting {key!r} is not sampled by the space")
        if key in CHOICE_KEYS:
            choice(key, value, getattr(space, key))
        params[key] = value
    return params

