"""fastbert-nas command line: parse, call library code, print. The only module importing typer."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import (BENCH_EXPORT_BUDGET, BENCH_EXPORT_KD_STEPS, BENCH_EXPORT_ROUNDS, BENCH_EXPORT_SHARES,
                     BENCH_EXPORT_STUDY, BENCH_EXPORT_TASKS, CHECKPOINT_EVERY, DEFAULT_BASE, DistillConfig, RunEnv,
                     TeacherRef, UserError)
from .pruning import PRUNE_WARMUP_TRIALS  # pure (no torch): cheap to import for --help
from .space import DEFAULT_SPACE

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
DEBUG_ENV = "FASTBERT_NAS_DEBUG"        # "1": show the traceback behind an error line (as --debug does)
STORAGE_ENV = "FASTBERT_NAS_STORAGE"    # --storage's default: keeps a database password out of `ps` and history

_RECIPE = DistillConfig()  # distill's default recipe, which --enqueue students train with

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
    "--text-column", help="Custom tasks: the text column's header name \\[default: sentence].")]
LabelColumn = Annotated[Optional[str], typer.Option(
    "--label-column", help="Custom tasks: the label column's header name \\[default: label].")]
MaxLen = Annotated[Optional[int], typer.Option(
    "--max-len", help="Tokens per example \\[default: 64 for sst2 and cola, 128 for amazon and custom].")]
TeacherOpt = Annotated[Optional[str], typer.Option(
    "--teacher", help="An already fine-tuned BERT classifier (folder or hub id) to use instead of "
    "fine-tuning one.")]
Base = Annotated[Optional[str], typer.Option(
    "--base", help="Base model to fine-tune into the teacher: the packaged MiniLM-L6 (offline), "
    f"a folder, or a hub id such as bert-base-uncased \\[default: {DEFAULT_BASE}, or the study's].")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda when there is one), cpu or cuda.")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", help="CPU threads for training and timing \\[default: torch's choice].")]
Results = Annotated[Path, typer.Option(
    "--results", help="Where teachers, caches and reports are written.")]
# Budget overrides and the cache switch (distill and search).
HintSteps = Annotated[Optional[int], typer.Option("--hint-steps", help="Override: stage-1 (hint) steps.")]
KdSteps = Annotated[Optional[int], typer.Option("--kd-steps", help="Override: stage-2 (KD) steps.")]
Examples = Annotated[Optional[int], typer.Option("--examples", help="Override: training examples drawn from train.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Run the teacher live every step instead of reading "
                                       "its cached outputs.")]


@app.callback()
def root(debug: Annotated[bool, typer.Option(
        "--debug", help=f"Show the full traceback behind an error line (also ${DEBUG_ENV}=1).")] = False) -> None:
    """Search for small, fast BERT students distilled from a fine-tuned teacher (FitNets)."""
    from transformers.utils import logging

    if debug:
        os.environ[DEBUG_ENV] = "1"
    logging.set_verbosity_error()  # no load reports: a base's new classifier head is expected


def handled(interrupted: str = "interrupted"):
    """A command decorator: UserError becomes one line on stderr and exit code 2; Ctrl-C the line
    `interrupted` and exit code 130. With --debug the traceback is printed first."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (UserError, KeyboardInterrupt) as exc:
                if os.environ.get(DEBUG_ENV) == "1":
                    import traceback

                    traceback.print_exc()
                if isinstance(exc, KeyboardInterrupt):
                    typer.echo(interrupted, err=True)
                    raise typer.Exit(130) from None
                typer.echo(f"error: {' '.join(str(exc).splitlines())}", err=True)  # one line, whatever it quotes
                raise typer.Exit(2) from None
        return wrapper
    return decorate


INTERRUPTED_SEARCH = "interrupted: the running trial is queued again; run the same command to resume"
INTERRUPTED_BENCH = "interrupted: the running trials are queued again; run the same command to resume"


def run_env(task: str, data_dir: str | None = None, text_column: str | None = None, label_column: str | None = None,
            max_len: int | None = None, teacher: str | None = None, base: str | None = None, device: str = "auto",
            threads: int | None = None, results: Path = Path("results"), no_cache: bool = False) -> RunEnv:
    """The run environment of a command's options."""
    return RunEnv(task, data_dir, text_column, label_column, max_len, TeacherRef(teacher, base), device, threads,
                  Path(results), use_cache=not no_cache)


