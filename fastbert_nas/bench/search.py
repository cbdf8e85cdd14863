"""`fastbert-nas bench search`: the default search against random search and against TPE without rungs, as
hypervolume per training step, every student judged at the top rung's budget.

Arms (ARMS), each run as --seeds studies on the same task, space and first-rung budget:

    default   the search as it ships: TPE, Pareto pruning, the setting's rung ladder (successive halving)
    tpe       TPE with Pareto pruning, no rungs: every trial at the top rung's budget
    random    Optuna's RandomSampler, no pruning, no rungs: every trial at the top rung's budget
    gp        Optuna's GPSampler with Pareto pruning and the ladder: the default with the other sampler
              (not run unless --arms asks; it measures which sampler the search should default to)

Every arm's figure of a student is taken at the top rung's budget (its KD steps and augmentation): the
flat arms train every trial there; a ladder arm's front holds only the students it promoted to the top
rung, while every trial's steps count. Equal training steps: a ladder arm runs
`ladder_trials(trials, rungs)` first-rung trials, which cost about what `trials` trials at the top budget do
(each rung's promotions, one in RUNG_ETA with RUNG_ETA times the steps, cost what the rung did), and arms
are compared on their curves at equal steps, not at their ends.

No arm queues the baseline students (search --no-baselines): they would open every arm alike, which says
nothing about sampling, rungs or pruning. The arms are paired: study.make_sampler seeds the samplers alike
for a seed, and TPE (and the GP) sample their first study.TPE_STARTUP_TRIALS (5) trials at random, so those
are the students random search samples first.

Curve (one per study): report.hypervolume_history, the hypervolume of the (validation metric, FLOPs) front
after each finished trial, in the order trials finished, against the training steps (hint + KD steps of every
finished trial: a pruned one counts the steps it ran, one rejected before training none) and the wall time
spent so far. Hypervolume as `plot` and `bench pruning` compute it: on log FLOPs, from the reference point at
the majority-class level and the teacher's FLOPs (metric above the majority class x decades of FLOPs saved).

Goals (judged by `search_goals`):
- reach: the target is the median over seeds of random's final hypervolume; each default seed needs the
  steps at which its curve first reaches it (never: not reached); met when the median of those (not reached
  counting as infinitely many) is at most GOAL_STEP_SHARE of the median of random's total steps.
- beat TPE: at the fewer of the two arms' median total steps, the median over seeds of the default's
  hypervolume is above TPE-without-rungs'.

The studies share one SQLite file, RESULTS/search-<task>.db, as <task>-search-<arm>-s<seed>: the same command
again runs only the trials missing. One whose first-rung trials ran on another budget is refused rather than
mixed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import optuna

from fastbert_nas.bench.common import machine, run_studies, save_report, spread, study_figures, task_name
from fastbert_nas.bench.search_curves import final, search_goals
from fastbert_nas.bench.search_report import curves_figure, search_markdown
from fastbert_nas.config import RUNG_ETA, RunEnv, UserError, at_least
from fastbert_nas.report.plots import write_figures
from fastbert_nas.report.rows import hv_reference, hypervolume_history
from fastbert_nas.search.options import DEFAULT_SAMPLER, Search, SearchOptions
from fastbert_nas.search.run import TPE_STARTUP_TRIALS, run_search
from fastbert_nas.search.rungs import rung_config
from fastbert_nas.search.storage import make_storage, storage_exists
from fastbert_nas.search.trials import rung_of


@dataclass(frozen=True)
class Setting:
    """What the bench's trials run: a search space, a --budget preset and overrides of it (the first rung),
    and the ladder arms' rungs (the flat arms train at its top rung's budget)."""

    space: str
    budget: str
    overrides: dict = field(default_factory=dict)  # SearchOptions budget fields (hint_steps, kd_steps, ...)
    rungs: int = 2
    about: str = ""


SETTINGS = {
    # SST-2 on a 2-core CPU: the default space, the cpu trial budget cut to 20 hint + 100 KD steps at the
    # first rung and 300 KD steps with the export's augmentation at the top, sized for 3 arms x 5 seeds in
    # about two hours (the default ladder's 500 -> 4,500 KD steps would take a day).
    "reduced": Setting("thin-deep", "cpu", dict(
        hint_steps=20,       # stage-1 optimizer steps: enough for the regressors to start KD from
        kd_steps=100,        # first rung's stage-2 steps; the top rung trains 3x as long
        eval_every=50,       # 2 checkpoints a rung: Pareto pruning can stop a trial halfway through KD
        examples=16000,      # the cpu trial budget's: reuses (and keeps) a `search --budget cpu` teacher cache
        eval_examples=500,   # validation examples per checkpoint: +-0.016 accuracy (1 sd) near 0.85
    ), 2, "the thin-deep space; rungs of 20 hint + 100 and 300 KD steps (the top one with the export's "
          "augmentation), a checkpoint every 50 and 150 KD steps on 500 validation examples"),
    "tiny": Setting("tiny", "smoke", {}, 2, "tests: the tiny space, the smoke budget, two rungs"),
}
DEFAULT_SETTING = "reduced"
DEFAULT_TRIALS = 10      # flat arms' trials per study; the ladder arms get ladder_trials(DEFAULT_TRIALS, rungs)
DEFAULT_SEEDS = 5        # studies per arm (seeds 0-4): min / median / max of every figure


@dataclass(frozen=True)
class Arm:
    sampler: str
    pruning: str
    ladder: bool  # climbs the setting's rungs; else every trial at the top rung's budget
    label: str


ARMS = {
    "default": Arm(DEFAULT_SAMPLER, "pareto", True, f"as the search ships: {DEFAULT_SAMPLER}, Pareto pruning, rungs"),
    "tpe": Arm("tpe", "pareto", False, "TPE, Pareto pruning, no rungs"),
    "random": Arm("random", "none", False, "random, no pruning, no rungs"),
    "gp": Arm("gp", "pareto", True, "GP, Pareto pruning, rungs"),
}
DEFAULT_ARMS = ("default", "tpe", "random")
BUDGET_KEYS = ("hint_steps", "kd_steps", "eval_every", "batch_size", "examples", "eval_examples", "augment")


def study_name(task: str, arm: str, seed: int) -> str:
    return f"{task}-search-{arm}-s{seed}"


def parse_arms(text: str) -> tuple[str, ...]:
    """'default,tpe,random' -> the arms, in ARMS' order; UserError for an unknown or empty list."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if not names or names - set(ARMS):
        raise UserError(f"--arms {text!r}: choose from {', '.join(ARMS)}")
    return tuple(a for a in ARMS if a in names)


