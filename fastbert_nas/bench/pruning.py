"""`bench pruning`: the same study with Pareto pruning and without.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import optuna

from fastbert_nas.bench.common import machine, save_report, study_figures, task_name
from fastbert_nas.search.options import SearchOptions
from fastbert_nas.search.run import run_search
from fastbert_nas.search.storage import make_storage


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
