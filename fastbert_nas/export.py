"""From a point on the front to a deployable model: `fastbert-nas export`.

    choose a trial (--trial N, or --pick "flops<=0.25") -> its student, hints and settings
    -> distill it again on a full budget (checkpointed, resumable) -> score it on the official
    dev set, cost it beside the teacher -> save a Hugging Face model folder with a model card
    and export.json (and, with --onnx, a checked and timed model.onnx)

The study is found as `show` and `plot` find it (report.find_study). The student is re-distilled
by the same pipeline as a trial (pipeline.prepare, run_student): the trial's architecture, hint
mapping and distillation settings, with the budget's steps and examples.

DIR/.checkpoint/ holds plan.json (which export this is) and state.pt (distill's whole state,
every --checkpoint-every steps), each written to a temporary file and renamed. The same command
again resumes from it; a checkpoint of another export is refused. It is removed once the model
folder is complete.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import optuna
import torch
import transformers
from optuna.trial import FrozenTrial, TrialState

from . import pipeline
from .config import (BUDGETS, CACHED_TEACHER_ID, CHECKPOINT_EVERY, ENV_ATTR, DistillConfig, RunEnv, StudentArch,
                     TaskSpec, TeacherRef, UserError, budget_config)
from .report import find_study, gather
from .study import COST_ATTRS
from .tasks import TASKS, encode_for, resolve_task

CHECKPOINT_DIR = ".checkpoint"
PLAN_FILE = "plan.json"
STATE_FILE = "state.pt"
REPORT_FILE = "export.json"
CARD_FILE = "README.md"

# Class names in class-id order, from the data sets' own descriptions (GLUE SST-2 and CoLA;
# Amazon polarity: 1-2 stars -> 0, 4-5 stars -> 1). Custom tasks keep their label strings.
LABEL_NAMES = {"sst2": ("negative", "positive"), "cola": ("unacceptable", "acceptable"),
               "amazon": ("negative", "positive")}

NUMBER = r"(\d*\.?\d+(?:[eE][-+]?\d+)?)"
PICK_PATTERN = re.compile(rf"^\s*(?:{NUMBER}\s*<\s*)?(flops|latency)\s*<=\s*{NUMBER}\s*$")  # [LOW<]COST<=SHARE
PICK_COSTS = {"flops": "FLOPs", "latency": "batch-1 latency"}


@dataclass(frozen=True)
class ExportOptions:
    """Everything `fastbert-nas export` takes; field names are its option names."""

    out: Path
    trial: int | None = None
    pick: str | None = None
    study: str | None = None
    storage: str | None = None
    results: Path = Path("results")
    budget: str = "full"
    hint_steps: int | None = None
    kd_steps: int | None = None
    examples: int | None = None
    onnx: bool = False
    checkpoint_every: int = CHECKPOINT_EVERY
    task: str | None = None          # default: the study's
    data_dir: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    max_len: int | None = None
    teacher: str | None = None       # default: the study's for the study's task, else the task's cached one
    base: str | None = None          # what a cached teacher is fine-tuned from; default: the study's
    no_cache: bool = False
    device: str = "auto"
    threads: int | None = None

    def check(self) -> "ExportOptions":
        """Refuse bad options before anything is loaded."""
        if (self.trial is None) == (self.pick is None):
            raise UserError("give exactly one of --trial N and --pick RULE (e.g. --pick 'flops<=0.25')")
        if self.pick is not None:
            parse_pick(self.pick)
        if self.checkpoint_every < 1:
            raise UserError(f"--checkpoint-every {self.checkpoint_every}: must be at least 1")
        for name, value, least in (("--hint-steps", self.hint_steps, 0), ("--kd-steps", self.kd_steps, 1),
                                   ("--examples", self.examples, 1)):
            if value is not None and value < least:
                raise UserError(f"{name} {value}: must be at least {least}")
        if self.onnx:
            from .onnx_export import check_installed

            check_installed()
        return self


def command_line(opts: ExportOptions) -> str:
    """The command that makes this export: `fastbert-nas export` and every option not at its default."""
    parts = ["fastbert-nas", "export"]
    for f in fields(opts):
        value = getattr(opts, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


# ---------------------------------------------------------------------------
# Choosing the trial

def parse_pick(text: str) -> tuple[str, float, float]:
    """'flops<=0.25' -> ('flops', 0.25, 0.0); '0.1<flops<=0.25' -> ('flops', 0.25, 0.1): a cost, the largest
    share of the teacher's allowed, and the share a student must exceed."""
    m = PICK_PATTERN.match(text)
    low, share = (float(m[1] or 0), float(m[3])) if m else (0.0, 0.0)
    if not m or share <= 0 or low >= share:
        raise UserError(f"--pick {text!r}: expected [LOW<]COST<=SHARE, COST flops or latency and SHARE a positive "
                        "share of the teacher's above LOW, e.g. 'flops<=0.25' or '0.1<flops<=0.25'")
    return m[2], share, low


