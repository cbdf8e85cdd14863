"""Benchmarks: measured figures written to results/benchmarks/ and summarized in Markdown.

`distill`: one student distilled with teacher init and with random init on the same
budget, and distillation throughput with and without the teacher-output cache.
`pruning`: the same study run with Pareto pruning and without; training steps saved
and the hypervolume each front keeps.
`export` (bench_export.py): exported students beside their teachers, timed side by side.
`search` (bench_search.py): TPE with Pareto pruning against random search, hypervolume per training step.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import statistics
from dataclasses import replace

import optuna
import torch
from optuna.trial import TrialState

from .config import RunEnv
from .pipeline import distill_one
from .pruning import hypervolume_2d
from .report import hv_reference
from .study import SearchOptions, front_rows, make_storage, run_search, trial_metric

THROUGHPUT_STEPS = dict(hint_steps=30, kd_steps=150, eval_every=150, eval_examples=200)  # short timed runs


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def save_report(report: dict, results, name: str, markdown: Callable[[dict], str]) -> dict:
    """Write RESULTS/benchmarks/<name>.json (the full record) and <name>.md (markdown(report)); the report,
    with "path" (the JSON's) added."""
    out = Path(results) / "benchmarks" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    report["path"] = str(out)
    return report


def bench_distill(env: RunEnv, arch: str, hints: str | None, budget: str) -> dict:
    """Teacher init vs random init at `budget`, then throughput with and without the cache."""
    task, results = env.task, env.results
    runs = {init: distill_one(env, arch=arch, hints=hints, init=init, budget=budget)
            for init in ("teacher", "random")}
    speed = {}
    for cached in (True, False):
        r = distill_one(replace(env, use_cache=cached), arch=arch, hints=hints, init="teacher", budget=budget,
                        latency=False, overrides=THROUGHPUT_STEPS, tag="-cache" if cached else "-nocache")
        speed["cache" if cached else "no_cache"] = r["distill"]["examples_per_s"]
    report = {
        "task": task, "arch": arch, "hints": runs["teacher"]["hints"], "budget": budget,
        "teacher_dev": runs["teacher"]["teacher"]["dev"], "teacher_costs": runs["teacher"]["teacher"]["costs"],
        "runs": {init: {k: r[k] for k in ("dev", "val", "retention", "costs", "vs_teacher", "distill_minutes",
                                         "cache_minutes", "config")} | {"curve": r["distill"]["curve"],
                                                                        "examples_per_s": r["distill"]["examples_per_s"]}
                 for init, r in runs.items()},
        "throughput_examples_per_s": speed | {"cache_speedup": speed["cache"] / speed["no_cache"]},
        "throughput_run": THROUGHPUT_STEPS, "machine": machine(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return save_report(report, results, f"distill-{task}", distill_markdown)


def distill_markdown(r: dict) -> str:
    """A small Markdown table of a distill benchmark."""
    metric = "metric"
    lines = [f"# Distillation benchmark: {r['task']}, {r['arch']} hints {r['hints']}, budget {r['budget']}", "",
             f"Measured {r['time']} on {r['machine']['cpu']}, {r['machine']['threads']} threads, "
             f"torch {r['machine']['torch']}. FLOPs count 2 per multiply-add, batch 1, 128 tokens; "
             "latency is the median of torch.utils.benchmark at 128 tokens.", "",
             "| model | dev | retention | val | FLOPs (G) | FLOPs share | params | speed-up b1 | speed-up b32 "
             "| distill min |", "|---|---|---|---|---|---|---|---|---|---|"]
    t = r["teacher_costs"]
    lines.append(f"| teacher (fine-tuned) | {r['teacher_dev'][metric]:.4f} | 100% | | {t['flops'] / 1e9:.3f} | 100% | "
                 f"{t['params']['total']:,} | 1.00x | 1.00x | |")
    for init, run in r["runs"].items():
        vs = run["vs_teacher"]
        lines.append(f"| student, {init} init | {run['dev'][metric]:.4f} | {run['retention']:.1%} | {run['val'][metric]:.4f} | "
                     f"{run['costs']['flops'] / 1e9:.3f} | {vs['flops_share']:.1%} | "
                     f"{run['costs']['params']['total']:,} | {vs['speedup_b1']:.2f}x | {vs['speedup_b32']:.2f}x | "
                     f"{run['distill_minutes']:.1f} |")
    s = r["throughput_examples_per_s"]
    lines += ["", f"Distillation throughput ({r['throughput_run']['hint_steps']} hint + "
              f"{r['throughput_run']['kd_steps']} KD steps, teacher init): {s['cache']:.0f} examples/s with "
              f"the teacher cache, {s['no_cache']:.0f} without ({s['cache_speedup']:.2f}x).", ""]
    return "\n".join(lines)


def spread(values: list[float]) -> dict | None:
    """min, median, max (and the count) of a list of figures."""
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def study_figures(study: optuna.Study) -> dict:
    """What a finished study cost and found: states, training steps, wall time per trial, its front."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    teacher_flops = study.user_attrs["teacher_flops"]
    ref = hv_reference(teacher_flops)
    points = [(t.values[0], t.user_attrs["flops"]) for t in finished if t.state == TrialState.COMPLETE]
    states: dict[str, int] = {}
    for t in finished:
        key = t.state.name if t.user_attrs.get("prune_reason") != "constraint" else "REJECTED"
        states[key] = states.get(key, 0) + 1
    return {
        "study": study.study_name, "trials": len(finished), "states": states,
        "train_steps": sum(t.user_attrs.get("train_steps", 0) for t in finished),
        "wall_s_per_trial": spread([t.user_attrs["wall_s"] for t in finished if "wall_s" in t.user_attrs]),
        "wall_minutes": sum(t.user_attrs.get("wall_s", 0.0) for t in finished) / 60,
        "hypervolume": hypervolume_2d(points, ref) / ref[1],  # mean best metric over FLOPs budgets up to ref
        "hv_ref": list(ref), "teacher_flops": teacher_flops,
        "front": front_rows(study, ("metric", "flops")),
        "pruned_at": spread([max(map(int, t.user_attrs.get("curve") or {0: 0})) for t in finished
                             if t.state == TrialState.PRUNED and t.user_attrs.get("prune_reason") == "pareto"]),
        "trial_rows": [{"trial": t.number, "state": t.state.name, "name": t.user_attrs.get("name"),
                        "metric": trial_metric(t), "flops": t.user_attrs.get("flops"),
                        "train_steps": t.user_attrs.get("train_steps", 0), "wall_s": t.user_attrs.get("wall_s")}
                       for t in finished],
    }


def bench_pruning(opts: SearchOptions, log=print) -> dict:
    """Run (or resume) the study `opts` describes twice, with Pareto pruning and with none; compare.

    Study names: <task>-<space>-pareto and <task>-<space>-none unless opts.study is set (then
    <study>-pareto and <study>-none). Both use the same seed, budget and trial count.
    """
    runs = {}
    for mode in ("pareto", "none"):
        o = replace(opts, pruning=mode, study=f"{opts.study or f'{task_name(opts.env.task)}-{Path(opts.space).stem}'}-{mode}")
        summary = run_search(o, log)
        study = optuna.load_study(study_name=summary["study"], storage=make_storage(summary["storage"]))
        runs[mode] = study_figures(study) | {"storage": summary["storage"]}
    pruned, full = runs["pareto"], runs["none"]
    report = {
        "task": opts.env.task, "space": opts.space, "budget": opts.budget, "trials": opts.trials, "seed": opts.seed,
        "runs": runs,
        "steps_saved": 1 - pruned["train_steps"] / full["train_steps"] if full["train_steps"] else None,
        "hypervolume_kept": pruned["hypervolume"] / full["hypervolume"] if full["hypervolume"] else None,
        "machine": machine(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return save_report(report, opts.env.results, f"pruning-{task_name(opts.env.task)}", pruning_markdown)


def task_name(task: str) -> str:
    """The name a task's benchmark files and studies take: a built-in's, or a custom folder's own name."""
    return Path(task).name or task


def pruning_markdown(r: dict) -> str:
    """The pruning benchmark as Markdown: a summary table, then each front."""
    ref = r["runs"]["pareto"]["hv_ref"]
    lines = [f"# Pareto pruning against none: {r['task']}, space {r['space']}, budget {r['budget']}, "
             f"{r['trials']} trials, seed {r['seed']}", "",
             f"Measured {r['time']} on {r['machine']['cpu']}, {r['machine']['threads']} threads, "
             f"torch {r['machine']['torch']}. Hypervolume of the (validation metric, FLOPs) front against the "
             f"reference point (metric {ref[0]:g}, {ref[1] / 1e9:.3f} GFLOPs = twice the teacher's), divided by "
             "the reference FLOPs: the mean, over FLOPs budgets up to the reference, of the best metric the "
             "front reaches within that budget.", "",
             "| pruning | trials | states | training steps | wall min | per trial s (min / median / max) "
             "| hypervolume |", "|---|---|---|---|---|---|---|"]
    for mode, f in r["runs"].items():
        w = f["wall_s_per_trial"] or {"min": 0, "median": 0, "max": 0}
        states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(f["states"].items()))
        lines.append(f"| {mode} | {f['trials']} | {states} | {f['train_steps']:,} | {f['wall_minutes']:.1f} | "
                     f"{w['min']:.0f} / {w['median']:.0f} / {w['max']:.0f} | {f['hypervolume']:.4f} |")
    saved, kept = r["steps_saved"], r["hypervolume_kept"]
    lines += ["", "Training steps saved by pruning: " + (f"**{saved:.1%}**" if saved is not None else "n/a (no steps)")
              + " (goal >= 40%). Hypervolume kept: " + (f"**{kept:.1%}**" if kept is not None else
                                                          "n/a (the unpruned front is empty)") + " (goal >= 98%).", ""]
    for mode, f in r["runs"].items():
        lines += [f"## Front, pruning {mode}", "", "| trial | student | hints | val metric | GFLOPs | FLOPs share "
                  "| params | latency ms | baseline |", "|---|---|---|---|---|---|---|---|---|"]
        for row in f["front"]:
            lines.append(f"| {row['trial']} | {row['name']} | {row['hints']} | {row['metric']:.4f} | "
                         f"{row['flops'] / 1e9:.3f} | {row['flops'] / f['teacher_flops']:.1%} | "
                         f"{row['params']:,} | {row['latency_ms']:.2f} | {row['baseline']} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# RESULTS/BENCHMARKS.md

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