@app.command()
@handled()
def teacher(task: Task, data_dir: DataDir = None, text_column: TextColumn = None,
            label_column: LabelColumn = None, max_len: MaxLen = None,
            base: Base = None, device: Device = "auto", threads: Threads = None,
            results: Results = Path("results"),
            force: Annotated[bool, typer.Option(
                "--force", "--refit", help="Fine-tune again and replace the cached teacher RESULTS/teachers/<task>/ "
                "(without it a cached teacher is never replaced: one made from another base, data or --max-len "
                "is refused).")] = False,
            max_minutes: Annotated[Optional[float], typer.Option(
                "--max-minutes", help="Wall-clock cap on fine-tuning; the schedule is fitted to it.")] = None,
            epochs: Annotated[Optional[float], typer.Option("--epochs", help="Passes over the train split.")] = None,
            lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None):
    """Fine-tune the teacher for a task and cache it under RESULTS/teachers/<task>/."""
    from . import pipeline

    env = run_env(task, data_dir, text_column, label_column, max_len, base=base, device=device, threads=threads,
                  results=results)
    manifest = pipeline.fine_tune_teacher(env, force=force, max_minutes=max_minutes, epochs=epochs, lr=lr)
    typer.echo(json.dumps({k: manifest[k] for k in ("task", "base", "minutes", "steps", "dev", "val")
                           if k in manifest}, indent=2))


def retention(report: dict) -> str:
    """A report's dev retention as a percentage; '-' where the teacher's dev metric is 0 (an MCC can be)."""
    return f"{report['retention']:.1%}" if report["retention"] is not None else "-"


@app.command()
@handled()
def distill(task: Task,
            arch: Annotated[str, typer.Option("--arch", help="Student shape L<layers>-H<hidden>-A<heads>-I<ffn>, "
                                              "e.g. L4-H192-A6-I768.")],
            hints: Annotated[Optional[str], typer.Option(
                "--hints", help="Hint mapping student:teacher layer pairs, monotone, e.g. 2:1,4:2,6:4,8:6 "
                "\\[default: last student layer -> last teacher layer].")] = None,
            init: Annotated[str, typer.Option("--init", help="teacher (pruned teacher weights along the "
                                              "mapping) or random.")] = "teacher",
            budget: Annotated[str, typer.Option("--budget", help="Step budget: smoke, small (CPU) or "
                                                "standard (GPU).")] = "small",
            hint_steps: HintSteps = None, kd_steps: KdSteps = None, examples: Examples = None,
            temperature: Annotated[Optional[float], typer.Option("--temperature", help="Override: KD temperature.")] = None,
            kd_alpha: Annotated[Optional[float], typer.Option("--kd-alpha", help="Override: weight of KD "
                                                              "against the hard-label loss (0..1).")] = None,
            hint_weight: Annotated[Optional[float], typer.Option("--hint-weight", help="Override: hint loss "
                                                                 "weight kept in stage 2.")] = None,
            lr: Annotated[Optional[float], typer.Option("--lr", help="Override: stage-2 learning rate.")] = None,
            augment: Annotated[Optional[int], typer.Option(
                "--augment", help="Override: add N word-replaced copies of every sentence-like train example "
                "(TinyBERT-style, neighbours in the teacher's word embeddings), taught by the teacher's "
                "outputs; 0 turns it off \\[default: the budget's: 2 for small, standard and full, "
                "0 for smoke].")] = None,
            no_cache: NoCache = False,
            seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
            data_dir: DataDir = None, text_column: TextColumn = None, label_column: LabelColumn = None,
            max_len: MaxLen = None, teacher: TeacherOpt = None, base: Base = None,
            device: Device = "auto", threads: Threads = None, results: Results = Path("results")):
    """Distill one student from the teacher (FitNets: hints, then KD) and report its metric and costs.

    The validation metric is on the split carved from train; dev is the official dev set.
    The result is written as JSON under RESULTS/distill/.
    """
    from . import pipeline

    overrides = dict(hint_steps=hint_steps, kd_steps=kd_steps, examples=examples, temperature=temperature,
                     kd_alpha=kd_alpha, hint_weight=hint_weight, lr=lr, augment=augment)
    env = run_env(task, data_dir, text_column, label_column, max_len, teacher, base, device, threads, results,
                  no_cache)
    r = pipeline.distill_one(env, arch=arch, hints=hints, init=init, budget=budget, seed=seed, overrides=overrides)
    vs = r["vs_teacher"]
    typer.echo(f"{r['name']} hints {r['hints']} init {r['init']}: dev {r['dev']['metric']:.4f} "
               f"(teacher {r['teacher']['dev']['metric']:.4f}, retention {retention(r)}), "
               f"val {r['val']['metric']:.4f}")
    typer.echo(f"params {r['costs']['params']['total']:,} (embeddings {r['costs']['params']['embeddings']:,}, "
               f"encoder {r['costs']['params']['encoder']:,}); FLOPs {r['costs']['flops'] / 1e9:.3f} G "
               f"({vs['flops_share']:.1%} of teacher)"
               + (f"; speed-up b1 {vs['speedup_b1']:.2f}x, b32 {vs['speedup_b32']:.2f}x" if "speedup_b1" in vs else ""))
    typer.echo(f"{r['distill']['examples_per_s']:.0f} examples/s; written to {r['path']}")


