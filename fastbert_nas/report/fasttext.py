"""A fastText classifier (Joulin et al. 2017) on a study's task split: the cheap reference point.

Trained on the same examples the study's students are distilled on (pipeline.distill_rows: the
first `examples` of the fixed shuffle of the train split) and scored with the task's metric on the
same validation split. Its latency is in the students' unit, ms per example at batch 1: one
`predict` call per validation example, the median over them, one thread. There are no 128 padded
tokens in fastText, so each example is timed at its real length. fastText has no FLOPs figure in
the students' sense (a bag of n-gram embeddings, averaged, then one small linear layer).

The result is cached as JSON under RESULTS/fasttext/, keyed by task, examples and the data's
fingerprint, so that `plot` trains it once per task split.

The package is fasttext-wheel (PyPI's prebuilt wheel of the official bindings). Its `predict` of a
single string breaks under NumPy 2 (`np.array(copy=False)`), so strings are passed as one-item lists.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fastbert_nas.core.metrics import score
from fastbert_nas.core.pipeline import distill_rows
from fastbert_nas.core.tasks import TaskData, as_text, load_task, resolve_task

FT_EPOCHS = 10          # passes over the training examples
FT_LR = 0.5             # learning rate (fastText's text-classification tutorial)
FT_DIM = 100            # word-vector size
FT_WORD_NGRAMS = 2      # word bigrams, as in Joulin et al. 2017
FT_MIN_COUNT = 1        # keep every word seen in training
FT_THREADS = 1          # one thread: reproducible training, and the thread count of its latency
FT_SEED = 0
LABEL_PREFIX = "__label__"
PUNCTUATION = re.compile(r"([.!?,;:()\"/])")  # split off, so that "good." and "good" are one word


def clean(text) -> str:
    """One line, lower case, punctuation split off (fastText splits on whitespace only); a sentence pair's two
    texts joined by a separator word."""
    return " ".join(PUNCTUATION.sub(r" \1 ", as_text(text, " ||| ").lower()).split())


def train(texts: list[str], labels: np.ndarray):
    """A supervised fastText model on (texts, integer labels)."""
    import fasttext

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text("".join(f"{LABEL_PREFIX}{y} {clean(x)}\n" for x, y in zip(texts, labels.tolist())))
        return fasttext.train_supervised(str(path), epoch=FT_EPOCHS, lr=FT_LR, dim=FT_DIM,
                                         wordNgrams=FT_WORD_NGRAMS, minCount=FT_MIN_COUNT, thread=FT_THREADS,
                                         seed=FT_SEED, verbose=0)


def predict_timed(model, texts: list[str]) -> tuple[np.ndarray, float]:
    """(predicted class ids, median ms per example at batch 1)."""
    pred, seconds = np.zeros(len(texts), dtype=np.int64), []
    for i, text in enumerate(texts):
        line = clean(text)
        start = time.perf_counter()
        labels, _ = model.predict([line])  # a one-item list (see the module's docstring)
        seconds.append(time.perf_counter() - start)
        pred[i] = int(labels[0][0][len(LABEL_PREFIX):])
    return pred, statistics.median(seconds) * 1e3


def evaluate_fasttext(data: TaskData, examples: int) -> dict:
    """Train on the study's training examples, score and time on its validation split."""
    rows = distill_rows(data, examples)
    start = time.perf_counter()
    model = train(rows.texts, rows.labels)
    train_s = time.perf_counter() - start
    pred, latency_ms = predict_timed(model, data.val.texts)
    return {"task": data.spec.name, "examples": len(rows), "val_examples": len(data.val),
            "val": score(data.spec, pred, data.val.labels), "latency_ms": latency_ms, "latency_batch": 1,
            "latency_threads": FT_THREADS, "latency_device": "cpu", "train_s": train_s,
            "data_fingerprint": data.fingerprint(),
            "settings": {"epoch": FT_EPOCHS, "lr": FT_LR, "dim": FT_DIM, "wordNgrams": FT_WORD_NGRAMS,
                         "minCount": FT_MIN_COUNT, "seed": FT_SEED}}


def fasttext_reference(task: str, examples: int, results: Path, data_dir: str | None = None,
                       text_column: str | None = None, label_column: str | None = None) -> dict:
    """The cached fastText result for this task split, or a new one (written under RESULTS/fasttext/)."""
    data = load_task(resolve_task(task, text_column, label_column), data_dir)
    path = Path(results) / "fasttext" / f"{data.spec.name}-{examples}-{data.fingerprint()}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = evaluate_fasttext(data, examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)  # never half-written
    return result
