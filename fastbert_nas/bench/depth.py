"""`fastbert-nas bench depth`: thinner and deeper with FitNets hints, or shallower and wider, at equal FLOPs?

    for each task and FLOPs share of the teacher (at the task's length):
      a ladder of students of equal FLOPs, one per depth (equal_flops_arch: the width that holds the
      encoder's FLOPs within LADDER_TOLERANCE of the share), hinted on every layer the teacher has one for
    -> each distilled at the export budget three ways (METHODS), seeds 0..N-1:
         fitnets       teacher init, a long hint stage (stage 1), then KD
         kd            teacher init, no hint stage: KD only
         random-hints  random init, the same hint stage, then KD
    -> validation and dev metric of every run, mean and spread over seeds; the step where each hint
       stage's loss flattened (flat_step)
    -> RESULTS/benchmarks/depth.json, depth.md and depth/metric_vs_depth.png (bench/depth_report.py), or
       under another name (--report) for a variant: other step counts, a subset of the ladder

Every run is kept as it finishes in RESULTS/depth/runs.json (small: commit it), keyed by its task, share,
student, method, seed and step counts, so the same command resumes, on this machine or a fresh one;
a run in progress checkpoints into RESULTS/depth/<run>/.checkpoint/ every CHECKPOINT_EVERY steps.
Nothing is chosen here: the ladder and the methods are fixed, the validation metric is what a user
would choose on, dev reports.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from fastbert_nas.bench import settings
from fastbert_nas.bench.common import check_report_name, machine, save_report, seed_stats, teacher_id
from fastbert_nas.bench.depth_report import depth_markdown, write_plot
from fastbert_nas.config import (
    BUDGETS,
    CHECKPOINT_EVERY,
    TRIAL_BUDGETS,
    DistillConfig,
    StudentArch,
    UserError,
    at_least,
    budget_config,
    run_env,
    trial_recipe,
)
from fastbert_nas.core import pipeline
from fastbert_nas.core.cost import analytic_flops, count_flops
from fastbert_nas.core.family import config_shape
from fastbert_nas.core.tasks import encode_for, resolve_task
from fastbert_nas.core.training import evaluate
from fastbert_nas.export.checkpoint import FileCheckpoint
from fastbert_nas.search.hints import hint_student_layers

RUNS_DIR = "depth"                # RESULTS/depth/: runs.json and the checkpoints of runs in progress
RUNS_FILE = "runs.json"
LADDER_TOLERANCE = 0.05           # a rung's encoder FLOPs within 5% of its share of the teacher's
FFN_RATIOS = (1, 4)               # FFN width / hidden width allowed; BERT's 4 preferred
FLAT_TOLERANCE = 0.05             # flat_step: the smoothed loss stays within 5% of where it ends
FLAT_WINDOW = 10                  # loss readings (distill.LOG_EVERY = 20 steps apart) in flat_step's moving average

# Each method's DistillConfig fields, over the trial recipe of the student (config.trial_recipe).
METHODS: dict[str, dict] = {  # DEPTH_METHODS, in that order
    "fitnets": {"init": "teacher"},
    "kd": {"init": "teacher", "hint_steps": 0},
    "random-hints": {"init": "random"},
}


# ---------------------------------------------------------------------------
# The ladder (plain numbers)

def ladder_hints(layers: int, teacher_layers: int, max_hints: int | None = None) -> tuple[tuple[int, int], ...]:
    """min(layers, T, max_hints) hints on student layers spread evenly (the last on the last), the i-th of n
    guided by teacher layer ceil(i * T / n). (2, 6) -> 1:3,2:6; (4, 6) -> 1:2,2:3,3:5,4:6; (12, 6) ->
    2:1,4:2,...,12:6; (12, 6, 4) -> 3:2,6:3,9:5,12:6 (the search's MobileBERT-like baseline's)."""
    n = min(layers, teacher_layers, max_hints or teacher_layers)
    teacher = (math.ceil(i * teacher_layers / n - 1e-9) for i in range(1, n + 1))
    return tuple(zip(hint_student_layers(layers, n), teacher))


def equal_flops_arch(layers: int, target: float, seq_len: int, head_dim: int, teacher_layers: int,
                     max_hidden: int, tolerance: float = LADDER_TOLERANCE, max_hints: int | None = None) -> StudentArch:
    """The `layers`-deep student whose encoder FLOPs (cost.analytic_flops at seq_len) are within `tolerance`
    of `target`: hidden and FFN widths multiples of the teacher's head width (heads of the teacher's
    size), FFN between FFN_RATIOS times hidden, the FFN ratio nearest BERT's 4 first, then the nearest
    FLOPs. UserError when no width fits."""
    best, best_key = None, None
    for hidden in range(head_dim, max_hidden + 1, head_dim):
        for ffn in range(FFN_RATIOS[0] * hidden, FFN_RATIOS[1] * hidden + 1, head_dim):
            arch = StudentArch(layers, hidden, hidden // head_dim, ffn, ladder_hints(layers, teacher_layers, max_hints))
            off = analytic_flops(arch, seq_len) / target - 1
            key = (abs(ffn / hidden - FFN_RATIOS[1]), abs(off))
            if abs(off) <= tolerance and (best_key is None or key < best_key):
                best, best_key = arch, key
    if best is None:
        raise UserError(f"no {layers}-layer student within {tolerance:.0%} of {target:.3g} FLOPs at {seq_len} tokens "
                        f"(widths multiples of {head_dim} up to {max_hidden}): leave that depth out of --depths")
    return best


def ladder(teacher_config, share: float, depths: tuple[int, ...], seq_len: int,
           max_hints: int | None = None) -> list[StudentArch]:
    """One student per depth at `share` of the teacher's encoder FLOPs (equal_flops_arch)."""
    tc = teacher_config
    head_dim = tc.hidden_size // tc.num_attention_heads
    teacher = StudentArch(*config_shape(tc))
    target = share * analytic_flops(teacher, seq_len)
    return [equal_flops_arch(d, target, seq_len, head_dim, tc.num_hidden_layers, 2 * tc.hidden_size,
                             max_hints=max_hints) for d in depths]


