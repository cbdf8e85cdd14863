"""Where a classifier runs, and how fast: PyTorch eager or ONNX Runtime, fp32 or int8.

A Runtime (core/backends.py) names a backend and a precision. `latency` times a model in it at batch B and S tokens, with a
fixed thread count, warm-up and repeats (torch.utils.benchmark's blocked_autorange), and returns a record
that names both. For ONNX Runtime the model is exported (`write_onnx`: batch and length free) into a
temporary folder and, for int8, quantized there by ONNX Runtime's dynamic quantization (`quantize`: int8
weights, activations quantized per batch as it runs). Latency does not depend on the weights, so an
untrained student is timed as its trained self will run.

int8 is an ONNX Runtime precision only: PyTorch's own dynamic quantization (torch.ao.quantization) is
deprecated in favour of torchao, and int8 BERT students are deployed through ONNX Runtime.
ONNX Runtime runs on the CPU here (the CPU package); its figures are recorded with device "cpu".
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.benchmark import Timer

from fastbert_nas.core.backends import Runtime
from fastbert_nas.core.cost import LATENCY_MIN_RUN_S, REF_SEQ_LEN, measure_latency
from fastbert_nas.core.family import takes_token_types

ONNX_FILE, INT8_FILE = "model.onnx", "model-int8.onnx"
INPUTS = ("input_ids", "attention_mask")
PAIR_INPUT = "token_type_ids"  # a sentence-pair model's third input, where its family has token types
EXAMPLE_SHAPE = (2, 16)   # (batch, tokens) of the tracing example; neither dimension is fixed by it
EXPORTER_REGISTRY_LOG = "torch.onnx._internal.exporter._registration"
# The exporter: torch.onnx's TorchScript-based one, as Hugging Face optimum exports BERT (ONNX Runtime's BERT
# graph fusions are written for its graphs), and 15-20x faster than the torch.export-based one ("dynamo", torch's
# default since 2.9): 0.5 s against 8-11 s for the <= 10% SST-2 student, which a search pays on every trial it
# times in ONNX Runtime; its int8 graph also ran 5% faster (1.16 ms against 1.22). torch marks it deprecated:
# where a later torch drops it, set "dynamo". Either file is checked against PyTorch on real rows of several
# lengths (export/onnx.py).
ONNX_EXPORTER = "torchscript"
ONNX_OPSET = 17           # the TorchScript exporter's opset (onnxruntime 1.20+ runs 17 to 21)
ONNX_ATTENTION = "eager"  # the attention exported: ONNX Runtime runs its graph faster than SDPA's (the <= 10% SST-2
                          # student, batch 1, 64 tokens, 2 threads: int8 1.2 ms against 1.7)
QUANTIZER_LOG = "root"    # onnxruntime.quantization's advice to pre-process the graph (shape inference) goes here


class _Logits(torch.nn.Module):
    """The classifier with plain tensor inputs and the logits alone as output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        types = {} if token_type_ids is None else {PAIR_INPUT: token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **types).logits  # (B, C)


def onnx_inputs(model, pairs: bool = False) -> tuple[str, ...]:
    """The graph's inputs: ids and mask, and the token types of a sentence-pair model whose family has them."""
    return INPUTS + ((PAIR_INPUT,) if pairs and takes_token_types(model.config) else ())


def feed(sess, batch: dict) -> dict:
    """A session's inputs, by name, from a tasks.collate batch."""
    return {i.name: batch[i.name].numpy() for i in sess.get_inputs()}


