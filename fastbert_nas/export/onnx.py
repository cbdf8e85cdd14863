"""An exported student as ONNX: write model.onnx, check it against PyTorch, time it in ONNX Runtime.

The graph takes `input_ids` and `attention_mask` (int64, batch and sequence length free) and
returns `logits`. It is checked on real encoded dev batches of several lengths: the largest
absolute logit difference from the PyTorch model must stay within ONNX_TOLERANCE, else
OnnxMismatch. Needs the `onnx` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.benchmark import Timer

from fastbert_nas.config import UserError
from fastbert_nas.core.cost import LATENCY_MIN_RUN_S, REF_SEQ_LEN, measure_latency
from fastbert_nas.core.tasks import Encoded, collate, eval_batches

ONNX_FILE = "model.onnx"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx.export (dynamo) needs the first two
ONNX_TOLERANCE = 1e-4     # max |logit difference| from PyTorch; float32 reordering gives about 1e-6
CHECK_BATCHES = 4         # real dev batches compared, spread over the lengths
CHECK_BATCH_SIZE = 8      # examples per compared batch
EXAMPLE_SHAPE = (2, 16)   # (batch, tokens) of the tracing example; neither dimension is fixed by it
INPUTS = ("input_ids", "attention_mask")
EXPORTER_REGISTRY_LOG = "torch.onnx._internal.exporter._registration"


class OnnxMismatch(Exception):
    """model.onnx computes other logits than the PyTorch model it was exported from."""


def check_installed() -> None:
    """UserError naming the extra when a package --onnx needs is missing (checked before any training)."""
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"--onnx needs {', '.join(missing)}: pip install 'fastbert-nas[onnx]'")


class _Logits(torch.nn.Module):
    """The classifier with plain tensor inputs and the logits alone as output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, C)


def write_onnx(model, path: Path) -> None:
    """torch.onnx.export (the torch.export-based exporter) with free batch and sequence dimensions."""
    ids = torch.ones(EXAMPLE_SHAPE, dtype=torch.long)  # (B, T)
    mask = torch.ones_like(ids)
    mask[-1, EXAMPLE_SHAPE[1] // 2:] = 0  # a padded row: the graph must keep the masking path
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("seq", max=model.config.max_position_embeddings)
    registry = logging.getLogger(EXPORTER_REGISTRY_LOG)
    level = registry.level
    registry.setLevel(logging.ERROR)  # one line per torchvision op it skips: noise here
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*")  # naming notes on the free dimensions
            warnings.filterwarnings("ignore", category=FutureWarning)    # torch's internals on its own API
            program = torch.onnx.export(_Logits(model).eval(), (ids, mask), input_names=list(INPUTS),
                                        output_names=["logits"], external_data=False, verbose=False,
                                        dynamic_shapes=dict.fromkeys(INPUTS, {0: batch, 1: seq}))
    finally:
        registry.setLevel(level)
    program.save(str(path))


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads (as PyTorch is timed)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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
        expected = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.numpy()
        got = sess.run(["logits"], {k: b[k].numpy() for k in INPUTS})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def onnx_latency(sess, threads: int, seq_len: int = REF_SEQ_LEN) -> float:
    """Median ms of one ONNX Runtime run at batch 1 and `seq_len` tokens (torch.utils.benchmark)."""
    feed = {k: np.ones((1, seq_len), dtype=np.int64) for k in INPUTS}  # as cost.measure_latency's inputs
    timer = Timer(stmt="run()", globals={"run": lambda: sess.run(None, feed)}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=LATENCY_MIN_RUN_S).median * 1e3


def export_onnx(model, folder: Path, dev: Encoded, threads: int) -> dict:
    """Write folder/model.onnx from `model` (a CPU model), check and time it; OnnxMismatch if it differs."""
    path = Path(folder) / ONNX_FILE
    write_onnx(model, path)
    sess = session(path, threads)
    batches = check_batches(dev)
    diff = max_difference(model, sess, batches)
    if not diff <= ONNX_TOLERANCE:  # NaN fails too
        raise OnnxMismatch(f"{path}: ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g} on "
                           f"{len(batches)} dev batches, above ONNX_TOLERANCE {ONNX_TOLERANCE:g}; the file is "
                           "left there for inspection")
    ort_ms = onnx_latency(sess, threads)
    torch_ms = measure_latency(model, 1, threads=threads)["median_ms"]
    import onnxruntime

    return {"file": ONNX_FILE, "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE, "check_batches": len(batches),
            "check_examples": sum(len(b["labels"]) for b in batches), "batch": 1, "seq_len": REF_SEQ_LEN,
            "onnxruntime_ms": ort_ms, "pytorch_ms": torch_ms, "speedup_vs_pytorch": torch_ms / ort_ms,
            "threads": threads, "device": "cpu", "onnxruntime": onnxruntime.__version__}
