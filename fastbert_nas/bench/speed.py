"""bench speed: distillation throughput, achieved GFLOP/s, and where the time goes.

For a few students (by default a small one, one with a quarter of the teacher's FLOPs and one
of the teacher's own shape), short timed distillation runs with the teacher-output cache and
without: examples/s, tokens/s and GFLOP/s of each stage, as a share of this machine's fp32
matmul peak measured in the same run; a search trial's time estimated from them; and
torch.profiler's top ops for the smallest and the largest student (cache on).

FLOPs count 2 per multiply-add, analytically (cost.analytic_flops; FlopCounterMode counts SDPA
attention as 0), at each timed step's own batch shape, padded positions included (the machine
computes them): TRAIN_FLOPS_FACTOR x the student's forward (encoder layers run in that stage,
pooler and classifier in stage 2, the hint regressors on real tokens), plus the teacher's
forward when it runs live (no cache). Embedding lookups, layer norms, softmax, losses and the
optimizer count 0: the figure is matmul work per second.

Every run uses the real `pipeline.prepare` / `init_student` / `distill_student`; a timer on
distill's `on_step` hook synchronizes the device and reads the clock.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import torch

from fastbert_nas.bench.common import machine, save_report, spread
from fastbert_nas.bench.speed_report import speed_markdown
from fastbert_nas.config import DEFAULT_TRIAL_BUDGET, RunEnv, StudentArch, UserError, at_least
from fastbert_nas.core.cost import REF_SEQ_LEN, analytic_flops
from fastbert_nas.core.family import config_shape
from fastbert_nas.core.pipeline import Context, distill_student, init_student, prepare
from fastbert_nas.core.training import EVAL_BATCH, evaluate
from fastbert_nas.search.baselines import parse_student
from fastbert_nas.search.space import DEFAULT_SPACE, load_space, space_budget

# The students timed: (arch, hints). Hints as the other benchmarks map them.
STUDENTS = (
    ("L4-H128-A2-I512", "2:3,4:6"),        # small: 8% of the teacher's FLOPs
    ("L3-H320-A10-I640", "1:2,2:4,3:6"),   # a quarter of the teacher's FLOPs (bench distill's student)
    ("L6-H384-A12-I1536", "2:2,4:4,6:6"),  # the teacher's own shape: the largest
)
WARMUP_STEPS = 5         # steps per stage before the clock starts (allocator, lazy init, caches)
TIMED_STEPS = 30         # steps per stage timed per run: a few dozen batches
REPEATS = 3              # timed runs per student and cache mode: every figure is min / median / max
TRAIN_FLOPS_FACTOR = 3   # a training step ~ 3 forwards: backward computes grads of inputs and of weights
PEAK_SIZE = 4096         # n of the n x n fp32 torch.mm products timed for the matmul peak
PEAK_PRODUCTS = 5        # products timed per repeat; the peak is the best of all of them
PROFILE_STEPS = 10       # steps per stage recorded by torch.profiler (after WARMUP_STEPS)
TOP_OPS = 10             # ops listed per profiled stage
GOAL_CACHE_SPEEDUP = 2.0  # goal: the cache makes the smallest student's trials this much faster
GOAL_PEAK_SHARE = 0.40    # goal: the largest student's KD steps reach this share of the matmul peak
OUTSIDE_OPS = "(outside ops: Python, framework)"  # the profiler's step time spent in no aten op


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------
# The machine's matmul peak

def matmul_peak(device: torch.device, n: int = PEAK_SIZE, products: int = PEAK_PRODUCTS) -> list[float]:
    """GFLOP/s of `products` timed fp32 n x n torch.mm products (after an untimed one)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)  # (n, n) each
    c = torch.empty(n, n, device=device)
    torch.mm(a, b, out=c)
    figures = []
    for _ in range(products):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        synchronize(device)
        figures.append(2 * n**3 / (time.perf_counter() - start) / 1e9)
    return figures


# ---------------------------------------------------------------------------
# FLOPs of one step

def teacher_arch(model) -> StudentArch:
    c = model.config
    return StudentArch(*config_shape(c))


def head_flops(arch: StudentArch, batch: int, labels: int) -> int:
    """Pooler (H x H) and classifier (H x C) on the [CLS] rows."""
    return 2 * batch * (arch.hidden * arch.hidden + arch.hidden * labels)