def write_onnx(model, path: Path, exporter: str | None = None, pairs: bool = False) -> None:
    """torch.onnx.export of a CPU model in eval mode with ONNX_ATTENTION attention, batch and sequence
    dimensions free, by `exporter` (None: ONNX_EXPORTER), with onnx_inputs(model, pairs); the model's attention
    and training flag are restored."""
    ids = torch.ones(EXAMPLE_SHAPE, dtype=torch.long)  # (B, T)
    mask = torch.ones_like(ids)
    mask[-1, EXAMPLE_SHAPE[1] // 2:] = 0  # a padded row: the graph must keep the masking path
    names = onnx_inputs(model, pairs)
    types = torch.zeros_like(ids)
    types[:, EXAMPLE_SHAPE[1] // 4:] = 1  # a second segment
    example = (ids, mask, types)[:len(names)]
    was_training, attention = model.training, model.config._attn_implementation
    try:
        if attention != ONNX_ATTENTION:
            model.set_attn_implementation(ONNX_ATTENTION)
        module = _Logits(model).eval()
        if (exporter or ONNX_EXPORTER) == "torchscript":
            _torchscript_export(module, example, path, names)
        else:
            _dynamo_export(module, example, path, names, model.config.max_position_embeddings)
    finally:
        model.train(was_training)
        if model.config._attn_implementation != attention:
            model.set_attn_implementation(attention)


def _torchscript_export(module, example: tuple, path: Path, names: tuple[str, ...]) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)   # its notice that dynamo is the default
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape checks traced as constants
        warnings.filterwarnings("ignore", message=".*aten::index.*")     # indexing by Gather: checked on real rows
        torch.onnx.export(module, example, str(path), input_names=list(names), output_names=["logits"],
                          dynamo=False, opset_version=ONNX_OPSET,
                          dynamic_axes=dict.fromkeys(names, {0: "batch", 1: "seq"}))


def _dynamo_export(module, example: tuple, path: Path, names: tuple[str, ...], max_len: int) -> None:
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=max_len)
    registry = logging.getLogger(EXPORTER_REGISTRY_LOG)
    level = registry.level
    registry.setLevel(logging.ERROR)  # one line per torchvision op it skips: noise here
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*")  # naming notes on the free dimensions
            warnings.filterwarnings("ignore", category=FutureWarning)    # torch's internals on its own API
            program = torch.onnx.export(module, example, input_names=list(names), output_names=["logits"],
                                        external_data=False, verbose=False,
                                        dynamic_shapes=dict.fromkeys(names, {0: batch, 1: seq}))
    finally:
        registry.setLevel(level)
    program.save(str(path))


def quantize(src: Path, dst: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization of `src` into `dst`: int8 weights (MatMul and the embeddings'
    Gather), uint8 activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger(QUANTIZER_LOG)
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def onnx_files(model, folder: Path, precision: str) -> Path:
    """Write folder/ONNX_FILE from `model` (copied to the CPU if it is elsewhere) and, for int8,
    folder/INT8_FILE; the path of the file that runs at `precision`."""
    cpu = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
    path = Path(folder) / ONNX_FILE
    write_onnx(cpu, path)
    if precision == "fp32":
        return path
    quantize(path, Path(folder) / INT8_FILE)
    return Path(folder) / INT8_FILE


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads (as PyTorch is timed)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_latency(sess, threads: int, batch: int = 1, seq_len: int = REF_SEQ_LEN,
                    min_run_time: float | None = None) -> float:
    """Median ms of one ONNX Runtime run at `batch` x `seq_len` tokens (torch.utils.benchmark), timed for
    `min_run_time` s (None: LATENCY_MIN_RUN_S)."""
    ones = {i.name: np.ones((batch, seq_len), dtype=np.int64) for i in sess.get_inputs()}  # as cost.measure_latency's
    timer = Timer(stmt="run()", globals={"run": lambda: sess.run(None, ones)}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time or LATENCY_MIN_RUN_S).median * 1e3


def latency(model, runtime: Runtime, batch: int = 1, seq_len: int = REF_SEQ_LEN, threads: int | None = None,
            min_run_time: float | None = None) -> dict:
    """Median forward-pass ms of `model` in `runtime`, timed for `min_run_time` s (None: LATENCY_MIN_RUN_S):
    cost.measure_latency's record (batch, seq_len, median_ms, threads, device) with the backend and precision."""
    if runtime.backend == "torch":
        record = measure_latency(model, batch, seq_len, threads=threads, min_run_time=min_run_time or LATENCY_MIN_RUN_S)
    else:
        threads = threads or torch.get_num_threads()
        with tempfile.TemporaryDirectory(prefix="fastbert-nas-latency-") as tmp:
            sess = session(onnx_files(model, Path(tmp), runtime.precision), threads)
            ms = session_latency(sess, threads, batch, seq_len, min_run_time)
        record = {"batch": batch, "seq_len": seq_len, "median_ms": ms, "threads": threads, "device": "cpu"}
    return {**record, **runtime.to_dict()}


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # what int8 speed-ups depend on


def cpu_flags() -> dict[str, bool]:
    """Which of CPU_FLAGS the CPU has (from /proc/cpuinfo; all False where it cannot be read)."""
    try:
        flags = set(next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")))
    except (OSError, StopIteration):
        flags = set()
    return {f: f in flags for f in CPU_FLAGS}
