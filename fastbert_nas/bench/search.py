"""`fastbert-nas bench search`: the default search against random search, as hypervolume per training step.

Two arms, each run as --seeds studies with the same --trials, task, space and per-trial budget:

    tpe     the search's default sampler (study.make_sampler's TPE) with Pareto pruning
    random  Optuna's RandomSampler without pruning

Neither arm queues the baseline students (search --no-baselines): both would run the same four
students first, which says nothing about sampling or pruning and would blur the difference.
The arms are paired: study.make_sampler seeds both samplers alike for a seed, and TPE samples its
first study.TPE_STARTUP_TRIALS (5) trials with a RandomSampler, so those are the students random
search samples first. The arms then differ by pruning (from the 6th finished trial, the Pareto
rule's warm-up) and by TPE's own choices (from the 6th trial).

Curve (one per study): report.hypervolume_history, the hypervolume of the (validation metric, FLOPs)
front after each finished trial, in the order trials finished, against the training steps spent so
far (hint + KD steps of every finished trial: a pruned one counts the steps it ran, one rejected
before training none). Hypervolume as `plot` and `bench pruning` compute it: reference point
(metric 0, 2x the teacher's FLOPs), area divided by the reference FLOPs, so it reads in metric units.

Goal (GOAL_STEP_SHARE = 0.5): the target is the median over seeds of random's final hypervolume;
each tpe seed needs the steps at which its curve first reaches the target (never: not reached);
the goal is met when the median of those over the tpe seeds (not reached counting as infinitely
many) is at most GOAL_STEP_SHARE x the median over seeds of random's total steps.

The studies share one SQLite file, RESULTS/search-<task>.db, as <task>-search-<arm>-s<seed>: the
same command again runs only the trials missing. One whose trials ran on another per-trial budget
is refused rather than mixed.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import statistics
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import optuna
import plotly.graph_objects as go

from fastbert_nas.bench.common import machine, mmm, save_report, spread, study_figures, task_name
from fastbert_nas.config import RunEnv, UserError, at_least
from fastbert_nas.report.plots import COLOURS, write_figures
from fastbert_nas.report.rows import hv_reference, hypervolume_history
from fastbert_nas.search.options import Search, SearchOptions
from fastbert_nas.search.run import TPE_STARTUP_TRIALS, in_process, run_search
from fastbert_nas.search.storage import make_storage, storage_exists


@dataclass(frozen=True)
class Setting:
    """What every trial of the bench runs: a search space, a --budget preset, and overrides of the preset."""

    space: str
    budget: str
    overrides: dict = field(default_factory=dict)  # SearchOptions budget fields (hint_steps, kd_steps, ...)
    about: str = ""


SETTINGS = {
    # SST-2 on a 2-core CPU: the default space on the search's `small` budget (50 hint + 500 KD steps, a
    # checkpoint every 100 on 1000 validation examples) cut to 130 step-equivalents a trial (a checkpoint on 500
    # examples costs about 5 steps), 22% of small's 600: about 29 s for an average random student at 2 threads
    # (per-step times of the 57 trials of a 30-trial `bench pruning` run on SST-2, fitted against FLOPs).
    "reduced": Setting("thin-deep", "cpu", dict(
        hint_steps=20,       # stage-1 optimizer steps: enough for the regressors to start KD from
        kd_steps=100,        # stage-2 optimizer steps: teacher-init students reach 0.84-0.90 SST-2 accuracy
        eval_every=50,       # 2 checkpoints: Pareto pruning can stop a trial halfway through KD
        examples=16000,      # the cpu trial budget's: reuses (and keeps) a `search --budget cpu` teacher cache
        eval_examples=500,   # validation examples per checkpoint: +-0.016 accuracy (1 sd) near 0.85
    ), "the thin-deep space, the small budget cut to 20 hint + 100 KD steps, a checkpoint every 50 KD steps "
       "on 500 validation examples"),
    "tiny": Setting("tiny", "smoke", {}, "tests: the tiny space and the smoke budget"),
}
DEFAULT_SETTING = "reduced"
DEFAULT_TRIALS = 16      # trials per study: 6 studies of `reduced` in about 40-45 minutes on 2 CPU cores
DEFAULT_SEEDS = 3        # studies per arm (seeds 0, 1, 2): min / median / max of every figure
GOAL_STEP_SHARE = 0.5    # tpe should reach random's final hypervolume within this share of random's steps
ARMS = {                 # arm -> the SearchOptions it changes
    "tpe": dict(sampler="tpe", pruning="pareto"),
    "random": dict(sampler="random", pruning="none"),
}
ARM_LABELS = {"tpe": "TPE, Pareto pruning", "random": "random, no pruning"}
BUDGET_KEYS = ("hint_steps", "kd_steps", "eval_every", "batch_size", "examples", "eval_examples")


def study_name(task: str, arm: str, seed: int) -> str:
    return f"{task}-search-{arm}-s{seed}"


# ---------------------------------------------------------------------------
# Curves and the goal, on plain numbers

def hv_at(curve: list[dict], steps: float) -> float:
    """The hypervolume a curve ({"steps", "hypervolume"} points, steps non-decreasing) had reached
    within `steps` training steps; 0 before its first trial."""
    reached = 0.0
    for p in curve:
        if p["steps"] > steps:
            break
        reached = p["hypervolume"]
    return reached


def steps_to_reach(curve: list[dict], target: float) -> int | None:
    """The training steps at which a curve first reaches `target`, or None when it never does."""
    if target <= 0:
        return 0
    return next((p["steps"] for p in curve if p["hypervolume"] >= target), None)


def final(curve: list[dict], key: str) -> float:
    return curve[-1][key] if curve else 0


def ranks(values: list[float | None]) -> dict:
    """min, median, max and count of figures where None means "never" (infinitely many); None again out."""
    inf = [math.inf if v is None else v for v in values]
    back = lambda x: None if math.isinf(x) else x  # noqa: E731
    return {"min": back(min(inf)), "median": back(statistics.median(inf)), "max": back(max(inf)), "n": len(inf),
            "reached": sum(v is not None for v in values)}


def search_goal(tpe: list[list[dict]], random: list[list[dict]], share: float = GOAL_STEP_SHARE) -> dict:
    """Whether tpe reaches random's final hypervolume within `share` of random's training steps.

    tpe, random: a curve per seed. See the module's docstring for the definitions."""
    target = statistics.median(final(c, "hypervolume") for c in random)
    random_steps = statistics.median(final(c, "steps") for c in random)
    allowed = share * random_steps
    needed = [steps_to_reach(c, target) for c in tpe]
    median_needed = ranks(needed)["median"]
    return {
        "target_hypervolume": target, "random_total_steps": random_steps, "step_share": share,
        "allowed_steps": allowed, "tpe_steps_to_target": needed, "tpe_steps_to_target_spread": ranks(needed),
        "tpe_share_of_random_steps": ranks([n / random_steps if n is not None and random_steps else None
                                            for n in needed]),
        "tpe_hypervolume_at_allowed": spread([hv_at(c, allowed) for c in tpe]),
        "random_hypervolume_at_allowed": spread([hv_at(c, allowed) for c in random]),
        "met": median_needed is not None and median_needed <= allowed,
    }