def ladder_trials(trials: int, rungs: int, eta: int = RUNG_ETA) -> int:
    """First-rung trials of a ladder arm that cost about what `trials` trials at its top rung's budget do: a
    rung's promotions (one in eta, eta times the KD steps) cost what the rung did, so a first-rung trial and its
    share of promotions cost rungs / eta^(rungs-1) of a top-rung trial."""
    return math.ceil(trials * eta ** (rungs - 1) / rungs)


def arm_options(base: SearchOptions, arm: str, rungs: int, trials: int) -> SearchOptions:
    """The SearchOptions of one arm's studies (seed and name aside), from the first rung's `base`."""
    a = ARMS[arm]
    opts = replace(base, sampler=a.sampler, pruning=a.pruning)
    if a.ladder:
        return replace(opts, rungs=rungs, trials=ladder_trials(trials, rungs))
    top = rung_config(Search.from_options(base).cfg, rungs - 1, rungs)
    return replace(opts, rungs=1, trials=trials, kd_steps=top.kd_steps, eval_every=top.eval_every,
                   augment=top.augment)


# ---------------------------------------------------------------------------
# Running the studies

def check_budget(search: Search) -> None:
    """Refuse to resume a study whose first-rung trials ran on another budget (an edited setting)."""
    if not storage_exists(search.storage_url):
        return
    storage = make_storage(search.storage_url)
    if search.study_name not in optuna.study.get_all_study_names(storage):
        return
    want = {k: getattr(search.cfg, k) for k in BUDGET_KEYS}
    for t in optuna.load_study(study_name=search.study_name, storage=storage).get_trials(deepcopy=False):
        if rung_of(t):  # a promotion trains at its rung's budget
            continue
        had = {k: (t.user_attrs.get("config") or {}).get(k) for k in BUDGET_KEYS}
        if "config" in t.user_attrs and had != want:
            diff = ", ".join(f"{k} {had[k]} (now {want[k]})" for k in BUDGET_KEYS if had[k] != want[k])
            raise UserError(f"study {search.study_name!r} in {search.storage_url} ran its trials with {diff}: "
                            "delete that file or give another --results to start the bench again")


