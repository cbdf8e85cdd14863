"""FitNets, truncated: pure losses and the two-stage distillation loop.

Stage 1 (hints): the student, cut after its last hinted layer, learns to make a
linear regressor of its hidden states match the teacher's (real tokens only).
Stage 2 (KD): the whole student learns the teacher's softened logits, mixed
with the hard labels, optionally keeping the hint loss and adding MiniLM-v2's
self-attention relation loss (`relation_weight`, relation.py) on the last hint pair's layers. Every `eval_every`
stage-2 steps the student is scored on the validation split and a callback may
stop the run (the hook the search uses for pruning). An optional `Checkpointer`
keeps the run's whole state every so many steps, and a later run resumes from it.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from fastbert_nas.config import DistillConfig, StudentArch, TaskSpec
from fastbert_nas.core.augment import AUGMENTED_LABEL
from fastbert_nas.core.family import encoder_layers, model_inputs, set_encoder_layers
from fastbert_nas.core.relation import Relation, relation_loss
from fastbert_nas.core.tasks import Encoded, collate
from fastbert_nas.core.training import batch_stream, evaluate, learning_rate, make_optimizer, progress, to_device

GRAD_CLIP = 1.0  # max global gradient norm
LOG_EVERY = 20   # optimizer steps between reads of the loss (each read waits for the device)


# ---------------------------------------------------------------------------
# Losses (pure)

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the logits softened at `temperature`, times T² (Hinton et al.).

    student_logits, teacher_logits: (B, C) -> scalar; 0 when they are equal.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * t * t


def hint_loss(student_h: torch.Tensor, teacher_h: torch.Tensor, regressor: torch.nn.Module,
              mask: torch.Tensor) -> torch.Tensor:
    """FitNets hint loss: MSE between regressor(student) and teacher, on real tokens only.

    student_h: (B, T, Hs); teacher_h: (B, T, Ht); mask: (B, T), 1 for real tokens -> scalar.
    """
    real = mask.bool()
    return F.mse_loss(regressor(student_h[real]), teacher_h[real])  # (N, Ht) vs (N, Ht)


# ---------------------------------------------------------------------------
# Where the teacher's outputs come from: the disk cache, or a live forward pass

class TeacherSource(Protocol):
    def __call__(self, idx: np.ndarray, batch: dict, hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher logits (B, C) and, if `hidden`, the hinted hidden states (B, K, T, Ht)."""


@dataclass
class CachedTeacher:
    outputs: object          # teacher.TeacherOutputs, indexed like the training examples
    layers: list[int]        # teacher layers of the hints (0 = embeddings)

    def __call__(self, idx, batch, hidden):
        device = batch["input_ids"].device
        logits, states = self.outputs.batch(idx, self.layers if hidden else [], batch["input_ids"].shape[1])
        return logits.to(device), states.to(device) if hidden else None


@dataclass
class LiveTeacher:
    model: torch.nn.Module
    layers: list[int]

    @torch.inference_mode()
    def __call__(self, idx, batch, hidden):
        out = self.model(**model_inputs(self.model, batch),
                         output_hidden_states=hidden)
        if not hidden:
            return out.logits.float().clone(), None
        states = torch.stack([out.hidden_states[t] for t in self.layers], dim=1)  # (B, K, T, Ht)
        return out.logits.float().clone(), states.float().clone()


# ---------------------------------------------------------------------------
# The loop

@dataclass
class DistillResult:
    metrics: dict                          # final validation metrics ("metric" is the task's)
    curve: list = field(default_factory=list)   # [(kd_step, metric), ...]
    hint_curve: list = field(default_factory=list)  # [(hint_step, hint loss), ...] at the steps the loss is read
    hint_steps: int = 0
    kd_steps: int = 0
    train_seconds: float = 0.0             # optimizer steps only, evaluation excluded
    examples_per_s: float = 0.0
    stopped_at: int | None = None          # kd step at which the callback stopped the run

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@contextmanager
def truncated(student, layers: int):
    """The student with only its first `layers` encoder layers, for stage 1."""
    _hook_all_layers(student)
    full = encoder_layers(student)
    set_encoder_layers(student, full[:layers])
    try:
        yield student
    finally:
        set_encoder_layers(student, full)


@torch.no_grad()
def _hook_all_layers(student) -> None:
    """Have transformers hook every encoder layer for `output_hidden_states` before a cut.

    transformers 5 records hidden states with forward hooks installed once, lazily, on the
    layers present at the model's first `output_hidden_states=True` call. Were that call
    made on the cut student, the cut layers would stay unhooked for good and every later
    `hidden_states` would silently lack them (its last entry replaced by the final output).
    One eval-mode forward of one token on the whole student installs them everywhere.
    """
    was_training = student.training
    student.eval()  # no dropout: the training run's random stream is left as it was
    try:
        ids = torch.ones(1, 1, dtype=torch.long, device=next(student.parameters()).device)  # (1, 1)
        student.base_model(input_ids=ids, output_hidden_states=True)
    finally:
        student.train(was_training)