def median_curve(curves: list[list[dict]]) -> list[tuple[float, float]]:
    """(steps, median hypervolume over the curves) at every step any curve changes, up to the fewest total
    steps among them (beyond that, some seed has no figure)."""
    if not curves or not all(curves):
        return []
    end = min(final(c, "steps") for c in curves)
    grid = sorted({0, *(p["steps"] for c in curves for p in c if p["steps"] <= end)})
    return [(s, statistics.median(hv_at(c, s) for c in curves)) for s in grid]


# ---------------------------------------------------------------------------
# Running the studies

def check_budget(search: Search) -> None:
    """Refuse to resume a study whose trials ran on another per-trial budget (an edited setting)."""
    if not storage_exists(search.storage_url):
        return
    storage = make_storage(search.storage_url)
    if search.study_name not in optuna.study.get_all_study_names(storage):
        return
    want = {k: getattr(search.cfg, k) for k in BUDGET_KEYS}
    for t in optuna.load_study(study_name=search.study_name, storage=storage).get_trials(deepcopy=False):
        had = {k: (t.user_attrs.get("config") or {}).get(k) for k in BUDGET_KEYS}
        if "config" in t.user_attrs and had != want:
            diff = ", ".join(f"{k} {had[k]} (now {want[k]})" for k in BUDGET_KEYS if had[k] != want[k])
            raise UserError(f"study {search.study_name!r} in {search.storage_url} ran its trials with {diff}: "
                            "delete that file or give another --results to start the bench again")