def flat_step(curve: list, tolerance: float = FLAT_TOLERANCE, window: int = FLAT_WINDOW) -> int | None:
    """The first step of a loss curve [(step, loss), ...] from which its moving average (over `window`
    readings: a minibatch loss is noisy) stays within `tolerance` of its final value; None when only the
    last window's does (the loss was still falling when the stage ended) or the curve is too short."""
    if len(curve) < 2 * window:
        return None
    steps = [s for s, _ in curve][window - 1:]
    losses = [v for _, v in curve]
    avg = [sum(losses[i - window + 1:i + 1]) / window for i in range(window - 1, len(losses))]
    first = len(avg)
    while first > 0 and abs(avg[first - 1] - avg[-1]) <= tolerance * abs(avg[-1]):
        first -= 1
    return steps[first] if first < len(avg) - window else None


def parse_depths(text: str) -> tuple[int, ...]:
    """'2,4,8,12' -> (2, 4, 8, 12)."""
    try:
        return tuple(int(d) for d in text.split(",") if d.strip())
    except ValueError:
        raise UserError(f"--depths {text!r}: expected student layers, e.g. 2,4,8,12") from None


# ---------------------------------------------------------------------------
# The runs

@dataclass(frozen=True)
class DepthOptions:
    """What `fastbert-nas bench depth` takes; field names are its option names."""

    tasks: tuple[str, ...] = settings.DEPTH_TASKS
    shares: tuple[float, ...] = settings.DEPTH_SHARES
    depths: tuple[int, ...] = settings.DEPTH_LADDER
    methods: tuple[str, ...] = settings.DEPTH_METHODS
    seeds: int = settings.DEPTH_SEEDS
    budget: str = settings.BENCH_EXPORT_BUDGET
    kd_steps: int = settings.BENCH_EXPORT_KD_STEPS
    hint_steps: int = settings.DEPTH_HINT_STEPS
    max_hints: int | None = None   # hints per student at most (sparse hints); None: one per teacher layer it can take
    hint_lr: float | None = None   # the hint stage's peak learning rate; None: DistillConfig's
    data_dir: str | None = None
    results: Path = Path("results")
    threads: int | None = None
    device: str = "auto"
    recorded_only: bool = False    # report the runs on record and run none of the rest
    report: str = settings.DEPTH_REPORT      # RESULTS/benchmarks/<report>.json, .md and <report>/: a variant's own name

    def check(self) -> "DepthOptions":
        at_least(1, seeds=self.seeds, kd_steps=self.kd_steps, hint_steps=self.hint_steps, max_hints=self.max_hints)
        if self.hint_lr is not None and not 0 < self.hint_lr < 1:
            raise UserError(f"--hint-lr {self.hint_lr:g}: a learning rate, above 0 and below 1")
        if any(d < 1 for d in self.depths):
            raise UserError(f"--depths {','.join(map(str, self.depths))}: student layers, each at least 1")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UserError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if not self.tasks or not self.shares or not self.depths or not self.methods:
            raise UserError("--tasks, --shares, --depths and --methods each need at least one value")
        bad = [s for s in self.shares if not 0 < s <= 1]
        if bad:
            raise UserError(f"--shares {bad[0]}: a share of the teacher's FLOPs, above 0 and at most 1")
        for task in self.tasks:
            resolve_task(task)
        self.config()
        check_report_name(self.report, "--report")
        return self

    def config(self) -> DistillConfig:
        """Every run's budget: a distill/export preset (config.BUDGETS) or a search trial's (config.TRIAL_BUDGETS,
        without augmentation, as trials run), at this benchmark's step counts."""
        steps = {"kd_steps": self.kd_steps, "hint_steps": self.hint_steps}
        if self.budget in BUDGETS:
            return budget_config(self.budget, **steps)
        if self.budget in TRIAL_BUDGETS:
            return DistillConfig(**(TRIAL_BUDGETS[self.budget] | steps))
        raise UserError(f"--budget {self.budget!r}: unknown; choose one of {', '.join(BUDGETS)} (distill presets) "
                        f"or {', '.join(b for b in TRIAL_BUDGETS if b not in BUDGETS)} (a search trial's)")


