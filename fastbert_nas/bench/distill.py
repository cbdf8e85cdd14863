"""`bench distill`: one student with teacher init and with random init, and throughput with and without the teacher cache.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from fastbert_nas.bench.common import machine, save_report
from fastbert_nas.config import INITS, RunEnv
from fastbert_nas.core.pipeline import distill_one

THROUGHPUT_STEPS = dict(hint_steps=30, kd_steps=150, eval_every=150, eval_examples=200)  # short timed runs


def bench_distill(env: RunEnv, arch: str, hints: str | None, budget: str) -> dict:
    """Teacher init vs random init at `budget`, then throughput with and without the cache."""
    task, results = env.task, env.results
    runs = {init: distill_one(env, arch=arch, hints=hints, init=init, budget=budget)
            for init in INITS}
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
             "latency is the median of torch.utils.benchmark at 128 tokens. The student and its settings are "
             "the benchmark's fixed ones (no choice is made here); dev only reports.", "",
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
