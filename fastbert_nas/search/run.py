"""Running a search: create or resume the study, queue its first students, run the trials left in this
process and in spawned workers.

Trial budget: rung-0 trials (the students sampled or queued) COMPLETE, PRUNED (constraint rejections
included) and FAIL count toward --trials; a FAIL trial that has been queued again (a killed or interrupted
one) counts once, through its retry. Promotions to higher rungs (search/promotion.py) come on top: one in
RUNG_ETA of a rung's students. Running the same command again runs only what is left.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import sys
import time
import warnings
from datetime import datetime
from typing import Callable

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from fastbert_nas.config import ENV_ATTR, UserError
from fastbert_nas.core import pipeline
from fastbert_nas.core.cost import REF_SEQ_LEN, count_flops, count_params
from fastbert_nas.search.baselines import enqueue_baselines, enqueue_students, enqueued_params
from fastbert_nas.search.objective import Objective, teacher_reference
from fastbert_nas.search.options import DEFAULT_SAMPLER, Search, SearchOptions
from fastbert_nas.search.promotion import due_promotion, enqueue_promotion, promotions_waiting
from fastbert_nas.search.storage import (
    LAST_ATTR,
    existing_attrs,
    fail_stale_trials,
    make_storage,
    storage_exists,
    worker_id,
)
from fastbert_nas.search.trials import ProgressLine, front_rows, rung_of, state_counts, trials_used

WAIT_POLL_S = 2                            # seconds between looks at trials other workers are running
TPE_STARTUP_TRIALS = 5                     # random trials before TPE models the front (Optuna's default is 10):


def make_sampler(seed: int, rank: int, n_trials: int, kind: str = DEFAULT_SAMPLER,
                 joined: bool = False) -> optuna.samplers.BaseSampler:
    """TPE (conditional parameters suit it), random search or a Gaussian process (`kind`, one of SAMPLERS; TPE
    and the GP model the constraint values trials set), seeded by --seed,
    the worker and the study's length, so that a resumed study or a second worker does not replay the
    first one's random picks. A process that joins a study it did not create also mixes in its host and
    pid: workers started at once on several machines (or twice on one) with the same command would
    otherwise sample the same students."""
    words = [seed, rank, n_trials] + (list(hashlib.sha256(worker_id().encode()).digest()[:8]) if joined else [])
    entropy = int(np.random.SeedSequence(words).generate_state(1)[0])
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=entropy)
    if kind == "gp":  # models the parameters every trial has; the per-width heads it draws at random
        return optuna.samplers.GPSampler(seed=entropy, n_startup_trials=TPE_STARTUP_TRIALS,
                                         warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=entropy, n_startup_trials=TPE_STARTUP_TRIALS)


def make_pruner(search: Search) -> optuna.pruners.BasePruner:
    """Optuna's pruner for single-objective studies (our Pareto rule needs none)."""
    if search.pruning_mode == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.opts.pruning_warmup)
    if search.pruning_mode == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=search.cfg.eval_every, max_resource=search.cfg.kd_steps)
    return optuna.pruners.NopPruner()


def open_study(search: Search, storage: RDBStorage, ctx: pipeline.Context,
               rank: int = 0) -> tuple[optuna.Study, bool, Search]:
    """Create the study (with its identifying attrs) or load it; returns (study, created, the search on it:
    `search`, or resumed on the study another machine created a moment before)."""
    n_before = 0
    created = False
    if search.study_name in optuna.study.get_all_study_names(storage):
        n_before = len(optuna.load_study(study_name=search.study_name, storage=storage).get_trials(deepcopy=False))
    else:  # the attrs are measured before the study is made: others see it without them only while they are written
        attrs = {**search.study_attrs(), ENV_ATTR: ctx.env.to_dict(), "metric": search.metric,
                 "teacher_id": ctx.teacher_id,
                 "teacher_fingerprint": ctx.teacher.fingerprint,
                 "teacher_params": count_params(ctx.teacher.model)["total"],
                 "teacher_flops": count_flops(ctx.teacher.model, ctx.spec.max_len),
                 "teacher_flops_ref_len": count_flops(ctx.teacher.model), "ref_seq_len": REF_SEQ_LEN,
                 **teacher_reference(ctx, search.cfg.eval_examples, search.runtime),
                 "data_fingerprint": ctx.data.fingerprint(), "seq_len": ctx.spec.max_len,
                 "flops_unit": "FLOPs, 2 per multiply-add", LAST_ATTR: search.opts.seed}
        try:
            study = optuna.create_study(storage=storage, study_name=search.study_name, directions=search.directions)
            study.set_metric_names(search.metric_names)  # optuna-dashboard's and the optuna CLI's axis names
            for key, value in attrs.items():
                study.set_user_attr(key, value)
            created = True
        except optuna.exceptions.DuplicatedStudyError:  # another machine created it a moment ago
            search = search.resumed(existing_attrs(storage, search.study_name) or {})  # refuses an incompatible one
    study = optuna.load_study(study_name=search.study_name, storage=storage,
                              sampler=make_sampler(search.opts.seed, rank, n_before, search.opts.sampler,
                                                   joined=not created),
                              pruner=make_pruner(search))
    return study, created, search


