"""The search as an Optuna study: storage, create or resume, the objective, baselines, workers.

The only module touching `optuna.Trial`. One trial:

    sample -> build -> cost (reject if over a constraint) -> distill (prune at checkpoints) -> record -> return

Facts of Optuna that shape it:

- Optuna cannot prune multi-objective trials (`trial.report` raises), so the
  Pareto-aware rule of pruning.py runs at each checkpoint through distill's
  `on_eval` callback, and a trial it stops raises `optuna.TrialPruned` by hand.
  Single-objective studies (`--objectives metric`) use Optuna's own pruners.
- Costs are known before training: a student over --max-flops/--max-params/
  --max-latency-ms is rejected before its first step (PRUNED, reason "constraint"),
  and the excess is given to Optuna as a constraint value so that TPE learns to
  avoid the region.
- A killed worker's trial would stay RUNNING forever: the RDB storage keeps a
  heartbeat, marks a trial FAIL once it has been silent for the grace period, and
  queues it again once with the same parameters (RetryHeartbeatStaleTrialCallback).
  The heartbeat works with `study.optimize` (not ask/tell), so that is what runs.

Trial budget: COMPLETE, PRUNED (constraint rejections included) and FAIL trials
count toward --trials; a FAIL trial that has been queued again (a killed or
interrupted one) counts once, through its retry. Running the same command again
runs only what is left.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import multiprocessing
import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from . import pipeline
from .config import ENV_ATTR, DistillConfig, RunEnv, StudentArch, UserError
from .cost import REF_SEQ_LEN, analytic_flops, count_flops, count_params, measure_latency
from .pruning import PRUNE_WARMUP_TRIALS, should_prune
from .space import DEFAULT_SPACE, SearchSpace, fixed_params, hint_student_layers, load_space, sample, space_budget
from .tasks import resolve_task
from .training import evaluate

# Crash safety. A running trial writes a heartbeat every HEARTBEAT_S seconds; one silent for
# GRACE_S seconds is dead (its process was killed): the next trial start marks it FAIL and
# queues it again, at most MAX_RETRY times. Tests shorten both through HEARTBEAT_ENV ("1,3").
HEARTBEAT_S = 10
GRACE_S = 30
MAX_RETRY = 1
HEARTBEAT_ENV = "FASTBERT_NAS_HEARTBEAT"   # "INTERVAL,GRACE" in whole seconds
SQLITE_TIMEOUT_S = 60                      # seconds a worker waits on a locked SQLite file
LAST_ATTR = "seed"                         # the study attr written last when a study is created
ATTRS_WAIT_S = 30                          # seconds to wait for the attrs of a study another worker is creating
ATTRS_POLL_S = 0.5                         # seconds between looks at them
IN_MEMORY_URLS = ("sqlite://", "sqlite:///:memory:")  # storages no second process can share

# Storage faults. A database call that fails for want of the database (a locked or read-only SQLite
# file, a PostgreSQL server restarting or out of reach) is made again after each of these pauses; then
# the search stops with one error line, the study as its last write left it, and the same command
# resumes it. A missed heartbeat is not retried: the next beat, HEARTBEAT_S later, is the retry.
STORAGE_RETRY_DELAYS_S = (1, 2, 4, 8)      # seconds between attempts: 5 attempts over 15 s, a server restart
PG_CONNECT_TIMEOUT_S = 10                  # seconds an attempt waits for a PostgreSQL connection
WAIT_POLL_S = 2                            # seconds between looks at trials other workers are running

TRIAL_LATENCY_RUN_S = 0.5  # seconds of timed batch-1 runs per trial (re-measure the front side by side)

OBJECTIVE_COSTS = ("flops", "latency", "params")   # costs an objective may minimize after the metric
COST_ATTRS = {"flops": "flops", "latency": "latency_ms", "params": "params"}  # cost -> trial user attr
COST_LABELS = {"flops": "FLOPs", "latency": "latency ms", "params": "params"}
DEFAULT_OBJECTIVES = "metric,flops"
PRUNING = ("pareto", "none")               # multi-objective: our rule (pruning.py), or off
PRUNERS = ("median", "hyperband", "none")  # single objective: Optuna's pruners
SAMPLERS = ("tpe", "random")               # TPE (conditional parameters suit it), or random search as a baseline
DEFAULT_SAMPLER = "tpe"                    # also what a study made before --sampler existed used
TPE_STARTUP_TRIALS = 5                     # random trials before TPE models the front (Optuna's default is 10):
                                           # a CPU study of 16-30 trials would spend a third or more of it guessing
DEFAULT_PRUNER = "median"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

# Baselines (enqueued first in a new study): a width more than this far from the target
# (relative) means the space cannot represent the baseline.
BASELINE_WIDTH_TOLERANCE = 0.25


# ---------------------------------------------------------------------------
# Options and their checks

@dataclass(frozen=True)
class SearchOptions:
    """Everything `fastbert-nas search` takes (picklable: spawned workers get a copy)."""

    env: RunEnv                        # task, data, teacher, machine: recorded in the study
    trials: int = 100
    study: str | None = None           # default "<task>-<space>"
    space: str = DEFAULT_SPACE
    budget: str = "small"
    hint_steps: int | None = None      # budget overrides
    kd_steps: int | None = None
    examples: int | None = None
    eval_every: int | None = None
    eval_examples: int | None = None
    objectives: str = DEFAULT_OBJECTIVES
    sampler: str = DEFAULT_SAMPLER
    pruning: str = "pareto"
    pruning_warmup: int = PRUNE_WARMUP_TRIALS
    pruner: str | None = None          # single objective only; None = DEFAULT_PRUNER
    max_flops: float | None = None
    max_params: float | None = None
    max_latency_ms: float | None = None
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

    flops: float | None = None      # FLOPs (2 per multiply-add), batch 1, REF_SEQ_LEN tokens
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
    students: tuple[StudentArch, ...] = ()   # --enqueue, parsed (checked against the space once the teacher is known)

    @classmethod
    def from_options(cls, opts: SearchOptions) -> "Search":
        """Check every option (cheap: nothing is loaded but the space file and the task's name)."""
        if opts.trials < 0:
            raise UserError(f"--trials {opts.trials}: must be at least 0")
        if opts.seed < 0:
            raise UserError(f"--seed {opts.seed}: must be at least 0")
        if opts.workers < 1:
            raise UserError(f"--workers {opts.workers}: must be at least 1")
        if opts.pruning not in PRUNING:
            raise UserError(f"--pruning {opts.pruning!r}: choose one of {', '.join(PRUNING)}")
        if opts.sampler not in SAMPLERS:
            raise UserError(f"--sampler {opts.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if opts.pruner is not None and opts.pruner not in PRUNERS:
            raise UserError(f"--pruner {opts.pruner!r}: choose one of {', '.join(PRUNERS)}")
        if opts.pruning_warmup < 0:
            raise UserError(f"--pruning-warmup {opts.pruning_warmup}: must be at least 0")
        objectives = parse_objectives(opts.objectives)
        limits = Limits(opts.max_flops, opts.max_params, opts.max_latency_ms).check()
        if len(objectives) == 1 and not limits.any:
            raise UserError("--objectives metric: a single objective needs a cost constraint "
                            "(--max-flops, --max-params or --max-latency-ms), else the largest student wins")
        if opts.pruner is not None and len(objectives) > 1:
            raise UserError(f"--pruner {opts.pruner}: Optuna's pruners work on single-objective studies "
                            f"(--objectives metric) only; --objectives {','.join(objectives)} prunes with --pruning")
        space = load_space(opts.space)
        check_space_fits(space, limits)
        cfg = replace(space_budget(space, opts.budget, hint_steps=opts.hint_steps, kd_steps=opts.kd_steps,
                                   examples=opts.examples, eval_every=opts.eval_every,
                                   eval_examples=opts.eval_examples), seed=opts.seed)
        env = opts.env
        spec = resolve_task(env.task, env.text_column, env.label_column, env.max_len)
        name = opts.study or f"{spec.name}-{space.name}"
        url = opts.storage or f"sqlite:///{Path(env.results) / name}.db"
        if opts.workers > 1 and url in IN_MEMORY_URLS:
            raise UserError(f"--workers {opts.workers} --storage {url}: an in-memory study cannot be shared "
                            "between processes; give a file (sqlite:///path.db) or a server")
        students = tuple(parse_student(text) for text in opts.enqueue)
        return cls(opts, space, cfg, objectives, limits, spec.metric, spec.name, name, url, students)

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

    def study_attrs(self) -> dict:
        """What a study is created with and must be reopened with."""
        return {"task": self.task, "space": self.space.name, "space_path": self.space.path,
                "space_fingerprint": space_fingerprint(self.space), "objectives": ",".join(self.objectives),
                "sampler": self.opts.sampler}

    def prepare(self) -> pipeline.Context:
        return pipeline.prepare(self.opts.env, self.cfg.examples, augment=self.cfg.augment)

    def resumed(self, attrs: dict) -> "Search":
        """This search with the environment the study recorded where no option was given; UserError when
        an option contradicts it."""
        if ENV_ATTR not in attrs:  # a study made before the environment was recorded
            return self
        where = f"study {self.study_name!r}"
        env = self.opts.env.adopt(RunEnv.from_dict(attrs[ENV_ATTR]), where)
        return replace(self, opts=replace(self.opts, env=env))


def check_space_fits(space: SearchSpace, limits: Limits) -> None:
    """Refuse a space none of whose students fits --max-flops: its smallest student's encoder alone is over.

    (Params and latency depend on the teacher's vocabulary and on the machine: each trial checks them.)
    """
    hidden = min(space.hidden)
    smallest = StudentArch(space.layers[0], hidden, max(space.heads_for(hidden)), round(min(space.ffn_ratio) * hidden))
    flops = analytic_flops(smallest)  # a lower bound: embeddings, pooler and classifier left out
    if limits.flops is not None and flops > limits.flops:
        raise UserError(f"--max-flops {limits.flops:g}: no student of space {space.name!r} fits; its smallest, "
                        f"{smallest.name}, has {flops:.4g} FLOPs in its encoder alone")


def space_fingerprint(space: SearchSpace) -> str:
    """Hash of what a space lets trials sample (not its path, description or step budgets)."""
    d = asdict(space)
    for key in ("name", "path", "description", "budget"):
        d.pop(key)
    return hashlib.sha256(repr(sorted(d.items())).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Storage and the study

def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace) in seconds: the defaults, or $FASTBERT_NAS_HEARTBEAT='INTERVAL,GRACE'."""
    text = os.environ.get(HEARTBEAT_ENV)
    if not text:
        return HEARTBEAT_S, GRACE_S
    try:
        interval, grace = (int(x) for x in text.split(","))
    except ValueError:
        interval = grace = 0
    if not 1 <= interval < grace:
        raise UserError(f"${HEARTBEAT_ENV}={text!r}: expected INTERVAL,GRACE in whole seconds, 1 <= INTERVAL < GRACE")
    return interval, grace


def transient(exc: BaseException | None) -> bool:
    """Whether a storage error is the database's absence, worth asking again: SQLAlchemy's OperationalError
    or InterfaceError (locked, read-only, connection refused or lost), bare or wrapped by Optuna."""
    for _ in range(5):  # Optuna's StorageInternalError is raised `from` the SQLAlchemy error
        if exc is None:
            return False
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def with_retries(call: Callable, url: str, storage: "RetryingStorage | None" = None):
    """call(), made again after each STORAGE_RETRY_DELAYS_S pause while it fails transiently; then a UserError.

    Once a call of `storage` has used every retry, its later calls try once until one succeeds: a search
    on its way out (recording why its trial failed) stops promptly instead of waiting again at each step.
    """
    delays = STORAGE_RETRY_DELAYS_S if storage is None or storage.answering else ()
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            result = call()
        except Exception as exc:
            if not transient(exc):
                raise
            if delay is None:
                if storage is not None:
                    storage.answering = False
                cause = (str(exc.__cause__ or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
                raise UserError(f"--storage {shown}: {attempt} attempts over {sum(delays):g} s failed: {cause}; "
                                "what was written is kept: run the same command again once the database is back "
                                "(reachable, writable)") from None
            time.sleep(delay)
        else:
            if storage is not None:
                storage.answering = True
            return result


class RetryingStorage(RDBStorage):
    """Optuna's RDB storage whose calls (those Optuna's study, trials and heartbeat make) are made again
    while the database does not answer: see STORAGE_RETRY_DELAYS_S."""

    answering = True  # False once a call has used every retry

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:  # the next beat is the retry; a dead heartbeat thread would get the trial failed
            if not transient(exc):
                raise


RETRIED_CALLS = (  # the RDBStorage methods Optuna's cached storage, study, trials and fail_stale_trials call
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "_create_new_trial", "_set_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "_get_trials", "_get_best_trial_id",
    "_get_stale_trial_ids")


def _retried(name: str) -> Callable:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return with_retries(lambda: method(self, *args, **kwargs), self.url, self)
    return call


for _name in RETRIED_CALLS:
    setattr(RetryingStorage, _name, _retried(_name))


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:///PATH URL; None for other storages, in-memory ones and URIs (file:...?mode=ro)."""
    if not url.startswith("sqlite:///") or url in IN_MEMORY_URLS or url.startswith("sqlite:///file:"):
        return None
    return Path(url[len("sqlite:///"):])


def storage_exists(url: str) -> bool:
    """False for a SQLite file not made yet (opening one makes it); True for a file there and for a server."""
    return sqlite_path(url) is None or sqlite_path(url).exists()


def make_storage(url: str) -> RDBStorage:
    """The RDB storage with a heartbeat, retrying calls while the database does not answer: SQLite for one
    machine, PostgreSQL/MySQL for many."""
    interval, grace = heartbeat_settings()
    if sqlite_path(url) is not None:
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    else:  # a server: check a pooled connection before use (it may have restarted), and give up on one in time
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        try:
            return with_retries(lambda: RetryingStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)), url)
        except UserError:
            raise
        except ImportError:  # SQLAlchemy imports the URL's database driver when it opens it
            if url.startswith("postgresql"):
                raise UserError(f"--storage {url}: the PostgreSQL driver is not installed: "
                                "pip install 'fastbert-nas[postgres]'") from None
            raise UserError(f"--storage {url}: cannot open it: its database driver is not installed") from None
        except Exception as exc:  # a bad URL, an unreachable server
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"--storage {url}: cannot open it: {first[:200]}") from None