def pick_text(cost: str, share: float, low: float = 0.0) -> str:
    """The --pick rule of `parse_pick`'s figures, written one way."""
    return f"{f'{low:g}<' if low else ''}{cost}<={share:g}"


def pick_row(rows: list[dict], teacher: dict, cost: str, share: float, low: float = 0.0) -> dict:
    """The COMPLETE row with the best metric among those costing more than `low` and at most `share` of the
    teacher (ties: the cheaper, then the earlier). Rows and teacher as report.gather makes them: a
    re-measured latency is compared with the teacher's re-measured one."""
    key = COST_ATTRS[cost]
    rule = pick_text(cost, share, low)

    def teacher_cost(row: dict) -> float | None:
        if cost == "flops":
            return teacher["flops"]
        return teacher["latency_ms"] if row["remeasured"] else teacher["latency_ms_trial"]

    done = [r for r in rows if r["state"] == "COMPLETE" and r["metric"] is not None and r[key] is not None
            and teacher_cost(r)]
    if not done:
        raise UserError(f"--pick {rule}: the study has no record of the teacher's {PICK_COSTS[cost]} "
                        "or no completed student with one")
    shares = {r["trial"]: r[key] / teacher_cost(r) for r in done}
    fits = [r for r in done if low < shares[r["trial"]] <= share]
    if not fits:
        between = f"more than {low:.1%} and " if low else ""
        raise UserError(f"--pick {rule}: no completed student has {between}at most {share:.1%} of the "
                        f"teacher's {PICK_COSTS[cost]}; the cheapest has {min(shares.values()):.1%}")
    return max(fits, key=lambda r: (r["metric"], -shares[r["trial"]], -r["trial"]))


def chosen_trial(study: optuna.Study, opts: ExportOptions) -> FrozenTrial:
    """--trial N, or the trial --pick's rule picks; UserError when there is none with a student."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if opts.pick is not None:
        data = gather(study, opts.results)
        number = pick_row(data.rows, data.teacher, *parse_pick(opts.pick))["trial"]
    elif opts.trial not in trials:
        have = f"trials 0-{max(trials)}" if trials else "no trials"
        raise UserError(f"--trial {opts.trial}: study {study.study_name!r} has no such trial ({have})")
    else:
        number = opts.trial
    t = trials[number]
    if not {"arch", "config"} <= set(t.user_attrs):
        raise UserError(f"trial {number} of study {study.study_name!r} ({t.state.name}) recorded no student: "
                        "nothing to export")
    return t


# ---------------------------------------------------------------------------
# What to distill

@dataclass(frozen=True)
class Plan:
    """One export: the trial's student and settings on the chosen budget, and where its teacher is."""

    study: str
    trial: int
    state: str                     # the trial's state (an export of a PRUNED trial is allowed)
    env: RunEnv                    # the study's for the study's task (options may not contradict it)
    teacher_id: str                # --teacher, else the study's for the study's task, else the task's cached one
    arch: StudentArch
    cfg: DistillConfig
    metric: float | None           # the trial's validation metric in the search

    def identity(self) -> dict:
        """What a checkpoint must match to be resumed (no paths, nothing about the machine)."""
        return {"study": self.study, "trial": self.trial, "task": self.env.task, "teacher": self.teacher_id,
                "arch": self.arch.to_dict(), "config": self.cfg.to_dict()}


