"""The tasks' metrics: pure functions on integer arrays of predicted and gold class ids.
"""

from __future__ import annotations

import numpy as np

from fastbert_nas.config import TaskSpec


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean())


def mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation (binary or multi-class, Gorodkin's form)."""
    k = int(max(pred.max(initial=0), gold.max(initial=0))) + 1
    c = np.zeros((k, k), dtype=np.float64)
    np.add.at(c, (gold, pred), 1)
    t, p, s = c.sum(1), c.sum(0), c.sum()
    num = np.trace(c) * s - t @ p
    den = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float(num / den) if den else 0.0


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    scores = []
    for c in np.unique(gold):
        tp = np.sum((pred == c) & (gold == c))
        denom = np.sum(pred == c) + np.sum(gold == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of class 1 (MRPC's paraphrases)."""
    tp = np.sum((pred == 1) & (gold == 1))
    denom = np.sum(pred == 1) + np.sum(gold == 1)
    return float(2 * tp / denom) if denom else 0.0


def majority(pred: np.ndarray, gold: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent gold label (ignores pred)."""
    return float(np.bincount(gold).max() / len(gold))


METRICS = {"accuracy": accuracy, "mcc": mcc, "f1": f1, "macro_f1": macro_f1, "majority": majority}


def score(spec: TaskSpec, pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """The task's metric under the key 'metric', plus every metric by name."""
    out = {name: METRICS[name](pred, gold) for name in (spec.metric, *spec.extra_metrics)}
    out["metric"] = out[spec.metric]
    return out


def majority_score(spec: TaskSpec, gold: np.ndarray) -> dict[str, float]:
    """`score` of always predicting the most frequent class of `gold` (the majority-class level a student
    that learned nothing stays at: accuracy = that class's share, MCC = 0)."""
    return score(spec, np.full(len(gold), np.bincount(gold).argmax()), gold)


def others(scores: dict | None, main: str) -> dict[str, float]:
    """The figures of a `score` result beside the task's own metric `main` (macro-F1 of a multi-class task,
    accuracy beside MRPC's F1): what show, the plots, --pick and the model card print next to it. The
    'metric' alias and the majority level (a property of the rows, not of a model) are left out."""
    return {k: v for k, v in (scores or {}).items() if k not in ("metric", main, "majority")}


def others_text(scores: dict | None, main: str) -> str:
    """`others` as 'macro_f1 0.7412, accuracy 0.8012' ('' when there are none)."""
    return ", ".join(f"{k} {v:.4f}" for k, v in others(scores, main).items())