def trials_left(trials: list[FrozenTrial], budget: int) -> int:
    """--trials (`budget`) minus the rung-0 trials of the study's `trials` used and those running now (in
    other workers)."""
    running = sum(1 for t in trials if t.state == TrialState.RUNNING and rung_of(t) == 0)
    return budget - trials_used(trials) - running


def promotion_cost(search: Search) -> str:
    """The cost promotions compare students on: the first cost objective (FLOPs in a single-objective study)."""
    return search.objectives[1] if len(search.objectives) > 1 else "flops"


def optimize(study: optuna.Study, search: Search, ctx: pipeline.Context, log: Callable[[str], None],
             show_progress: bool = False) -> None:
    """Run trials one at a time until --trials students are used (counting those other workers are running)
    and no promotion is due or queued: before each trial, a promotion that has come due is queued, and
    Optuna runs queued trials first. Then wait for the trials other workers are running: one whose worker
    died is failed once its heartbeat is GRACE_S old, and its retry is run here. So no trial is left RUNNING
    while a worker of the study lives."""
    objective = Objective(search, ctx, show_progress)
    callbacks = [ProgressLine(search.metric, log)]
    attrs = study.user_attrs  # fixed once the study is made
    waiting = False
    while True:
        trials = study.get_trials(deepcopy=False)
        due = due_promotion(trials, search.rungs, promotion_cost(search), attrs)
        if due is not None:
            enqueue_promotion(study, *due)
        if due is not None or promotions_waiting(trials) or trials_left(trials, search.opts.trials) > 0:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True, callbacks=callbacks)
            continue
        stale = fail_stale_trials(study)
        for line in stale:
            log(line)
        if stale:  # their retries are queued: run them
            continue
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
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


def in_process(label: str, job: Callable[[Callable[[str], None]], None]) -> None:
    """The body of a spawned process: job(log), its lines led by [label]. Its exit code says how it ended:
    0 done, 2 refused (the reason printed as the command prints it, one line, no traceback), 130 interrupted
    (the running trial is queued again by `recorded`)."""
    log = lambda line: print(f"[{label}] {line}", flush=True)  # noqa: E731
    try:
        job(log)
    except UserError as exc:
        log(f"error: {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _worker(opts: SearchOptions, rank: int) -> None:
    """A spawned worker: its own Context (prepare once), the shared study, trials until the budget is used."""
    _quiet()

    def work(log: Callable[[str], None]) -> None:
        search = Search.from_options(opts)
        storage = make_storage(search.storage_url)
        attrs = existing_attrs(storage, search.study_name)
        search = search.resumed(attrs) if attrs is not None else search
        ctx = search.prepare()
        study, _, search = open_study(search, storage, ctx, rank)
        optimize(study, search, ctx, log)

    in_process(f"worker {rank}", work)


def run_search(opts: SearchOptions, log: Callable[[str], None] = print) -> dict:
    """Create or resume the study, queue the baselines in a new one, run the trials left; a summary."""
    _quiet()
    search = Search.from_options(opts)
    storage = make_storage(search.storage_url) if storage_exists(search.storage_url) else None
    attrs = existing_attrs(storage, search.study_name) if storage is not None else None
    if attrs is not None:  # before the teacher is loaded: refusing costs nothing
        search = search.resumed(attrs)
    else:
        search.runtime.check()  # a new study's runtime, whole
    opts = search.opts
    ctx = search.prepare()  # bad data or teacher files fail here, before a new study file is made
    queued = enqueued_params(search.space, search.students, ctx.teacher.model.config.num_hidden_layers)
    study, created, search = open_study(search, storage or make_storage(search.storage_url), ctx)
    if not created and study.user_attrs.get("teacher_fingerprint") not in (None, ctx.teacher.fingerprint):
        log(f"note: the teacher's weights differ from those the study started with "
            f"({study.user_attrs['teacher_fingerprint']} -> {ctx.teacher.fingerprint}); trials record which")
    log(f"study {search.study_name} ({'new' if created else 'resumed'}) in {search.storage_url}: "
        f"objectives {','.join(search.objectives)}, space {search.space.name}, budget {opts.budget}, "
        f"sampler {opts.sampler}, pruning {search.pruning_mode}, latency in {search.runtime.label}, rungs "
        + " -> ".join(str(search.rung_config(r).kd_steps) for r in range(search.rungs)) + " KD steps")
    room = opts.trials
    if created and opts.baselines:
        room -= enqueue_baselines(study, search.space, ctx.teacher.model.config, log, room)
    if created:
        enqueue_students(study, queued, log, room)
    elif queued:
        log("note: --enqueue queues students in a new study only; this one is resumed as it was")
    for line in fail_stale_trials(study):
        log(line)
    started = datetime.now()
    left = trials_left(study.get_trials(deepcopy=False), opts.trials)
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
            "seq_len": study.user_attrs.get("seq_len"),
            "ran": sum(1 for t in study.get_trials(deepcopy=False)
                       if t.datetime_complete is not None and t.datetime_complete >= started),
            "counts": state_counts(study),
            "used": trials_used(study.get_trials(deepcopy=False)), "front": front_rows(study, search.objectives)}
