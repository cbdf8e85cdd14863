"""End-to-end jobs behind the CLI commands: task -> teacher -> student -> distill -> costs.

Each function takes plain arguments, does the work, writes its result file and
returns a plain dict; the CLI only prints it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from fastbert_nas.config import (
    DistillConfig,
    RunEnv,
    StudentArch,
    TaskSpec,
    UserError,
    at_least,
    budget_config,
    retention,
)
from fastbert_nas.core import augment as aug
from fastbert_nas.core.cost import REF_SEQ_LEN, cost_summary, model_costs
from fastbert_nas.core.distill import CachedTeacher, LiveTeacher, distill
from fastbert_nas.core.metrics import majority_score
from fastbert_nas.core.relation import teacher_relation
from fastbert_nas.core.student import build_student, importance
from fastbert_nas.core.tasks import SPLIT_SEED, Encoded, Split, TaskData, collate, encode_for, load_task, resolve_task
from fastbert_nas.core.teacher import DEFAULT_RECIPE, RECIPES, Teacher, TeacherOutputs, get_teacher, teacher_outputs
from fastbert_nas.core.training import cpu_name, evaluate, resolve_device, set_threads, to_device


def load_for(env: RunEnv):
    """What every job starts with: (its environment with the task's own values filled in, the task's data,
    the torch device, the thread count)."""
    spec = resolve_task(env.task, env.text_column, env.label_column, env.max_len)
    data = load_task(spec, env.data_dir)
    if env.labels and env.labels != data.spec.labels:
        raise UserError(f"task {spec.name}: the data's labels are now {', '.join(data.spec.labels)}; the run "
                        f"being continued found {', '.join(env.labels)}")
    custom = spec.path is not None  # built-in tasks take no column options
    env = replace(env, max_len=spec.max_len, text_column=spec.text_column if custom else None,
                  label_column=spec.label_column if custom else None, labels=data.spec.labels,
                  teacher=replace(env.teacher, base=env.teacher.base_name))
    return env, data, resolve_device(env.device), set_threads(env.threads)


def fine_tune_teacher(env: RunEnv, force: bool = False, max_minutes: float | None = None,
                      epochs: float | None = None, lr: float | None = None, seeds: int | None = None) -> dict:
    """Fine-tune the base into the task's cached teacher (replacing one only with `force`; with `seeds`, the
    best of that many on validation); its manifest."""
    at_least(1, seeds=seeds)
    env, data, dev, _ = load_for(env)
    recipe = RECIPES.get(data.spec.name, DEFAULT_RECIPE)
    recipe = replace(recipe, **{k: v for k, v in dict(max_minutes=max_minutes, epochs=epochs, lr=lr,
                                                      seeds=seeds).items() if v is not None})
    t = get_teacher(data, env.results, dev, env.teacher, recipe=recipe, force=force)
    return t.manifest


CALIBRATION_EXAMPLES = 128  # examples scoring heads, neurons and dims for teacher init


def distill_rows(data: TaskData, n: int) -> Split:
    """The first `n` examples of a fixed shuffle of the train split (a prefix for any smaller n)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(data.train))[:n]
    return data.train.subset(order)


def distill_examples(data: TaskData, tokenizer, n: int) -> Encoded:
    """`distill_rows`, encoded: the examples a student is distilled on."""
    return encode_for(data.spec, distill_rows(data, n), tokenizer)


def augmented_examples(train: Encoded, t: Teacher, cfg: DistillConfig) -> Encoded:
    """`train` and, after it, word-replaced variants of each of its examples of at least cfg.augment_min_tokens
    word pieces (augment.py; aug.copies_for says how many), made with the teacher's own word embeddings;
    `train` itself when there are none."""
    copies = aug.copies_for(train, cfg.augment, cfg.augment_min_tokens, cfg.augment_examples)
    if not copies:
        return train
    vocab = t.tokenizer.convert_ids_to_tokens(list(range(len(t.tokenizer))))
    embeddings = t.model.get_input_embeddings().weight.detach().float().cpu().numpy()  # (V, H)
    return aug.concat(train, aug.augment(train, vocab, embeddings, copies, min_tokens=cfg.augment_min_tokens))


def teacher_dev_metrics(t: Teacher, data: TaskData, device) -> dict:
    """The teacher's official dev metrics: from its manifest, or measured now (--teacher)."""
    if "dev" not in t.manifest:
        t.manifest["dev"] = evaluate(t.model, data.spec, encode_for(data.spec, data.dev, t.tokenizer), device)
    return t.manifest["dev"]