def worker_id() -> str:
    """This process, as the trials it runs record it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def make_sampler(seed: int, rank: int, n_trials: int, kind: str = DEFAULT_SAMPLER,
                 joined: bool = False) -> optuna.samplers.BaseSampler:
    """TPE (conditional parameters suit it) or random search (`kind`, one of SAMPLERS), seeded by --seed,
    the worker and the study's length, so that a resumed study or a second worker does not replay the
    first one's random picks. A process that joins a study it did not create also mixes in its host and
    pid: workers started at once on several machines (or twice on one) with the same command would
    otherwise sample the same students."""
    words = [seed, rank, n_trials] + (list(hashlib.sha256(worker_id().encode()).digest()[:8]) if joined else [])
    entropy = int(np.random.SeedSequence(words).generate_state(1)[0])
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=entropy)
    return optuna.samplers.TPESampler(seed=entropy, n_startup_trials=TPE_STARTUP_TRIALS)


def make_pruner(search: Search) -> optuna.pruners.BasePruner:
    """Optuna's pruner for single-objective studies (our Pareto rule needs none)."""
    if search.pruning_mode == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.opts.pruning_warmup)
    if search.pruning_mode == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=search.cfg.eval_every, max_resource=search.cfg.kd_steps)
    return optuna.pruners.NopPruner()


