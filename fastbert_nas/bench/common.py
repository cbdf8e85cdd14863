"""What every benchmark shares: the machine's description, report files, spreads, the summary page.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import statistics
from pathlib import Path
from typing import Callable

import optuna
import scipy.stats
import torch
from optuna.trial import TrialState

from fastbert_nas.config import UserError
from fastbert_nas.core.training import cpu_name
from fastbert_nas.report.rows import hv_reference
from fastbert_nas.search.options import Search, SearchOptions
from fastbert_nas.search.pruning import front_hypervolume
from fastbert_nas.search.run import in_process, run_search
from fastbert_nas.search.storage import make_storage
from fastbert_nas.search.trials import front_rows, top_rung_trials, trial_metric


def machine() -> dict:
    """What the figures were measured on."""
    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def check_report_name(name: str, option: str) -> None:
    """Refuse a report name that is not a plain file name (it names RESULTS/benchmarks/<name>.*)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"{option} {name!r}: a file name (letters, digits, '.', '_', '-')")


def save_report(report: dict, results, name: str, markdown: Callable[[dict], str]) -> dict:
    """Write RESULTS/benchmarks/<name>.json (the full record) and <name>.md (markdown(report)); the report,
    with "path" (the JSON's) added."""
    out = Path(results) / "benchmarks" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    report["path"] = str(out)
    return report


def spread(values: list[float]) -> dict | None:
    """min, median, max (and the count) of a list of figures."""
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def mmm(s: dict | None, fmt: Callable[[float], str], missing: str = "-") -> str:
    """'min / median / max' of a `spread`, each value through `fmt`; `missing` when there is none."""
    return " / ".join(fmt(s[k]) for k in ("min", "median", "max")) if s else missing


def seed_stats(values: list[float]) -> dict:
    """mean, sample standard deviation (None for one value), min and max (and the count) of one figure over
    seeds."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values)}


def seed_text(s: dict, fmt: str) -> str:
    """seed_stats as 'mean ± sd (min-max)' in format fmt; one seed: its value alone."""
    if s["n"] == 1:
        return format(s["mean"], fmt)
    return f"{s['mean']:{fmt}} ± {s['sd']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def rank_correlation(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation of two paired lists (ties get their average rank); None when either list
    has fewer than two distinct values."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(scipy.stats.spearmanr(a, b).statistic)


def kendall_tau(a: list[float], b: list[float]) -> float | None:
    """Kendall's tau-b of two paired lists; None when either list has fewer than two distinct values."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(scipy.stats.kendalltau(a, b).statistic)


