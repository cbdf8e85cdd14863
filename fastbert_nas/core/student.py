"""StudentArch -> a classifier of the teacher's family (core/family.py), initialized at random or from the teacher.

Teacher init (structured pruning): every student layer takes the weights of a
teacher layer chosen along the hint mapping; widths are cut to the student's by
keeping the most important hidden dimensions, attention heads and FFN neurons,
scored on a calibration batch; the embeddings are cut the same way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from fastbert_nas.config import INITS, StudentArch, UserError
from fastbert_nas.core.family import encoder_layers, model_inputs, part, parts, shaped_config


def student_config(arch: StudentArch, teacher_config):
    """The teacher's config (its family's class) with the student's shape (vocabulary, positions, labels kept)."""
    return shaped_config(teacher_config, arch.layers, arch.hidden, arch.heads, arch.ffn)


def layer_sources(arch: StudentArch, teacher_layers: int) -> list[int]:
    """The teacher layer (1-based) whose weights each student layer takes.

    Piecewise-linear through (0, 0), the hint pairs and (student depth, teacher
    depth), rounded up: hinted layers take their own teacher layer; a student
    deeper than the teacher reuses teacher layers. E.g. 8 layers with hints
    2:1,4:2,6:4,8:6 -> [1, 1, 2, 2, 3, 4, 5, 6].
    """
    points = [(0, 0), *arch.hints]
    if points[-1][0] != arch.layers:
        points.append((arch.layers, teacher_layers))
    sources = []
    for s in range(1, arch.layers + 1):
        (s0, t0), (s1, t1) = next((a, b) for a, b in zip(points, points[1:]) if a[0] < s <= b[0])
        t = t0 + (t1 - t0) * (s - s0) / (s1 - s0)
        sources.append(min(teacher_layers, max(1, math.ceil(t - 1e-9))))
    return sources


def build_student(arch: StudentArch, teacher, init: str = "teacher", calibration: dict | None = None, seed: int = 0,
                  scores: dict | None = None):
    """A new student on the teacher's device; `calibration` (a padded batch) scores the pruning,
    unless `scores` (its `importance`, the same for every student) are given."""
    if init not in INITS:
        raise UserError(f"--init {init!r}: choose one of {', '.join(INITS)}")
    arch.validate(teacher.config.num_hidden_layers)
    torch.manual_seed(seed)
    student = AutoModelForSequenceClassification.from_config(student_config(arch, teacher.config))
    student.to(next(teacher.parameters()).device)
    if init == "teacher":
        if scores is None and calibration is None:
            raise ValueError("teacher init needs a calibration batch or its importance scores")
        copy_from_teacher(student, teacher, arch, scores if scores is not None else importance(teacher, calibration))
    return student


# ---------------------------------------------------------------------------
# Importance scores on a calibration batch