def existing_attrs(storage: RDBStorage, name: str, wait_s: float = ATTRS_WAIT_S) -> dict | None:
    """The user attrs of study `name`, or None when there is no such study. A study another process has
    just created gets its attrs a moment later (the last one written is LAST_ATTR): wait up to wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        if name not in optuna.study.get_all_study_names(storage):
            return None
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
        if LAST_ATTR in attrs or time.monotonic() > deadline:
            return attrs
        time.sleep(ATTRS_POLL_S)


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


def teacher_reference(ctx: pipeline.Context) -> dict:
    """The teacher's validation metrics and batch-1 latency (timed like a trial's): its point on the plots."""
    val = ctx.teacher.manifest.get("val") or evaluate(ctx.teacher.model, ctx.spec, ctx.val, ctx.device)
    latency = measure_latency(ctx.teacher.model, 1, threads=ctx.threads, min_run_time=TRIAL_LATENCY_RUN_S)
    return {"teacher_val": val, "teacher_latency_ms": latency["median_ms"],
            "teacher_latency_device": latency["device"], "teacher_latency_threads": latency["threads"]}


def open_study(search: Search, storage: RDBStorage, ctx: pipeline.Context, rank: int = 0) -> tuple[optuna.Study, bool]:
    """Create the study (with its identifying attrs) or load it; returns (study, created)."""
    n_before = 0
    created = False
    if search.study_name in optuna.study.get_all_study_names(storage):
        n_before = len(optuna.load_study(study_name=search.study_name, storage=storage).get_trials(deepcopy=False))
    else:  # the attrs are measured before the study is made: others see it without them only while they are written
        attrs = {**search.study_attrs(), ENV_ATTR: ctx.env.to_dict(), "metric": search.metric,
                 "teacher_id": ctx.teacher_id,
                 "teacher_fingerprint": ctx.teacher.fingerprint,
                 "teacher_params": count_params(ctx.teacher.model)["total"],
                 "teacher_flops": count_flops(ctx.teacher.model), **teacher_reference(ctx), "seq_len": REF_SEQ_LEN,
                 "flops_unit": "FLOPs, 2 per multiply-add", LAST_ATTR: search.opts.seed}
        try:
            study = optuna.create_study(storage=storage, study_name=search.study_name, directions=search.directions)
            study.set_metric_names(search.metric_names)  # optuna-dashboard's and the optuna CLI's axis names
            for key, value in attrs.items():
                study.set_user_attr(key, value)
            created = True
        except optuna.exceptions.DuplicatedStudyError:  # another machine created it a moment ago
            theirs = existing_attrs(storage, search.study_name) or {}
            check_compatible(search, theirs)
            search.resumed(theirs)
    study = optuna.load_study(study_name=search.study_name, storage=storage,
                              sampler=make_sampler(search.opts.seed, rank, n_before, search.opts.sampler,
                                                   joined=not created),
                              pruner=make_pruner(search))
    return study, created


def fail_stale_trials(study: optuna.Study) -> list[str]:
    """Mark trials whose worker died FAIL now (and queue their retries), as a trial start would; a note each."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    requeued = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    _, grace = heartbeat_settings()
    return [f"trial {t.number} FAIL: its worker sent no heartbeat for {grace} s (killed?); "
            + ("queued again with the same student" if t.number in requeued else "retried once already")
            for t in trials if t.number in running and t.state == TrialState.FAIL]