def study_figures(study: optuna.Study) -> dict:
    """What a finished study cost and found: states, training steps, wall time per trial, its front."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    teacher_flops = study.user_attrs["teacher_flops"]
    ref = hv_reference(study.user_attrs)
    points = [(t.values[0], t.user_attrs["flops"]) for t in top_rung_trials(finished)  # each student once
              if t.state == TrialState.COMPLETE]
    states: dict[str, int] = {}
    for t in finished:
        key = t.state.name if t.user_attrs.get("prune_reason") != "constraint" else "REJECTED"
        states[key] = states.get(key, 0) + 1
    return {
        "study": study.study_name, "trials": len(finished), "states": states,
        "train_steps": sum(t.user_attrs.get("train_steps", 0) for t in finished),
        "wall_s_per_trial": spread([t.user_attrs["wall_s"] for t in finished if "wall_s" in t.user_attrs]),
        "wall_minutes": sum(t.user_attrs.get("wall_s", 0.0) for t in finished) / 60,
        "hypervolume": front_hypervolume(points, ref[1], ref[0]),  # metric above majority x decades of FLOPs saved
        "hv_ref": list(ref), "teacher_flops": teacher_flops,
        "front": front_rows(study, ("metric", "flops")),
        "pruned_at": spread([max(map(int, t.user_attrs.get("curve") or {0: 0})) for t in finished
                             if t.state == TrialState.PRUNED and t.user_attrs.get("prune_reason") == "pareto"]),
        "trial_rows": [{"trial": t.number, "state": t.state.name, "name": t.user_attrs.get("name"),
                        "metric": trial_metric(t), "flops": t.user_attrs.get("flops"),
                        "train_steps": t.user_attrs.get("train_steps", 0),
                        "hint_steps": t.user_attrs.get("hint_steps", 0),
                        "curve": t.user_attrs.get("curve") or {}, "wall_s": t.user_attrs.get("wall_s")}
                       for t in finished],
    }


def run_study(opts: SearchOptions) -> None:
    """One study of the bench in a process of its own (--jobs above 1), its log lines led by the study's name;
    its exit code as search.run.in_process gives it."""
    in_process(opts.study, lambda log: run_search(opts, log))


def run_studies(plan: list[SearchOptions], jobs: int, done: Callable[[SearchOptions], None] | None = None) -> None:
    """The studies, `jobs` at a time, each in a process of its own; SQLite takes their writes in turn (search/storage.py
    retries a locked file). `done` is called here with each study's options as its process finishes. A process
    starts only when one is free, so a Ctrl-C (which the running studies see too) leaves the others unstarted;
    the same command resumes them all."""
    spawn = multiprocessing.get_context("spawn")
    pending, running = list(plan), {}
    for url in dict.fromkeys(Search.from_options(opts).storage_url for opts in plan):
        make_storage(url)  # the files and their tables, made here: two processes making them at once collide
    try:
        while pending or running:
            while pending and len(running) < jobs:
                opts = pending.pop(0)
                p = spawn.Process(target=run_study, args=(opts,), name=opts.study)
                p.start()
                running[p] = opts
            multiprocessing.connection.wait([p.sentinel for p in running])
            for p in [p for p in running if not p.is_alive()]:
                opts = running.pop(p)
                if p.exitcode == 130:
                    raise KeyboardInterrupt
                if p.exitcode:
                    raise UserError(f"study {p.name} stopped with exit code {p.exitcode}: see its lines above; "
                                    "the same command resumes every study")
                if done:
                    done(opts)
    except KeyboardInterrupt:  # a Ctrl-C reaches the running studies too
        raise
    except BaseException:
        for p in running:  # stop them as a Ctrl-C would: each queues its running trial again
            if p.is_alive():  # one that ended too is reaped already: its pid may no longer exist
                with contextlib.suppress(ProcessLookupError):  # it ended a moment ago
                    os.kill(p.pid, signal.SIGINT)
        raise
    finally:
        for p in running:
            p.join()


TEACHER_RECIPE_KEYS = ("task", "base", "data_fingerprint", "max_len")  # of a fine-tuned teacher's manifest


def teacher_id(manifest: dict, fingerprint: str) -> str:
    """What benchmark records are keyed on: for a teacher this tool fine-tuned, a hash of its task, base, data
    and length (the same command on another machine gives weights that differ in their last bits: its records
    stand); for one given by --teacher, which records none of that, its weights' fingerprint."""
    if "data_fingerprint" not in manifest:
        return fingerprint
    text = "|".join(str(manifest.get(k)) for k in TEACHER_RECIPE_KEYS)
    return "recipe-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def task_name(task: str) -> str:
    """The name a task's benchmark files and studies take: a built-in's, or a custom folder's own name."""
    return Path(task).name or task


SUMMARY_FILE = "BENCHMARKS.md"  # RESULTS/BENCHMARKS.md: every benchmark report in one file


def machine_text(m: dict) -> str:
    """'AMD EPYC, 2 threads, torch 2.13.0+cpu' (and the GPU, if any)."""
    parts = [m.get("cpu"), m.get("cuda"), f"{m['threads']} threads" if m.get("threads") else None,
             f"torch {m['torch']}" if m.get("torch") else None]
    return ", ".join(p for p in parts if p) or "-"


def write_summary(results: Path) -> Path:
    """RESULTS/BENCHMARKS.md, rebuilt from RESULTS/benchmarks/: a table of the reports with when and on what
    each was measured (from its JSON), then every report (*.md) in full, its headings one level down."""
    folder = Path(results) / "benchmarks"
    reports = []
    for md in sorted(folder.glob("*.md")):
        record = md.with_suffix(".json")
        reports.append((md, json.loads(record.read_text()) if record.exists() else {}))
    lines = ["# Benchmarks", "",
             "Every figure here was measured by a `fastbert-nas bench` command, which wrote it to "
             "`benchmarks/<name>.json` (the full record) and `benchmarks/<name>.md`; each run rebuilds this "
             "file from them.", "", "| report | measured (UTC) | machine |", "|---|---|---|"]
    lines += [f"| [{md.stem}](benchmarks/{md.name}) | {data.get('time', '-')} | "
              f"{machine_text(data.get('machine') or {})} |" for md, data in reports]
    for md, _ in reports:
        lines += ["", *("#" + ln if ln.startswith("#") else ln for ln in md.read_text().splitlines())]
    out = Path(results) / SUMMARY_FILE
    out.write_text("\n".join(lines) + "\n")
    return out
