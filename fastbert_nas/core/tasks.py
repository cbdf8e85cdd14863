"""Tasks: the task table, loading (local GLUE-layout folder or the hub), splits,
tokenization, batching and metrics.

Splits: `train` and `val` are carved deterministically from the task's train file
(trials are scored on `val`); `dev` is the official dev set, used only for final
figures (teacher score, exported students).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fastbert_nas.config import TaskSpec, UserError

DATA_ENV = "FASTBERT_NAS_DATA"   # environment variable naming the GLUE-layout data folder
VAL_FRACTION = 0.1               # share of the train file carved out as the validation split
VAL_MAX = 2000                   # ... but at most this many rows: enough to rank students
VAL_SENTENCES = 1000             # whole sentences of a phrase-structured train file (SST-2) carved as validation:
                                 # each takes its phrases out of train (about 11 rows a sentence on SST-2), and
                                 # a trial scores 1,000 validation rows
SPLIT_SEED = 0                   # fixed: the train/val carve must never change between runs

TASKS: dict[str, TaskSpec] = {
    # GLUE's SST-2 train file holds every phrase of its sentences as a row of its own.
    "sst2": TaskSpec("sst2", "accuracy", max_len=64, glue_dir="SST-2", hub=("nyu-mll/glue", "sst2"), phrases=True),
    "cola": TaskSpec("cola", "mcc", max_len=64, glue_dir="CoLA",
                     columns=("source", "label", "mark", "sentence"), hub=("nyu-mll/glue", "cola")),
    # The local subset is 84% positive: report macro-F1 and the majority baseline beside accuracy.
    # Reviews run past 128 tokens (a quarter of the local dev set) and often give their verdict at the
    # end: keep their last 96 tokens after the first 32 (title and opening). The local files hold HTML
    # line breaks.
    "amazon": TaskSpec("amazon", "accuracy", max_len=128, glue_dir="amazon", hub=("amazon_polarity",),
                       hub_text_columns=("title", "content"), hub_dev_split="test",
                       extra_metrics=("macro_f1", "majority"), strip_html=True, tail_share=0.75),
    # Sentence pairs (paraphrase or not); GLUE reports F1 of the paraphrase class beside accuracy.
    "mrpc": TaskSpec("mrpc", "f1", max_len=128, glue_dir="MRPC", text_column="#1 String,#2 String",
                     label_column="Quality", hub=("nyu-mll/glue", "mrpc"), hub_text_columns=("sentence1", "sentence2"),
                     extra_metrics=("accuracy",)),
    # Entailment pairs, from the hub or a GLUE-layout folder (none ships in ../shared/data).
    "qnli": TaskSpec("qnli", "accuracy", max_len=128, glue_dir="QNLI", text_column="question,sentence",
                     labels=("entailment", "not_entailment"), hub=("nyu-mll/glue", "qnli"),
                     hub_text_columns=("question", "sentence")),
    "rte": TaskSpec("rte", "accuracy", max_len=128, glue_dir="RTE", text_column="sentence1,sentence2",
                    labels=("entailment", "not_entailment"), hub=("nyu-mll/glue", "rte"),
                    hub_text_columns=("sentence1", "sentence2")),
}


@dataclass
class Split:
    """Texts (of a sentence-pair task: (first, second) tuples) and integer labels of one split."""

    texts: list
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "Split":
        return Split([self.texts[i] for i in idx], self.labels[idx])


@dataclass
class TaskData:
    spec: TaskSpec
    train: Split
    val: Split
    dev: Split
    source: str  # where the rows came from, for manifests and messages

    def fingerprint(self) -> str:
        """Hash of every text and label: changes when the data changes."""
        h = hashlib.sha256()
        for split in (self.train, self.val, self.dev):
            for text, label in zip(split.texts, split.labels.tolist()):
                h.update(f"{label}\t{as_text(text, chr(9))}\n".encode())
        return h.hexdigest()[:16]


# ---------------------------------------------------------------------------
# Resolving and loading

def resolve_task(task: str, text_column: str | None = None, label_column: str | None = None,
                 max_len: int | None = None) -> TaskSpec:
    """A built-in task name or a folder with train and dev files -> TaskSpec."""
    if task in TASKS:
        spec = TASKS[task]
        if text_column or label_column:
            raise UserError("--text-column/--label-column apply to custom tasks (--task PATH) only")
    elif os.path.isdir(task):
        spec = TaskSpec(name=Path(task).resolve().name, metric="accuracy", max_len=128, path=task,
                        text_column=text_column or "sentence", label_column=label_column or "label",
                        labels=(), extra_metrics=("macro_f1", "majority"))
    else:
        raise UserError(f"--task {task!r}: not a built-in task ({', '.join(TASKS)}) "
                        "nor a folder with train and dev TSV/CSV files")
    return replace(spec, max_len=max_len) if max_len else spec


def load_task(spec: TaskSpec, data_dir: str | None = None) -> TaskData:
    """Rows of a task: custom folder, else the local GLUE-layout folder, else the hub."""
    if spec.path:
        train, dev, labels = _load_custom(spec)
        spec = replace(spec, labels=labels)
        source = str(Path(spec.path).resolve())
    else:
        data_dir = data_dir or os.environ.get(DATA_ENV)
        local = Path(data_dir, spec.glue_dir) if data_dir else None
        if local is not None and (local / "train.tsv").exists():
            train = _read_table(local / "train.tsv", spec, spec.labels)
            dev = _read_table(local / "dev.tsv", spec, spec.labels)
            source = str(local.resolve())
        else:
            try:
                train, dev = _load_hub(spec)
            except Exception as exc:  # any hub failure: offline, missing package, no such set
                tried = (f"{local}/train.tsv (not found)" if local is not None
                         else f"no local folder (--data-dir or ${DATA_ENV} not set)")
                raise UserError(f"task {spec.name}: no data: tried {tried}, then the hub "
                                f"{'/'.join(spec.hub)} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
                                ) from None
            source = "hub:" + "/".join(spec.hub)
    if spec.strip_html:
        train, dev = strip_html(train), strip_html(dev)
    train, val = carve_val(train, dev, spec.phrases)
    return TaskData(spec, train, val, dev, source)


HTML_BREAK = re.compile(r"(?:\s*<br\s*/?>)+\s*", re.IGNORECASE)  # a run of breaks: one space


def strip_html(split: Split) -> Split:
    """HTML line breaks ("<br />") become single spaces."""
    return Split([HTML_BREAK.sub(" ", t).strip() for t in split.texts], split.labels)


def as_text(text, sep: str = " ") -> str:
    """A text, or the two texts of a pair joined by `sep`."""
    return sep.join(text) if isinstance(text, tuple) else text


def text_key(text) -> str:
    """What makes two texts (or pairs) the same: case and spacing aside."""
    return " ".join(as_text(text, " [SEP] ").lower().split())


def carve_val(train: Split, dev: Split | None = None, phrases: bool = False) -> tuple[Split, Split]:
    """(train, validation) carved from the train file, deterministically and without leaks:

    - a train row with the text of a dev row (text_key) leaves train: dev stays unseen;
    - validation takes whole groups of identical texts, in a fixed-seed order: no text straddles
      train and validation;
    - `phrases` (a train file holding the phrases of its sentences, as SST-2's does): validation takes
      whole sentences (texts that are no run of words of another text), and every train row that is a
      run of words of a validation sentence leaves train.
    """
    keys = [text_key(t) for t in train.texts]
    unseen = {text_key(t) for t in dev.texts} if dev is not None else set()
    groups: dict[str, list[int]] = {}   # text -> its rows, in file order
    for i, k in enumerate(keys):
        if k and k not in unseen:
            groups.setdefault(k, []).append(i)
    texts = list(groups)
    rows = sum(len(g) for g in groups.values())
    order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
    if phrases:
        chosen = whole_sentences(texts, order, min(int(rows * VAL_FRACTION), VAL_SENTENCES))
        val_rows = [i for k in chosen for i in groups[k]]
        out = set(chosen) | {p for k in chosen for p in word_runs(k)}
    else:
        n_val, val_rows, out = min(int(rows * VAL_FRACTION), VAL_MAX), [], set()
        for j in order:
            if len(val_rows) >= n_val:
                break
            val_rows += groups[texts[j]]
            out.add(texts[j])
    train_rows = [i for k, g in groups.items() if k not in out for i in g]
    if not val_rows or not train_rows:
        raise UserError(f"train split has {len(train)} rows ({rows} not in dev): too few to carve a validation split")
    return train.subset(np.sort(train_rows)), train.subset(np.sort(val_rows))


def word_runs(text: str) -> set[str]:
    """Every run of one or more consecutive words of `text` (a text_key)."""
    words = text.split()
    return {" ".join(words[a:b]) for a in range(len(words)) for b in range(a + 1, len(words) + 1)}


def whole_sentences(texts: list[str], order: np.ndarray, n: int) -> list[str]:
    """The first `n` texts in `order` that are no run of words of another text: whole sentences."""
    by_word: dict[str, list[int]] = {}
    for j, t in enumerate(texts):
        for w in set(t.split()):
            by_word.setdefault(w, []).append(j)
    chosen = []
    for j in order:
        if len(chosen) >= n:
            break
        t = texts[j]
        rarest = min(set(t.split()), key=lambda w: len(by_word[w]))  # any text holding t holds this word
        padded = f" {t} "
        if not any(o != j and padded in f" {texts[o]} " for o in by_word[rarest]):
            chosen.append(t)
    return chosen


def _load_custom(spec: TaskSpec) -> tuple[Split, Split, tuple[str, ...]]:
    folder = Path(spec.path)
    files = {}
    for split in ("train", "dev"):
        found = [folder / f"{split}.{ext}" for ext in ("tsv", "csv") if (folder / f"{split}.{ext}").exists()]
        if not found:
            raise UserError(f"{folder}: no {split}.tsv or {split}.csv")
        files[split] = found[0]
    raw_labels = _read_rows(files["train"], spec)[1]
    values = set(raw_labels)
    numeric = all(re.fullmatch(r"-?[0-9]+", v) for v in values)  # ASCII digits: int() reads them all
    labels = tuple(sorted(values, key=int) if numeric else sorted(values))
    if len(labels) < 2:
        raise UserError(f"{files['train']}: column {spec.label_column!r} has only one label value {labels}")
    return _read_table(files["train"], spec, labels), _read_table(files["dev"], spec, labels), labels


def _read_table(path: Path, spec: TaskSpec, labels: tuple[str, ...]) -> Split:
    texts, raw, lines = _read_rows(path, spec)
    index = {lab: i for i, lab in enumerate(labels)}
    ids = []
    for label, line in zip(raw, lines):
        if label not in index:
            raise UserError(f"{path} line {line}: unknown label {label!r}; expected one of {', '.join(labels)}")
        ids.append(index[label])
    return Split(texts, np.asarray(ids, dtype=np.int64))


def _read_rows(path: Path, spec: TaskSpec) -> tuple[list[str], list[str], list[int]]:
    """(texts, raw label strings, line numbers) of a TSV/CSV file, with one-line errors."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    delimiter = "," if path.suffix == ".csv" else "\t"
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE  # GLUE TSVs hold bare quotes
    texts, labels, lines = [], [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: drop a spreadsheet's BOM
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
            header = list(spec.columns) if spec.columns else next(reader, None)
            if header is None:
                raise UserError(f"{path}: empty file")
            if len(spec.text_columns) > 2:
                raise UserError(f"--text-column {spec.text_column!r}: one column, or two (a sentence pair)")
            for col in (*spec.text_columns, spec.label_column):
                if col not in header:
                    raise UserError(f"{path}: no column {col!r} in header {header}")
            tis, li = [header.index(c) for c in spec.text_columns], header.index(spec.label_column)
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise UserError(f"{path} line {reader.line_num}: expected {len(header)} fields "
                                    f"({', '.join(header)}), found {len(row)}")
                if not row[li].strip():
                    raise UserError(f"{path} line {reader.line_num}: empty {spec.label_column!r}")
                texts.append(row[tis[0]].strip() if len(tis) == 1 else tuple(row[i].strip() for i in tis))
                labels.append(row[li].strip())
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed {delimiter == ',' and 'CSV' or 'TSV'}: {exc}") from None
    if not texts:
        raise UserError(f"{path}: no data rows")
    return texts, labels, lines


def _load_hub(spec: TaskSpec) -> tuple[Split, Split]:
    """The same task from the Hugging Face hub, for users who can reach it."""
    import datasets

    ds = datasets.load_dataset(*spec.hub)

    def to_split(part) -> Split:
        cols = [part[c] for c in spec.hub_text_columns]
        if spec.pairs:
            texts = [tuple(t.strip() for t in parts) for parts in zip(*cols)]
        else:
            texts = [" . ".join(t.strip() for t in parts) for parts in zip(*cols)]
        return Split(texts, np.asarray(part["label"], dtype=np.int64))

    return to_split(ds["train"]), to_split(ds[spec.hub_dev_split])


# ---------------------------------------------------------------------------
# Tokenization and batching

@dataclass
class Encoded:
    """Token ids without padding (one array per example) and labels."""

    ids: list[np.ndarray]
    labels: np.ndarray  # (N,)
    sep_id: int | None = None  # sentence pairs: the separator id; tokens after the first one are segment 1

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))