def trials_used(trials: list[FrozenTrial]) -> int:
    """Trials that count toward --trials: COMPLETE, PRUNED and FAIL, a retried FAIL only through its retry."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(1 for t in trials
               if t.state in COUNTED and not (t.state == TrialState.FAIL and t.number in retried))


def trials_left(study: optuna.Study, trials: int) -> int:
    """--trials minus the trials used and those running now (in other workers)."""
    all_trials = study.get_trials(deepcopy=False)
    running = sum(1 for t in all_trials if t.state == TrialState.RUNNING)
    return trials - trials_used(all_trials) - running


class TrialBudget:
    """optimize() callback: stop once --trials are used or running (several workers stop together)."""

    def __init__(self, trials: int):
        self.trials = trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trials_left(study, self.trials) <= 0:
            study.stop()


# ---------------------------------------------------------------------------
# Baselines

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
    """The space's nearest student to `target`, hinted evenly; UserError when the space cannot hold it."""
    lo, hi = space.layers
    if not lo <= target.layers <= hi:
        raise UserError(f"{target.layers} layers, the space allows {lo}-{hi}")
    hidden = min(space.hidden, key=lambda h: (abs(h - target.hidden), h))
    if abs(hidden - target.hidden) > BASELINE_WIDTH_TOLERANCE * target.hidden:
        raise UserError(f"width {target.hidden:g}, the nearest the space allows is {hidden}")
    heads = min(space.heads_for(hidden), key=lambda a: (abs(a - target.heads), -a))
    ratio = min(space.ffn_ratio, key=lambda r: (abs(r - target.ffn_ratio), -r))
    n = min(target.layers, space.max_hints)
    students = hint_student_layers(target.layers, n)
    hints = tuple((s, min(teacher_layers, max(1, math.ceil(s * teacher_layers / target.layers - 1e-9))))
                  for s in students)
    return StudentArch(target.layers, hidden, heads, round(ratio * hidden), hints)