def same_task(a: str, b: str | None) -> bool:
    """Whether two --task values name one task: the same built-in name, or the same folder however spelled."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    if a in TASKS or b in TASKS:  # a built-in name wins over a folder of that name, as in resolve_task
        return False
    return os.path.isdir(a) and os.path.isdir(b) and Path(a).resolve() == Path(b).resolve()


def export_plan(study: optuna.Study, trial: FrozenTrial, opts: ExportOptions) -> Plan:
    """The trial's architecture, hints and settings, with the budget's steps and examples."""
    attrs = study.user_attrs
    recorded = RunEnv.from_dict(attrs[ENV_ATTR]) if ENV_ATTR in attrs else None
    task = opts.task or (recorded.task if recorded else attrs.get("task"))
    if task is None:
        raise UserError(f"study {study.study_name!r} records no task (not made by fastbert-nas search?): "
                        "give --task")
    env = RunEnv(task, opts.data_dir, opts.text_column, opts.label_column, opts.max_len,
                 TeacherRef(opts.teacher, opts.base), opts.device, opts.threads, Path(opts.results),
                 use_cache=not opts.no_cache)
    # the study's environment (teacher included) only for the study's task: an architecture found on
    # SST-2 exported for CoLA (--task cola) is distilled from the CoLA teacher
    if same_task(task, recorded.task if recorded else attrs.get("task")):
        if recorded:
            env = env.adopt(recorded, f"study {study.study_name!r}")
        else:  # a study that recorded only its teacher's name
            studied = attrs.get("teacher_id") or trial.user_attrs.get("teacher_id")
            cached = CACHED_TEACHER_ID.format(task=attrs.get("task"))
            if opts.teacher is None and studied not in (None, cached):
                env = replace(env, teacher=TeacherRef(studied, opts.base))
    try:
        spec = resolve_task(env.task, env.text_column, env.label_column, env.max_len)
    except UserError as exc:
        if os.path.isdir(env.task) or env.task in TASKS:
            raise
        raise UserError(f"study {study.study_name!r} is for task {task!r}, neither built in nor a folder here: "
                        "give its folder with --task PATH") from exc
    budget = budget_config(opts.budget, hint_steps=opts.hint_steps, kd_steps=opts.kd_steps, examples=opts.examples)
    known = {f.name for f in fields(DistillConfig)}
    trial_cfg = DistillConfig(**{k: v for k, v in trial.user_attrs["config"].items() if k in known})
    cfg = replace(trial_cfg, **{k: getattr(budget, k) for k in BUDGETS[opts.budget]})
    metric = trial.values[0] if trial.state == TrialState.COMPLETE and trial.values else None
    return Plan(study.study_name, trial.number, trial.state.name, env, env.teacher.id(spec.name),
                StudentArch.from_dict(trial.user_attrs["arch"]), cfg, metric)


# ---------------------------------------------------------------------------
# The out folder and its checkpoint

def check_out_dir(out: Path) -> None:
    """The folder must be new or empty, or hold an unfinished export (its checkpoint): nothing else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a new or empty folder")
    names = sorted(p.name for p in out.iterdir())
    if not names or (out / CHECKPOINT_DIR / PLAN_FILE).exists():
        return
    if (out / REPORT_FILE).exists():
        raise UserError(f"--out {out}: already holds a finished export; remove it or give another folder")
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise UserError(f"--out {out}: holds something else ({shown}); give a new or empty folder")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(a temporary file beside `path`), then rename it to `path`: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every key of `new` whose value differs (nested dicts key by key)."""
    out = []
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            out += differences(before, value, f"{prefix}{key}.")
        elif before != value:
            out.append(f"{prefix}{key}: {before} -> {value}")
    return out


@dataclass
class FileCheckpoint:
    """distill.Checkpointer in a folder: plan.json (which export) and state.pt (distill's state)."""

    folder: Path
    every: int                               # optimizer steps between saves
    log: Callable[[str], None] = print
    resumed_from: int | None = field(default=None, init=False)  # the step a resumed run started after

    def check(self, plan: dict) -> None:
        """UserError when the folder holds the checkpoint of another export (some key of `plan` differs)."""
        path = self.folder / PLAN_FILE
        if not path.exists():
            return
        changed = differences(json.loads(path.read_text()), json.loads(json.dumps(plan)))
        if changed:
            raise UserError(f"{self.folder} is the checkpoint of another export ({'; '.join(changed[:4])}): "
                            f"run that export's command to finish it, or remove {self.folder} to start this one")

    def claim(self, plan: dict) -> None:
        """check, then record `plan` as this checkpoint's."""
        self.check(plan)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / PLAN_FILE, lambda p: p.write_text(json.dumps(plan, indent=2)))

    def load(self) -> dict | None:
        path = self.folder / STATE_FILE
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        done = state["result"]
        self.resumed_from = done["hint_steps"] + done["kd_steps"]
        self.log(f"resuming from the checkpoint after step {self.resumed_from} "
                 f"({done['hint_steps']} hint + {done['kd_steps']} KD steps) in {self.folder}")
        return state

    def save(self, state: dict) -> None:
        write_atomically(self.folder / STATE_FILE, lambda p: torch.save(state, p))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------------------
# The export

@dataclass
class Exported:
    student: torch.nn.Module   # the distilled student, as saved
    report: dict               # what export.json holds
    path: Path                 # the model folder


