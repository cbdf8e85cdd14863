"""Benchmarks: measured figures written to results/benchmarks/ and summarized in Markdown.

`distill`: one student distilled with teacher init and with random init on the same
budget, and distillation throughput with and without the teacher-output cache.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from .pipeline import distill_one

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


def bench_distill(task: str, arch: str, hints: str | None, budget: str, results: Path, **common) -> dict:
    """Teacher init vs random init at `budget`, then throughput with and without the cache."""
    runs = {init: distill_one(task=task, arch=arch, hints=hints, init=init, budget=budget, results=results,
                              **common)
            for init in ("teacher", "random")}
    speed = {}
    for cached in (True, False):
        r = distill_one(task=task, arch=arch, hints=hints, init="teacher", budget=budget, results=results,
                        use_cache=cached, latency=False, overrides=THROUGHPUT_STEPS,
                        tag="-cache" if cached else "-nocache", **common)
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
    out = Path(results) / "benchmarks" / f"distill-{task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    (out.with_suffix(".md")).write_text(distill_markdown(report))
    report["path"] = str(out)
    return report


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
