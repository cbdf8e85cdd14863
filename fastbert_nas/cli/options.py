"""Options several commands share, declared once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fastbert_nas.cli.app import STORAGE_ENV
from fastbert_nas.config import DEFAULT_BASE

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