@app.command()
@handled(INTERRUPTED_SEARCH)
def search(task: Task,
           trials: Annotated[int, typer.Option(
               "--trials", help="Trials in the study in all. COMPLETE, PRUNED (cost-constraint rejections "
               "included) and FAIL trials count; running the command again runs only the trials left. "
               "A trial killed or interrupted mid-run is retried once with the same student and counts once.")] = 100,
           study: Annotated[Optional[str], typer.Option(
               "--study", help="Study name (default: <task>-<space>). Resuming needs the same task, space, "
               "objectives and sampler.")] = None,
           space: Annotated[str, typer.Option(
               "--space", help="Search space: a shipped name (thin-deep, shallow-wide, tiny) or a path to a "
               ".yaml file.")] = DEFAULT_SPACE,
           budget: Annotated[str, typer.Option("--budget", help="Step budget per trial: smoke, small (CPU) or "
                                               "standard (GPU).")] = "small",
           hint_steps: HintSteps = None, kd_steps: KdSteps = None, examples: Examples = None,
           objectives: Annotated[str, typer.Option(
               "--objectives", help="metric (maximized) then the costs to minimize: metric,flops, metric,latency, "
               "metric,params or metric,flops,latency; or metric alone, which needs a cost constraint and "
               "prunes with --pruner.")] = "metric,flops",
           sampler: Annotated[str, typer.Option(
               "--sampler", help="tpe: Optuna's TPE, multi-objective (conditional parameters suit it); random: "
               "Optuna's RandomSampler, random search as a baseline. Recorded in the study: resuming needs the "
               "same.")] = "tpe",
           pruning: Annotated[str, typer.Option(
               "--pruning", help="pareto: stop a trial whose metric at a checkpoint is clearly below what a "
               "finished trial of no higher cost had reached by then; none: no pruning at all.")] = "pareto",
           pruning_warmup: Annotated[int, typer.Option(
               "--pruning-warmup", help="Finished trials with a checkpoint needed before any trial is "
               "pruned.")] = PRUNE_WARMUP_TRIALS,
           pruner: Annotated[Optional[str], typer.Option(
               "--pruner", help="Single-objective studies (--objectives metric) only: Optuna's median or "
               "hyperband pruner, or none \\[default: median].")] = None,
           max_flops: Annotated[Optional[float], typer.Option(
               "--max-flops", help="Reject students above this many FLOPs (2 per multiply-add, batch 1, 128 "
               "tokens), e.g. 1e9, before training them.")] = None,
           max_params: Annotated[Optional[float], typer.Option(
               "--max-params", help="Reject students above this many parameters (embeddings included), "
               "before training them.")] = None,
           max_latency_ms: Annotated[Optional[float], typer.Option(
               "--max-latency-ms", help="Reject students slower than this at batch 1 (median ms, 128 tokens, "
               "--threads), timed before training them.")] = None,
           no_baselines: Annotated[bool, typer.Option(
               "--no-baselines", help="Do not queue the baseline students (DistilBERT-, TinyBERT-4-, MobileBERT-"
               "like, teacher depth at half width) first in a new study.")] = False,
           enqueue: Annotated[Optional[list[str]], typer.Option(
               "--enqueue", help="A student to try first in a new study (repeatable), as L<layers>-H<hidden>-"
               "A<heads>-I<ffn>, optionally @ its hints, e.g. L3-H320-A10-I640@1:2,2:4,3:6 \\[default hints: "
               "last layer -> last]. It must lie in the space; it trains with `distill`'s default recipe "
               f"(init {_RECIPE.init}, temperature {_RECIPE.temperature:g}, kd-alpha {_RECIPE.kd_alpha:g}, "
               f"hint weight {_RECIPE.hint_weight:g}, lr {_RECIPE.lr:g}) where the space allows it.")] = None,
           seed: Annotated[int, typer.Option("--seed", help="Seed of the sampler and of every trial's "
                                             "training.")] = 0,
           workers: Annotated[int, typer.Option(
               "--workers", help="Processes on this machine sharing the study. For several machines, start the "
               "command on each with the same PostgreSQL --storage.")] = 1,
           storage: Annotated[Optional[str], typer.Option(
               "--storage", envvar=STORAGE_ENV, help="Optuna RDB storage URL (default: sqlite:///RESULTS/<study>.db); "
               "postgresql://... to share one study between machines (a password is better given in "
               f"${STORAGE_ENV} than on the command line).")] = None,
           no_cache: NoCache = False,
           data_dir: DataDir = None, text_column: TextColumn = None, label_column: LabelColumn = None,
           max_len: MaxLen = None, teacher: TeacherOpt = None, base: Base = None,
           device: Device = "auto", threads: Threads = None, results: Results = Path("results")):
    """Search for students on the (metric, cost) Pareto front: an Optuna study, resumed if it exists.

    Each trial samples a student and its FitNets settings from the space, costs it (rejecting it
    before training if over a --max-* constraint), distills it on the budget, and is pruned at a
    checkpoint when it cannot reach the front. A line is printed per trial, and the front at the end.
    """
    from . import study as study_mod

    env = run_env(task, data_dir, text_column, label_column, max_len, teacher, base, device, threads, results,
                  no_cache)
    opts = study_mod.SearchOptions(
        env=env, trials=trials, study=study, space=space, budget=budget, hint_steps=hint_steps,
        kd_steps=kd_steps, examples=examples, objectives=objectives, sampler=sampler, pruning=pruning,
        pruning_warmup=pruning_warmup, pruner=pruner, max_flops=max_flops, max_params=max_params,
        max_latency_ms=max_latency_ms, baselines=not no_baselines, enqueue=tuple(enqueue or ()), seed=seed,
        workers=workers, storage=storage)
    r = study_mod.run_search(opts, log=typer.echo)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
    typer.echo(f"ran {r['ran']} trials; study {r['study']} has {r['used']} of {r['trials']} trials used ({counts})")
    print_front(r)