@dataclass
class Context:
    """What every student of one task shares: data, teacher, encoded examples, the teacher cache.

    Built once per process (a `distill` run, or a search worker) by `prepare`.
    """

    env: RunEnv                       # with the task's own values filled in (load_for)
    spec: TaskSpec                    # the task, with the labels found in its data
    data: TaskData
    device: torch.device
    threads: int
    teacher: Teacher
    teacher_id: str
    train: Encoded                    # the distillation examples
    val: Encoded                      # validation split carved from train (trials are scored here)
    outputs: TeacherOutputs | None    # cached teacher outputs for `train`; None = run the teacher live
    cache_seconds: float              # time spent building (or opening) the cache
    scores: dict | None = None        # student.importance of the teacher on the calibration rows, once computed

    @property
    def results(self) -> Path:
        return Path(self.env.results)


def prepare(env: RunEnv, cfg: DistillConfig, cache_split: str | None = None) -> Context:
    """Load the task, get (or fine-tune) the teacher, encode cfg.examples examples (and the word-replaced
    copies cfg asks for: augmented_examples), open the teacher cache (`cache_split`: its name, so that sets
    of other sizes keep caches of their own; default "distill", or "augmented" with augmentation, with
    "-min<N>" for another augment_min_tokens than the default)."""
    env, data, dev, threads = load_for(env)
    spec, results = data.spec, Path(env.results)
    t = get_teacher(data, results, dev, env.teacher)
    base = distill_examples(data, t.tokenizer, cfg.examples)
    train = augmented_examples(base, t, cfg)
    start = time.perf_counter()
    augmented = len(train) > len(base)
    split = cache_split or ("augmented" if augmented else "distill")  # a cache of its own: none replaces another
    if augmented and cfg.augment_min_tokens != aug.AUGMENT_MIN_TOKENS:
        split += f"-min{cfg.augment_min_tokens}"
    outputs = teacher_outputs(t, train, spec.name, split, spec.max_len, results, dev) if env.use_cache else None
    return Context(env, spec, data, dev, threads, t, env.teacher.id(spec.name), train,
                   encode_for(spec, data.val, t.tokenizer), outputs, time.perf_counter() - start)


# A student is built and costed before any training step (so that the search rejects one over a
# cost constraint for free), then trained: `init_student`, then `distill_student`.

def init_student(ctx: Context, arch: StudentArch, cfg: DistillConfig) -> torch.nn.Module:
    """The (validated) student built and initialized per `cfg.init` on ctx.device, untrained.

    Teacher init scores the teacher's dims, heads and neurons on the calibration rows once per
    Context (a teacher forward pass, seconds on a CPU): every student of the process shares them."""
    if cfg.init == "teacher" and ctx.scores is None:
        calibration = to_device(collate(ctx.train, np.arange(min(CALIBRATION_EXAMPLES, len(ctx.train)))), ctx.device)
        ctx.scores = importance(ctx.teacher.model, calibration)
    return build_student(arch, ctx.teacher.model, cfg.init, seed=cfg.seed, scores=ctx.scores)


def distill_student(ctx: Context, student: torch.nn.Module, arch: StudentArch, cfg: DistillConfig,
                    on_eval=None, show_progress: bool = True, checkpoint=None, on_step=None):
    """Distill an `init_student` student in place (FitNets hints, then KD); returns distill.DistillResult.

    checkpoint: a distill.Checkpointer to resume from and save to, or None; on_step: distill's
    per-step hook (timers, profilers)."""
    layers = [tl for _, tl in arch.hints]
    relation = teacher_relation(ctx.teacher.model, arch) if cfg.relation_weight else None
    if relation is not None:  # the input of the relation's teacher layer: its queries, keys and values
        layers.append(arch.hints[-1][1] - 1)
    source = CachedTeacher(ctx.outputs, layers) if ctx.outputs is not None else LiveTeacher(ctx.teacher.model, layers)
    return distill(student, arch, source, ctx.teacher.model.config.hidden_size, ctx.train, ctx.val, ctx.spec,
                   cfg, ctx.device, on_eval=on_eval, show_progress=show_progress, checkpoint=checkpoint,
                   on_step=on_step, relation=relation)