def baseline_params(space: SearchSpace, teacher_config) -> tuple[list[tuple[str, StudentArch, dict]], list[str]]:
    """[(name, arch, params for enqueue_trial)] and a note per baseline skipped."""
    tl = teacher_config.num_hidden_layers
    targets = baseline_targets(space, tl, teacher_config.hidden_size, teacher_config.num_attention_heads,
                               teacher_config.intermediate_size)
    queued, notes, seen = [], [], {}
    settings = {"init": "teacher"} if "teacher" in space.init else {}
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


# What a student named with --enqueue is tried with, where the space allows it: the `distill`
# command's own recipe (DistillConfig's defaults), so that a known student is tried as it is known.
ENQUEUE_SETTINGS = ("init", "temperature", "kd_alpha", "hint_weight", "lr")


def parse_student(text: str) -> StudentArch:
    """'L3-H320-A10-I640' or 'L3-H320-A10-I640@1:2,2:4,3:6' -> StudentArch (not yet validated)."""
    arch, _, hints = text.partition("@")
    try:
        return StudentArch.parse(arch, hints or None)
    except UserError as exc:
        raise UserError(f"--enqueue {text!r}: {str(exc).split(': ', 1)[-1]}; "
                        "the form is ARCH or ARCH@HINTS, e.g. L3-H320-A10-I640@1:2,2:4,3:6") from None


def enqueued_params(space: SearchSpace, students: tuple[StudentArch, ...],
                    teacher_layers: int) -> list[tuple[StudentArch, dict]]:
    """[(student with its hints, enqueue_trial params)] for --enqueue, with the default recipe where the space
    allows it; UserError naming the student if the space cannot hold it."""
    recipe = DistillConfig()
    settings = {k: getattr(recipe, k) for k in ENQUEUE_SETTINGS
                if k not in ("init", "hint_weight") or getattr(recipe, k) in getattr(space, k)}
    out = []
    for arch in students:
        arch = arch.with_default_hints(teacher_layers)
        try:
            out.append((arch, fixed_params(space, arch, teacher_layers, **settings)))
        except UserError as exc:
            raise UserError(f"--enqueue {arch.name}@{arch.hints_str}: {str(exc).split(': ', 1)[-1]}") from None
    return out


def enqueue_students(study: optuna.Study, queued: list[tuple[StudentArch, dict]], log: Callable[[str], None]) -> None:
    for arch, params in queued:
        study.enqueue_trial(params, user_attrs={"enqueued": True})
        log(f"student {arch.name} hints {arch.hints_str} queued (--enqueue)")