def print_front(r: dict) -> None:
    """The front as a rich table (FLOPs count 2 per multiply-add)."""
    from rich.console import Console
    from rich.table import Table

    if not r["front"]:
        typer.echo("no completed trial yet: no front")
        return
    costs = ", ".join(r["objectives"][1:])
    table = Table(title=f"Front of {r['study']}: {r['metric']} against {costs}" if costs
                  else f"Best of {r['study']}: {r['metric']} within the cost constraints")
    for col in ("trial", "student", "hints", r["metric"], "GFLOPs (2/MAC)", "params (M)", "latency b1 (ms)", "note"):
        table.add_column(col, justify="left" if col in ("student", "hints", "note") else "right")
    for row in r["front"]:
        table.add_row(str(row["trial"]), row["name"] or "?", row["hints"] or "?", f"{row['metric']:.4f}",
                      f"{row['flops'] / 1e9:.4g}" if row["flops"] is not None else "-",
                      f"{row['params'] / 1e6:.2f}" if row["params"] is not None else "-",
                      f"{row['latency_ms']:.2f}" if row["latency_ms"] is not None else "-", row["baseline"])
    Console(width=max(120, Console().width)).print(table)


# Options of plot and show: which study to report on.
StudyStorage = Annotated[Optional[str], typer.Option(
    "--storage", envvar=STORAGE_ENV, help="Optuna storage URL of the study \\[default: sqlite:///RESULTS/<study>.db, or the newest "
    "RESULTS/*.db].")]