def arm_figures(study: optuna.Study, seed: int) -> dict:
    """bench.study_figures of one study, with its seed and its hypervolume-against-steps curve."""
    ref = hv_reference(study.user_attrs)
    curve = [{k: h[k] for k in ("steps", "hypervolume", "trial", "state")}
             for h in hypervolume_history(study.get_trials(deepcopy=False), ref)]
    return {"seed": seed, **study_figures(study), "curve": curve}


def run_study(opts: SearchOptions) -> None:
    """One study of the bench in a process of its own (--jobs above 1), its log lines led by the study's name;
    its exit code as search.run.in_process gives it."""
    in_process(opts.study, lambda log: run_search(opts, log))


def run_studies(plan: list[SearchOptions], jobs: int) -> None:
    """The studies, `jobs` at a time, each in a process of its own; SQLite takes their writes in turn (search/storage.py
    retries a locked file). A process starts only when one is free, so a Ctrl-C (which the running studies see
    too) leaves the others unstarted; the same command resumes them all."""
    spawn = multiprocessing.get_context("spawn")
    pending, running = list(plan), []
    make_storage(plan[0].storage)  # the file and its tables, made here: two processes making them at once collide
    try:
        while pending or running:
            while pending and len(running) < jobs:
                opts = pending.pop(0)
                running.append(spawn.Process(target=run_study, args=(opts,), name=opts.study))
                running[-1].start()
            multiprocessing.connection.wait([p.sentinel for p in running])
            for p in [p for p in running if not p.is_alive()]:
                running.remove(p)
                if p.exitcode == 130:
                    raise KeyboardInterrupt
                if p.exitcode:
                    raise UserError(f"study {p.name} stopped with exit code {p.exitcode}: see its lines above; "
                                    "the same command resumes every study")
    except KeyboardInterrupt:  # a Ctrl-C reaches the running studies too
        raise
    except BaseException:
        for p in running:  # stop them as a Ctrl-C would: each queues its running trial again
            os.kill(p.pid, signal.SIGINT)
        raise
    finally:
        for p in running:
            p.join()


