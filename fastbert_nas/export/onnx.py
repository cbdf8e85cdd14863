"""An exported student as ONNX: write model.onnx, check it against PyTorch, time it in ONNX Runtime.

The graph takes `input_ids` and `attention_mask` (int64, batch and sequence length free) and
returns `logits`. It is checked on real encoded dev batches of several lengths: the largest
absolute logit difference from the PyTorch model must stay within ONNX_TOLERANCE, else
OnnxMismatch. Needs the `onnx` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastbert_nas.core import runtime
from fastbert_nas.core.backends import check_onnx_installed
from fastbert_nas.core.cost import REF_SEQ_LEN, measure_latency
from fastbert_nas.core.family import model_inputs
from fastbert_nas.core.runtime import ONNX_FILE
from fastbert_nas.core.tasks import Encoded, collate, eval_batches

ONNX_TOLERANCE = 1e-4     # max |logit difference| from PyTorch; float32 reordering gives about 1e-6
CHECK_BATCHES = 4         # real dev batches compared, spread over the lengths
CHECK_BATCH_SIZE = 8      # examples per compared batch


class OnnxMismatch(Exception):
    """model.onnx computes other logits than the PyTorch model it was exported from."""


def check_installed() -> None:
    """UserError naming the extra when a package --onnx needs is missing (checked before any training)."""
    check_onnx_installed("--onnx")


def check_batches(dev: Encoded) -> list[dict]:
    """CHECK_BATCHES padded dev batches spread from the shortest examples to the longest."""
    batches = list(eval_batches(dev, CHECK_BATCH_SIZE))
    stride = max(1, len(batches) // CHECK_BATCHES)
    return [collate(dev, idx) for idx in batches[::stride][:CHECK_BATCHES]]


@torch.inference_mode()
def max_difference(model, sess, batches: list[dict]) -> float:
    """The largest |logit difference| between ONNX Runtime and the PyTorch model over `batches`."""
    model.eval()
    worst = 0.0
    for b in batches:
        expected = model(**model_inputs(model, b)).logits.numpy()
        got = sess.run(["logits"], runtime.feed(sess, b))[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_onnx(model, folder: Path, dev: Encoded, threads: int) -> dict:
    """Write folder/model.onnx from `model` (a CPU model), check and time it; OnnxMismatch if it differs."""
    path = Path(folder) / ONNX_FILE
    runtime.write_onnx(model, path, pairs=dev.sep_id is not None)
    sess = runtime.session(path, threads)
    batches = check_batches(dev)
    diff = max_difference(model, sess, batches)
    if not diff <= ONNX_TOLERANCE:  # NaN fails too
        raise OnnxMismatch(f"{path}: ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g} on "
                           f"{len(batches)} dev batches, above ONNX_TOLERANCE {ONNX_TOLERANCE:g}; the file is "
                           "left there for inspection")
    ort_ms = runtime.session_latency(sess, threads)
    torch_ms = measure_latency(model, 1, threads=threads)["median_ms"]
    import onnxruntime

    return {"file": ONNX_FILE, "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE, "check_batches": len(batches),
            "check_examples": sum(len(b["labels"]) for b in batches), "batch": 1, "seq_len": REF_SEQ_LEN,
            "onnxruntime_ms": ort_ms, "pytorch_ms": torch_ms, "speedup_vs_pytorch": torch_ms / ort_ms,
            "threads": threads, "device": "cpu", "onnxruntime": onnxruntime.__version__}