ReportResults = Annotated[Path, typer.Option(
    "--results", help="Where the study databases are, and where the figures are written (RESULTS/<study>/).")]


@app.command()
@handled()
def plot(study: Annotated[Optional[list[str]], typer.Option(
             "--study", help="Study to plot \\[default: the newest in the newest RESULTS/*.db]; give it more "
             "than once to overlay several studies' fronts.")] = None,
         storage: StudyStorage = None,
         all_trials: Annotated[bool, typer.Option("--all", help="Also draw pruned trials (at their last "
                                                  "checkpoint's metric).")] = False,
         remeasure: Annotated[bool, typer.Option(
             "--remeasure", help="First re-time the teacher and every student on the fronts side by side in this "
             "process (random weights: latency does not depend on them), store the figures in the study, and "
             "plot those.")] = False,
         no_fasttext: Annotated[bool, typer.Option(
             "--no-fasttext", help="Leave out the fastText reference (trained once per task split and cached "
             "under RESULTS/fasttext/).")] = False,
         data_dir: DataDir = None, results: ReportResults = Path("results")):
    """Pareto fronts of the metric against FLOPs and latency, the hypervolume history and parameter
    importances, as HTML and PNG under RESULTS/<study>/, with the teacher, the baselines and fastText."""
    from . import plots

    written = plots.plot(study, storage, results, show_pruned=all_trials, remeasure_front=remeasure,
                         data_dir=data_dir, fasttext=not no_fasttext, log=typer.echo)
    typer.echo(f"written to {written[0].parent}/: {', '.join(p.name for p in written)}")


@app.command()
@handled()
def show(study: Annotated[Optional[str], typer.Option(
             "--study", help="Study to show \\[default: the newest in the newest RESULTS/*.db].")] = None,
         storage: StudyStorage = None,
         fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
         results: ReportResults = Path("results")):
    """The study's Pareto front sorted by FLOPs: metric, retention and speed-up against the teacher,
    params, FLOPs (2 per multiply-add), batch-1 latency, student and hints."""
    from . import report

    out = report.show_front(study, storage, results, fmt)
    if isinstance(out, str):
        typer.echo(out)
    else:
        from rich.console import Console

        Console(width=max(120, Console().width)).print(out)