@torch.inference_mode()
def importance(teacher, batch: dict) -> dict[str, object]:
    """Scores of the teacher's hidden dimensions, heads and FFN neurons.

    hidden: (H,) mean |activation| of the residual stream over real tokens and layers.
    heads[l]: (A,) mean norm of each head's contribution to the attention output.
    ffn[l]: (I,) mean |activation| of each neuron times the norm of its output weights.
    """
    cfg = teacher.config
    dh = cfg.hidden_size // cfg.num_attention_heads
    mask = batch["attention_mask"].bool()  # (B, T)
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    p = parts(teacher)
    for i, layer in enumerate(encoder_layers(teacher)):
        for name, mod in (("ctx", part(layer, p.attn_out)), ("act", part(layer, p.ffn_out))):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, key=f"{name}{i}": captured.__setitem__(key, args[0][mask])))
    was_training = teacher.training
    teacher.eval()
    try:
        out = teacher(**model_inputs(teacher, batch),
                      output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
        teacher.train(was_training)
    hidden = torch.stack([h[mask] for h in out.hidden_states]).abs().mean((0, 1))  # (H,)
    heads, ffn = [], []
    for i, layer in enumerate(encoder_layers(teacher)):
        ctx = captured[f"ctx{i}"]                                            # (N, H) real tokens
        w_o = part(layer, p.attn_out).weight                                 # (H, H)
        per_head = [(ctx[:, a * dh:(a + 1) * dh] @ w_o[:, a * dh:(a + 1) * dh].T).norm(dim=-1).mean()
                    for a in range(cfg.num_attention_heads)]
        heads.append(torch.stack(per_head))                                  # (A,)
        act = captured[f"act{i}"]                                            # (N, I)
        ffn.append(act.abs().mean(0) * part(layer, p.ffn_out).weight.norm(dim=0))  # (I,)
    return {"hidden": hidden, "heads": heads, "ffn": ffn}


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores (ties to the lower index), in ascending order."""
    order = np.argsort(-scores.float().cpu().numpy(), kind="stable")
    return torch.as_tensor(np.sort(order[: min(k, len(order))]))


# ---------------------------------------------------------------------------
# Copying cut teacher weights

@torch.no_grad()
def copy_cut(dst: torch.Tensor, src: torch.Tensor, rows=None, cols=None, scale: float = 1.0) -> None:
    """dst[:r, :c] = src[rows][:, cols] * scale; a wider student keeps random values beyond."""
    if rows is not None:
        src = src.index_select(0, rows.to(src.device))
    if cols is not None:
        src = src.index_select(1, cols.to(src.device))
    dst[tuple(slice(0, n) for n in src.shape)] = src * scale


def copy_from_teacher(student, teacher, arch: StudentArch, scores: dict) -> None:
    """Fill the student with cut teacher weights (see the module docstring)."""
    tcfg = teacher.config
    dh_t = tcfg.hidden_size // tcfg.num_attention_heads
    dh_s = arch.hidden // arch.heads
    keep = top_k(scores["hidden"], arch.hidden)                             # kept hidden dims
    q_scale = math.sqrt(dh_s / dh_t)  # keep per-teacher-head attention logits when heads merge

    def cut_layernorm(dst, src):
        copy_cut(dst.weight, src.weight, keep)
        copy_cut(dst.bias, src.bias, keep)

    sb, tb = student.base_model, teacher.base_model
    project = getattr(tb, "embeddings_project", None)  # ELECTRA embedding narrower than its width
    for name in [n for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")
                 if hasattr(tb.embeddings, n)]:  # DistilBERT has no token types
        copy_cut(getattr(sb.embeddings, name).weight, getattr(tb.embeddings, name).weight,
                 cols=None if project is not None else keep)
    if project is None:
        cut_layernorm(sb.embeddings.LayerNorm, tb.embeddings.LayerNorm)
    else:  # the embeddings whole, their projection cut to the kept dims
        copy_cut(sb.embeddings.LayerNorm.weight, tb.embeddings.LayerNorm.weight)
        copy_cut(sb.embeddings.LayerNorm.bias, tb.embeddings.LayerNorm.bias)
        if getattr(sb, "embeddings_project", None) is not None:  # (a student as wide as the embedding has
            copy_cut(sb.embeddings_project.weight, project.weight, keep)  # none: its layers start from the
            copy_cut(sb.embeddings_project.bias, project.bias, keep)      # embeddings unprojected)

    p = parts(teacher)
    for s, t in enumerate(layer_sources(arch, tcfg.num_hidden_layers)):
        sl, tl = encoder_layers(student)[s], encoder_layers(teacher)[t - 1]
        # attention: whole heads in order of importance, as many dims as the student's width
        attn = top_k(scores["heads"][t - 1].repeat_interleave(dh_t), arch.hidden)
        for name in ("query", "key", "value"):
            src, dst = part(tl, getattr(p, name)), part(sl, getattr(p, name))
            scale = q_scale if name == "query" else 1.0
            copy_cut(dst.weight, src.weight, attn, keep, scale)
            copy_cut(dst.bias, src.bias, attn, scale=scale)
        copy_cut(part(sl, p.attn_out).weight, part(tl, p.attn_out).weight, keep, attn)
        copy_cut(part(sl, p.attn_out).bias, part(tl, p.attn_out).bias, keep)
        cut_layernorm(part(sl, p.attn_norm), part(tl, p.attn_norm))
        # feed-forward: the most important neurons
        neurons = top_k(scores["ffn"][t - 1], arch.ffn)
        copy_cut(part(sl, p.ffn_in).weight, part(tl, p.ffn_in).weight, neurons, keep)
        copy_cut(part(sl, p.ffn_in).bias, part(tl, p.ffn_in).bias, neurons)
        copy_cut(part(sl, p.ffn_out).weight, part(tl, p.ffn_out).weight, keep, neurons)
        copy_cut(part(sl, p.ffn_out).bias, part(tl, p.ffn_out).bias, keep)
        cut_layernorm(part(sl, p.out_norm), part(tl, p.out_norm))

    if getattr(tb, "pooler", None) is not None:  # BERT: the pooler, then the classifier
        s_dense, t_dense, s_out, t_out = sb.pooler.dense, tb.pooler.dense, student.classifier, teacher.classifier
    elif hasattr(teacher, "pre_classifier"):  # DistilBERT: pre_classifier, then the classifier
        s_dense, t_dense = student.pre_classifier, teacher.pre_classifier
        s_out, t_out = student.classifier, teacher.classifier
    else:  # RoBERTa, ELECTRA: the classifier's dense layer, then its out_proj
        s_dense, t_dense = student.classifier.dense, teacher.classifier.dense
        s_out, t_out = student.classifier.out_proj, teacher.classifier.out_proj
    copy_cut(s_dense.weight, t_dense.weight, keep, keep)
    copy_cut(s_dense.bias, t_dense.bias, keep)
    copy_cut(s_out.weight, t_out.weight, cols=keep)
    copy_cut(s_out.bias, t_out.bias)