def enqueue_baselines(study: optuna.Study, space: SearchSpace, teacher_config, log: Callable[[str], None]) -> None:
    queued, notes = baseline_params(space, teacher_config)
    for name, arch, params in queued:
        study.enqueue_trial(params, user_attrs={"baseline": name})
        log(f"baseline {name}: {arch.name} hints {arch.hints_str} queued")
    for note in notes:
        log(note)


# ---------------------------------------------------------------------------
# One trial

def student_costs(student, threads: int) -> dict:
    """Params, FLOPs and batch-1 latency of an (untrained) student: its shape decides them."""
    params = count_params(student)
    latency = measure_latency(student, 1, threads=threads, min_run_time=TRIAL_LATENCY_RUN_S)
    return {"params": params["total"], "params_parts": params, "flops": count_flops(student),
            "latency": latency["median_ms"], "latency_device": latency["device"], "latency_threads": latency["threads"]}


def finished_costs(trials: list[FrozenTrial]) -> list[tuple[dict, dict]]:
    """(costs, curve) of each COMPLETE trial that recorded both: what the Pareto rule compares with."""
    out = []
    for t in trials:
        a = t.user_attrs
        if t.state == TrialState.COMPLETE and "curve" in a and all(v in a for v in COST_ATTRS.values()):
            out.append(({k: a[v] for k, v in COST_ATTRS.items()}, a["curve"]))
    return out


def pareto_reason(step: int, metric: float, costs: dict, cost_keys: tuple[str, ...],
                  finished: list[tuple[dict, dict]], warmup: int) -> str | None:
    """pruning.should_prune on the first cost objective, among finished trials no costlier in the others."""
    primary, *others = cost_keys
    comparable = [(c[primary], curve) for c, curve in finished if all(c[k] <= costs[k] for k in others)]
    return should_prune(step, metric, costs[primary], comparable, warmup_trials=warmup)


@dataclass
class Checkpoints:
    """distill's on_eval callback: keeps the curve in the trial's user attrs and decides whether to stop.

    mode: "pareto" (pruning.py's rule against `finished()`), "median"/"hyperband" (Optuna's
    pruner: trial.report + should_prune; single objective only) or "none".
    """

    trial: object                                   # optuna.Trial (or a stand-in in tests)
    mode: str
    costs: dict
    cost_keys: tuple[str, ...]
    warmup: int
    finished: Callable[[], list[tuple[dict, dict]]]  # (costs, curve) of the finished trials, fetched per call
    curve: dict = field(default_factory=dict)        # {str(step): metric}: JSON keys are strings
    reason: str | None = None                       # why the trial was stopped

    def __call__(self, step: int, metrics: dict) -> bool:
        metric = metrics["metric"]
        self.curve[str(step)] = metric
        self.trial.set_user_attr("curve", dict(self.curve))
        if self.mode == "pareto":
            self.reason = pareto_reason(step, metric, self.costs, self.cost_keys, self.finished(), self.warmup)
        elif self.mode in ("median", "hyperband"):
            self.trial.report(metric, step)
            if self.trial.should_prune():
                self.reason = f"pruned at step {step} by Optuna's pruner: metric {metric:.4f}"
        return self.reason is not None


class Objective:
    """sample -> build -> cost (reject if over a constraint) -> distill (prune at checkpoints) -> record -> return."""

    def __init__(self, search: Search, ctx: pipeline.Context, show_progress: bool = False):
        self.search, self.ctx, self.show_progress = search, ctx, show_progress

    def __call__(self, trial: optuna.Trial):
        s, ctx = self.search, self.ctx
        with recorded(trial):
            arch, settings = sample(s.space, trial, ctx.teacher.layers)                           # sample
            cfg = replace(s.cfg, **settings)
            record(trial, arch=arch.to_dict(), name=arch.name, hints=arch.hints_str, config=cfg.to_dict(),
                   budget=s.opts.budget, seed=s.opts.seed, teacher_id=ctx.teacher_id,
                   teacher_fingerprint=ctx.teacher.fingerprint, device=str(ctx.device), curve={}, train_steps=0,
                   worker=worker_id())
            student = pipeline.init_student(ctx, arch, cfg)                                       # build
            costs = student_costs(student, ctx.threads)                                          # cost
            record(trial, params=costs["params"], params_parts=costs["params_parts"], flops=costs["flops"],
                   latency_ms=costs["latency"], latency_device=costs["latency_device"],
                   latency_threads=costs["latency_threads"])
            self.reject_if_over(trial, costs)
            checkpoints = Checkpoints(trial, s.pruning_mode, costs, s.objectives[1:], s.opts.pruning_warmup,
                                      lambda: finished_costs(trial.study.get_trials(deepcopy=False)))
            result = pipeline.distill_student(ctx, student, arch, cfg, on_eval=checkpoints,     # distill
                                              show_progress=self.show_progress)
            record(trial, train_steps=result.hint_steps + result.kd_steps, hint_steps=result.hint_steps,  # record
                   kd_steps=result.kd_steps, val=result.metrics, examples_per_s=result.examples_per_s)
            if checkpoints.reason:
                record(trial, prune_reason=s.pruning_mode, prune_detail=checkpoints.reason)
                raise optuna.TrialPruned(checkpoints.reason)
            values = [result.metrics["metric"]] + [float(costs[k]) for k in s.objectives[1:]]     # return
            return values[0] if len(values) == 1 else values

    def reject_if_over(self, trial: optuna.Trial, costs: dict) -> None:
        """Give Optuna the constraint values (TPE learns the infeasible region); prune if over."""
        limits = self.search.limits
        for key, value in limits.excess(costs).items():
            if key not in trial.constraints:  # a retried trial inherits them
                trial.set_constraint(key, value)
        over = limits.violated(costs)
        if over:
            record(trial, prune_reason="constraint", prune_detail=over)
            raise optuna.TrialPruned(f"constraint: {over}")