@app.command()
@handled("interrupted: run the same command to resume from the last checkpoint in --out")
def export(out: Annotated[Path, typer.Option(
               "--out", help="Model folder to write: new or empty, or holding this export's unfinished checkpoint "
               "(the same command resumes it).")],
           trial: Annotated[Optional[int], typer.Option("--trial", help="The trial whose student to export.")] = None,
           pick: Annotated[Optional[str], typer.Option(
               "--pick", help="Instead of --trial: 'flops<=0.25' takes the completed student with the best metric "
               "among those with at most 25% of the teacher's FLOPs; '0.1<flops<=0.25' among those with more "
               "than 10% and at most 25%; 'latency<=0.5' likewise with batch-1 latency.")] = None,
           study: Annotated[Optional[str], typer.Option(
               "--study", help="Study of the trial \\[default: the newest in the newest RESULTS/*.db].")] = None,
           storage: StudyStorage = None,
           budget: Annotated[str, typer.Option("--budget", help="Step budget: full (all of train; about 45 "
                                               "minutes on a CPU for a quarter of the teacher's FLOPs), or any "
                                               "other preset.")] = "full",
           hint_steps: HintSteps = None, kd_steps: KdSteps = None, examples: Examples = None,
           onnx: Annotated[bool, typer.Option("--onnx", help="Also write model.onnx, checked against PyTorch on "
                                              "dev batches and timed in ONNX Runtime (extra: onnx).")] = False,
           checkpoint_every: Annotated[int, typer.Option(
               "--checkpoint-every", help="Optimizer steps between checkpoints in OUT/.checkpoint/.")
           ] = CHECKPOINT_EVERY,
           task: Annotated[Optional[str], typer.Option(
               "--task", help="The task \\[default: the study's]; a custom task's folder must be given.")] = None,
           data_dir: DataDir = None, text_column: TextColumn = None, label_column: LabelColumn = None,
           max_len: MaxLen = None,
           teacher: Annotated[Optional[str], typer.Option(
               "--teacher", help="Teacher folder or hub id \\[default: the study's teacher for the study's task; for "
               "another --task, that task's fine-tuned teacher under RESULTS/teachers/].")] = None,
           base: Annotated[Optional[str], typer.Option(
               "--base", help="What a cached teacher is fine-tuned from \\[default: the study's for the study's task, "
               f"else {DEFAULT_BASE}]. Options the study recorded (--base, --teacher, --max-len, columns) may be "
               "left out; one that contradicts the study is refused.")] = None,
           no_cache: NoCache = False, device: Device = "auto", threads: Threads = None,
           results: Results = Path("results")):
    """Distill one student of a study again on a full budget and save it as a Hugging Face model folder.

    The folder holds the model and its tokenizer, a model card (README.md) and export.json.
    They give the dev metric beside the teacher's, params, FLOPs, batch-1 latency and speed-up.
    Training is checkpointed: after an interruption the same command resumes it.
    """
    from . import export as export_mod
    from .onnx_export import OnnxMismatch

    opts = export_mod.ExportOptions(
        out=out, trial=trial, pick=pick, study=study, storage=storage, results=results, budget=budget,
        hint_steps=hint_steps, kd_steps=kd_steps, examples=examples, onnx=onnx, checkpoint_every=checkpoint_every,
        task=task, data_dir=data_dir, text_column=text_column, label_column=label_column, max_len=max_len,
        teacher=teacher, base=base, no_cache=no_cache, device=device, threads=threads)
    try:
        r = export_mod.run_export(opts, log=typer.echo).report
    except OnnxMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    vs = r["vs_teacher"]
    typer.echo(f"trial {r['trial']} {r['name']} hints {r['hints']}: dev {r['dev']['metric']:.4f} (teacher "
               f"{r['teacher']['dev']['metric']:.4f}, retention {retention(r)}); FLOPs {vs['flops_share']:.1%} "
               f"of the teacher's; speed-up b1 {vs['speedup_b1']:.2f}x")
    if "onnx" in r:
        o = r["onnx"]
        typer.echo(f"model.onnx: max |logit difference| {o['max_abs_diff']:.2g}; onnxruntime {o['onnxruntime_ms']:.2f} "
                   f"ms, PyTorch {o['pytorch_ms']:.2f} ms (batch 1, {o['seq_len']} tokens)")
    typer.echo(f"written to {out}/")


def bench_written(path, results: Path) -> None:
    """Say where a benchmark wrote its report (JSON and Markdown), and rebuild RESULTS/BENCHMARKS.md."""
    from .bench import write_summary

    typer.echo(f"written to {path} and {Path(path).with_suffix('.md')}; summary: {write_summary(results)}")


bench_app = typer.Typer(no_args_is_help=True,
                        help="Benchmarks: measured figures written to RESULTS/benchmarks/ (JSON and Markdown).")
app.add_typer(bench_app, name="bench")


@bench_app.command("distill")
@handled()
def bench_distill(task: Task = "sst2",
                  arch: Annotated[str, typer.Option("--arch", help="Student shape.")] = "L3-H320-A10-I640",
                  hints: Annotated[Optional[str], typer.Option("--hints", help="Hint mapping.")] = "1:2,2:4,3:6",
                  budget: Annotated[str, typer.Option("--budget", help="Step budget preset.")] = "small",
                  data_dir: DataDir = None, teacher: TeacherOpt = None, device: Device = "auto",
                  threads: Threads = None, results: Results = Path("results")):
    """One student with teacher init and with random init at the same budget, plus distillation
    throughput with and without the teacher cache."""
    from . import bench

    env = run_env(task, data_dir, teacher=teacher, device=device, threads=threads, results=results)
    r = bench.bench_distill(env, arch=arch, hints=hints, budget=budget)
    typer.echo(bench.distill_markdown(r))
    bench_written(r["path"], results)