def label_names(spec: TaskSpec) -> tuple[str, ...]:
    return LABEL_NAMES[spec.name] if spec.path is None and spec.name in LABEL_NAMES else spec.labels


CARD_EXAMPLE_CHARS = 200  # longest dev text the model card's usage example quotes whole


def card_example(texts: list[str]) -> str:
    """The model card's usage example: the first of the task's dev texts short enough to quote."""
    short = [t for t in texts if len(t) <= CARD_EXAMPLE_CHARS]
    return short[0] if short else texts[0][:CARD_EXAMPLE_CHARS]


def save_model(student, tokenizer, labels: tuple[str, ...], out: Path) -> None:
    """A Hugging Face model folder: config (with the label names), model.safetensors, tokenizer files."""
    student.config.id2label = dict(enumerate(labels))
    student.config.label2id = {name: i for i, name in enumerate(labels)}
    student.save_pretrained(out)
    tokenizer.save_pretrained(out)


def run_export(opts: ExportOptions, log: Callable[[str], None] = print) -> Exported:
    """Choose the trial, distill its student on the budget (resuming a checkpoint), save, check, describe."""
    opts.check()
    study = find_study(opts.study, opts.storage, opts.results)
    trial = chosen_trial(study, opts)
    plan = export_plan(study, trial, opts)
    out = Path(opts.out)
    check_out_dir(out)
    checkpoint = FileCheckpoint(out / CHECKPOINT_DIR, opts.checkpoint_every, log)
    checkpoint.check(plan.identity())
    cfg = plan.cfg
    log(f"exporting trial {plan.trial} ({plan.state}) of study {plan.study}: {plan.arch.name} hints "
        f"{plan.arch.hints_str}; {cfg.hint_steps} hint + {cfg.kd_steps} KD steps of {cfg.batch_size} examples")

    ctx = pipeline.prepare(plan.env, cfg.examples, augment=cfg.augment)
    studied = study.user_attrs.get("teacher_fingerprint")
    if same_task(plan.env.task, study.user_attrs.get("task")) and studied not in (None, ctx.teacher.fingerprint):
        log(f"note: the teacher's weights differ from the study's ({studied} -> {ctx.teacher.fingerprint}): "
            "the student is distilled from the teacher there is now")
    checkpoint.claim({**plan.identity(), "teacher_fingerprint": ctx.teacher.fingerprint,
                      "data_fingerprint": ctx.data.fingerprint(), "examples_used": len(ctx.train)})
    arch = plan.arch.validate(ctx.teacher.layers)
    student, report = pipeline.run_student(ctx, arch, cfg, checkpoint=checkpoint)
    pipeline.score_on_dev(ctx, student, report)
    labels = label_names(ctx.spec)
    report.update({
        "study": plan.study, "trial": plan.trial, "trial_state": plan.state, "trial_val_metric": plan.metric,
        "pick": opts.pick, "budget": opts.budget, "metric": ctx.spec.metric, "max_len": ctx.spec.max_len,
        "tail_tokens": ctx.spec.tail_tokens, "strip_html": ctx.spec.strip_html,
        "examples_used": len(ctx.train), "labels": list(labels), "example": card_example(ctx.data.dev.texts),
        "resumed_from": checkpoint.resumed_from,
        "transformers": transformers.__version__, "command": command_line(opts),
    })
    save_model(student, ctx.teacher.tokenizer, labels, out)
    if opts.onnx:
        from .onnx_export import export_onnx

        saved = transformers.AutoModelForSequenceClassification.from_pretrained(out)  # the file on CPU
        dev = encode_for(ctx.spec, ctx.data.dev, ctx.teacher.tokenizer)
        report["onnx"] = export_onnx(saved, out, dev, ctx.threads)
    (out / CARD_FILE).write_text(model_card(report, out))
    write_atomically(out / REPORT_FILE, lambda p: p.write_text(json.dumps(report, indent=2)))
    checkpoint.remove()
    return Exported(student, report, out)


# ---------------------------------------------------------------------------
# The model card

def preprocessing(r: dict) -> str:
    """What the model card says of text handling a pipeline does not do by itself."""
    notes = []
    if r.get("tail_tokens"):
        notes.append(f"a longer text kept its first {r['max_len'] - r['tail_tokens']} and last {r['tail_tokens']} "
                     "tokens (a pipeline keeps the first ones: do the same before calling it)")
    if r.get("strip_html"):
        notes.append('"<br />" line breaks replaced by spaces')
    return "".join(f"; {n}" for n in notes)


