"""MiniLM-v2's self-attention relation loss (pure) and the layers it reads: the relations of the queries,
keys and values of one student layer and one teacher layer, compared by KL divergence (distill.py adds it
to the KD stage with weight `relation_weight`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastbert_nas.config import StudentArch
from fastbert_nas.core.family import encoder_layers, part, parts

RELATION_MASK = -1e4     # added to the relation scores of padding keys: softmax weight 0, gradients finite
RELATION_HEADS_MAX = 16  # relation heads of the relation loss at most (MiniLM-v2 uses 12 to 64)


def relation_heads(student_hidden: int, teacher_hidden: int) -> int:
    """The most relation heads (at most RELATION_HEADS_MAX) that divide both widths."""
    common = math.gcd(student_hidden, teacher_hidden)
    return max(r for r in range(1, RELATION_HEADS_MAX + 1) if common % r == 0)


def _log_relations(x: torch.Tensor, heads: int, bias: torch.Tensor) -> torch.Tensor:
    """log softmax(X_r X_rᵀ / √d) per relation head r. x: (B, T, H); bias: (B, 1, 1, T) -> (B, R, T, T)."""
    b, t, h = x.shape
    d = h // heads
    xr = x.float().view(b, t, heads, d).transpose(1, 2)  # (B, R, T, d)
    return F.log_softmax(xr @ xr.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)


def relation_loss(student_qkv: tuple[torch.Tensor, ...], teacher_qkv: tuple[torch.Tensor, ...], mask: torch.Tensor,
                  heads: int) -> torch.Tensor:
    """MiniLM-v2's multi-head self-attention relation loss (Wang et al. 2021): the queries, keys and values of
    a student layer and a teacher layer, each split into `heads` relation heads, give relations
    softmax(X Xᵀ/√d) over the real tokens; KL(teacher || student) per real query, averaged over queries, heads,
    and the three. Widths may differ (no regressor): `heads` must divide both.

    student_qkv: 3 x (B, T, Hs); teacher_qkv: 3 x (B, T, Ht); mask: (B, T), 1 for real tokens -> scalar, 0 when
    the relations are equal."""
    real = mask.bool()
    bias = torch.zeros(real.shape, device=mask.device).masked_fill(~real, RELATION_MASK)[:, None, None, :]
    queries = real[:, None, :, None].expand(-1, heads, -1, 1).squeeze(-1)  # (B, R, T)
    total = 0.0
    for s, t in zip(student_qkv, teacher_qkv):
        log_s, log_t = _log_relations(s, heads, bias), _log_relations(t, heads, bias)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # (B, R, T): padding keys weigh exp(-1e4) = 0
        total = total + kl[queries].mean()
    return total / len(student_qkv)


@dataclass
class Relation:
    """The layers of the relation loss: the student's `student_layer` and the query, key and value projections
    of the teacher's `teacher_layer` (1-based), which turn that layer's input (the teacher source's last hidden
    state) into queries, keys and values."""

    student_layer: int
    teacher_projections: tuple[torch.nn.Module, ...]  # the teacher layer's query, key and value Linear modules
    heads: int                           # relation heads: relation_heads(student width, teacher width)

    def student_qkv(self, student) -> list[torch.nn.Module]:
        layer, p = encoder_layers(student)[self.student_layer - 1], parts(student)
        return [part(layer, p.query), part(layer, p.key), part(layer, p.value)]

    @torch.no_grad()
    def teacher_qkv(self, layer_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, T, Ht) -> the teacher layer's queries, keys and values, 3 x (B, T, Ht)."""
        x = layer_input.to(self.teacher_projections[0].weight.dtype)
        return tuple(linear(x) for linear in self.teacher_projections)


def teacher_relation(teacher, arch: StudentArch) -> Relation:
    """The relation loss of `arch` with `teacher` (core/family.py's): its last hint pair's layers."""
    s_layer, t_layer = arch.hints[-1]
    layer, p = encoder_layers(teacher)[t_layer - 1], parts(teacher)
    return Relation(s_layer, (part(layer, p.query), part(layer, p.key), part(layer, p.value)),
                    relation_heads(arch.hidden, teacher.config.hidden_size))