@bench_app.command("pruning")
@handled(INTERRUPTED_BENCH)
def bench_pruning(task: Task = "sst2",
                  trials: Annotated[int, typer.Option("--trials", help="Trials in each of the two studies.")] = 30,
                  study: Annotated[Optional[str], typer.Option(
                      "--study", help="Name prefix of the two studies \\[default: <task>-<space>]; they are "
                      "<prefix>-pareto and <prefix>-none, and are resumed when they exist.")] = None,
                  space: Annotated[str, typer.Option("--space", help="Search space name or .yaml path.")] = DEFAULT_SPACE,
                  budget: Annotated[str, typer.Option("--budget", help="Step budget per trial.")] = "small",
                  seed: Annotated[int, typer.Option("--seed", help="Seed of both studies.")] = 0,
                  data_dir: DataDir = None, teacher: TeacherOpt = None, device: Device = "auto",
                  threads: Threads = None, results: Results = Path("results")):
    """The same study with Pareto pruning and without: training steps saved, hypervolume kept, both fronts.

    Runs (or resumes) two searches, one after the other, then compares them.
    """
    from . import bench, study as study_mod

    env = run_env(task, data_dir, teacher=teacher, device=device, threads=threads, results=results)
    opts = study_mod.SearchOptions(env=env, trials=trials, study=study, space=space, budget=budget, seed=seed)
    r = bench.bench_pruning(opts, log=typer.echo)
    typer.echo(bench.pruning_markdown(r))
    bench_written(r["path"], results)


@bench_app.command("export")
@handled("interrupted: run the same command to resume; finished exports are kept, an unfinished one resumes from its checkpoint")
def bench_export(study: Annotated[str, typer.Option(
                     "--study", help="Study whose students are exported (RESULTS/<study>.db); its architectures "
                     "serve every task.")] = BENCH_EXPORT_STUDY,
                 tasks: Annotated[str, typer.Option(
                     "--tasks", help="Comma-separated tasks; each student is distilled from that task's own "
                     "teacher.")] = ",".join(BENCH_EXPORT_TASKS),
                 shares: Annotated[str, typer.Option(
                     "--shares", help="Comma-separated FLOPs shares of the teacher: one export per task and share, "
                     "--pick 'flops<=SHARE', in RESULTS/exports/<task>-<share in %>/.")
                 ] = ",".join(f"{x:.2f}" for x in BENCH_EXPORT_SHARES),
                 budget: Annotated[str, typer.Option("--budget", help="Step budget of the exports made here (and "
                                                     "required of those found).")] = BENCH_EXPORT_BUDGET,
                 kd_steps: Annotated[Optional[int], typer.Option(
                     "--kd-steps", help="KD steps of each export (SST-2's goals need more than the small "
                     "budget's 8,000).")
                 ] = BENCH_EXPORT_KD_STEPS,
                 rounds: Annotated[int, typer.Option(
                     "--rounds", help="Timing rounds: each times every teacher and student once.")
                 ] = BENCH_EXPORT_ROUNDS,
                 data_dir: DataDir = None, device: Device = "auto", threads: Threads = None,
                 results: Results = Path("results")):
    """Exported students beside their teachers: dev metric, retention, params, FLOPs and batch-1 speed-up.

    Uses each finished export folder RESULTS/exports/<task>-<NN>/ and exports (or resumes) the missing
    ones, then times every student, loaded from its folder, and its task's teacher side by side in this
    process. Writes RESULTS/benchmarks/export.json and export.md.
    """
    from . import bench_export as bx

    opts = bx.ExportBenchOptions(study=study, tasks=bx.parse_tasks(tasks), shares=bx.parse_shares(shares),
                                 budget=budget, kd_steps=kd_steps, data_dir=data_dir, results=results,
                                 threads=threads, device=device, rounds=rounds)
    r = bx.bench_export(opts, log=typer.echo)
    typer.echo(bx.export_markdown(r))
    bench_written(r["path"], results)