def arm_figures(study: optuna.Study, seed: int, min_rung: int = 0) -> dict:
    """bench.study_figures of one study, with its seed and its hypervolume curve against steps and wall time,
    whose front holds the students finished at `min_rung` or above (the top rung's budget); "hypervolume" is
    the curve's last, "hypervolume_all_rungs" that of every student at its highest rung."""
    ref = hv_reference(study.user_attrs)
    curve = [{k: h[k] for k in ("steps", "wall_s", "hypervolume", "trial", "state", "rung")}
             for h in hypervolume_history(study.get_trials(deepcopy=False), ref, min_rung)]
    figures = study_figures(study)
    return {"seed": seed, **figures, "hypervolume": final(curve, "hypervolume"),
            "hypervolume_all_rungs": figures["hypervolume"], "promotions": sum(r["rung"] > 0 for r in curve),
            "curve": curve}


def bench_search(env: RunEnv, trials: int = DEFAULT_TRIALS, seeds: int = DEFAULT_SEEDS,
                 setting: str = DEFAULT_SETTING, arms: tuple[str, ...] = DEFAULT_ARMS, *, jobs: int = 1,
                 log: Callable[[str], None] = print) -> dict:
    """Run (or resume) every arm's studies, seed by seed, `jobs` studies at a time (each in its own process
    when more than 1), then compare; writes RESULTS/benchmarks/search-<task>.*"""
    if setting not in SETTINGS:
        raise UserError(f"--setting {setting!r}: choose one of {', '.join(SETTINGS)}")
    at_least(1, trials=trials, seeds=seeds, jobs=jobs)
    chosen, name, results = SETTINGS[setting], task_name(env.task), env.results
    base = SearchOptions(env=env, trials=trials, space=chosen.space, budget=chosen.budget, **chosen.overrides,
                         baselines=False, storage=f"sqlite:///{Path(results) / f'search-{name}.db'}")
    by_arm = {arm: arm_options(base, arm, chosen.rungs, trials) for arm in arms}
    plan = [(arm, replace(by_arm[arm], study=study_name(name, arm, seed), seed=seed))
            for seed in range(seeds) for arm in arms]
    searches = [Search.from_options(opts) for _, opts in plan]
    for s in searches:  # before any training: a refusal costs nothing
        check_budget(s)
    started = time.perf_counter()
    if jobs == 1:
        for _, opts in plan:
            run_search(opts, log)
    else:
        run_studies([opts for _, opts in plan], jobs)
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for (arm, opts), search in zip(plan, searches):
        study = optuna.load_study(study_name=search.study_name, storage=make_storage(search.storage_url))
        runs[arm].append(arm_figures(study, opts.seed, search.rungs - 1))
    first = Search.from_options(base).cfg
    top = rung_config(first, chosen.rungs - 1, chosen.rungs)  # the flat arms' budget
    report = {
        "task": name, "setting": setting, "space": chosen.space, "budget": chosen.budget,
        "overrides": chosen.overrides, "setting_about": chosen.about, "rungs": chosen.rungs,
        "first_rung": {k: getattr(first, k) for k in BUDGET_KEYS},
        "top_rung": {k: getattr(top, k) for k in BUDGET_KEYS},
        "trials": trials, "ladder_trials": ladder_trials(trials, chosen.rungs), "seeds": seeds, "baselines": False,
        "arms": {arm: vars(ARMS[arm]) for arm in arms}, "pruning_warmup": base.pruning_warmup,
        "tpe_startup": TPE_STARTUP_TRIALS, "storage": base.storage, "runs": runs,
        "summary": {arm: {"final_hypervolume": spread([final(r["curve"], "hypervolume") for r in rs]),
                          "train_steps": spread([r["train_steps"] for r in rs]),
                          "wall_minutes": spread([r["wall_minutes"] for r in rs]),
                          "promotions": spread([r["promotions"] for r in rs]),
                          "pruned": spread([r["states"].get("PRUNED", 0) for r in rs])} for arm, rs in runs.items()},
        "goals": search_goals({arm: [r["curve"] for r in rs] for arm, rs in runs.items()}),
        "command_minutes": (time.perf_counter() - started) / 60, "jobs": jobs, "threads": env.threads,
        "machine": machine(), "device": env.device, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    folder = Path(results) / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    written, notes = write_figures({f"search-{name}": curves_figure(report, "steps"),
                                    f"search-{name}-wall": curves_figure(report, "wall_s")}, folder)
    report["plots"] = [str(p) for p in written]
    for note in notes:
        log(f"note: {note}")
    return save_report(report, results, f"search-{name}", search_markdown)