def run_key(task: str, share: float, arch: StudentArch, method: str, seed: int, opts: DepthOptions,
            teacher: str) -> str:
    """A run's name in runs.json: everything that makes it this run (the step counts too: a shorter benchmark
    keeps runs of its own; and `teacher`, bench.common.teacher_id: runs of another teacher recipe are kept, not
    used; each run records its teacher's weights fingerprint; --max-hints and --hint-lr, when given)."""
    variant = ((f"-hints{opts.max_hints}" if opts.max_hints else "")       # options left out: no suffix,
               + (f"-hintlr{opts.hint_lr:g}" if opts.hint_lr else ""))    # so older runs keep their keys
    return (f"{task}/{share:g}/{arch.name}/{method}/seed{seed}/{opts.budget}-hint{opts.hint_steps}-"
            f"kd{opts.kd_steps}{variant}/teacher-{teacher}")


class Runs:
    """RESULTS/depth/runs.json: {run_key: record}, written after every run. Two benchmarks may share the file
    (say one per core, other tasks or step counts): each write reads it again and adds its run to what is there,
    and replaces the file whole, so neither loses the other's runs."""

    def __init__(self, results: Path):
        self.path = Path(results) / RUNS_DIR / RUNS_FILE
        self.refresh()

    def refresh(self) -> dict:
        """The runs on record now (another benchmark may have added some)."""
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        return self.data

    def put(self, key: str, record: dict) -> None:
        self.data = self.refresh() | {key: record}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
        part.write_text(json.dumps(self.data, indent=1))
        part.replace(self.path)