def bench_search(env: RunEnv, trials: int = DEFAULT_TRIALS, seeds: int = DEFAULT_SEEDS,
                 setting: str = DEFAULT_SETTING, *, jobs: int = 1, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) every arm's studies, seed by seed, `jobs` studies at a time (each in its own process
    when more than 1), then compare; writes RESULTS/benchmarks/search-<task>.*"""
    if setting not in SETTINGS:
        raise UserError(f"--setting {setting!r}: choose one of {', '.join(SETTINGS)}")
    at_least(1, trials=trials, seeds=seeds, jobs=jobs)
    chosen, name, results = SETTINGS[setting], task_name(env.task), env.results
    base = SearchOptions(env=env, trials=trials, space=chosen.space, budget=chosen.budget, **chosen.overrides,
                         baselines=False, rungs=1,  # every arm at one budget: the arms compare samplers and pruning
                         storage=f"sqlite:///{Path(results) / f'search-{name}.db'}")
    plan = [(arm, replace(base, study=study_name(name, arm, seed), seed=seed, **changes))
            for seed in range(seeds) for arm, changes in ARMS.items()]
    searches = [Search.from_options(opts) for _, opts in plan]
    for s in searches:  # before any training: a refusal costs nothing
        check_budget(s)
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    if jobs == 1:
        for _, opts in plan:
            run_search(opts, log)
    else:
        run_studies([opts for _, opts in plan], jobs)
    for (arm, opts), search in zip(plan, searches):
        study = optuna.load_study(study_name=search.study_name, storage=make_storage(search.storage_url))
        runs[arm].append(arm_figures(study, opts.seed))
    report = {
        "task": name, "setting": setting, "space": chosen.space, "budget": chosen.budget,
        "overrides": chosen.overrides, "setting_about": chosen.about,
        "per_trial": {k: getattr(searches[0].cfg, k) for k in BUDGET_KEYS},
        "trials": trials, "seeds": seeds, "baselines": False, "arms": ARMS, "pruning_warmup": base.pruning_warmup,
        "tpe_startup": TPE_STARTUP_TRIALS,
        "storage": base.storage,
        "runs": runs,
        "summary": {arm: {"final_hypervolume": spread([final(r["curve"], "hypervolume") for r in rs]),
                          "train_steps": spread([r["train_steps"] for r in rs]),
                          "wall_minutes": spread([r["wall_minutes"] for r in rs]),
                          "pruned": spread([r["states"].get("PRUNED", 0) for r in rs])} for arm, rs in runs.items()},
        "goal": search_goal([r["curve"] for r in runs["tpe"]], [r["curve"] for r in runs["random"]]),
        "command_minutes": (time.perf_counter() - started) / 60, "jobs": jobs, "threads": env.threads,
        "machine": machine(), "device": env.device, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    folder = Path(results) / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    written, notes = write_figures({f"search-{name}": curves_figure(report)}, folder)
    report["plots"] = [str(p) for p in written]
    for note in notes:
        log(f"note: {note}")
    return save_report(report, results, f"search-{name}", search_markdown)


# ---------------------------------------------------------------------------
# Figure and Markdown

def curves_figure(r: dict) -> go.Figure:
    """Hypervolume against cumulative training steps: a thin line per seed, the median bold, one colour per
    arm; the goal's target (dashed) and its step allowance (dotted)."""
    fig = go.Figure()
    for i, (arm, runs) in enumerate(r["runs"].items()):
        colour = COLOURS[i % len(COLOURS)]
        for run in runs:
            c = run["curve"]
            fig.add_trace(go.Scatter(
                x=[0] + [p["steps"] for p in c], y=[0] + [p["hypervolume"] for p in c], mode="lines",
                name=f"{ARM_LABELS[arm]}, seed {run['seed']}", legendgroup=arm, opacity=0.45,
                line=dict(shape="hv", color=colour, width=1.5),
                hovertext=["start"] + [f"{arm} seed {run['seed']}: after trial {p['trial']} ({p['state']})<br>"
                                       f"{p['steps']:,} steps, hypervolume {p['hypervolume']:.4f}" for p in c],
                hovertemplate="%{hovertext}<extra></extra>"))
        med = median_curve([run["curve"] for run in runs])
        if len(runs) > 1 and med:
            fig.add_trace(go.Scatter(x=[s for s, _ in med], y=[h for _, h in med], mode="lines",
                                     name=f"{ARM_LABELS[arm]}: median over seeds", legendgroup=arm,
                                     line=dict(shape="hv", color=colour, width=4)))
    g = r["goal"]
    fig.add_hline(y=g["target_hypervolume"], line=dict(dash="dash", color="grey"), annotation_position="top left",
                  annotation_text=f"target: random's median final hypervolume {g['target_hypervolume']:.4f}")
    fig.add_vline(x=g["allowed_steps"], line=dict(dash="dot", color="grey"), annotation_position="bottom right",
                  annotation_text=f"{g['step_share']:.0%} of random's median steps")
    fig.update_layout(
        title=f"{r['task']}: hypervolume of the metric-vs-FLOPs front against training steps, {r['seeds']} seeds x "
              f"{r['trials']} trials per arm, no baselines<br><sup>setting {r['setting']}: {r['setting_about']}"
              "<br>reference point: metric 0, 2 x the teacher's FLOPs; area divided by the reference FLOPs</sup>",
        xaxis=dict(title="training steps so far (hint + KD steps of every finished trial, in finishing order)"),
        yaxis=dict(title="hypervolume / reference FLOPs (metric units)"), template="plotly_white",
        margin=dict(t=110))
    return fig


def _steps(x: float | None) -> str:
    return "not reached" if x is None else f"{x:,.0f}"