def make_regressors(arch: StudentArch, teacher_hidden: int, device) -> torch.nn.ModuleList:
    """One linear map (student width -> teacher width) per hint pair."""
    return torch.nn.ModuleList(torch.nn.Linear(arch.hidden, teacher_hidden) for _ in arch.hints).to(device)


@dataclass
class Stage:
    """One stage of the loop: what it trains, how long, how fast."""
    number: int           # 1: hints on the cut student; 2: KD on the whole student
    steps: int            # optimizer steps
    lr: float             # peak learning rate
    params: list          # the tensors it trains
    hidden: bool          # whether it needs the teacher's hidden states


@contextmanager
def captured(modules: list[torch.nn.Module]):
    """A list that holds each module's output of the last forward pass run inside the block."""
    outputs: list = [None] * len(modules)
    handles = [m.register_forward_hook(lambda mod, args, out, i=i: outputs.__setitem__(i, out))
               for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def step_loss(stage: int, student, regressors, s_layers: list[int], batch: dict, t_logits: torch.Tensor,
              t_hidden: torch.Tensor | None, cfg: DistillConfig, relation: "Relation | None" = None) -> torch.Tensor:
    """The loss of one step: stage 1 the mean hint loss of the (cut) student's encoder; stage 2 the
    KD loss mixed with the hard labels' cross-entropy, plus the weighted hint loss and relation loss if any.

    t_logits: (B, C); t_hidden: (B, K, T, Ht), K = len(s_layers) (and, with `relation`, one more: the input of
    its teacher layer), or None -> scalar."""
    mask = batch["attention_mask"]  # (B, T)
    model = student.base_model if stage == 1 else student
    hinting = t_hidden is not None and (stage == 1 or bool(cfg.hint_weight))
    relating = stage == 2 and relation is not None and bool(cfg.relation_weight)
    with captured(relation.student_qkv(student) if relating else []) as student_qkv:
        out = model(**model_inputs(student, batch), output_hidden_states=hinting)
    hints = 0.0
    if hinting:
        hints = sum(hint_loss(out.hidden_states[s], t_hidden[:, k], regressors[k], mask)
                    for k, s in enumerate(s_layers)) / len(s_layers)
    if stage == 1:
        return hints
    labels = batch["labels"]  # (B,); an augmented example's hard label is the teacher's prediction
    labels = torch.where(labels == AUGMENTED_LABEL, t_logits.argmax(-1), labels)
    loss = (cfg.kd_alpha * kd_loss(out.logits, t_logits, cfg.temperature)
            + (1 - cfg.kd_alpha) * F.cross_entropy(out.logits, labels))
    if cfg.hint_weight:
        loss = loss + cfg.hint_weight * hints
    if relating:
        loss = loss + cfg.relation_weight * relation_loss(tuple(student_qkv), relation.teacher_qkv(t_hidden[:, -1]),
                                                          mask, relation.heads)
    return loss


def distill(student, arch: StudentArch, teacher: TeacherSource, teacher_hidden: int, train: Encoded,
            val: Encoded, spec: TaskSpec, cfg: DistillConfig, device: torch.device,
            on_eval: Callable[[int, dict], bool] | None = None, show_progress: bool = True,
            checkpoint: Checkpointer | None = None,
            on_step: Callable[[int, dict], None] | None = None, relation: Relation | None = None) -> DistillResult:
    """Run stage 1 then stage 2; `on_eval(step, metrics)` returning True stops the run.

    With cfg.relation_weight, `relation` gives the layers of the relation loss, and the teacher source's last
    hidden state is its teacher layer's input.

    `on_step(stage, batch)` (stage 1 or 2, the step's padded batch) is called after every
    optimizer step: a hook for timers and profilers (bench speed).

    With `checkpoint`, the run starts from its last saved state, if any, and saves its state
    every `checkpoint.every` steps and after the last one.
    """
    if cfg.relation_weight and relation is None:
        raise ValueError("relation_weight > 0 needs the relation's layers (distill(..., relation=...))")
    torch.manual_seed(cfg.seed)
    student.to(device).train()
    regressors = make_regressors(arch, teacher_hidden, device)
    s_layers = [s for s, _ in arch.hints]
    layers = encoder_layers(student)  # all of them, even while stage 1 cuts some off
    stream = batch_stream(train.lengths(), cfg.batch_size, cfg.seed)
    result, seen = DistillResult(metrics={}), 0
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        result, seen = restore_training_state(state, student, regressors, stream)
    stages = [Stage(1, cfg.hint_steps if s_layers else 0, cfg.hint_lr,
                    list(student.parameters()) + list(regressors.parameters()), hidden=True),
              Stage(2, cfg.kd_steps, cfg.lr,
                    list(student.parameters()) + (list(regressors.parameters()) if cfg.hint_weight else []),
                    hidden=bool(cfg.hint_weight or cfg.relation_weight))]

    with progress(show_progress) as bar:
        for stage in stages:
            done = result.hint_steps if stage.number == 1 else result.kd_steps
            if done >= stage.steps:
                continue
            opt = make_optimizer(stage.params, cfg.weight_decay)
            if state is not None and state["stage"] == stage.number:  # resumed within this stage
                opt.load_state_dict(state["optimizer"])
            task = bar.add_task("stage 1: hints" if stage.number == 1 else "stage 2: KD", total=stage.steps,
                                info="", completed=done)
            with truncated(student, max(s_layers)) if stage.number == 1 else nullcontext():
                for step in range(done + 1, stage.steps + 1):  # this stage's steps once this one is taken
                    start = time.perf_counter()
                    for group in opt.param_groups:
                        group["lr"] = learning_rate(step - 1, stage.lr, stage.steps, cfg.warmup)
                    idx = next(stream)
                    batch = to_device(collate(train, idx), device)
                    t_logits, t_hidden = teacher(idx, batch, stage.hidden)
                    loss = step_loss(stage.number, student, regressors, s_layers, batch, t_logits, t_hidden, cfg,
                                     relation)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(stage.params, GRAD_CLIP)
                    last = step == stage.steps
                    evaluating = stage.number == 2 and (step % cfg.eval_every == 0 or last)
                    taken = result.hint_steps + result.kd_steps + 1  # steps of both stages, this one included
                    saving = checkpoint is not None and (taken % checkpoint.every == 0 or stage.number == 2 and last)
                    # Reading the loss waits for the device: only every LOG_EVERY steps, at a stage's ends, and
                    # before an evaluation or a save (diverged weights give a non-finite loss the next step).
                    if (step - 1) % LOG_EVERY == 0 or last or evaluating or saving:
                        value = loss.item()
                        if not math.isfinite(value):  # one NaN/inf step poisons every weight: stop, saying why
                            raise FloatingPointError(
                                f"non-finite loss ({value}) after {result.hint_steps} hint and {result.kd_steps} "
                                "KD steps: training diverged (learning rate too high?)")
                        bar.update(task, info=f"{'hint' if stage.number == 1 else 'loss'} {value:.4f}")
                        if stage.number == 1:
                            result.hint_curve.append((step, value))
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    seen += len(batch["labels"])
                    if stage.number == 1:
                        result.hint_steps = step
                    else:
                        result.kd_steps = step
                    result.train_seconds += time.perf_counter() - start
                    bar.update(task, advance=1)
                    if on_step is not None:
                        on_step(stage.number, batch)
                    if evaluating:
                        result.metrics = evaluate(student, spec, val, device, cfg.eval_examples)
                        result.curve.append((step, result.metrics["metric"]))
                        bar.update(task, info=f"val {spec.metric} {result.metrics['metric']:.4f}")
                        if on_eval is not None and on_eval(step, result.metrics):
                            result.stopped_at = step
                            break  # stage 2 is the last
                    if saving:
                        checkpoint.save(training_state(stage.number, student, layers, regressors, opt, result, seen))
    result.examples_per_s = seen / result.train_seconds if result.train_seconds else 0.0
    return result


# ---------------------------------------------------------------------------
# Checkpoints: the state a run needs to go on after an interruption

class Checkpointer(Protocol):
    """Keeps `distill`'s state between runs; the caller decides where (distill writes no files)."""

    every: int  # optimizer steps (stages 1 and 2 counted together) between saves

    def load(self) -> dict | None:
        """The last state saved, or None: start at the first step."""

    def save(self, state: dict) -> None:
        """Keep `state` (tensors and plain values). Its tensors are the live ones: write or copy them now."""


def training_state(stage: int, student, layers: torch.nn.ModuleList, regressors, opt, result: DistillResult,
                   seen: int) -> dict:
    """Everything a resumed run needs to go on exactly as this one would have."""
    weights = student.state_dict()
    # during stage 1 `truncated` hides the cut layers from the student: take them all from `layers`
    weights.update({f"bert.encoder.layer.{k}": v for k, v in layers.state_dict().items()})
    return {"stage": stage, "student": weights, "regressors": regressors.state_dict(),
            "optimizer": opt.state_dict(), "result": result.to_dict(),
            "seen": seen, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_training_state(state: dict, student, regressors, stream) -> tuple[DistillResult, int]:
    """Put a `training_state` back: weights, counters and random stream; the batch stream skips the
    batches already used. Returns (result so far, examples seen)."""
    student.load_state_dict(state["student"])
    regressors.load_state_dict(state["regressors"])
    result = DistillResult(**state["result"])
    for _ in range(result.hint_steps + result.kd_steps):
        next(stream)
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return result, state["seen"]