def encode(split: Split, tokenizer, max_len: int, tail: int = 0) -> Encoded:
    """Tokenize once, up front: no tokenization inside training loops.

    A text longer than `max_len` tokens keeps its first ones; with `tail`, its first `max_len - tail`
    and its last `tail` ([CLS] and [SEP] stay at the ends). Sentence pairs are tokenized as pairs, the longer
    side truncated first, so that both sides are kept."""
    if split.texts and isinstance(split.texts[0], tuple):
        first, second = zip(*split.texts)
        out = tokenizer(list(first), list(second), truncation=True, max_length=max_len)["input_ids"]
        return Encoded([np.asarray(x, dtype=np.int64) for x in out], split.labels, tokenizer.sep_token_id)
    if not tail:
        out = tokenizer(split.texts, truncation=True, max_length=max_len)["input_ids"]
    else:
        out = [ids if len(ids) <= max_len else ids[: max_len - tail] + ids[-tail:]
               for ids in tokenizer(split.texts, verbose=False)["input_ids"]]
    return Encoded([np.asarray(x, dtype=np.int64) for x in out], split.labels)


def encode_for(spec: TaskSpec, split: Split, tokenizer) -> Encoded:
    """`encode` with the task's own max_len and head+tail truncation."""
    return encode(split, tokenizer, spec.max_len, spec.tail_tokens)


def collate(enc: Encoded, idx, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest example of the batch."""
    seqs = [torch.from_numpy(enc.ids[i]) for i in idx]
    input_ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)  # (B, T)
    mask = torch.zeros_like(input_ids)
    for row, s in enumerate(seqs):
        mask[row, : len(s)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": torch.from_numpy(enc.labels[idx])}
    if enc.sep_id is not None:  # segment 1: every real token after the first separator
        sep = (input_ids == enc.sep_id).long()
        batch["token_type_ids"] = ((sep.cumsum(1) - sep) > 0).long() * mask
    return batch


def eval_batches(enc: Encoded, batch_size: int, limit: int | None = None):
    """Index batches in length order (little padding) for evaluation."""
    n = len(enc) if limit is None else min(limit, len(enc))
    order = np.argsort(enc.lengths()[:n], kind="stable")
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