def one_run(ctx: pipeline.Context, arch: StudentArch, method: str, seed: int, opts: DepthOptions, folder: Path,
            log: Callable[[str], None]) -> dict:
    """Distill one student one way (checkpointed in `folder`), scored on validation and dev."""
    lr = {"hint_lr": opts.hint_lr} if opts.hint_lr else {}
    cfg = replace(opts.config(), **(trial_recipe(arch) | METHODS[method] | lr), seed=seed)
    checkpoint = FileCheckpoint(folder / ".checkpoint", CHECKPOINT_EVERY, log=log)
    checkpoint.claim({"arch": arch.to_dict(), "config": cfg.to_dict(), "teacher": ctx.teacher.fingerprint,
                      "task": ctx.spec.name})
    start = time.perf_counter()
    student = pipeline.init_student(ctx, arch, cfg)
    result = pipeline.distill_student(ctx, student, arch, cfg, checkpoint=checkpoint)
    dev = evaluate(student, ctx.spec, encode_for(ctx.spec, ctx.data.dev, ctx.teacher.tokenizer), ctx.device)
    record = {"task": ctx.spec.name, "arch": arch.to_dict(), "name": arch.name, "hints": arch.hints_str,
              "method": method, "seed": seed, "config": cfg.to_dict(),
              "flops": count_flops(student, ctx.spec.max_len), "val": result.metrics["metric"],
              "dev": dev["metric"], "kd_curve": result.curve, "hint_curve": result.hint_curve,
              "teacher_fingerprint": ctx.teacher.fingerprint,
              "minutes": (time.perf_counter() - start) / 60, "resumed_from": checkpoint.resumed_from,
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    checkpoint.remove()
    folder.rmdir()
    return record


def task_runs(task: str, opts: DepthOptions, runs: Runs, log: Callable[[str], None]) -> dict:
    """Every run of one task not yet on record (seed 0 of every student and method first; none with
    opts.recorded_only); the task's teacher figures, its ladders and how many of its runs are on record."""
    env = run_env(task, opts.data_dir, device=opts.device, threads=opts.threads, results=opts.results)
    ctx = pipeline.prepare(env, opts.config())
    seq_len = ctx.spec.max_len
    ladders = {share: ladder(ctx.teacher.model.config, share, opts.depths, seq_len, opts.max_hints)
               for share in opts.shares}
    teacher = teacher_id(ctx.teacher.manifest, ctx.teacher.fingerprint)
    plan = [(share, arch, method, seed, run_key(task, share, arch, method, seed, opts, teacher))
            for seed in range(opts.seeds) for share, archs in ladders.items() for arch in archs
            for method in opts.methods]
    for share, arch, method, seed, key in plan:
        if opts.recorded_only or key in runs.refresh():
            continue
        log(f"{key} ({arch.hints_str}) ...")
        folder = runs.path.parent / key.replace("/", "-")
        runs.put(key, one_run(ctx, arch, method, seed, opts, folder, log) | {"share": share})
    teacher_flops = count_flops(ctx.teacher.model, seq_len)
    return {"task": ctx.spec.name, "metric": ctx.spec.metric, "seq_len": seq_len, "teacher_flops": teacher_flops,
            "teacher_fingerprint": ctx.teacher.fingerprint, "teacher_id": teacher, "planned": len(plan),
            "on_record": sum(key in runs.data for *_, key in plan),
            "teacher_dev": pipeline.teacher_dev_metrics(ctx.teacher, ctx.data, ctx.device)["metric"],
            "ladders": {f"{share:g}": [a.to_dict() | {"name": a.name, "flops_share": analytic_flops(a, seq_len) /
                                                      teacher_flops} for a in archs]
                        for share, archs in ladders.items()}}


def summarize(task: dict, runs: Runs, opts: DepthOptions) -> list[dict]:
    """One row per (share, depth, method): validation and dev over seeds, the hint stages' flat steps."""
    rows = []
    for share, archs in task["ladders"].items():
        for a in archs:
            arch = StudentArch.from_dict(a)
            for method in opts.methods:
                got = [runs.data[k] for seed in range(opts.seeds)
                       if (k := run_key(task["task"], float(share), arch, method, seed, opts,
                                        task["teacher_id"])) in runs.data]
                if not got:
                    continue
                rows.append({"task": task["task"], "share": float(share), "depth": arch.layers, "student": arch.name,
                             "hints": arch.hints_str, "method": method, "flops_share": got[0]["flops"] /
                             task["teacher_flops"], "val": seed_stats([r["val"] for r in got]),
                             "dev": seed_stats([r["dev"] for r in got]),
                             "retention": seed_stats([r["dev"] / task["teacher_dev"] for r in got]),
                             "flat_steps": [flat_step(r["hint_curve"]) for r in got],
                             "minutes": sum(r["minutes"] for r in got)})
    return rows


def bench_depth(opts: DepthOptions, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) every run of the benchmark (none with opts.recorded_only); write its report and plot of
    the runs on record."""
    opts.check()
    runs = Runs(opts.results)
    tasks = [task_runs(task, opts, runs, log) for task in opts.tasks]
    runs.refresh()
    report = {"tasks": tasks, "rows": [row for t in tasks for row in summarize(t, runs, opts)],
              "settings": {"budget": opts.budget, "hint_steps": opts.hint_steps, "kd_steps": opts.kd_steps,
                           "max_hints": opts.max_hints, "hint_lr": opts.hint_lr,
                           "seeds": opts.seeds, "depths": list(opts.depths), "shares": list(opts.shares),
                           "methods": list(opts.methods), "ladder_tolerance": LADDER_TOLERANCE,
                           "flat_tolerance": FLAT_TOLERANCE, "report": opts.report},
              "chosen_on": "nothing (fixed ladder and methods; validation is what a user would choose on)",
              "reported_on": "dev", "runs_file": str(runs.path), "machine": machine(),
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    report["plot"] = write_plot(report, Path(opts.results) / "benchmarks" / opts.report, log)
    return save_report(report, opts.results, opts.report, depth_markdown)