def record(trial: optuna.Trial, **attrs) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


@contextmanager
def recorded(trial: optuna.Trial):
    """Record the trial's wall time always, and why it failed when it did.

    An interrupted trial (Ctrl-C) is queued again with the same parameters, like a
    killed one, so that running the command again picks it up.
    """
    start = time.perf_counter()
    try:
        yield
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt:
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(trial.study, frozen)  # before the reason
        trial.set_user_attr("fail_reason", "interrupted")
        raise
    except Exception as exc:
        trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        trial.set_user_attr("wall_s", time.perf_counter() - start)


# ---------------------------------------------------------------------------
# Progress and the front

def trial_metric(t: FrozenTrial) -> float | None:
    """The trial's final metric (COMPLETE) or the last one it reached (PRUNED at a checkpoint)."""
    if t.state == TrialState.COMPLETE and t.values:
        return t.values[0]
    curve = t.user_attrs.get("curve") or {}
    return curve[max(curve, key=int)] if curve else None


def trial_line(t: FrozenTrial, metric_name: str) -> str:
    """One line per finished trial: number, state, student, metric, costs, time, why."""
    a = t.user_attrs
    metric = trial_metric(t)
    parts = [f"trial {t.number} {t.state.name}", f"{a.get('name', '?')} hints {a.get('hints', '?')}",
             f"{metric_name} {metric:.4f}" if metric is not None else f"{metric_name} -"]
    if "flops" in a:
        parts.append(f"FLOPs {a['flops'] / 1e9:.4g} G")
    if "params" in a:
        parts.append(f"params {a['params'] / 1e6:.2f} M")
    if "latency_ms" in a:
        parts.append(f"latency {a['latency_ms']:.2f} ms")
    parts.append(f"{a.get('wall_s', 0):.0f} s")
    line = "  ".join(parts)
    if t.state == TrialState.PRUNED and "prune_reason" in a:
        line += f"  ({a['prune_reason']}: {a.get('prune_detail', '')})"
    if t.state == TrialState.FAIL:
        line += f"  ({a.get('fail_reason', 'worker died')})"
    if "baseline" in a:
        line += f"  [{a['baseline']}]"
    if "failed_trial" in t.system_attrs:
        line += f"  [retry of trial {t.system_attrs['failed_trial']}]"
    return line


class ProgressLine:
    """optimize() callback printing `trial_line` as each trial ends."""

    def __init__(self, metric_name: str, log: Callable[[str], None]):
        self.metric_name, self.log = metric_name, log

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.log(trial_line(trial, self.metric_name))


def front_rows(study: optuna.Study, objectives: tuple[str, ...]) -> list[dict]:
    """The current front (study.best_trials, feasible only) as plain rows, cheapest first."""
    rows = []
    for t in study.best_trials:
        a = t.user_attrs
        rows.append({"trial": t.number, "name": a.get("name"), "hints": a.get("hints"), "metric": t.values[0],
                     "flops": a.get("flops"), "params": a.get("params"), "latency_ms": a.get("latency_ms"),
                     "latency_device": a.get("latency_device"), "baseline": a.get("baseline", "")})
    key = COST_ATTRS[objectives[1]] if len(objectives) > 1 else "flops"
    return sorted(rows, key=lambda r: (r[key] if r[key] is not None else math.inf, -r["metric"]))


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


# ---------------------------------------------------------------------------
# Running: this process, plus spawned workers

