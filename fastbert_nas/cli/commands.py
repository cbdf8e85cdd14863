"""The commands: teacher, distill, search, plot, show, export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fastbert_nas.cli.app import INTERRUPTED_SEARCH, app, handled
from fastbert_nas.cli.options import (
    Base,
    DataDir,
    Device,
    Examples,
    HintSteps,
    KdSteps,
    LabelColumn,
    LatencyBackend,
    MaxLen,
    NoCache,
    Precision,
    ReportResults,
    Results,
    SearchAugment,
    SearchBudget,
    SearchCollapseMargin,
    SearchEnqueue,
    SearchMaxFlops,
    SearchMaxLatencyMs,
    SearchMaxParams,
    SearchNoBaselines,
    SearchObjectives,
    SearchPruner,
    SearchPruning,
    SearchPruningMargin,
    SearchPruningWarmup,
    SearchRungs,
    SearchSampler,
    SearchSeed,
    SearchSpace,
    SearchStorage,
    SearchStudy,
    SearchTrials,
    SearchWorkers,
    StudyStorage,
    Task,
    TeacherOpt,
    TextColumn,
    Threads,
)
from fastbert_nas.config import CHECKPOINT_EVERY, DEFAULT_BASE, DEFAULT_TRIAL_BUDGET, run_env
from fastbert_nas.core.metrics import others_text
from fastbert_nas.search.pruning import COLLAPSE_MARGIN, PRUNE_MARGIN, PRUNE_WARMUP_TRIALS
from fastbert_nas.search.space import DEFAULT_SPACE


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
                "--max-minutes", help="Wall-clock cap on fine-tuning (per seed with --seeds); the schedule is "
                "fitted to it as it runs, so the teacher then depends on the machine's speed \\[default: none: "
                "every planned step, the same teacher on every run].")] = None,
            epochs: Annotated[Optional[float], typer.Option("--epochs", help="Passes over the train split.")] = None,
            lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
            seeds: Annotated[Optional[int], typer.Option(
                "--seeds", help="Fine-tune this many seeds (0, 1, ...) and keep the best on the validation split; "
                "only the kept one is scored on dev \\[default: 1].")] = None):
    """Fine-tune the teacher for a task and cache it under RESULTS/teachers/<task>/."""
    from fastbert_nas.core import pipeline

    env = run_env(task, data_dir, text_column, label_column, max_len, base=base, device=device, threads=threads,
                  results=results)
    manifest = pipeline.fine_tune_teacher(env, force=force, max_minutes=max_minutes, epochs=epochs, lr=lr,
                                          seeds=seeds)
    typer.echo(json.dumps({k: manifest[k] for k in ("task", "base", "minutes", "steps", "dev", "val", "candidates")
                           if manifest.get(k) not in (None, [])}, indent=2))


def retention_text(report: dict) -> str:
    """A report's dev retention as a percentage; '-' where the teacher's dev metric is 0 (an MCC can be)."""
    return f"{report['retention']:.1%}" if report["retention"] is not None else "-"


@app.command()
@handled()
def distill(task: Task,
            arch: Annotated[str, typer.Option("--arch", help="Student shape L<layers>-H<hidden>-A<heads>-I<ffn>, "
                                              "e.g. L4-H192-A6-I768.")],
            hints: Annotated[Optional[str], typer.Option(
                "--hints", help="Hint mapping student:teacher layer pairs, student layers rising, e.g. 2:1,4:2,6:4,8:6 "
                "\\[default: last student layer -> last teacher layer].")] = None,
            init: Annotated[str, typer.Option("--init", help="teacher (pruned teacher weights along the "
                                              "mapping) or random.")] = "teacher",
            budget: Annotated[str, typer.Option(
                "--budget", help="Step budget: smoke (tests), small (a CPU: 300 hint + 8,000 KD steps, with "
                "augmentation), standard (a GPU) or full (every train row).")] = "small",
            hint_steps: HintSteps = None, kd_steps: KdSteps = None, examples: Examples = None,
            temperature: Annotated[Optional[float], typer.Option("--temperature", help="Override: KD temperature.")] = None,
            kd_alpha: Annotated[Optional[float], typer.Option("--kd-alpha", help="Override: weight of KD "
                                                              "against the hard-label loss (0..1).")] = None,
            hint_weight: Annotated[Optional[float], typer.Option("--hint-weight", help="Override: hint loss "
                                                                 "weight kept in stage 2.")] = None,
            relation_weight: Annotated[Optional[float], typer.Option(
                "--relation-weight", help="Override: weight of MiniLM-v2's self-attention relation loss in stage "
                "2, between the last hint pair's layers (queries, keys and values; 0 = off).")] = None,
            lr: Annotated[Optional[float], typer.Option("--lr", help="Override: stage-2 learning rate.")] = None,
            augment: Annotated[Optional[int], typer.Option(
                "--augment", help="Override: add N word-replaced copies of every sentence-like train example "
                "(TinyBERT-style, neighbours in the teacher's word embeddings), taught by the teacher's "
                "outputs; 0 turns it off \\[default: the budget's: 2 for small, standard and full, "
                "0 for smoke].")] = None,
            augment_min_tokens: Annotated[Optional[int], typer.Option(
                "--augment-min-tokens", help="Override: word pieces ([CLS] and [SEP] included) a train example "
                "needs to be augmented: 16 (the default) copies sentence-like examples only, 3 every example "
                "with a word (small tasks of short sentences, as CoLA).")] = None,
            augment_examples: Annotated[Optional[int], typer.Option(
                "--augment-examples", help="Override: instead of a fixed --augment, as many copies per example "
                "(at least --augment, at most 20) as make about this many augmented examples: more for small "
                "training sets.")] = None,
            no_cache: NoCache = False,
            seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
            data_dir: DataDir = None, text_column: TextColumn = None, label_column: LabelColumn = None,
            max_len: MaxLen = None, teacher: TeacherOpt = None, base: Base = None,
            device: Device = "auto", threads: Threads = None, results: Results = Path("results")):
    """Distill one student from the teacher (FitNets: hints, then KD) and report its metric and costs.

    The validation metric is on the split carved from train; dev is the official dev set.
    The result is written as JSON under RESULTS/distill/.
    """
    from fastbert_nas.core import pipeline

    overrides = dict(hint_steps=hint_steps, kd_steps=kd_steps, examples=examples, temperature=temperature,
                     kd_alpha=kd_alpha, hint_weight=hint_weight, relation_weight=relation_weight, lr=lr,
                     augment=augment,
                     augment_min_tokens=augment_min_tokens, augment_examples=augment_examples)
    env = run_env(task, data_dir, text_column, label_column, max_len, teacher, base, device, threads, results,
                  no_cache)
    r = pipeline.distill_one(env, arch=arch, hints=hints, init=init, budget=budget, seed=seed, overrides=overrides)
    vs = r["vs_teacher"]
    typer.echo(f"{r['name']} hints {r['hints']} init {r['init']}: dev {r['dev']['metric']:.4f} "
               f"(teacher {r['teacher']['dev']['metric']:.4f}, retention {retention_text(r)}), "
               f"val {r['val']['metric']:.4f}")
    typer.echo(f"params {r['costs']['params']['total']:,} (embeddings {r['costs']['params']['embeddings']:,}, "
               f"encoder {r['costs']['params']['encoder']:,}); FLOPs {r['costs']['flops'] / 1e9:.3f} G "
               f"({vs['flops_share']:.1%} of teacher)"
               + (f"; speed-up b1 {vs['speedup_b1']:.2f}x, b32 {vs['speedup_b32']:.2f}x" if "speedup_b1" in vs else ""))
    typer.echo(f"{r['distill']['examples_per_s']:.0f} examples/s; written to {r['path']}")


@app.command()
@handled(INTERRUPTED_SEARCH)
def search(task: Task,
           trials: SearchTrials = 100,
           study: SearchStudy = None,
           space: SearchSpace = DEFAULT_SPACE,
           budget: SearchBudget = DEFAULT_TRIAL_BUDGET,
           hint_steps: HintSteps = None, kd_steps: KdSteps = None, examples: Examples = None,
           augment: SearchAugment = None,
           rungs: SearchRungs = None,
           objectives: SearchObjectives = "metric,flops",
           sampler: SearchSampler = "tpe",
           pruning: SearchPruning = "pareto",
           pruning_warmup: SearchPruningWarmup = PRUNE_WARMUP_TRIALS,
           pruning_margin: SearchPruningMargin = PRUNE_MARGIN,
           pruner: SearchPruner = None,
           collapse_margin: SearchCollapseMargin = COLLAPSE_MARGIN,
           max_flops: SearchMaxFlops = None,
           max_params: SearchMaxParams = None,
           max_latency_ms: SearchMaxLatencyMs = None,
           latency_backend: LatencyBackend = None, precision: Precision = None,
           no_baselines: SearchNoBaselines = False,
           enqueue: SearchEnqueue = None,
           seed: SearchSeed = 0,
           workers: SearchWorkers = 1,
           storage: SearchStorage = None,
           no_cache: NoCache = False,
           data_dir: DataDir = None, text_column: TextColumn = None, label_column: LabelColumn = None,
           max_len: MaxLen = None, teacher: TeacherOpt = None, base: Base = None,
           device: Device = "auto", threads: Threads = None, results: Results = Path("results")):
    """Search for students on the (metric, cost) Pareto front: an Optuna study, resumed if it exists.

    Each trial samples a student and its FitNets settings from the space, costs it (rejecting it
    before training if over a --max-* constraint), distills it on the budget, and is pruned at a
    checkpoint when it cannot reach the front. A line is printed per trial, and the front at the end.
    """
    import fastbert_nas.search.options as options_mod
    import fastbert_nas.search.run as search_run

    env = run_env(task, data_dir, text_column, label_column, max_len, teacher, base, device, threads, results,
                  no_cache)
    opts = options_mod.SearchOptions(
        env=env, trials=trials, study=study, space=space, budget=budget, hint_steps=hint_steps,
        kd_steps=kd_steps, examples=examples, augment=augment, rungs=rungs, objectives=objectives, sampler=sampler,
        pruning=pruning, pruning_warmup=pruning_warmup, pruning_margin=pruning_margin, pruner=pruner,
        collapse_margin=collapse_margin, max_flops=max_flops, max_params=max_params, max_latency_ms=max_latency_ms,
        latency_backend=latency_backend, precision=precision, baselines=not no_baselines,
        enqueue=tuple(enqueue or ()), seed=seed, workers=workers, storage=storage)
    r = search_run.run_search(opts, log=typer.echo)
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
    title = (f"Front of {r['study']}: {r['metric']} against {costs}" if costs
             else f"Best of {r['study']}: {r['metric']} within the cost constraints")
    table = Table(title=f"{title} (validation split; FLOPs and latency at batch 1, {r['seq_len']} tokens)")
    for col in ("trial", "student", "hints", "rung (KD steps)", r["metric"], "GFLOPs (2/MAC)", "params (M)",
                "latency b1 (ms)", "note"):
        table.add_column(col, justify="left" if col in ("student", "hints", "note") else "right")
    for row in r["front"]:
        table.add_row(str(row["trial"]), row["name"] or "?", row["hints"] or "?",
                      f"{row['rung']} ({row['kd_steps']})", f"{row['metric']:.4f}",
                      f"{row['flops'] / 1e9:.4g}" if row["flops"] is not None else "-",
                      f"{row['params'] / 1e6:.2f}" if row["params"] is not None else "-",
                      f"{row['latency_ms']:.2f}" if row["latency_ms"] is not None else "-", row["baseline"])
    Console(width=max(120, Console().width)).print(table)


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
         latency_backend: LatencyBackend = None, precision: Precision = None,
         no_fasttext: Annotated[bool, typer.Option(
             "--no-fasttext", help="Leave out the fastText reference (trained once per task split and cached "
             "under RESULTS/fasttext/).")] = False,
         data_dir: DataDir = None, results: ReportResults = Path("results")):
    """Pareto fronts of the metric against FLOPs and latency, the hypervolume history and parameter
    importances, as HTML and PNG under RESULTS/<study>/, with the teacher, the baselines and fastText."""
    from fastbert_nas.report import plots

    written = plots.plot(study, storage, results, show_pruned=all_trials, remeasure_front=remeasure,
                         data_dir=data_dir, fasttext=not no_fasttext, log=typer.echo,
                         latency_backend=latency_backend, precision=precision)
    typer.echo(f"written to {written[0].parent}/: {', '.join(p.name for p in written)}")


@app.command()
@handled()
def show(study: Annotated[Optional[str], typer.Option(
             "--study", help="Study to show \\[default: the newest in the newest RESULTS/*.db].")] = None,
         storage: StudyStorage = None,
         fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
         remeasure: Annotated[bool, typer.Option(
             "--remeasure", help="First re-time the teacher and every student on the front side by side in this "
             "process (as plot --remeasure: random weights, the figures stored in the study), and show those.")
         ] = False,
         latency_backend: LatencyBackend = None, precision: Precision = None,
         results: ReportResults = Path("results")):
    """The study's Pareto front sorted by FLOPs: metric, retention and speed-up against the teacher,
    params, FLOPs (2 per multiply-add), batch-1 latency, student and hints."""
    from fastbert_nas.report import rows as report

    out = report.show_front(study, storage, results, fmt, remeasure, lambda line: typer.echo(line, err=True),
                            latency_backend, precision)
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
           again: Annotated[Optional[Path], typer.Option(
               "--again", help="Instead of --trial or --pick: the student of an earlier export's folder (its "
               "export.json: study, trial, student and the trial's recipe) distilled again, e.g. with another "
               "--seed; the study's database need not be here.")] = None,
           student: Annotated[Optional[str], typer.Option(
               "--student", help="Instead of a study's trial: a student given by its shape, "
               "L<layers>-H<hidden>-A<heads>-I<ffn>, optionally @ its hints, e.g. L4-H160-A5-I448@1:2,2:3,3:5,4:6 "
               "(one measured with `distill` or `bench depth`), trained with the recipe a search trial of that "
               "shape gets; needs --task.")] = None,
           study: Annotated[Optional[str], typer.Option(
               "--study", help="Study of the trial \\[default: the newest in the newest RESULTS/*.db].")] = None,
           storage: StudyStorage = None,
           budget: Annotated[str, typer.Option("--budget", help="Step budget: full (all of train; about 45 "
                                               "minutes on a CPU for a quarter of the teacher's FLOPs), or any "
                                               "other preset.")] = "full",
           hint_steps: HintSteps = None, kd_steps: KdSteps = None, examples: Examples = None,
           seed: Annotated[Optional[int], typer.Option(
               "--seed", help="Seed of the student's init, data order and dropout \\[default: the trial's].")] = None,
           onnx: Annotated[bool, typer.Option("--onnx", help="Also write model.onnx, checked against PyTorch on "
                                              "dev batches and timed in ONNX Runtime (extra: onnx).")] = False,
           quantize: Annotated[Optional[str], typer.Option(
               "--quantize", help="int8: also write model-int8.onnx (ONNX Runtime's dynamic quantization) beside "
               "model.onnx, score it on validation and dev, and time student and teacher in PyTorch fp32, ONNX "
               "Runtime fp32 and int8 side by side (extra: onnx).")] = None,
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
    import fastbert_nas.export.plan as plan_mod
    import fastbert_nas.export.run as export_run
    from fastbert_nas.export.onnx import OnnxMismatch

    opts = plan_mod.ExportOptions(
        out=out, trial=trial, pick=pick, again=again, student=student, study=study, storage=storage, results=results,
        budget=budget,
        hint_steps=hint_steps, kd_steps=kd_steps, examples=examples, seed=seed, onnx=onnx, quantize=quantize,
        checkpoint_every=checkpoint_every, task=task, data_dir=data_dir, text_column=text_column,
        label_column=label_column, max_len=max_len, teacher=teacher, base=base, no_cache=no_cache, device=device, threads=threads)
    try:
        r = export_run.run_export(opts, log=typer.echo).report
    except OnnxMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    vs = r["vs_teacher"]
    beside = others_text(r["dev"], r["metric"])
    which = "student" if r["trial"] is None else f"trial {r['trial']}"
    typer.echo(f"{which} {r['name']} hints {r['hints']}: dev {r['dev']['metric']:.4f}"
               f"{f' ({beside})' if beside else ''} (teacher "
               f"{r['teacher']['dev']['metric']:.4f}, retention {retention_text(r)}); FLOPs {vs['flops_share']:.1%} "
               f"of the teacher's; speed-up b1 {vs['speedup_b1']:.2f}x")
    if "onnx" in r:
        o = r["onnx"]
        typer.echo(f"model.onnx: max |logit difference| {o['max_abs_diff']:.2g}; onnxruntime {o['onnxruntime_ms']:.2f} "
                   f"ms, PyTorch {o['pytorch_ms']:.2f} ms (batch 1, {o['seq_len']} tokens)")
    if "deploy" in r:
        from fastbert_nas.export.card import deploy_rows

        for name, runtime, size, ms, speedup, _, val, dev in deploy_rows(r):
            typer.echo(f"{name} in {runtime}: {size} MB, {ms} ms, {speedup} the PyTorch fp32 teacher"
                       + (f"; val {val}, dev {dev}" if dev else ""))
    typer.echo(f"written to {out}/")
