"""`fastbert-nas search`'s options, checked once: objectives, constraints, space, budget, storage.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fastbert_nas.config import DEFAULT_TRIAL_BUDGET, ENV_ATTR, DistillConfig, RunEnv, StudentArch, UserError, at_least
from fastbert_nas.core import pipeline
from fastbert_nas.core.backends import TORCH_FP32, Runtime, asked_runtime
from fastbert_nas.core.cost import analytic_flops
from fastbert_nas.core.tasks import resolve_task
from fastbert_nas.search.baselines import parse_student
from fastbert_nas.search.hints import DEFAULT_SCHEME, HINT_SCHEME_ATTR, UNRECORDED_SCHEME
from fastbert_nas.search.pruning import COLLAPSE_MARGIN, PRUNE_MARGIN, PRUNE_WARMUP_TRIALS
from fastbert_nas.search.rungs import rung_config
from fastbert_nas.search.space import DEFAULT_SPACE, STEP_KEYS, SearchSpace, load_space, space_budget, space_rungs
from fastbert_nas.search.storage import IN_MEMORY_URLS
from fastbert_nas.search.trials import COST_LABELS, OBJECTIVE_COSTS

DEFAULT_OBJECTIVES = "metric,flops"
PRUNING = ("pareto", "none")               # multi-objective: our rule (pruning.py), or off
PRUNERS = ("median", "hyperband", "none")  # single objective: Optuna's pruners
SAMPLERS = ("tpe", "random", "gp")         # TPE (conditional parameters suit it), random search as a baseline, or
                                           # Optuna's Gaussian-process sampler (few trials; constraints too)
DEFAULT_SAMPLER = "tpe"                    # also what a study made before --sampler existed used


                                           # a CPU study of 16-30 trials would spend a third or more of it guessing
DEFAULT_PRUNER = "median"
TRIAL_BUDGET_ATTR = "trial_budget"  # study attr: the --budget preset and the step counts its trials run at
TOP_RUNG_CACHE = "rung-augmented"  # teacher-cache name of trials' augmented examples (the top rung's, or every
                                   # trial's with --augment); the exports' is "augmented": each keeps its own


@dataclass(frozen=True)
class SearchOptions:
    """Everything `fastbert-nas search` takes (picklable: spawned workers get a copy)."""

    env: RunEnv                        # task, data, teacher, machine: recorded in the study
    trials: int = 100
    study: str | None = None           # default "<task>-<space>"
    space: str = DEFAULT_SPACE
    budget: str = DEFAULT_TRIAL_BUDGET
    hint_steps: int | None = None      # budget overrides
    kd_steps: int | None = None
    examples: int | None = None
    eval_every: int | None = None
    eval_examples: int | None = None
    augment: int | None = None         # word-replaced copies per sentence-like example in every trial (0: none)
    rungs: int | None = None           # rungs to climb (1: no promotion); None: the space's, else config.TRIAL_RUNGS
    objectives: str = DEFAULT_OBJECTIVES
    sampler: str = DEFAULT_SAMPLER
    pruning: str = "pareto"
    pruning_warmup: int = PRUNE_WARMUP_TRIALS
    pruning_margin: float = PRUNE_MARGIN  # metric units below the bar that stop a trial (search/pruning.py)
    pruner: str | None = None          # single objective only; None = DEFAULT_PRUNER
    collapse_margin: float = COLLAPSE_MARGIN  # metric units above the majority class; negative: keep collapsed trials
    max_flops: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None
    latency_backend: str | None = None  # what latency is timed in (core/runtime.py); None: the study's, else torch
    precision: str | None = None        # fp32 or int8 (ONNX Runtime); None: the study's, else fp32
    baselines: bool = True
    enqueue: tuple[str, ...] = ()      # students to try first in a new study: ARCH or ARCH@HINTS
    seed: int = 0
    workers: int = 1
    storage: str | None = None         # default sqlite:///<results>/<study>.db


def parse_objectives(text: str) -> tuple[str, ...]:
    """'metric,flops' -> ('metric', 'flops'): the metric first, then up to two distinct costs."""
    names = tuple(n.strip() for n in text.split(","))
    if (not names or names[0] != "metric" or len(names) > 3 or len(set(names)) != len(names)
            or any(n not in OBJECTIVE_COSTS for n in names[1:])):
        raise UserError(f"--objectives {text!r}: expected 'metric' then up to two of {', '.join(OBJECTIVE_COSTS)} "
                        "(e.g. metric,flops or metric,flops,latency), or 'metric' alone with a cost constraint")
    return names


@dataclass(frozen=True)
class Limits:
    """Cost constraints; a student over any of them is rejected before training."""

    flops: float | None = None      # FLOPs (2 per multiply-add), batch 1, the task's length (max_len)
    params: float | None = None     # total parameters, embeddings included
    latency: float | None = None    # ms, batch-1 median

    OPTIONS = {"flops": "--max-flops", "params": "--max-params", "latency": "--max-latency-ms"}

    def check(self) -> "Limits":
        for key, option in self.OPTIONS.items():
            value = getattr(self, key)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UserError(f"{option} {value:g}: must be a positive number")
        return self

    @property
    def any(self) -> bool:
        return any(getattr(self, k) is not None for k in self.OPTIONS)

    def excess(self, costs: dict) -> dict[str, float]:
        """Constraint values for Optuna: cost / limit - 1 per set limit (> 0 = violated)."""
        return {f"max_{k}": costs[k] / getattr(self, k) - 1 for k in self.OPTIONS if getattr(self, k) is not None}

    def violated(self, costs: dict) -> str | None:
        """Which limits `costs` exceed, as a sentence, or None."""
        over = [f"{COST_LABELS[k]} {costs[k]:.4g} > {option} {getattr(self, k):.4g}"
                for k, option in self.OPTIONS.items() if getattr(self, k) is not None and costs[k] > getattr(self, k)]
        return "; ".join(over) or None


@dataclass(frozen=True)
class Search:
    """The checked options: what every process of one search shares."""

    opts: SearchOptions
    space: SearchSpace
    cfg: DistillConfig             # the budget, before a trial's sampled settings
    objectives: tuple[str, ...]
    limits: Limits
    metric: str                    # the task's metric name (accuracy, mcc)
    task: str                      # the task's name
    study_name: str
    storage_url: str
    seq_len: int                   # tokens the trials' costs are measured at: the task's length
    students: tuple[StudentArch, ...] = ()   # --enqueue, parsed (checked against the space once the teacher is known)
    rungs: int = 1                 # rungs a student may climb (search/rungs.py); 1: every trial at cfg's budget
    hint_scheme: str = DEFAULT_SCHEME  # how trials' params encode the hints (hints.py); a resumed study's own
    runtime: Runtime = TORCH_FP32  # what trials' latency is timed in; a resumed study's own

    @classmethod
    def from_options(cls, opts: SearchOptions) -> "Search":
        """Check every option (cheap: nothing is loaded but the space file and the task's name)."""
        at_least(0, trials=opts.trials, seed=opts.seed, pruning_warmup=opts.pruning_warmup,
                 pruning_margin=opts.pruning_margin)
        at_least(1, workers=opts.workers)
        if opts.pruning not in PRUNING:
            raise UserError(f"--pruning {opts.pruning!r}: choose one of {', '.join(PRUNING)}")
        if opts.sampler not in SAMPLERS:
            raise UserError(f"--sampler {opts.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if opts.pruner is not None and opts.pruner not in PRUNERS:
            raise UserError(f"--pruner {opts.pruner!r}: choose one of {', '.join(PRUNERS)}")
        objectives = parse_objectives(opts.objectives)
        limits = Limits(opts.max_flops, opts.max_params, opts.max_latency_ms).check()
        if len(objectives) == 1 and not limits.any:
            raise UserError("--objectives metric: a single objective needs a cost constraint "
                            "(--max-flops, --max-params or --max-latency-ms), else the largest student wins")
        if opts.pruner is not None and len(objectives) > 1:
            raise UserError(f"--pruner {opts.pruner}: Optuna's pruners work on single-objective studies "
                            f"(--objectives metric) only; --objectives {','.join(objectives)} prunes with --pruning")
        env = opts.env
        spec = resolve_task(env.task, env.text_column, env.label_column, env.max_len)
        space = load_space(opts.space)
        check_space_fits(space, limits, spec.max_len)
        cfg = replace(space_budget(space, opts.budget, hint_steps=opts.hint_steps, kd_steps=opts.kd_steps,
                                   examples=opts.examples, eval_every=opts.eval_every,
                                   eval_examples=opts.eval_examples, augment=opts.augment), seed=opts.seed)
        name = opts.study or f"{spec.name}-{space.name}"
        url = opts.storage or f"sqlite:///{Path(env.results) / name}.db"
        if opts.workers > 1 and url in IN_MEMORY_URLS:
            raise UserError(f"--workers {opts.workers} --storage {url}: an in-memory study cannot be shared "
                            "between processes; give a file (sqlite:///path.db) or a server")
        students = tuple(parse_student(text) for text in opts.enqueue)
        rungs = space_rungs(space, opts.budget, opts.rungs)
        # checked whole once it is known whether the study exists (a resumed one fills in what is left out)
        runtime = asked_runtime(TORCH_FP32, opts.latency_backend, opts.precision).check_names()
        return cls(opts, space, cfg, objectives, limits, spec.metric, spec.name, name, url, spec.max_len, students,
                   rungs, runtime=runtime)

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (len(self.objectives) - 1)

    @property
    def metric_names(self) -> list[str]:
        """The objectives as Optuna names them (study.set_metric_names): e.g. accuracy, FLOPs."""
        return [self.metric] + [COST_LABELS[c] for c in self.objectives[1:]]

    @property
    def pruning_mode(self) -> str:
        """'pareto' (ours, multi-objective), 'median'/'hyperband' (Optuna's, single objective) or 'none'."""
        if self.opts.pruning == "none":
            return "none"
        return "pareto" if len(self.objectives) > 1 else self.opts.pruner or DEFAULT_PRUNER

    def rung_config(self, rung: int) -> DistillConfig:
        """The budget of a trial at `rung` (0: the first): rungs.rung_config's."""
        return rung_config(self.cfg, rung, self.rungs)

    def study_attrs(self) -> dict:
        """What a study is created with and must be reopened with."""
        return {"task": self.task, "space": self.space.name, "space_path": self.space.path,
                "space_fingerprint": space_fingerprint(self.space), "objectives": ",".join(self.objectives),
                "sampler": self.opts.sampler, "rungs": self.rungs, HINT_SCHEME_ATTR: self.hint_scheme,
                "latency_backend": self.runtime.backend, "latency_precision": self.runtime.precision,
                TRIAL_BUDGET_ATTR: {"budget": self.opts.budget, **{k: getattr(self.cfg, k) for k in STEP_KEYS}}}

    def prepare(self) -> pipeline.Context:
        return pipeline.prepare(self.opts.env, self.cfg, cache_split=TOP_RUNG_CACHE if self.cfg.augment else None)

    def resumed(self, attrs: dict) -> "Search":
        """This search on the study with these attrs: UserError when the study was made for another task,
        space, objectives or sampler, when an option contradicts its recorded environment or trial budget, or
        when its costs were measured at another length; else this search with that environment and budget
        where no option was given (so a changed default does not mix two budgets in one study)."""
        check_compatible(self, attrs)
        search = self
        if self.opts.rungs is None:  # the study's own; one made before rungs existed had one
            search = replace(search, rungs=attrs.get("rungs", 1))
        search = replace(search, hint_scheme=attrs.get(HINT_SCHEME_ATTR, UNRECORDED_SCHEME),
                         runtime=recorded_runtime(search, attrs), cfg=recorded_budget(search, attrs))
        if ENV_ATTR in attrs:  # else a study made before the environment was recorded
            env = self.opts.env.adopt(RunEnv.from_dict(attrs[ENV_ATTR]), f"study {self.study_name!r}")
            search = replace(search, opts=replace(search.opts, env=env), seq_len=env.max_len or search.seq_len)
        if attrs.get("seq_len", search.seq_len) != search.seq_len:  # an older version's costs, at 128 tokens
            raise UserError(f"study {self.study_name!r} measured its costs at {attrs['seq_len']} tokens, and this run "
                            f"measures them at the task's {search.seq_len}: start another study with --study NEW_NAME")
        return search


def check_compatible(search: Search, attrs: dict) -> None:
    """Refuse to resume a study created for another task, space, objectives or sampler."""
    want = search.study_attrs()
    attrs = {"sampler": DEFAULT_SAMPLER, **attrs}  # studies made before --sampler existed used TPE
    where = f"study {search.study_name!r} in {search.storage_url}"
    if "space_fingerprint" not in attrs:
        raise UserError(f"{where} was not created by fastbert-nas search; name another with --study NEW_NAME")
    for key, option in (("task", "--task"), ("space", "--space"), ("space_fingerprint", "--space"),
                        ("objectives", "--objectives"), ("sampler", "--sampler")):
        if attrs.get(key) != want[key]:
            if key == "space_fingerprint":  # same name, other choices (the file was edited, or another file)
                had, now = f"a space with other choices ({attrs.get('space_path')})", f"--space {search.space.path}"
            else:
                had, now = f"{option} {attrs.get(key)}", f"{option} {want[key]}"
            raise UserError(f"{where} was created with {had}; this run asks for {now}: "
                            "run with the same settings to resume it, or start another with --study NEW_NAME")


def recorded_runtime(search: Search, attrs: dict) -> Runtime:
    """The runtime the study times latency in (PyTorch fp32 for one made before runtimes were recorded);
    UserError when --latency-backend or --precision asks for another."""
    recorded = Runtime.of(attrs)
    asked = asked_runtime(recorded, search.opts.latency_backend, search.opts.precision)
    if asked != recorded:
        raise UserError(f"study {search.study_name!r} in {search.storage_url} times latency in {recorded.label}; "
                        f"this run asks for {asked.label}: leave --latency-backend and --precision out to resume "
                        "it, or start another with --study NEW_NAME")
    return recorded.check() if recorded != TORCH_FP32 else recorded


def recorded_budget(search: Search, attrs: dict) -> DistillConfig:
    """The trials' budget the study recorded (search.cfg for one made before it was recorded); UserError
    when --budget names another preset or a step option (--hint-steps etc.) gives another count."""
    recorded = attrs.get(TRIAL_BUDGET_ATTR)
    if recorded is None:
        return search.cfg
    where = f"study {search.study_name!r} in {search.storage_url}"
    if recorded["budget"] != search.opts.budget:
        raise UserError(f"{where} runs its trials at --budget {recorded['budget']}; this run asks for --budget "
                        f"{search.opts.budget}: run with --budget {recorded['budget']} to resume it, or start "
                        "another with --study NEW_NAME")
    for key in STEP_KEYS:
        asked = getattr(search.opts, key, None)  # not every step count is an option (batch_size is not)
        if asked is not None and asked != recorded[key]:
            raise UserError(f"{where} runs its trials at {key}={recorded[key]}; this run asks for "
                            f"--{key.replace('_', '-')} {asked}: leave it out to resume the study, or start "
                            "another with --study NEW_NAME")
    return replace(search.cfg, **{k: recorded[k] for k in STEP_KEYS})


def check_space_fits(space: SearchSpace, limits: Limits, seq_len: int) -> None:
    """Refuse a space none of whose students fits --max-flops: its smallest student's encoder alone is over.

    (Params and latency depend on the teacher's vocabulary and on the machine: each trial checks them.)
    """
    hidden = min(space.hidden)
    smallest = StudentArch(space.layers[0], hidden, max(space.heads_for(hidden)), round(min(space.ffn_ratio) * hidden))
    flops = analytic_flops(smallest, seq_len)  # a lower bound: embeddings, pooler and classifier left out
    if limits.flops is not None and flops > limits.flops:
        raise UserError(f"--max-flops {limits.flops:g}: no student of space {space.name!r} fits; its smallest, "
                        f"{smallest.name}, has {flops:.4g} FLOPs in its encoder alone")


ADDED_SPACE_KEYS = ("relation_weight",)  # space keys added after studies were made: hashed only when set


def space_fingerprint(space: SearchSpace) -> str:
    """Hash of what a space lets trials sample (not its path, description or step budgets)."""
    d = asdict(space)
    for key in ("name", "path", "description", "budget"):
        d.pop(key)
    for key in ADDED_SPACE_KEYS:  # unset: the fingerprint of a space made before the key existed
        if d[key] is None:
            d.pop(key)
    return hashlib.sha256(repr(sorted(d.items())).encode()).hexdigest()[:16]
