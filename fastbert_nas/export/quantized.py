"""`export --quantize int8`: the int8 ONNX model beside model.onnx, scored, and timed beside the others.

ONNX Runtime's dynamic quantization (core/runtime.quantize: int8 weights, activations quantized as it runs)
writes INT8_FILE from the checked model.onnx. Its accuracy change is measured, never assumed: the student is
scored in PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8 on the whole validation split and on dev.
Then the student and the teacher are timed side by side in one process in each of DEPLOY_RUNTIMES, at batch 1
and the task's length, over DEPLOY_ROUNDS rounds (a round times every model once; the median round is
reported), with each file's size on disk.

Hugging Face optimum (ORTQuantizer, ORTModelForSequenceClassification) would export and quantize too, but
optimum-onnx 0.1 requires transformers < 4.58 and this project runs on transformers 5: plain torch.onnx.export
and onnxruntime.quantization do the same job here. The files are plain ONNX with the input names optimum
reads (`input_ids`, `attention_mask`), so they load with it where it is installed.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fastbert_nas.config import TaskSpec
from fastbert_nas.core import runtime
from fastbert_nas.core.backends import TORCH_FP32, Runtime
from fastbert_nas.core.cost import LATENCY_MIN_RUN_S, measure_latency
from fastbert_nas.core.metrics import score
from fastbert_nas.core.tasks import Encoded, collate, eval_batches
from fastbert_nas.core.training import EVAL_BATCH, evaluate

DEPLOY_ROUNDS = 3                # timing rounds of the side-by-side table
DEPLOY_RUNTIMES = (TORCH_FP32, Runtime("onnxruntime", "fp32"), Runtime("onnxruntime", "int8"))
MODEL_FILES = {TORCH_FP32.label: "model.safetensors", DEPLOY_RUNTIMES[1].label: runtime.ONNX_FILE,
               DEPLOY_RUNTIMES[2].label: runtime.INT8_FILE}


def onnx_predict(sess, enc: Encoded) -> np.ndarray:
    """Class predictions of an ONNX Runtime session for every example of a split, in order (batched as
    training.predict batches)."""
    pred = np.zeros(len(enc), dtype=np.int64)
    for idx in eval_batches(enc, EVAL_BATCH):
        b = collate(enc, idx)
        pred[idx] = sess.run(["logits"], runtime.feed(sess, b))[0].argmax(-1)
    return pred


def scores(model, folder: Path, spec: TaskSpec, splits: dict[str, Encoded], threads: int) -> dict:
    """{runtime label: {split: metrics}} for the student in PyTorch fp32 and in both ONNX files."""
    out = {TORCH_FP32.label: {name: evaluate(model, spec, enc, torch.device("cpu")) for name, enc in splits.items()}}
    for rt in DEPLOY_RUNTIMES[1:]:
        sess = runtime.session(folder / MODEL_FILES[rt.label], threads)
        out[rt.label] = {name: score(spec, onnx_predict(sess, enc), enc.labels) for name, enc in splits.items()}
    return out


def timers(model, folder: Path, threads: int, seq_len: int) -> dict[str, Callable[[], float]]:
    """{runtime label: a function timing one median ms of `model` (and of its files in `folder`)}."""
    sessions = {rt.label: runtime.session(folder / MODEL_FILES[rt.label], threads) for rt in DEPLOY_RUNTIMES[1:]}
    out = {TORCH_FP32.label: lambda: measure_latency(model, 1, seq_len, threads=threads,
                                                     min_run_time=LATENCY_MIN_RUN_S)["median_ms"]}
    for label, sess in sessions.items():
        out[label] = lambda sess=sess: runtime.session_latency(sess, threads, 1, seq_len)
    return out


def side_by_side(models: dict[str, tuple[torch.nn.Module, Path]], threads: int, seq_len: int, rounds: int,
                 log: Callable[[str], None] = print) -> dict:
    """{model name: {runtime label: {"ms", "ms_rounds", "size_mb", "file"}}}: every model in every runtime,
    timed once per round, `rounds` rounds, in this process."""
    clocks = {name: timers(model, folder, threads, seq_len) for name, (model, folder) in models.items()}
    laps: dict[tuple[str, str], list[float]] = {}
    for i in range(rounds):
        for name, by_runtime in clocks.items():
            for label, clock in by_runtime.items():
                laps.setdefault((name, label), []).append(clock())
        log(f"timing round {i + 1}/{rounds} done")
    return {name: {label: {"ms": statistics.median(laps[name, label]), "ms_rounds": laps[name, label],
                           "file": MODEL_FILES[label],
                           "size_mb": (folder / MODEL_FILES[label]).stat().st_size / 1e6}
                   for label in clocks[name]}
            for name, (_, folder) in models.items()}


def against_teacher(by_runtime: dict, teacher: dict, metrics: dict | None = None) -> dict:
    """A model's side_by_side timings with their speed-ups against the teacher's (`teacher`, its side_by_side
    timings) in PyTorch fp32 and in the same runtime, and its `metrics` per runtime (scores') when given."""
    base = teacher[TORCH_FP32.label]["ms"]
    return {label: {**x, **(metrics or {}).get(label, {}), "speedup_vs_teacher_pytorch_fp32": base / x["ms"],
                    "speedup_vs_teacher_same_runtime": teacher[label]["ms"] / x["ms"]}
            for label, x in by_runtime.items()}


def export_int8(student, teacher, out: Path, spec: TaskSpec, splits: dict[str, Encoded], threads: int,
                log: Callable[[str], None] = print) -> dict:
    """Quantize out/model.onnx into out/INT8_FILE, score the student in every runtime on `splits` (val, dev),
    and time student and teacher side by side (the teacher exported to a temporary folder); export.json's
    "deploy" record."""
    runtime.quantize(out / runtime.ONNX_FILE, out / runtime.INT8_FILE)
    log(f"{runtime.INT8_FILE}: {(out / runtime.INT8_FILE).stat().st_size / 1e6:.1f} MB; scoring it ...")
    metrics = scores(student, out, spec, splits, threads)
    with tempfile.TemporaryDirectory(prefix="fastbert-nas-teacher-") as tmp:
        teacher_dir = Path(tmp)
        teacher.save_pretrained(teacher_dir)  # its model.safetensors: the size a user ships
        runtime.onnx_files(teacher, teacher_dir, "int8")
        log(f"timing the student and the teacher in {', '.join(rt.label for rt in DEPLOY_RUNTIMES)}, "
            f"{DEPLOY_ROUNDS} rounds ...")
        timed = side_by_side({"student": (student, out), "teacher": (teacher, teacher_dir)}, threads,
                             spec.max_len, DEPLOY_ROUNDS, log)
    timed = {"student": against_teacher(timed["student"], timed["teacher"], metrics),
             "teacher": against_teacher(timed["teacher"], timed["teacher"])}
    fp32 = metrics[TORCH_FP32.label]
    int8 = metrics[DEPLOY_RUNTIMES[2].label]
    return {"batch": 1, "seq_len": spec.max_len, "threads": threads, "device": "cpu", "rounds": DEPLOY_ROUNDS,
            "cpu_flags": runtime.cpu_flags(), "quantization": "onnxruntime dynamic, int8 weights (QInt8)",
            "metric": spec.metric, "models": timed,
            "int8_change": {split: int8[split]["metric"] - fp32[split]["metric"] for split in splits}}
