"""More transfer data for distillation: TinyBERT-style word replacement (Jiao et al. 2020).

A student distilled on SST-2 learns the teacher's behaviour on the train file's examples,
most of them short phrases, and is scored on full sentences. Augmentation makes new
sentences from the longer train examples: each whole word is replaced, with probability
`p`, by one of its `k` nearest neighbours in the teacher's word-embedding space (TinyBERT
uses GloVe neighbours for that; the teacher's own embeddings need no download). The new
examples carry no label: the teacher's soft targets teach them, and their hard label is the
teacher's prediction (`AUGMENTED_LABEL` marks them; distill.py resolves it).

Pure numpy on token ids: no tokenization, no model.
"""

from __future__ import annotations

import re

import numpy as np

from fastbert_nas.config import DistillConfig
from fastbert_nas.core.tasks import Encoded

AUGMENTED_LABEL = -1       # label of an augmented example: "whatever the teacher predicts"
AUGMENT_MIN_TOKENS = DistillConfig.augment_min_tokens  # word pieces, [CLS] and [SEP] included (16: only
                                                       # sentence-like examples are copied)
AUGMENT_P = 0.4            # probability of replacing each whole word (TinyBERT's p_t)
AUGMENT_NEIGHBOURS = 15    # candidates per word: its nearest neighbours by cosine (TinyBERT's K)
AUGMENT_SEED = 0           # fixed: the augmented set, and so its teacher cache, is the same every run
AUGMENT_MAX_COPIES = 20    # copies per example at most: TinyBERT's for small tasks
NEIGHBOUR_CHUNK = 2048     # words per similarity matmul (bounds memory to chunk x vocabulary floats)

WORD = re.compile(r"^[a-z]+$")  # a whole, lower-case word piece: not "##ing", punctuation or [unused0]


def word_ids(vocab: list[str]) -> np.ndarray:
    """Ids of the vocabulary entries that are whole words (replaceable, and replacements)."""
    return np.array([i for i, tok in enumerate(vocab) if WORD.match(tok)], dtype=np.int64)


def neighbours(embeddings: np.ndarray, words: np.ndarray, queries: np.ndarray, k: int) -> dict[int, np.ndarray]:
    """For each query id, the `k` ids among `words` nearest to it by cosine similarity (itself left out).

    embeddings: (V, H) input word embeddings; words, queries: ids -> {query id: (k,) ids}."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)  # (V, H)
    cands = unit[words].T                                                                   # (H, W)
    out = {}
    for start in range(0, len(queries), NEIGHBOUR_CHUNK):
        q = queries[start : start + NEIGHBOUR_CHUNK]
        sims = unit[q] @ cands                                                              # (Q, W)
        sims[words[None, :] == q[:, None]] = -np.inf                                        # not itself
        top = np.argpartition(-sims, k, axis=1)[:, :k]                                      # (Q, k), unordered
        out.update(zip(q.tolist(), words[top]))
    return out


def copies_for(enc: Encoded, copies: int, min_tokens: int = AUGMENT_MIN_TOKENS, target: int = 0) -> int:
    """Copies per augmentable example (one of at least `min_tokens` ids): `copies`, or with `target` > 0 as
    many as make about `target` augmented examples, at least `copies` and at most AUGMENT_MAX_COPIES: small
    training sets get more."""
    if target <= 0:
        return copies
    n = sum(1 for ids in enc.ids if len(ids) >= min_tokens)
    return max(copies, min(AUGMENT_MAX_COPIES, round(target / n))) if n else 0


def augment(enc: Encoded, vocab: list[str], embeddings: np.ndarray, copies: int,
            min_tokens: int = AUGMENT_MIN_TOKENS, p: float = AUGMENT_P, k: int = AUGMENT_NEIGHBOURS,
            seed: int = AUGMENT_SEED) -> Encoded:
    """`copies` word-replaced variants of every example of at least `min_tokens` ids, labelled
    AUGMENTED_LABEL (the originals are not included). A word is replaceable when it is one whole
    word piece (the next piece is not a "##" continuation)."""
    words = word_ids(vocab)
    is_word = np.zeros(len(vocab), dtype=bool)
    is_word[words] = True
    is_cont = np.array([tok.startswith("##") for tok in vocab])
    long = [ids for ids in enc.ids if len(ids) >= min_tokens]
    if not long or copies <= 0:
        return Encoded([], np.zeros(0, dtype=np.int64), enc.sep_id)
    present = np.unique(np.concatenate(long))
    table = neighbours(embeddings, words, present[is_word[present]], k)
    rng = np.random.default_rng(seed)
    out = []
    for ids in long:
        nxt = np.append(ids[1:], 0)
        replaceable = np.flatnonzero(is_word[ids] & ~is_cont[nxt])   # positions of whole words
        for _ in range(copies):
            new = ids.copy()
            pick = replaceable[rng.random(len(replaceable)) < p]
            if len(pick):
                new[pick] = [table[i][j] for i, j in zip(ids[pick].tolist(), rng.integers(k, size=len(pick)))]
            out.append(new)
    return Encoded(out, np.full(len(out), AUGMENTED_LABEL, dtype=np.int64), enc.sep_id)  # separators stay put


def concat(a: Encoded, b: Encoded) -> Encoded:
    return Encoded(a.ids + b.ids, np.concatenate([a.labels, b.labels]), a.sep_id if a.sep_id is not None else b.sep_id)
