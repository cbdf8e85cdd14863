"""Latency backends and precisions: what a latency figure is measured in (names, labels, checks; no torch).

core/runtime.py times models in them; the search, the reports and the exports record them with every figure.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from fastbert_nas.config import UserError

LATENCY_BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "int8")
BACKEND_LABELS = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime"}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx.export (dynamo) needs the first two


@dataclass(frozen=True)
class Runtime:
    """A latency backend and precision: what a latency figure was measured in."""

    backend: str = "torch"         # one of LATENCY_BACKENDS
    precision: str = "fp32"        # one of PRECISIONS; int8 in ONNX Runtime only

    def check_names(self) -> "Runtime":
        """UserError for an unknown backend or precision."""
        if self.backend not in LATENCY_BACKENDS:
            raise UserError(f"--latency-backend {self.backend!r}: choose one of {', '.join(LATENCY_BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        return self

    def check(self) -> "Runtime":
        """check_names, then UserError for int8 in PyTorch, or ONNX Runtime not installed."""
        self.check_names()
        if self.precision == "int8" and self.backend != "onnxruntime":
            raise UserError("--precision int8: int8 is timed in ONNX Runtime (dynamic quantization); "
                            "add --latency-backend onnxruntime")
        if self.backend == "onnxruntime":
            check_onnx_installed("--latency-backend onnxruntime")
        return self

    @property
    def label(self) -> str:
        """e.g. 'ONNX Runtime int8'."""
        return f"{BACKEND_LABELS[self.backend]} {self.precision}"

    def to_dict(self) -> dict:
        return {"backend": self.backend, "precision": self.precision}

    @classmethod
    def of(cls, record: dict, prefix: str = "latency_") -> "Runtime":
        """The runtime a record's latency was measured in (keys <prefix>backend, <prefix>precision); a
        record made before runtimes were recorded was timed in PyTorch fp32."""
        return cls(record.get(f"{prefix}backend", "torch"), record.get(f"{prefix}precision", "fp32"))


TORCH_FP32 = Runtime()


def check_onnx_installed(option: str) -> None:
    """UserError naming the extra when a package ONNX export or ONNX Runtime needs is missing."""
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"{option} needs {', '.join(missing)}: pip install 'fastbert-nas[onnx]'")


def asked_runtime(recorded: Runtime, backend: str | None, precision: str | None) -> Runtime:
    """The runtime a command's options ask for, what they leave out taken from `recorded`; a backend other
    than the recorded one without a precision means fp32 (int8 is ONNX Runtime's only)."""
    backend = backend or recorded.backend
    if precision is None:
        precision = recorded.precision if backend == recorded.backend else "fp32"
    return Runtime(backend, precision)