@bench_app.command("search")
@handled(INTERRUPTED_BENCH)
def bench_search(task: Task = "sst2",
                 trials: Annotated[int, typer.Option(
                     "--trials", help="Trials in each study (COMPLETE, PRUNED and FAIL count, as in search).")] = 16,
                 seeds: Annotated[int, typer.Option(
                     "--seeds", help="Studies per arm, with seeds 0 to SEEDS-1: figures are min / median / max "
                     "over them.")] = 3,
                 setting: Annotated[str, typer.Option(
                     "--setting", help="Space and per-trial budget. reduced: the thin-deep space, 20 hint + 100 KD "
                     "steps, a checkpoint every 50 KD steps on 500 validation examples, 16,000 training examples "
                     "(SST-2 on a 2-core CPU); tiny: the tiny space and the smoke budget (tests).")] = "reduced",
                 jobs: Annotated[int, typer.Option(
                     "--jobs", help="Studies run at once, each in its own process (give each --threads 1 on a "
                     "CPU: a small student's trial gains little from a second thread).")] = 1,
                 data_dir: DataDir = None, teacher: TeacherOpt = None, device: Device = "auto",
                 threads: Threads = None, results: Results = Path("results")):
    """TPE with Pareto pruning (the search's default) against random search without pruning: hypervolume of
    the metric-vs-FLOPs front against training steps, --seeds studies per arm, no baselines.

    The studies are kept in RESULTS/search-<task>.db and resumed when they exist; the report is written to
    RESULTS/benchmarks/search-<task>.json and .md, with the curves as .html and .png.
    """
    from . import bench_search as bench_search_mod

    env = run_env(task, data_dir, teacher=teacher, device=device, threads=threads, results=results)
    r = bench_search_mod.bench_search(env, trials, seeds, setting, jobs=jobs, log=typer.echo)
    typer.echo(bench_search_mod.search_markdown(r))
    bench_written(r["path"], results)


@bench_app.command("speed")
@handled()
def bench_speed(task: Task = "sst2", data_dir: DataDir = None, teacher: TeacherOpt = None,
                results: Results = Path("results"), threads: Threads = None,
                device: Annotated[str, typer.Option(
                    "--device", help="auto (cuda when there is one), cpu or cuda. Timings synchronize the "
                    "device.")] = "auto",
                repeats: Annotated[int, typer.Option(
                    "--repeats", help="Timed runs per student, with and without the cache (interleaved); every "
                    "figure is reported as min / median / max over them.")] = 3,
                student: Annotated[Optional[list[str]], typer.Option(
                    "--student", help="A student to time, ARCH@HINTS (e.g. L4-H128-A2-I512@2:3,4:6); repeat the "
                    "option for several \\[default: L4-H128-A2-I512@2:3,4:6, L3-H320-A10-I640@1:2,2:4,3:6 and "
                    "L6-H384-A12-I1536@2:2,4:4,6:6].")] = None,
                warmup_steps: Annotated[int, typer.Option(
                    "--warmup-steps", help="Untimed steps per stage before the clock starts.")] = 5,
                steps: Annotated[int, typer.Option("--steps", help="Timed steps per stage and run.")] = 30,
                profile_steps: Annotated[int, typer.Option(
                    "--profile-steps", help="Steps per stage under torch.profiler for the smallest and the largest "
                    "student (cache on); 0: no profile.")] = 10,
                space: Annotated[str, typer.Option(
                    "--space", help="Search space whose per-trial budget (batch size, examples, steps, evaluations) "
                    "the runs use and the trial estimate is for.")] = DEFAULT_SPACE,
                budget: Annotated[str, typer.Option("--budget", help="That space's budget preset.")] = "small",
                peak_size: Annotated[int, typer.Option(
                    "--peak-size", help="n of the n x n fp32 matrix products timed for the matmul peak.")] = 4096):
    """Distillation throughput (examples/s, tokens/s, GFLOP/s and share of the fp32 matmul peak) of a small,
    a quarter-FLOPs and a teacher-size student, with and without the teacher cache; a trial's time
    estimated from them; torch.profiler's top ops."""
    # The defaults above repeat bench_speed's constants (importing it here would load torch for --help).
    from . import bench_speed as speed

    env = run_env(task, data_dir, teacher=teacher, device=device, threads=threads, results=results)
    r = speed.bench_speed(env, students=student, repeats=repeats, warmup=warmup_steps, steps=steps,
                          profile_steps=profile_steps, space=space, budget=budget, peak_size=peak_size,
                          log=typer.echo)
    typer.echo(speed.speed_markdown(r))
    bench_written(r["path"], results)