def step_flops(arch: StudentArch, stage: int, batch: int, seq_len: int, real_tokens: int, teacher: StudentArch,
               labels: int, live_teacher: bool, hint_weight: float = 0.0) -> int:
    """FLOPs (2 per multiply-add) of one distillation step on a (batch, seq_len) padded batch.

    Stage 1 runs the student up to its last hinted layer; stage 2 all of it and its head.
    The hint regressors (Hs -> Ht) run on real tokens. A live teacher runs whole, forward only.
    """
    depth = max(s for s, _ in arch.hints) if stage == 1 else arch.layers
    student = batch * analytic_flops(replace(arch, layers=depth), seq_len)
    if stage == 2:
        student += head_flops(arch, batch, labels)
    if stage == 1 or hint_weight:
        student += 2 * real_tokens * arch.hidden * teacher.hidden * len(arch.hints)
    flops = TRAIN_FLOPS_FACTOR * student
    if live_teacher:
        flops += batch * analytic_flops(teacher, seq_len) + head_flops(teacher, batch, labels)
    return flops


# ---------------------------------------------------------------------------
# Timed runs

@dataclass
class StepClock:
    """distill's on_step hook: times steps warmup+1 .. warmup+steps of each stage.

    The clock starts after step `warmup` and stops after step warmup+steps, the device
    synchronized both times; in between nothing waits for the device (token counts stay
    device tensors until the end).
    """

    device: torch.device
    warmup: int
    steps: int
    counts: dict = field(default_factory=lambda: {1: 0, 2: 0})
    start: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)           # stage -> timed seconds
    shapes: dict = field(default_factory=dict)            # stage -> [(B, T)]
    real: dict = field(default_factory=dict)              # stage -> [real tokens (device scalar)]

    def __call__(self, stage: int, batch: dict) -> None:
        n = self.counts[stage] = self.counts[stage] + 1
        if n == self.warmup:
            synchronize(self.device)
            self.start[stage] = time.perf_counter()
        elif self.warmup < n <= self.warmup + self.steps:
            mask = batch["attention_mask"]                   # (B, T)
            self.shapes.setdefault(stage, []).append(tuple(mask.shape))
            self.real.setdefault(stage, []).append(mask.sum())
            if n == self.warmup + self.steps:
                synchronize(self.device)
                self.seconds[stage] = time.perf_counter() - self.start[stage]

    def stage(self, stage: int) -> dict:
        """Timed seconds and the (B, T, real tokens) of each timed step of one stage."""
        if stage not in self.seconds:
            raise RuntimeError(f"stage {stage} ran fewer than {self.warmup + self.steps} steps")
        real = torch.stack(self.real[stage]).tolist()
        return {"seconds": self.seconds[stage],
                "batches": [(b, t, r) for (b, t), r in zip(self.shapes[stage], real)]}


def run_cfg(trial, steps: int, eval_examples: int = EVAL_BATCH):
    """The trial's settings, `steps` steps per stage, one small evaluation at the end (distill's last)."""
    return replace(trial, hint_steps=steps, kd_steps=steps, eval_every=steps, eval_examples=eval_examples)


def timed_run(ctx: Context, arch: StudentArch, trial, warmup: int, steps: int, eval_examples: int | None) -> dict:
    """Build the student, distill it for warmup+steps steps per stage with a StepClock; then, with
    `eval_examples`, time one evaluation of that many validation examples (a trial's checkpoint)."""
    synchronize(ctx.device)
    start = time.perf_counter()
    student = init_student(ctx, arch, trial)
    synchronize(ctx.device)
    build_s = time.perf_counter() - start
    clock = StepClock(ctx.device, warmup, steps)
    distill_student(ctx, student, arch, run_cfg(trial, warmup + steps), show_progress=False, on_step=clock)
    run = {"build_s": build_s, "stages": {s: clock.stage(s) for s in (1, 2)}}
    if eval_examples:
        synchronize(ctx.device)
        start = time.perf_counter()
        evaluate(student, ctx.spec, ctx.val, ctx.device, eval_examples)  # ends reading predictions: synchronized
        run["eval_s"] = time.perf_counter() - start
    return run


def stage_figures(stage: int, timed: dict, arch: StudentArch, teacher: StudentArch, labels: int,
                  live_teacher: bool, hint_weight: float) -> dict:
    """Per-second figures of one timed stage."""
    s, batches = timed["seconds"], timed["batches"]
    flops = sum(step_flops(arch, stage, b, t, r, teacher, labels, live_teacher, hint_weight) for b, t, r in batches)
    real, padded = sum(r for _, _, r in batches), sum(b * t for b, t, _ in batches)
    return {"seconds": s, "steps": len(batches), "step_s": s / len(batches),
            "examples_per_s": sum(b for b, _, _ in batches) / s, "tokens_per_s": real / s,
            "gflops": flops / s / 1e9, "padding_share": 1 - real / padded,
            "mean_padded_len": sum(t for _, t, _ in batches) / len(batches)}


