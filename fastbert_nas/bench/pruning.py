"""`bench pruning`: the same study with Pareto pruning and without.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import optuna

from fastbert_nas.bench.common import machine, save_report, study_figures, task_name
from fastbert_nas.search.options import SearchOptions
from fastbert_nas.search.run import run_search
from fastbert_nas.search.storage import make_storage

# Goals, judged by `pruning_goals`: on the mean over seeds, pruning saves at least this share of the
# training steps while keeping at least this share of the unpruned study's hypervolume.
GOAL_STEPS_SAVED = 0.40
GOAL_HYPERVOLUME_KEPT = 0.98


def bench_pruning(opts: SearchOptions, seeds: int = 1, log=print) -> dict:
    """Run (or resume) the study `opts` describes twice per seed (0 .. seeds-1), with Pareto pruning and with
    none; compare each pair, and judge the goals on the means over seeds.

    Study names: <prefix>-pareto and <prefix>-none for seed 0, <prefix>-<mode>-seed<N> for the others, where
    the prefix is <task>-<space> unless opts.study is set. Both studies of a seed share seed, budget and trials.
    """
    prefix = opts.study or f"{task_name(opts.env.task)}-{Path(opts.space).stem}"
    per_seed = []
    for seed in range(seeds):
        runs = {}
        for mode in ("pareto", "none"):
            name = f"{prefix}-{mode}" + (f"-seed{seed}" if seed else "")
            summary = run_search(replace(opts, pruning=mode, study=name, seed=seed), log)
            study = optuna.load_study(study_name=summary["study"], storage=make_storage(summary["storage"]))
            runs[mode] = study_figures(study) | {"storage": summary["storage"]}
        pruned, full = runs["pareto"], runs["none"]
        per_seed.append({
            "seed": seed, "runs": runs,
            "steps_saved": 1 - pruned["train_steps"] / full["train_steps"] if full["train_steps"] else None,
            "hypervolume_kept": pruned["hypervolume"] / full["hypervolume"] if full["hypervolume"] else None})
    report = {
        "task": opts.env.task, "space": opts.space, "budget": opts.budget, "trials": opts.trials, "seeds": per_seed,
        "steps_saved": mean_of(per_seed, "steps_saved"), "hypervolume_kept": mean_of(per_seed, "hypervolume_kept"),
        "machine": machine(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    report["goals"] = pruning_goals(report["steps_saved"], report["hypervolume_kept"])
    return save_report(report, opts.env.results, f"pruning-{task_name(opts.env.task)}", pruning_markdown)


def mean_of(per_seed: list[dict], key: str) -> float | None:
    """The mean of a per-seed figure; None when a seed has none."""
    values = [s[key] for s in per_seed]
    return None if not values or None in values else statistics.mean(values)


def pruning_goals(steps_saved: float | None, hypervolume_kept: float | None) -> dict:
    """Whether the means over seeds meet GOAL_STEPS_SAVED and GOAL_HYPERVOLUME_KEPT."""
    saved = steps_saved is not None and steps_saved >= GOAL_STEPS_SAVED
    kept = hypervolume_kept is not None and hypervolume_kept >= GOAL_HYPERVOLUME_KEPT
    return {"steps_saved_at_least": GOAL_STEPS_SAVED, "steps_saved_met": saved,
            "hypervolume_kept_at_least": GOAL_HYPERVOLUME_KEPT, "hypervolume_kept_met": kept, "met": saved and kept}


def _share(x: float | None) -> str:
    return f"{x:.1%}" if x is not None else "n/a"


def pruning_markdown(r: dict) -> str:
    """The pruning benchmark as Markdown: the goals, a summary table per seed, then each front."""
    first = r["seeds"][0]["runs"]["pareto"]
    ref = first["hv_ref"]
    g = r["goals"]
    lines = [f"# Pareto pruning against none: {r['task']}, space {r['space']}, budget {r['budget']}, "
             f"{r['trials']} trials, seeds {', '.join(str(s['seed']) for s in r['seeds'])}", "",
             f"Measured {r['time']} on {r['machine']['cpu']}, {r['machine']['threads']} threads, "
             f"torch {r['machine']['torch']}. Trials are scored on the validation split (which also prunes); "
             "the official dev set plays no part. Hypervolume of the (validation metric, FLOPs) front on log "
             f"FLOPs, from the reference point at the majority-class level ({ref[0]:.4f}) and the teacher's FLOPs "
             f"({ref[1] / 1e9:.3f} G): metric above the majority class x decades of FLOPs saved.", "",
             f"Mean over seeds: training steps saved **{_share(r['steps_saved'])}** (goal >= "
             f"{g['steps_saved_at_least']:.0%}: {'met' if g['steps_saved_met'] else 'not met'}); hypervolume kept "
             f"**{_share(r['hypervolume_kept'])}** (goal >= {g['hypervolume_kept_at_least']:.0%}: "
             f"{'met' if g['hypervolume_kept_met'] else 'not met'}). Both goals: **{'met' if g['met'] else 'not met'}**.",
             "", "| seed | pruning | trials | states | training steps | wall min | per trial s (min / median / max) "
             "| hypervolume | steps saved | hypervolume kept |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["seeds"]:
        for mode, f in s["runs"].items():
            w = f["wall_s_per_trial"] or {"min": 0, "median": 0, "max": 0}
            states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(f["states"].items()))
            lines.append(f"| {s['seed']} | {mode} | {f['trials']} | {states} | {f['train_steps']:,} | "
                         f"{f['wall_minutes']:.1f} | {w['min']:.0f} / {w['median']:.0f} / {w['max']:.0f} | "
                         f"{f['hypervolume']:.4f} | " + (f"{_share(s['steps_saved'])} | {_share(s['hypervolume_kept'])} |"
                                                         if mode == "pareto" else " | |"))
    lines.append("")
    for s in r["seeds"]:
        for mode, f in s["runs"].items():
            lines += [f"## Front, seed {s['seed']}, pruning {mode}", "", "| trial | student | hints | val metric | "
                      "GFLOPs | FLOPs share | params | latency ms | baseline |", "|---|---|---|---|---|---|---|---|---|"]
            for row in f["front"]:
                lines.append(f"| {row['trial']} | {row['name']} | {row['hints']} | {row['metric']:.4f} | "
                             f"{row['flops'] / 1e9:.3f} | {row['flops'] / f['teacher_flops']:.1%} | "
                             f"{row['params']:,} | {row['latency_ms']:.2f} | {row['baseline']} |")
            lines.append("")
    return "\n".join(lines)
