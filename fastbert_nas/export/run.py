"""The export run: distill the plan's student (resuming a checkpoint), score it on dev, save a Hugging
Face model folder with its labels, a model card and export.json (and, with --onnx, a checked model.onnx).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import transformers

from fastbert_nas.config import TaskSpec
from fastbert_nas.core import pipeline
from fastbert_nas.core.metrics import others_text
from fastbert_nas.core.tasks import encode_for
from fastbert_nas.export.card import CARD_FILE, card_example, model_card
from fastbert_nas.export.checkpoint import CHECKPOINT_DIR, REPORT_FILE, FileCheckpoint, check_out_dir, write_atomically
from fastbert_nas.export.plan import (
    ExportOptions,
    again_plan,
    chosen_trial,
    command_line,
    export_plan,
    same_task,
    student_plan,
)
from fastbert_nas.report.rows import find_study

# Class names in class-id order, from the data sets' own descriptions (GLUE SST-2 and CoLA;
# Amazon polarity: 1-2 stars -> 0, 4-5 stars -> 1). Custom tasks keep their label strings.
LABEL_NAMES = {"sst2": ("negative", "positive"), "cola": ("unacceptable", "acceptable"),
               "amazon": ("negative", "positive")}


@dataclass
class Exported:
    student: torch.nn.Module   # the distilled student, as saved
    report: dict               # what export.json holds
    path: Path                 # the model folder


def label_names(spec: TaskSpec) -> tuple[str, ...]:
    return LABEL_NAMES[spec.name] if spec.path is None and spec.name in LABEL_NAMES else spec.labels


def save_model(student, tokenizer, labels: tuple[str, ...], out: Path) -> None:
    """A Hugging Face model folder: config (with the label names), model.safetensors, tokenizer files."""
    student.config.id2label = dict(enumerate(labels))
    student.config.label2id = {name: i for i, name in enumerate(labels)}
    student.save_pretrained(out)
    tokenizer.save_pretrained(out)


def run_export(opts: ExportOptions, log: Callable[[str], None] = print) -> Exported:
    """Choose the trial, distill its student on the budget (resuming a checkpoint), save, check, describe."""
    opts.check()
    if opts.again is not None:  # the student of an earlier export: its export.json stands for the study
        earlier = json.loads((Path(opts.again) / REPORT_FILE).read_text())
        plan, pick = again_plan(earlier, opts), earlier["pick"]
        studied = earlier["teacher"]["fingerprint"] if same_task(plan.env.task, earlier["task"]) else None
    elif opts.student is not None:  # a student given by its shape: no study, no pick
        plan, pick, studied = student_plan(opts), None, None
    else:
        study = find_study(opts.study, opts.storage, opts.results)
        trial = chosen_trial(study, opts)
        plan, pick = export_plan(study, trial, opts), opts.pick
        if pick is not None:  # pick_row takes only COMPLETE trials: plan.metric is the trial's
            metric = study.user_attrs.get("metric", "metric")
            beside = others_text(trial.user_attrs.get("val"), metric)
            log(f"--pick {pick!r} chose trial {trial.number}: validation {metric} {plan.metric:.4f}"
                + (f", {beside}" if beside else ""))
        studied = study.user_attrs.get("teacher_fingerprint") if same_task(plan.env.task,
                                                                           study.user_attrs.get("task")) else None
    out = Path(opts.out)
    check_out_dir(out)
    checkpoint = FileCheckpoint(out / CHECKPOINT_DIR, opts.checkpoint_every, log)
    checkpoint.check(plan.identity())
    cfg = plan.cfg
    log(f"exporting {plan.source()}: {plan.arch.name} hints "
        f"{plan.arch.hints_str}; {cfg.hint_steps} hint + {cfg.kd_steps} KD steps of {cfg.batch_size} examples")

    ctx = pipeline.prepare(plan.env, cfg)
    if studied not in (None, ctx.teacher.fingerprint):
        log(f"note: the teacher's weights differ from the {'earlier export' if opts.again else 'study'}'s "
            f"({studied} -> {ctx.teacher.fingerprint}): the student is distilled from the teacher there is now")
    checkpoint.claim({**plan.identity(), "teacher_fingerprint": ctx.teacher.fingerprint,
                      "data_fingerprint": ctx.data.fingerprint(), "examples_used": len(ctx.train)})
    arch = plan.arch.with_default_hints(ctx.teacher.layers).validate(ctx.teacher.layers)
    student, report = pipeline.run_student(ctx, arch, cfg, checkpoint=checkpoint)
    pipeline.score_on_dev(ctx, student, report)
    labels = label_names(ctx.spec)
    report.update({
        "study": plan.study, "trial": plan.trial, "trial_state": plan.state, "trial_val_metric": plan.metric,
        "pick": pick, "again": str(opts.again) if opts.again else None, "budget": opts.budget,
        "metric": ctx.spec.metric, "max_len": ctx.spec.max_len,
        "tail_tokens": ctx.spec.tail_tokens, "strip_html": ctx.spec.strip_html,
        "examples_used": len(ctx.train), "labels": list(labels), "example": card_example(ctx.data.dev.texts),
        "resumed_from": checkpoint.resumed_from,
        "transformers": transformers.__version__, "command": command_line(opts),
    })
    save_model(student, ctx.teacher.tokenizer, labels, out)
    if opts.onnx or opts.quantize:
        from fastbert_nas.export.onnx import export_onnx

        saved = transformers.AutoModelForSequenceClassification.from_pretrained(out)  # the file on CPU
        dev = encode_for(ctx.spec, ctx.data.dev, ctx.teacher.tokenizer)
        report["onnx"] = export_onnx(saved, out, dev, ctx.threads)
    if opts.quantize:
        from fastbert_nas.export.quantized import export_int8

        teacher = ctx.teacher.model if ctx.device.type == "cpu" else copy.deepcopy(ctx.teacher.model).cpu()
        report["deploy"] = export_int8(saved, teacher, out, ctx.spec, {"val": ctx.val, "dev": dev}, ctx.threads, log)
    (out / CARD_FILE).write_text(model_card(report, out))
    write_atomically(out / REPORT_FILE, lambda p: p.write_text(json.dumps(report, indent=2)))
    checkpoint.remove()
    return Exported(student, report, out)
