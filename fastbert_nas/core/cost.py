"""What a BERT classifier costs: params, FLOPs and latency.

FLOPs count 2 per multiply-add (not MACs), for one forward pass at batch 1 and
REF_SEQ_LEN tokens. Latency is the median of `torch.utils.benchmark`, at a fixed
thread count, recorded with the device it was measured on. Nothing here writes
files: callers store the plain dicts returned.
"""

from __future__ import annotations

import torch
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode

from fastbert_nas.config import REF_SEQ_LEN, StudentArch
from fastbert_nas.core.family import encoder_prefix

LATENCY_BATCHES = (1, 32)    # examples per forward pass: single request, and a batched figure
LATENCY_MIN_RUN_S = 1.0      # seconds of timed runs per figure (after blocked_autorange's warm-up)
FLOP_ATTN = "eager"          # FlopCounterMode counts SDPA attention as 0 on CPU; eager is counted


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _inputs(model, batch_size: int, seq_len: int) -> dict:
    """Valid dummy inputs: token id 1 everywhere, no padding."""
    device = _device(model)
    ids = torch.ones(batch_size, seq_len, dtype=torch.long, device=device)  # (B, S)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}       # (B, S) each


def count_params(model) -> dict:
    """Parameters by part: embeddings, encoder, head (pooler + classifier), total."""
    parts = {"embeddings": 0, "encoder": 0, "head": 0}
    base, encoder = model.base_model_prefix, encoder_prefix(model)  # "bert", "bert.encoder."; ...
    for name, p in model.named_parameters():  # shared tensors are listed once
        if name.startswith((f"{base}.embeddings.", f"{base}.embeddings_project.")):
            parts["embeddings"] += p.numel()
        elif name.startswith(encoder):
            parts["encoder"] += p.numel()
        else:
            parts["head"] += p.numel()
    parts["total"] = sum(parts.values())
    return parts


def count_flops(model, seq_len: int = REF_SEQ_LEN) -> int:
    """FLOPs (2 per multiply-add) of one forward pass at batch 1 and `seq_len` tokens.

    The model runs with eager attention for the count, then gets its own
    attention implementation and training flag back, even on error.
    """
    prev_attn = model.config._attn_implementation
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        if prev_attn != FLOP_ATTN:
            model.set_attn_implementation(FLOP_ATTN)
        model.eval()
        with torch.inference_mode(), counter:
            model(**_inputs(model, 1, seq_len))
    finally:
        if model.config._attn_implementation != prev_attn:
            model.set_attn_implementation(prev_attn)
        model.train(was_training)
    return int(counter.get_total_flops())


def analytic_flops(arch: StudentArch, seq_len: int = REF_SEQ_LEN) -> int:
    """Encoder FLOPs at batch 1: per layer 2·S·(4H² + 2H·I) + 4·S²·H.

    4H²: Q, K, V and output projections; 2H·I: the two FFN matrices; 4·S²·H:
    scores Q·Kᵀ and the weighted sum of V. Pooler and classifier are left out.
    """
    s, h, i = seq_len, arch.hidden, arch.ffn
    per_layer = 2 * s * (4 * h * h + 2 * h * i) + 4 * s * s * h
    return arch.layers * per_layer


def measure_latency(model, batch_size: int, seq_len: int = REF_SEQ_LEN, threads: int | None = None,
                    min_run_time: float = LATENCY_MIN_RUN_S) -> dict:
    """Median forward-pass time in ms, eval mode, inference_mode, fixed thread count.

    blocked_autorange warms up first, and its timer synchronizes CUDA.
    """
    threads = threads or torch.get_num_threads()
    device = _device(model)
    inputs = _inputs(model, batch_size, seq_len)
    was_training = model.training
    model.eval()

    @torch.inference_mode()
    def forward():
        model(**inputs)

    try:
        timer = Timer(stmt="forward()", globals={"forward": forward}, num_threads=threads)
        m = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        model.train(was_training)
    return {"batch": batch_size, "seq_len": seq_len, "median_ms": m.median * 1e3,
            "threads": threads, "device": str(device)}


def model_costs(model, seq_len: int = REF_SEQ_LEN, threads: int | None = None, latency: bool = True) -> dict:
    """{"params": ..., "flops": ..., "latency": {"b1": ..., "b32": ...}} (latency optional)."""
    costs = {"params": count_params(model), "flops": count_flops(model, seq_len)}
    if latency:
        costs["latency"] = {f"b{b}": measure_latency(model, b, seq_len, threads) for b in LATENCY_BATCHES}
    return costs


def cost_summary(student: dict, teacher: dict) -> dict:
    """Student against teacher (dicts from model_costs): shares of FLOPs and params, speed-ups."""
    summary = {"flops_share": student["flops"] / teacher["flops"],
               "params_share": student["params"]["total"] / teacher["params"]["total"]}
    s_lat, t_lat = student.get("latency", {}), teacher.get("latency", {})
    for key in (k for k in s_lat if k in t_lat):
        summary[f"speedup_{key}"] = t_lat[key]["median_ms"] / s_lat[key]["median_ms"]
    return summary