def optimize(study: optuna.Study, search: Search, ctx: pipeline.Context, log: Callable[[str], None],
             show_progress: bool = False) -> None:
    """Run trials until --trials are used (counting those other workers are running), then wait for the
    trials other workers are running: one whose worker died is failed once its heartbeat is GRACE_S old,
    and its retry is run here. So no trial is left RUNNING while a worker of the study lives."""
    objective = Objective(search, ctx, show_progress)
    callbacks = [TrialBudget(search.opts.trials), ProgressLine(search.metric, log)]
    waiting = False
    while True:
        left = trials_left(study, search.opts.trials)
        if left > 0:
            study.optimize(objective, n_trials=left, catch=(Exception,), gc_after_trial=True, callbacks=callbacks)
            continue
        for line in fail_stale_trials(study):
            log(line)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if trials_left(study, search.opts.trials) > 0:
            continue
        if not running:
            return
        if not waiting:
            log(f"waiting for {running} trial(s) other workers are running")
            waiting = True
        time.sleep(WAIT_POLL_S)


def _not_an_interrupt(record: logging.LogRecord) -> bool:
    """Leaves out Optuna's report of a trial stopped by Ctrl-C (the traceback of the interrupt): the command
    says it in one line."""
    return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    logging.getLogger("optuna.study._optimize").addFilter(_not_an_interrupt)  # the logger of optimize()


def _worker(opts: SearchOptions, rank: int) -> None:
    """A spawned worker: its own Context (prepare once), the shared study, trials until the budget is used."""
    _quiet()
    log = lambda line: print(f"[worker {rank}] {line}", flush=True)  # noqa: E731
    try:
        search = Search.from_options(opts)
        storage = make_storage(search.storage_url)
        search = search.resumed(existing_attrs(storage, search.study_name) or {})
        ctx = search.prepare()
        study, _ = open_study(search, storage, ctx, rank)
        optimize(study, search, ctx, log)
    except UserError as exc:  # one line, as the command prints it, not the traceback of a process
        log(f"error: {exc}")
        sys.exit(2)


def run_search(opts: SearchOptions, log: Callable[[str], None] = print) -> dict:
    """Create or resume the study, queue the baselines in a new one, run the trials left; a summary."""
    _quiet()
    search = Search.from_options(opts)
    storage = make_storage(search.storage_url) if storage_exists(search.storage_url) else None
    attrs = existing_attrs(storage, search.study_name) if storage is not None else None
    if attrs is not None:  # before the teacher is loaded: refusing costs nothing
        check_compatible(search, attrs)
        search = search.resumed(attrs)
    opts = search.opts
    ctx = search.prepare()  # bad data or teacher files fail here, before a new study file is made
    queued = enqueued_params(search.space, search.students, ctx.teacher.model.config.num_hidden_layers)
    study, created = open_study(search, storage or make_storage(search.storage_url), ctx)
    if not created and study.user_attrs.get("teacher_fingerprint") not in (None, ctx.teacher.fingerprint):
        log(f"note: the teacher's weights differ from those the study started with "
            f"({study.user_attrs['teacher_fingerprint']} -> {ctx.teacher.fingerprint}); trials record which")
    log(f"study {search.study_name} ({'new' if created else 'resumed'}) in {search.storage_url}: "
        f"objectives {','.join(search.objectives)}, space {search.space.name}, budget {opts.budget}, "
        f"sampler {opts.sampler}, pruning {search.pruning_mode}")
    if created and opts.baselines:
        enqueue_baselines(study, search.space, ctx.teacher.model.config, log)
    if created:
        enqueue_students(study, queued, log)
    elif queued:
        log("note: --enqueue queues students in a new study only; this one is resumed as it was")
    for line in fail_stale_trials(study):
        log(line)
    started = datetime.now()
    left = trials_left(study, opts.trials)
    workers = max(1, min(opts.workers, left))
    if left > 0:
        log(f"{opts.trials - left} of {opts.trials} trials used or running; running {left} more"
            + (f" on {workers} workers" if workers > 1 else ""))
        if workers > 1 and "latency" in search.objectives:
            log("note: latency measured while workers share the machine is noisy; re-measure the front")
    procs = []
    try:
        spawn = multiprocessing.get_context("spawn")
        procs = [spawn.Process(target=_worker, args=(opts, rank), name=f"fastbert-nas-worker-{rank}")
                 for rank in range(1, workers)]
        for p in procs:
            p.start()
        optimize(study, search, ctx, log, show_progress=workers == 1 and sys.stderr.isatty())
    finally:
        for p in procs:
            p.join()
    for p in procs:
        if p.exitcode:
            log(f"note: {p.name} exited with code {p.exitcode}")
    return {"study": search.study_name, "storage": search.storage_url, "metric": search.metric,
            "objectives": list(search.objectives), "trials": opts.trials, "created": created,
            "ran": sum(1 for t in study.get_trials(deepcopy=False)
                       if t.datetime_complete is not None and t.datetime_complete >= started),
            "counts": state_counts(study),
            "used": trials_used(study.get_trials(deepcopy=False)), "front": front_rows(study, search.objectives)}