def model_card(r: dict, out: Path) -> str:
    """README.md of the model folder: what it is, its figures beside the teacher's, how to use and remake it."""
    s, t, vs = r["costs"], r["teacher"]["costs"], r["vs_teacher"]
    arch, metric = r["arch"], r["metric"]
    lat_s, lat_t = s["latency"]["b1"], t["latency"]["b1"]
    p_s, p_t = s["params"], t["params"]
    labels = ", ".join(f"{i} {name}" for i, name in enumerate(r["labels"]))
    rows = [
        ("dev " + metric, f"{r['dev']['metric']:.4f}", f"{r['teacher']['dev']['metric']:.4f}"),
        ("retention (student / teacher)", f"{r['retention']:.1%}" if r["retention"] is not None else "-", ""),
        ("params, M (embeddings + encoder + head)", f"{p_s['total'] / 1e6:.2f} ({p_s['embeddings'] / 1e6:.2f} + "
         f"{p_s['encoder'] / 1e6:.2f} + {p_s['head'] / 1e6:.3f})", f"{p_t['total'] / 1e6:.2f}"),
        ("FLOPs (2 per multiply-add, batch 1, 128 tokens)",
         f"{s['flops'] / 1e9:.3f} G ({vs['flops_share']:.1%} of the teacher)", f"{t['flops'] / 1e9:.3f} G"),
        ("latency, batch 1, 128 tokens", f"{lat_s['median_ms']:.2f} ms", f"{lat_t['median_ms']:.2f} ms"),
        ("speed-up, batch 1", f"{vs['speedup_b1']:.2f}x", "1x"),
        ("latency, batch 32, 128 tokens", f"{s['latency']['b32']['median_ms']:.1f} ms",
         f"{t['latency']['b32']['median_ms']:.1f} ms"),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    onnx = ""
    if r.get("onnx"):
        o = r["onnx"]
        onnx = (f"\n`model.onnx` (inputs `input_ids`, `attention_mask`; output `logits`; batch and length free) "
                f"gives the same logits as the PyTorch model within {o['max_abs_diff']:.2g} (largest absolute "
                f"difference on {o['check_examples']} dev examples; tolerance {o['tolerance']:g}). Batch 1, "
                f"{o['seq_len']} tokens, CPU, threads {o['threads']}: ONNX Runtime {o['onnxruntime']} "
                f"{o['onnxruntime_ms']:.2f} ms, PyTorch {o['pytorch_ms']:.2f} ms "
                f"({o['speedup_vs_pytorch']:.2f}x).\n")
    resumed = f", resumed after step {r['resumed_from']}" if r.get("resumed_from") is not None else ""
    cfg = r["config"]
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [bert, knowledge-distillation, fitnets, fastbert-nas]
---

# {r['name']} for {r['task']}

A BERT student with {arch['layers']} layers, hidden size {arch['hidden']}, {arch['heads']} attention heads
and FFN size {arch['ffn']}, distilled by fastbert-nas from the teacher `{r['teacher']['id']}` the FitNets
way: its layers {r['hints']} (student:teacher) first learned to predict the teacher's hidden states through
linear regressors, then the whole student learned the teacher's logits softened at temperature
{cfg['temperature']:.2f} (weight {cfg['kd_alpha']:.2f} against the hard labels). It is trial {r['trial']} of
the study `{r['study']}`, distilled again on the `{r['budget']}` budget.

| | student | teacher |
|---|---|---|
{table}

The {metric} is on the task's official dev set. Latency is the median of `torch.utils.benchmark`, student and
teacher timed one after the other in one process (device {lat_s['device']}, threads {lat_s['threads']}).
{onnx}
## Use

```python
from transformers import pipeline

classify = pipeline("text-classification", model="{out}")
classify({r['example']!r})
```

Labels: {labels}. It was trained on texts cut to {r['max_len']} tokens{preprocessing(r)}.

## Training

{r['distill']['hint_steps']} hint steps and {r['distill']['kd_steps']} KD steps of {cfg['batch_size']} examples, drawn
from {r['examples_used']:,} training examples; learning rate {cfg['lr']:.2g}, init `{cfg['init']}`, seed
{cfg['seed']}; {r['distill_minutes']:.1f} minutes on {r['device']}{resumed}. Teacher weights fingerprint
`{r['teacher']['fingerprint']}`; data from `{r['data_source']}`; torch {r['torch']}, transformers
{r['transformers']}. Every figure is in `export.json`.

Made by:

```
{r['command']}
```
"""
