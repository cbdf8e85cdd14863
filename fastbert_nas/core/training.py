"""Pieces every training loop shares: device and threads, batch order, the
optimizer and its warm-up/decay schedule, prediction, and progress bars."""

from __future__ import annotations

import platform
import sys
import time

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fastbert_nas.config import TaskSpec, UserError
from fastbert_nas.core.family import model_inputs
from fastbert_nas.core.metrics import score
from fastbert_nas.core.tasks import Encoded, collate, eval_batches

GROUP_BATCHES = 50   # batches per length-sorted chunk: little padding, still shuffled
EVAL_BATCH = 64      # examples per evaluation batch
LOG_EVERY_S = 60     # seconds between progress lines when writing to a log file
FUSED_ADAMW_DEVICES = ("cpu", "cuda")  # devices with torch's fused AdamW kernel (torch >= 2.4)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when there is one, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available here")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: expected auto, cpu or cuda")
    return torch.device(device)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo, else platform.processor()): figures, and bit-for-bit
    reproducibility, hold for one kind of CPU."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def set_threads(threads: int | None) -> int:
    """Fix the intra-op thread count (timings are comparable only at a fixed count)."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def batch_stream(lengths: np.ndarray, batch_size: int, seed: int):
    """Endless stream of index batches, epoch after epoch.

    Each epoch is shuffled, cut into chunks of GROUP_BATCHES batches, each chunk
    sorted by length (so a batch pads little), and the batches shuffled again.
    """
    rng = np.random.default_rng(seed)
    chunk = batch_size * GROUP_BATCHES
    while True:
        perm = rng.permutation(len(lengths))
        batches = []
        for start in range(0, len(perm), chunk):
            part = perm[start : start + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        for j in rng.permutation(len(batches)):
            yield batches[j]


def learning_rate(step: int, peak: float, steps: int, warmup: float) -> float:
    """The learning rate of optimizer step `step` (0-based) of `steps`: linear warm-up to `peak` over the
    first `warmup` fraction of the steps (at least one step), then linear decay to 0 at step `steps`."""
    steps = max(1, steps)
    warm = max(1, int(warmup * steps))
    if step < warm:
        return peak * ((step + 1) / warm)
    return peak * max(0.0, (steps - step) / max(1, steps - warm))


def make_optimizer(params, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, weight decay on matrices only. Its learning rate is 0 until the loop sets each step's:
    `group["lr"] = learning_rate(step, ...)` for every group of `opt.param_groups`, before `opt.step()`."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases and LayerNorm weights
    # Fused: one kernel per step instead of a dozen passes (with full-size temporaries) per tensor. Every
    # step updates every weight, the whole word-embedding table too: for a small student (an embedding
    # table of 30522 x 128, 4x its encoder) the unfused update took about a fifth of each CPU step.
    fused = all(p.device.type in FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=0.0, fused=fused or None)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.inference_mode()
def predict(model, enc: Encoded, device: torch.device, limit: int | None = None) -> np.ndarray:
    """Class predictions for the first `limit` examples (all by default), in order."""
    was_training = model.training
    model.eval()
    n = len(enc) if limit is None else min(limit, len(enc))
    pred = np.zeros(n, dtype=np.int64)
    for idx in eval_batches(enc, EVAL_BATCH, n):
        b = to_device(collate(enc, idx), device)
        logits = model(**model_inputs(model, b)).logits
        pred[idx] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    return pred


def evaluate(model, spec: TaskSpec, enc: Encoded, device: torch.device, limit: int | None = None) -> dict:
    """The task's metrics on the first `limit` examples of a split."""
    pred = predict(model, enc, device, limit)
    return score(spec, pred, enc.labels[: len(pred)])


class LogProgress:
    """Progress for a log file (no terminal): a plain line every LOG_EVERY_S seconds and at the end."""

    def __init__(self):
        self.tasks: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description: str, total: int, info: str = "", completed: int = 0) -> int:
        """`completed`: work done before this run (a resumed checkpoint); the ETA counts only this run's pace."""
        self.tasks.append(dict(description=description, total=total, done=completed, before=completed, info=info,
                               start=time.perf_counter(), last=time.perf_counter()))
        return len(self.tasks) - 1

    def update(self, task: int, advance: int = 0, total: int | None = None, info: str | None = None) -> None:
        t = self.tasks[task]
        t["done"] += advance
        t["total"] = total or t["total"]
        t["info"] = t["info"] if info is None else info
        now = time.perf_counter()
        if now - t["last"] >= LOG_EVERY_S or (advance and t["done"] == t["total"]):
            t["last"] = now
            elapsed = now - t["start"]
            ran = t["done"] - t["before"]
            eta = elapsed / ran * (t["total"] - t["done"]) if ran else float("nan")
            print(f"{t['description']}: {t['done']}/{t['total']} {t['info']} "
                  f"elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min", file=sys.stderr, flush=True)


def progress(show: bool = True):
    """A rich progress bar with count, elapsed time and ETA; plain lines when not on a terminal."""
    if show and not sys.stderr.isatty():
        return LogProgress()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    return Progress(*columns, disable=not show)