def trial_seconds(run: dict, trial, eval_s: float) -> float:
    """A trial's time on the `trial` budget from a timed run: build, both stages' steps, checkpoints.

    (Timing its batch-1 latency before training, the same with or without the cache, is left out.)"""
    checkpoints = -(-trial.kd_steps // trial.eval_every)  # at every eval_every-th step and the last
    step_s = {k: stage["seconds"] / len(stage["batches"]) for k, stage in run["stages"].items()}
    return run["build_s"] + trial.hint_steps * step_s[1] + trial.kd_steps * step_s[2] + checkpoints * eval_s


# ---------------------------------------------------------------------------
# Profiles

def top_ops(prof, steps: int, device: torch.device) -> dict:
    """The ops taking the most self time over `steps` profiled steps (device time on CUDA).

    The profiler's ProfilerStep ranges' own time (in no op) is summed as OUTSIDE_OPS."""
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    totals: dict[str, list] = {}
    for e in prof.key_averages():
        key = OUTSIDE_OPS if e.key.startswith("ProfilerStep") else e.key
        row = totals.setdefault(key, [0.0, 0])
        row[0] += getattr(e, attr)  # microseconds
        row[1] += e.count
    total = sum(t for t, _ in totals.values()) or 1.0
    rows = sorted(totals.items(), key=lambda kv: kv[1][0], reverse=True)[:TOP_OPS]
    return {"ms_per_step": total / 1e3 / steps, "time": attr.replace("_total", ""),
            "top": [{"op": k, "share": t / total, "ms_per_step": t / 1e3 / steps, "calls_per_step": c / steps}
                    for k, (t, c) in rows]}


def profile_run(ctx: Context, arch: StudentArch, trial, warmup: int, steps: int) -> dict:
    """torch.profiler over `steps` steps of each stage, after `warmup` (cache as in ctx)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    stages: list[dict] = []
    # one cycle per stage: warmup-1 steps waiting, 1 warming the profiler up, `steps` recorded
    plan = schedule(wait=warmup - 1, warmup=1, active=steps, repeat=2)
    student = init_student(ctx, arch, trial)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*Profiler clears events at the end of each cycle")  # as wanted: per stage
        with profile(activities=activities, schedule=plan,
                     on_trace_ready=lambda p: stages.append(top_ops(p, steps, ctx.device))) as prof:
            distill_student(ctx, student, arch, run_cfg(trial, warmup + steps), show_progress=False,
                            on_step=lambda stage, batch: prof.step())
    return {f"stage{k}": table for k, table in enumerate(stages, 1)}


# ---------------------------------------------------------------------------
# The benchmark

def bench_speed(env: RunEnv, students: list[str] | None = None, repeats: int = REPEATS, warmup: int = WARMUP_STEPS,
                steps: int = TIMED_STEPS, profile_steps: int = PROFILE_STEPS, space: str = DEFAULT_SPACE,
                budget: str = DEFAULT_TRIAL_BUDGET, peak_size: int = PEAK_SIZE, log=print) -> dict:
    """Time every student with and without the teacher cache, `repeats` times, interleaved; write
    RESULTS/benchmarks/speed-<task>.json and .md. `students`: 'ARCH@HINTS' strings (default STUDENTS).

    The trial estimate is for `space`'s `budget` (its batch size and examples are the runs' too)."""
    at_least(1, repeats=repeats, warmup_steps=warmup, steps=steps, peak_size=peak_size)
    if profile_steps < 0:
        raise UserError(f"--profile-steps {profile_steps}: must be 0 (no profile) or more")
    trial = space_budget(load_space(space), budget)
    ctx = prepare(env, trial)
    layers = ctx.teacher.layers
    archs = [parse_student(s, "--student").with_default_hints(layers).validate(layers)
             for s in (students or [f"{a}@{h}" for a, h in STUDENTS])]
    t_arch, labels = teacher_arch(ctx.teacher.model), ctx.teacher.model.config.num_labels
    synchronize(ctx.device)
    start = time.perf_counter()
    init_student(ctx, archs[0], trial)  # scores the teacher for teacher init, once, as a search worker does
    synchronize(ctx.device)
    first_build_s = time.perf_counter() - start
    contexts = {"cache": ctx, "no_cache": replace(ctx, outputs=None)}  # no cache: the teacher runs live

    peaks: list[float] = []
    runs = {a.name: {mode: [] for mode in contexts} for a in archs}
    for r in range(repeats):
        peaks += matmul_peak(ctx.device, peak_size)
        log(f"repeat {r + 1}/{repeats}: fp32 matmul {peak_size}x{peak_size}: best {max(peaks):.1f} GFLOP/s")
        for arch in archs:
            for mode, c in contexts.items():  # interleaved: a slow spell of a shared machine hits both
                run = timed_run(c, arch, trial, warmup, steps, trial.eval_examples if mode == "cache" else None)
                runs[arch.name][mode].append(run)
                kd = run["stages"][2]
                log(f"  {arch.name} {mode}: KD steps {sum(b for b, _, _ in kd['batches']) / kd['seconds']:.0f} "
                    f"examples/s")
    peak = max(peaks)

    rows = []
    for arch in archs:
        row = {"name": arch.name, "hints": arch.hints_str, "arch": arch.to_dict(),
               "forward_flops": analytic_flops(arch), "flops_share": analytic_flops(arch) / analytic_flops(t_arch)}
        eval_s = [run["eval_s"] for run in runs[arch.name]["cache"]]
        trial_s = {}
        for mode, mode_runs in runs[arch.name].items():
            per_stage = {}
            for stage in (1, 2):
                figs = [stage_figures(stage, run["stages"][stage], arch, t_arch, labels, mode == "no_cache",
                                      trial.hint_weight) for run in mode_runs]
                per_stage[f"stage{stage}"] = {
                    key: spread([f[key] for f in figs]) for key in ("examples_per_s", "tokens_per_s", "gflops",
                                                                    "step_s")
                } | {"peak_share": spread([f["gflops"] / peak for f in figs]),
                     "padding_share": figs[0]["padding_share"],        # the same batches in every run
                     "mean_padded_len": figs[0]["mean_padded_len"]}
            trial_s[mode] = [trial_seconds(run, trial, e) for run, e in zip(mode_runs, eval_s)]
            row[mode] = per_stage | {"trial_s": spread(trial_s[mode]),
                                     "build_s": spread([run["build_s"] for run in mode_runs])}
        row["eval_s"] = spread(eval_s)
        row["cache_speedup"] = {
            "kd_steps": spread([n["stages"][2]["seconds"] / c["stages"][2]["seconds"]
                                for c, n in zip(runs[arch.name]["cache"], runs[arch.name]["no_cache"])]),
            "trial": spread([n / c for c, n in zip(trial_s["cache"], trial_s["no_cache"])]),
        }
        rows.append(row)

    smallest = min(rows, key=lambda r: r["forward_flops"])
    largest = max(rows, key=lambda r: r["forward_flops"])
    profiles = {}
    if profile_steps:
        for row in {r["name"]: r for r in (smallest, largest)}.values():
            arch = next(a for a in archs if a.name == row["name"])
            log(f"profiling {arch.name} (cache on), {profile_steps} steps per stage")
            profiles[arch.name] = profile_run(ctx, arch, trial, warmup, profile_steps)

    speedup = smallest["cache_speedup"]["trial"]["median"]
    share = largest["cache"]["stage2"]["peak_share"]["median"]
    report = {
        "task": ctx.spec.name, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine() | {"device": str(ctx.device), "fp32_matmul": torch.get_float32_matmul_precision()},
        "matmul_peak_gflops": spread(peaks) | {"best": peak, "size": peak_size},
        "teacher": {"id": ctx.teacher_id, "arch": t_arch.name, "forward_flops": analytic_flops(t_arch)},
        "trial_budget": {"space": space, "budget": budget} | trial.to_dict(),
        "method": {"warmup_steps": warmup, "timed_steps": steps, "repeats": repeats,
                   "train_flops_factor": TRAIN_FLOPS_FACTOR, "flops_seq_len_ref": REF_SEQ_LEN,
                   "cache_examples": len(ctx.train), "cache_seconds": ctx.cache_seconds,
                   "first_build_s": first_build_s},
        "students": rows, "profiles": profiles,
        "goals": {
            "cache_speedup": {"goal": GOAL_CACHE_SPEEDUP, "student": smallest["name"], "median": speedup,
                              "met": speedup >= GOAL_CACHE_SPEEDUP},
            "peak_share": {"goal": GOAL_PEAK_SHARE, "student": largest["name"], "median": share,
                           "met": share >= GOAL_PEAK_SHARE},
        },
    }
    return save_report(report, ctx.results, f"speed-{ctx.spec.name}", speed_markdown)