def search_markdown(r: dict) -> str:
    """The search benchmark as Markdown: setting, definitions, per-arm figures, the goal, per-seed rows."""
    m, g, p = r["machine"], r["goal"], r["per_trial"]
    hv = lambda x: f"{x:.4f}"  # noqa: E731
    lines = [
        f"# Search benchmark: TPE with Pareto pruning against random search, {r['task']}", "",
        f"Measured {r['time']} on {m['cpu']}, {m['threads']} threads, torch {m['torch']}"
        + (f", {m['cuda']}" if m.get("cuda") else "") + f" (--device {r['device']}); "
        f"the command took {r['command_minutes']:.1f} min with {r.get('jobs', 1)} "
        f"{'study' if r.get('jobs', 1) == 1 else 'studies'} at a time"
        + (f", {r['threads']} thread{'s' if r['threads'] > 1 else ''} each" if r.get("threads") else "")
        + " (studies resumed from an earlier run count only what this run computed).", "",
        f"Setting `{r['setting']}`: {r['setting_about']}. Space `{r['space']}`; every trial: {p['hint_steps']} hint "
        f"+ {p['kd_steps']} KD steps of batch {p['batch_size']} over {p['examples']:,} training examples, a "
        f"checkpoint every {p['eval_every']} KD steps on {p['eval_examples']} validation examples. "
        f"{r['seeds']} seeds x {r['trials']} trials per arm.", "",
        "- **tpe**: the search's default sampler (TPE as `study.make_sampler` makes it: its first "
        f"{r['tpe_startup']} trials are random samples) with `--pruning pareto` (after {r['pruning_warmup']} finished "
        "trials).",
        "- **random**: Optuna's `RandomSampler`, `--pruning none`.",
        "- Both with `--no-baselines`: the four baseline students would open both arms alike, so the comparison "
        "is about sampling and pruning alone.",
        f"- Paired: for a seed both samplers are seeded alike, so TPE's {r['tpe_startup']} random startup trials are "
        f"the first {r['tpe_startup']} students random search samples; the arms differ by pruning and, from trial "
        f"{r['tpe_startup'] + 1}, by TPE's choices.", "",
        "Hypervolume: of the (validation metric, FLOPs) front of the COMPLETE trials, against the reference point "
        "(metric 0, 2 x the teacher's FLOPs), divided by the reference FLOPs (as `plot` and `bench pruning`): the "
        "mean, over FLOPs budgets up to the reference, of the best metric the front reaches within the budget. "
        "Training steps: hint + KD optimizer steps of every finished trial, summed in the order trials finished "
        "(a pruned trial counts the steps it ran).", "",
        "| arm | final hypervolume | training steps | wall min | pruned trials |", "|---|---|---|---|---|"]
    for arm, s in r["summary"].items():
        lines.append(f"| {arm} | {mmm(s['final_hypervolume'], hv)} | {mmm(s['train_steps'], _steps)} | "
                     f"{mmm(s['wall_minutes'], lambda x: f'{x:.1f}')} | {mmm(s['pruned'], lambda x: f'{x:g}')} |")
    needed = g["tpe_steps_to_target_spread"]
    lines += ["", "Figures are min / median / max over seeds.", "", "## Goal", "",
              f"Goal: tpe reaches random's final hypervolume with at most {g['step_share']:.0%} of random's training "
              "steps. Target = the median over random's seeds of its final hypervolume; for each tpe seed, the "
              "training steps its curve needed to first reach the target (or not reached); met when the median of "
              f"those (not reached = infinitely many) is at most {g['step_share']:.0%} of the median of random's "
              "total training steps.", "",
              f"- Target hypervolume: {g['target_hypervolume']:.4f}; random's median total: "
              f"{g['random_total_steps']:,.0f} steps; allowed: {g['allowed_steps']:,.0f} steps.",
              f"- tpe steps to the target: {mmm(needed, _steps)} (reached by {needed['reached']} of {needed['n']} "
              f"seeds; per seed: {', '.join(_steps(x) for x in g['tpe_steps_to_target'])}).",
              "- As a share of random's median total: "
              + mmm(g["tpe_share_of_random_steps"], lambda x: "not reached" if x is None else f"{x:.0%}") + ".",
              f"- Hypervolume within the allowed {g['allowed_steps']:,.0f} steps: tpe "
              f"{mmm(g['tpe_hypervolume_at_allowed'], hv)}, random {mmm(g['random_hypervolume_at_allowed'], hv)}.",
              "", f"**Goal {'met' if g['met'] else 'not met'}.**", "",
              "## Studies", "",
              f"In `{r['storage']}`. Plot: " + ", ".join(f"`{Path(x).name}`" for x in r["plots"]) + ".", "",
              "| arm | seed | study | states | training steps | final hypervolume | steps to target | wall min |",
              "|---|---|---|---|---|---|---|---|"]
    for arm, runs in r["runs"].items():
        for run in runs:
            states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(run["states"].items()))
            reach = steps_to_reach(run["curve"], g["target_hypervolume"])
            lines.append(f"| {arm} | {run['seed']} | {run['study']} | {states} | {run['train_steps']:,} | "
                         f"{final(run['curve'], 'hypervolume'):.4f} | {_steps(reach)} | {run['wall_minutes']:.1f} |")
    return "\n".join(lines) + "\n"