def run_student(ctx: Context, arch: StudentArch, cfg: DistillConfig, on_eval=None, latency: bool = True,
                show_progress: bool = True, checkpoint=None) -> tuple[torch.nn.Module, dict]:
    """Build, distill and cost one (validated) student; returns the model and a plain report."""
    student = init_student(ctx, arch, cfg)
    start = time.perf_counter()
    result = distill_student(ctx, student, arch, cfg, on_eval=on_eval, show_progress=show_progress,
                             checkpoint=checkpoint)
    distill_seconds = time.perf_counter() - start
    s_cost = model_costs(student, threads=ctx.threads, latency=latency)  # at cost.REF_SEQ_LEN tokens
    t_cost = model_costs(ctx.teacher.model, threads=ctx.threads, latency=latency)
    s_task = model_costs(student, ctx.spec.max_len, threads=ctx.threads, latency=latency)  # at the task's length
    t_task = model_costs(ctx.teacher.model, ctx.spec.max_len, threads=ctx.threads, latency=latency)
    report = {
        "task": ctx.spec.name, "env": ctx.env.to_dict(), "arch": arch.to_dict(), "name": arch.name, "hints": arch.hints_str,
        "init": cfg.init, "config": cfg.to_dict(),
        "teacher": {"id": ctx.teacher_id, "fingerprint": ctx.teacher.fingerprint, "costs": t_cost,
                    "costs_task_len": t_task},
        "val": result.metrics, "costs": s_cost, "vs_teacher": cost_summary(s_cost, t_cost),
        "seq_len": REF_SEQ_LEN, "task_len": ctx.spec.max_len, "costs_task_len": s_task,
        "vs_teacher_task_len": cost_summary(s_task, t_task),
        "distill": result.to_dict(), "distill_minutes": distill_seconds / 60,
        "cache_minutes": ctx.cache_seconds / 60, "teacher_cache": ctx.outputs is not None,
        "device": str(ctx.device), "cpu": cpu_name(), "threads": ctx.threads, "torch": torch.__version__,
        "data_source": ctx.data.source, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return student, report


def score_on_dev(ctx: Context, student: torch.nn.Module, report: dict) -> None:
    """Add the official dev metrics of a `run_student` report's student and teacher, the retention, and the
    majority-class level on dev (what a student that learned nothing scores)."""
    dev_set = encode_for(ctx.spec, ctx.data.dev, ctx.teacher.tokenizer)
    report["dev"] = evaluate(student, ctx.spec, dev_set, ctx.device)
    report["teacher"]["dev"] = teacher_dev = teacher_dev_metrics(ctx.teacher, ctx.data, ctx.device)
    report["retention"] = retention(report["dev"]["metric"], teacher_dev["metric"])
    report["dev_majority"] = majority_score(ctx.spec, np.asarray(ctx.data.dev.labels))


def unused_path(path: Path) -> Path:
    """`path`, or where a record of that name exists already, path-2, path-3, ...: an earlier run's record
    is never replaced."""
    n = 1
    out = path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return out


def run_tag(cfg: DistillConfig) -> str:
    """The part of a distill result's file name that tells its options apart: the augmentation when on
    (its copies rule, and its minimum length where not AUGMENT_MIN_TOKENS), the relation loss's weight and
    the seed when not 0."""
    tag = (f"-aug{cfg.augment}" if cfg.augment else "") + (f"-augx{cfg.augment_examples}" if cfg.augment_examples
                                                            else "")
    if tag and cfg.augment_min_tokens != aug.AUGMENT_MIN_TOKENS:
        tag += f"-min{cfg.augment_min_tokens}"
    tag += f"-relation{cfg.relation_weight:g}" if cfg.relation_weight else ""
    return tag + (f"-seed{cfg.seed}" if cfg.seed else "")


def distill_one(env: RunEnv, arch: str, hints: str | None, init: str, budget: str, seed: int = 0,
                latency: bool = True, overrides: dict | None = None, show_progress: bool = True, tag: str = "") -> dict:
    """One FitNets distillation of one student, scored on the official dev set too;
    the result is written under results/distill/."""
    cfg = budget_config(budget, init=init, seed=seed, **(overrides or {}))
    ctx = prepare(env, cfg)
    layers = ctx.teacher.layers
    student_arch = StudentArch.parse(arch, hints).with_default_hints(layers).validate(layers)
    student, report = run_student(ctx, student_arch, cfg, latency=latency, show_progress=show_progress)
    score_on_dev(ctx, student, report)
    report["budget"] = budget
    name = f"{ctx.spec.name}-{student_arch.name}-{cfg.init}-{budget}{run_tag(cfg)}{tag}.json"
    out = unused_path(ctx.results / "distill" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    report["path"] = str(out)
    return report
