"""Options several commands share, declared once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fastbert_nas.cli.app import STORAGE_ENV
from fastbert_nas.config import DEFAULT_BASE, RUNG_ETA, DistillConfig

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


# Options of plot and show: which study to report on.
StudyStorage = Annotated[Optional[str], typer.Option(
    "--storage", envvar=STORAGE_ENV, help="Optuna storage URL of the study \\[default: sqlite:///RESULTS/<study>.db, or the newest "
    "RESULTS/*.db].")]


ReportResults = Annotated[Path, typer.Option(
    "--results", help="Where the study databases are, and where the figures are written (RESULTS/<study>/).")]

LatencyBackend = Annotated[Optional[str], typer.Option(
    "--latency-backend", help="What latency is timed in: torch (PyTorch eager) or onnxruntime (the student "
    "exported to ONNX and run by ONNX Runtime on the CPU, as deployed; needs the onnx extra). Recorded with "
    "every figure \\[default: the study's, else torch].")]
Precision = Annotated[Optional[str], typer.Option(
    "--precision", help="fp32, or int8: ONNX Runtime's dynamic quantization (int8 weights, activations "
    "quantized as it runs; with --latency-backend onnxruntime) \\[default: the study's, else fp32].")]


# Options of bench export that give it students by shape and a variant report.
ExportBenchHintSteps = Annotated[Optional[int], typer.Option(
    "--hint-steps", help="Hint steps of each export \\[default: the budget's].")]

ExportBenchStudent = Annotated[Optional[list[str]], typer.Option(
    "--student", help="SHARE=ARCH\\[@HINTS] (repeatable): that share's student given by its shape, e.g. "
    "0.1=L4-H160-A5-I448@1:2,2:3,3:5,4:6, instead of the one --pick chooses in the study; needs --chosen-by.")]

ExportBenchChosenBy = Annotated[Optional[str], typer.Option(
    "--chosen-by", help="How the --student shapes were chosen and on which split (written into the report), "
    "e.g. 'the best validation accuracy of bench depth-hint4000's 10% share'.")]

ExportBenchReport = Annotated[str, typer.Option(
    "--report", help="Name of the report: RESULTS/benchmarks/REPORT.json and .md; another name than export (a "
    "variant, such as given students or other step counts) also gives its export folders a suffix "
    "(export-given: <task>-<NN>-given[-seed<K>]/), so the main report and its exports stay as they are.")]


DeployExports = Annotated[str, typer.Option(
    "--exports", help="The bench export report whose seed-0 export folders are measured: export (the main one, "
    "RESULTS/exports/<task>-<NN>/) or a variant such as export-given (<task>-<NN>-given/); a variant's report is "
    "written as deploy-given.json and .md.")]

DeployTrialOverhead = Annotated[bool, typer.Option(
    "--trial-overhead/--no-trial-overhead", help="Measure what timing in ONNX Runtime costs a search trial "
    "against --study's trials (needs its database); --no-trial-overhead leaves that goal unmeasured.")]


# Options of search.
TRIAL_RECIPE = DistillConfig()  # the recipe an enqueued student trains with, quoted by --enqueue's help

SearchTrials = Annotated[int, typer.Option(
    "--trials", help="Trials in the study in all. COMPLETE, PRUNED (cost-constraint rejections "
    "included) and FAIL trials count; running the command again runs only the trials left. "
    "A trial killed or interrupted mid-run is retried once with the same student and counts once.")]

SearchStudy = Annotated[Optional[str], typer.Option(
    "--study", help="Study name (default: <task>-<space>). Resuming needs the same task, space, "
    "objectives and sampler.")]

SearchSpace = Annotated[str, typer.Option(
    "--space", help="Search space: a shipped name (thin-deep, shallow-wide, compact, tiny) or a path to a "
    ".yaml file.")]

SearchBudget = Annotated[str, typer.Option(
    "--budget", help="Trial budget, short proxy runs named apart from distill's: smoke (tests), cpu "
    "(200 hint + 500 KD steps on 16,000 examples, 1-2 minutes a trial on 2 cores) or gpu (1,000 + "
    "10,000 on 100,000); the space file may change each. A resumed study keeps the budget it was made with.")]

SearchAugment = Annotated[Optional[int], typer.Option(
    "--augment", help="Override: add N word-replaced copies of every sentence-like train example to "
    "every trial's training set, taught by the teacher's outputs \\[default: 0, none; the top rung of "
    "a ladder always trains with 2, as export does].")]

SearchRungs = Annotated[Optional[int], typer.Option(
    "--rungs", help="Rungs of successive halving: one in "
    f"{RUNG_ETA} of the students finished at a rung trains again at the next, with {RUNG_ETA} times "
    "its KD steps (cpu: 500 -> 1,500 -> 4,500), chosen by Pareto rank and share of the front. 1: no "
    "promotion. Promotions do not count toward --trials; the front, plot and export --pick take "
    "each student at the highest rung it finished \\[default: the space's, else cpu 3, gpu 2, smoke "
    "1; a resumed study keeps its own].")]

SearchObjectives = Annotated[str, typer.Option(
    "--objectives", help="metric (maximized) then the costs to minimize: metric,flops, metric,latency, "
    "metric,params or metric,flops,latency; or metric alone, which needs a cost constraint and "
    "prunes with --pruner.")]

SearchSampler = Annotated[str, typer.Option(
    "--sampler", help="tpe: Optuna's TPE, multi-objective (conditional parameters suit it); random: "
    "Optuna's RandomSampler, random search as a baseline; gp: Optuna's GPSampler (a Gaussian process, "
    "multi-objective, with the constraints; not yet compared with TPE). Recorded in the study: resuming "
    "needs the same.")]

SearchPruning = Annotated[str, typer.Option(
    "--pruning", help="pareto: stop a trial whose metric at a checkpoint is clearly below what a "
    "finished trial of no higher cost had reached by then; none: no pruning at all.")]

SearchPruningWarmup = Annotated[int, typer.Option(
    "--pruning-warmup", help="Finished trials with a checkpoint needed before any trial is "
    "pruned.")]

SearchPruningMargin = Annotated[float, typer.Option(
    "--pruning-margin", help="How far (metric units) below a cheaper finished trial's metric at the "
    "same checkpoint a trial must be to be stopped (pareto); bench pruning replays other margins.")]

SearchPruner = Annotated[Optional[str], typer.Option(
    "--pruner", help="Single-objective studies (--objectives metric) only: Optuna's median or "
    "hyperband pruner, or none \\[default: median].")]

SearchCollapseMargin = Annotated[float, typer.Option(
    "--collapse-margin", help="A trial whose final validation metric is at most this far above the "
    "majority-class level (always predicting the most frequent class) learned nothing: it is recorded "
    "as PRUNED (reason collapsed) and never put on the front. Metric units; negative: keep such "
    "trials.")]

SearchMaxFlops = Annotated[Optional[float], typer.Option(
    "--max-flops", help="Reject students above this many FLOPs (2 per multiply-add, batch 1, at the "
    "task's --max-len tokens), e.g. 1e9, before training them.")]

SearchMaxParams = Annotated[Optional[float], typer.Option(
    "--max-params", help="Reject students above this many parameters (embeddings included), "
    "before training them.")]

SearchMaxLatencyMs = Annotated[Optional[float], typer.Option(
    "--max-latency-ms", help="Reject students slower than this at batch 1 (median ms, --max-len tokens, "
    "--threads), timed before training them.")]

SearchNoBaselines = Annotated[bool, typer.Option(
    "--no-baselines", help="Do not queue the baseline students (DistilBERT-, TinyBERT-4-, MobileBERT-"
    "like, teacher depth at half width) first in a new study.")]

SearchEnqueue = Annotated[Optional[list[str]], typer.Option(
    "--enqueue", help="A student to try first in a new study (repeatable), as L<layers>-H<hidden>-"
    "A<heads>-I<ffn>, optionally @ its hints, e.g. L3-H320-A10-I640@1:2,2:4,3:6 \\[default hints: "
    "last layer -> last]. It must lie in the space; it trains with the trials' recipe (teacher init, "
    f"temperature {TRIAL_RECIPE.temperature:g}, kd-alpha {TRIAL_RECIPE.kd_alpha:g}, hint weight "
    f"{TRIAL_RECIPE.hint_weight:g}, a learning rate tied to its width and depth).")]

SearchSeed = Annotated[int, typer.Option("--seed", help="Seed of the sampler and of every trial's "
                                  "training.")]

SearchWorkers = Annotated[int, typer.Option(
    "--workers", help="Processes on this machine sharing the study. For several machines, start the "
    "command on each with the same PostgreSQL --storage.")]

SearchStorage = Annotated[Optional[str], typer.Option(
    "--storage", envvar=STORAGE_ENV, help="Optuna RDB storage URL (default: sqlite:///RESULTS/<study>.db); "
    "postgresql://... to share one study between machines (a password is better given in "
    f"${STORAGE_ENV} than on the command line).")]
