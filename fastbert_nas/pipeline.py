"""End-to-end jobs behind the CLI commands: task -> teacher -> student -> distill -> costs.

Each function takes plain arguments, does the work, writes its result file and
returns a plain dict; the CLI only prints it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .config import StudentArch, budget_config
from .cost import cost_summary, model_costs
from .distill import CachedTeacher, LiveTeacher, distill
from .student import build_student
from .tasks import SPLIT_SEED, Encoded, TaskData, collate, encode, load_task, resolve_task
from .teacher import DEFAULT_BASE, DEFAULT_RECIPE, RECIPES, Teacher, get_teacher, teacher_outputs
from .training import evaluate, resolve_device, set_threads, to_device


def fine_tune_teacher(task: str, data_dir: str | None, text_column: str | None, label_column: str | None,
                      max_len: int | None, base: str, device: str, threads: int | None, results: Path,
                      refit: bool, max_minutes: float | None = None, epochs: float | None = None,
                      lr: float | None = None) -> dict:
    spec = resolve_task(task, text_column, label_column, max_len)
    data = load_task(spec, data_dir)
    dev = resolve_device(device)
    set_threads(threads)
    recipe = RECIPES.get(spec.name, DEFAULT_RECIPE)
    recipe = replace(recipe, **{k: v for k, v in dict(max_minutes=max_minutes, epochs=epochs, lr=lr).items()
                                if v is not None})
    t = get_teacher(data, Path(results), dev, base=base, recipe=recipe, refit=refit)
    return t.manifest


CALIBRATION_EXAMPLES = 128  # examples scoring heads, neurons and dims for teacher init


def distill_examples(data: TaskData, tokenizer, n: int) -> Encoded:
    """The first `n` examples of a fixed shuffle of the train split (a prefix for any smaller n)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(data.train))[:n]
    return encode(data.train.subset(order), tokenizer, data.spec.max_len)


def teacher_dev_metrics(t: Teacher, data: TaskData, device) -> dict:
    """The teacher's official dev metrics: from its manifest, or measured now (--teacher)."""
    if "dev" not in t.manifest:
        t.manifest["dev"] = evaluate(t.model, data.spec, encode(data.dev, t.tokenizer, data.spec.max_len), device)
    return t.manifest["dev"]


def distill_one(task: str, arch: str, hints: str | None, init: str, budget: str, data_dir: str | None = None,
                text_column: str | None = None, label_column: str | None = None, max_len: int | None = None,
                teacher: str | None = None, base: str = DEFAULT_BASE, device: str = "auto",
                threads: int | None = None, results: Path = Path("results"), use_cache: bool = True,
                seed: int = 0, latency: bool = True, overrides: dict | None = None,
                show_progress: bool = True, tag: str = "") -> dict:
    """One FitNets distillation of one student; the result is written under results/distill/."""
    spec = resolve_task(task, text_column, label_column, max_len)
    data = load_task(spec, data_dir)
    dev = resolve_device(device)
    threads = set_threads(threads)
    t = get_teacher(data, Path(results), dev, teacher=teacher, base=base)
    student_arch = StudentArch.parse(arch, hints).with_default_hints(t.layers).validate(t.layers)
    cfg = budget_config(budget, init=init, seed=seed, **(overrides or {}))

    train = distill_examples(data, t.tokenizer, cfg.examples)
    val = encode(data.val, t.tokenizer, spec.max_len)
    layers = [tl for _, tl in student_arch.hints]
    start = time.perf_counter()
    if use_cache:
        outputs = teacher_outputs(t, train, spec.name, "distill", spec.max_len, Path(results), dev)
        source = CachedTeacher(outputs, layers)
    else:
        source = LiveTeacher(t.model, layers)
    cache_seconds = time.perf_counter() - start
    calibration = to_device(collate(train, np.arange(min(CALIBRATION_EXAMPLES, len(train)))), dev)
    student = build_student(student_arch, t.model, cfg.init, calibration, cfg.seed)
    start = time.perf_counter()
    result = distill(student, student_arch, source, t.model.config.hidden_size, train, val, spec, cfg, dev,
                     show_progress=show_progress)
    distill_seconds = time.perf_counter() - start

    student_dev = evaluate(student, spec, encode(data.dev, t.tokenizer, spec.max_len), dev)
    teacher_dev = teacher_dev_metrics(t, data, dev)
    s_cost = model_costs(student, threads=threads, latency=latency)
    t_cost = model_costs(t.model, threads=threads, latency=latency)
    report = {
        "task": spec.name, "arch": student_arch.to_dict(), "name": student_arch.name,
        "hints": student_arch.hints_str, "init": cfg.init, "budget": budget, "config": cfg.to_dict(),
        "teacher": {"id": teacher or f"results/teachers/{spec.name}", "fingerprint": t.fingerprint,
                    "dev": teacher_dev, "costs": t_cost},
        "val": result.metrics, "dev": student_dev,
        "retention": student_dev["metric"] / teacher_dev["metric"] if teacher_dev["metric"] else None,
        "costs": s_cost, "vs_teacher": cost_summary(s_cost, t_cost),
        "distill": result.to_dict(), "distill_minutes": distill_seconds / 60,
        "cache_minutes": cache_seconds / 60, "teacher_cache": use_cache, "device": str(dev), "threads": threads,
        "torch": torch.__version__, "data_source": data.source,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(results) / "distill" / f"{spec.name}-{student_arch.name}-{cfg.init}-{budget}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    report["path"] = str(out)
    return report
