"""Tasks on real rows: loading, the val carve, custom folders, bad input, metrics, batching."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fastbert_nas.config import UserError
from fastbert_nas.core.metrics import accuracy, macro_f1, majority, mcc, score
from fastbert_nas.core.tasks import (
    DATA_ENV,
    TASKS,
    VAL_FRACTION,
    VAL_MAX,
    VAL_SENTENCES,
    Split,
    carve_val,
    collate,
    encode,
    encode_for,
    eval_batches,
    load_task,
    resolve_task,
    strip_html,
    text_key,
    word_runs,
)

# Rows per file and positive labels, from SOURCES.md in the data folder ($FASTBERT_NAS_DATA):
# (train rows, train 1s, dev rows, dev 1s).
EXPECTED = {
    "sst2": (67_349, 37_569, 872, 444),
    "cola": (8_551, 6_023, 1_043, 719),
    "amazon": (5_528, 4_615, 1_395, 1_170),
}


def raw_rows(path: Path, header: bool = True) -> list[list[str]]:
    """A GLUE TSV read independently of fastbert_nas (for cross-checks)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    return rows[1:] if header else rows


@pytest.fixture(scope="module")
def loaded(data_dir):
    """name -> TaskData, each built-in task loaded once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_task(resolve_task(name), str(data_dir))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def sst2_dev_rows(data_dir) -> list[tuple[str, str]]:
    """(sentence, label) of the real SST-2 dev file, stripped: the material for small tmp files."""
    return [(s.strip(), lab) for s, lab in raw_rows(data_dir / "SST-2" / "dev.tsv")]


def write_table(path: Path, header: list[str] | None, rows: list[list[str]], encoding="utf-8") -> Path:
    """A CSV (quoted as needed) or a plain TSV, by the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as f:
        if path.suffix == ".csv":
            w = csv.writer(f)
            if header:
                w.writerow(header)
            w.writerows(rows)
        else:
            for row in ([header] if header else []) + rows:
                f.write("\t".join(row) + "\n")
    return path


# ---------------------------------------------------------------------------
# Built-in tasks on the real data

@pytest.mark.parametrize("name", ["sst2", "cola", "amazon"])
def test_builtin_sizes_and_labels(loaded, data_dir, name):
    td = loaded(name)
    n_train, n_pos, n_dev, n_dev_pos = EXPECTED[name]
    assert len(td.dev) == n_dev and int(td.dev.labels.sum()) == n_dev_pos
    assert len(td.train) + len(td.val) <= n_train  # rows with a dev text, and SST-2's validation phrases, left
    if name == "sst2":
        assert len(td.val) == VAL_SENTENCES
    else:  # whole groups of identical texts until the share is reached: at most a group more
        n_val = min(int((len(td.train) + len(td.val)) * VAL_FRACTION), VAL_MAX)
        assert n_val <= len(td.val) <= n_val + 5
    for split in (td.train, td.val, td.dev):
        assert split.labels.dtype == np.int64 and set(np.unique(split.labels)) == {0, 1}
        assert len(split.texts) == len(split.labels)
        assert all(isinstance(t, str) and t for t in split.texts)
    assert td.spec.name == name
    assert Path(td.source) == (data_dir / td.spec.glue_dir).resolve()


@pytest.mark.parametrize("name", ["sst2", "cola", "amazon"])
def test_no_text_straddles_train_validation_and_dev(loaded, name):
    td = loaded(name)
    train, val, dev = ({text_key(t) for t in split.texts} for split in (td.train, td.val, td.dev))
    assert not train & val and not train & dev and not val & dev


def test_sst2_validation_is_whole_sentences_and_their_phrases_left_train(loaded, data_dir):
    td = loaded("sst2")
    train = [text_key(t) for t in td.train.texts]
    val = [text_key(t) for t in td.val.texts]
    pieces = set().union(*(word_runs(v) for v in val))
    assert not pieces & set(train)                     # no train row is a run of words of a validation sentence
    joined = "\n".join(f" {t} " for t in train)
    assert not [v for v in val if f" {v} " in joined]  # no validation sentence is a piece of a train row
    # the file does hold phrases of its sentences: a random carve would have leaked them
    rows = [text_key(r[0]) for r in raw_rows(data_dir / "SST-2" / "train.tsv")]
    assert sum(r in pieces for r in rows) > 5 * len(val)


def test_a_custom_tasks_duplicates_stay_on_one_side(tmp_path, sst2_dev_rows):
    """A text repeated in train goes to one split whole; a train row with a dev text leaves train."""
    rows = [[s, lab] for s, lab in sst2_dev_rows[:300]]
    repeated = rows[7][0]
    rows += [[repeated.upper(), rows[7][1]]] * 4 + [[f"  {repeated}  ", rows[7][1]]]  # case and spacing aside
    dev = [[rows[11][0], rows[11][1]], *[[s, lab] for s, lab in sst2_dev_rows[400:450]]]
    write_table(tmp_path / "dups" / "train.tsv", ["sentence", "label"], rows)
    write_table(tmp_path / "dups" / "dev.tsv", ["sentence", "label"], dev)
    td = load_task(resolve_task(str(tmp_path / "dups")))
    train, val = [text_key(t) for t in td.train.texts], [text_key(t) for t in td.val.texts]
    key = text_key(repeated)
    assert (train.count(key), val.count(key)) in ((6, 0), (0, 6))
    assert text_key(rows[11][0]) not in train + val
    assert len(train) + len(val) == len(rows) - 1


def test_val_carve_deterministic_and_disjoint(loaded, data_dir):
    first = loaded("amazon")
    again = load_task(resolve_task("amazon"), str(data_dir))
    assert again.val.texts == first.val.texts and again.train.texts == first.train.texts
    assert np.array_equal(again.val.labels, first.val.labels)

    # The carve by index: distinct rows tagged with their index, carved, compared with the shares.
    n = 5000
    tagged = Split([str(i) for i in range(n)], np.zeros(n, dtype=np.int64))
    tr, va = carve_val(tagged)
    tr_idx, va_idx = [int(t) for t in tr.texts], [int(t) for t in va.texts]
    assert not set(tr_idx) & set(va_idx) and len(va_idx) == int(n * VAL_FRACTION)
    assert sorted(tr_idx + va_idx) == list(range(n)) and tr_idx == sorted(tr_idx)


def test_cola_uses_sentence_column(loaded, data_dir):
    td = loaded("cola")
    rows = raw_rows(data_dir / "CoLA" / "train.tsv", header=False)
    assert all(len(r) == 4 for r in rows)
    texts = set(td.train.texts) | set(td.val.texts)
    assert "Our friends won't buy this analysis, let alone the next one we propose." in texts
    sources, marks = {r[0] for r in rows}, {r[2] for r in rows}
    assert all(" " not in s and len(s) <= 6 for s in sources)  # e.g. 'gj04', 'l-93': codes, not sentences
    assert not texts & sources and not texts & (marks - {""})


def test_sst2_texts_are_stripped(loaded):
    td = loaded("sst2")
    for split in (td.train, td.val, td.dev):
        assert all(t == t.strip() for t in split.texts)
    # GLUE keeps a space before the tab; the loader must not.
    assert "hide new secretions from the parental units" in td.train.texts + td.val.texts


def test_fingerprint_stable_and_sensitive(loaded, data_dir):
    td = loaded("cola")
    again = load_task(resolve_task("cola"), str(data_dir))
    assert td.fingerprint() == again.fingerprint()
    flipped = again.dev.labels.copy()
    flipped[0] = 1 - flipped[0]
    changed = replace(again, dev=Split(again.dev.texts, flipped))
    assert changed.fingerprint() != td.fingerprint()
    assert loaded("sst2").fingerprint() != td.fingerprint()


def test_data_dir_from_environment(monkeypatch, data_dir, loaded):
    monkeypatch.setenv(DATA_ENV, str(data_dir))
    td = load_task(resolve_task("amazon"))
    assert td.fingerprint() == loaded("amazon").fingerprint()


# ---------------------------------------------------------------------------
# Custom tasks

@pytest.mark.parametrize("suffix", ["csv", "tsv"])
def test_custom_task_string_labels(tmp_path, sst2_dev_rows, suffix):
    names = {"0": "neg", "1": "pos"}
    train_rows, dev_rows = sst2_dev_rows[:40], sst2_dev_rows[40:52]
    header = ["id", "review", "polarity"]
    write_table(tmp_path / "reviews" / f"train.{suffix}", header,
                [[str(i), s, names[lab]] for i, (s, lab) in enumerate(train_rows)])
    write_table(tmp_path / "reviews" / f"dev.{suffix}", header,
                [[str(i), s, names[lab]] for i, (s, lab) in enumerate(dev_rows)])

    spec = resolve_task(str(tmp_path / "reviews"), text_column="review", label_column="polarity", max_len=32)
    assert (spec.name, spec.max_len) == ("reviews", 32)
    assert (spec.text_column, spec.label_column) == ("review", "polarity")
    td = load_task(spec)
    assert td.spec.labels == ("neg", "pos")  # sorted: neg -> 0, pos -> 1
    assert td.dev.texts == [s for s, _ in dev_rows]
    assert td.dev.labels.tolist() == [int(lab) for _, lab in dev_rows]
    assert len(td.train) + len(td.val) == 40 and len(td.val) == 4
    by_text = dict(train_rows)
    for split in (td.train, td.val):
        assert split.labels.tolist() == [int(by_text[t]) for t in split.texts]
    assert td.source == str((tmp_path / "reviews").resolve())
    assert set(score(td.spec, td.dev.labels, td.dev.labels)) == {"accuracy", "macro_f1", "majority", "metric"}


def test_custom_numeric_labels_sorted_as_numbers(tmp_path, sst2_dev_rows):
    rows = [[s, "10" if lab == "1" else "2"] for s, lab in sst2_dev_rows[:20]]
    write_table(tmp_path / "t" / "train.tsv", ["sentence", "label"], rows)
    write_table(tmp_path / "t" / "dev.tsv", ["sentence", "label"], rows[:5])
    td = load_task(resolve_task(str(tmp_path / "t")))
    assert td.spec.labels == ("2", "10")
    assert td.dev.labels.tolist() == [1 if lab == "1" else 0 for _, lab in sst2_dev_rows[:5]]


def test_custom_task_utf8_bom(tmp_path, sst2_dev_rows):
    """Spreadsheets save 'UTF-8 CSV' with a byte-order mark: the header must still match."""
    rows = [[s, lab] for s, lab in sst2_dev_rows[:20]]
    write_table(tmp_path / "t" / "train.csv", ["sentence", "label"], rows, encoding="utf-8-sig")
    write_table(tmp_path / "t" / "dev.csv", ["sentence", "label"], rows[:5], encoding="utf-8-sig")
    td = load_task(resolve_task(str(tmp_path / "t")))
    assert td.dev.texts == [s for s, _ in sst2_dev_rows[:5]]


# ---------------------------------------------------------------------------
# Bad input: one UserError naming the problem

@pytest.fixture
def custom_dir(tmp_path, sst2_dev_rows):
    """A valid custom folder (sentence/label TSVs of real rows); tests break one thing in it."""
    folder = tmp_path / "custom"
    rows = [[s, lab] for s, lab in sst2_dev_rows[:20]]
    write_table(folder / "train.tsv", ["sentence", "label"], rows)
    write_table(folder / "dev.tsv", ["sentence", "label"], rows[:5])
    return folder


def test_unknown_task_and_missing_folder(tmp_path):
    for task in ("sst3", str(tmp_path / "no_such_folder")):
        with pytest.raises(UserError, match="not a built-in task"):
            resolve_task(task)
    with pytest.raises(UserError, match="custom tasks"):
        resolve_task("sst2", text_column="text")


def test_custom_without_dev_file(custom_dir):
    (custom_dir / "dev.tsv").unlink()
    with pytest.raises(UserError, match=r"no dev\.tsv or dev\.csv"):
        load_task(resolve_task(str(custom_dir)))


def test_malformed_row(custom_dir, sst2_dev_rows):
    lines = (custom_dir / "train.tsv").read_text().splitlines()
    lines[3] += "\textra"  # line 4 of the file: three fields
    (custom_dir / "train.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"train\.tsv line 4: expected 2 fields .* found 3"):
        load_task(resolve_task(str(custom_dir)))


def test_unknown_label_in_builtin_task(tmp_path, data_dir):
    rows = raw_rows(data_dir / "SST-2" / "train.tsv")[:30]
    rows[5][1] = "7"  # line 7 (after the header)
    write_table(tmp_path / "SST-2" / "train.tsv", ["sentence", "label"], rows)
    write_table(tmp_path / "SST-2" / "dev.tsv", ["sentence", "label"], rows[:3])
    with pytest.raises(UserError, match=r"train\.tsv line 7: unknown label '7'; expected one of 0, 1"):
        load_task(resolve_task("sst2"), str(tmp_path))


def test_empty_files(custom_dir, tmp_path):
    (custom_dir / "train.tsv").write_text("")
    with pytest.raises(UserError, match="empty file"):
        load_task(resolve_task(str(custom_dir)))
    (custom_dir / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(UserError, match="no data rows"):
        load_task(resolve_task(str(custom_dir)))
    # Headerless CoLA layout: an empty file has no rows at all.
    write_table(tmp_path / "CoLA" / "train.tsv", None, [])
    with pytest.raises(UserError, match="no data rows"):
        load_task(resolve_task("cola"), str(tmp_path))


def test_not_utf8(custom_dir, sst2_dev_rows):
    rows = [[s, lab] for s, lab in sst2_dev_rows[:20]] + [["un café très crème", "1"]]
    write_table(custom_dir / "train.tsv", ["sentence", "label"], rows, encoding="latin-1")
    with pytest.raises(UserError, match=r"train\.tsv: not UTF-8"):
        load_task(resolve_task(str(custom_dir)))


def test_missing_text_column(custom_dir):
    with pytest.raises(UserError, match=r"no column 'review' in header \['sentence', 'label'\]"):
        load_task(resolve_task(str(custom_dir), text_column="review"))


def test_too_few_rows_to_carve(custom_dir, sst2_dev_rows):
    write_table(custom_dir / "train.tsv", ["sentence", "label"], [[s, lab] for s, lab in sst2_dev_rows[:5]])
    with pytest.raises(UserError, match="too few to carve"):
        load_task(resolve_task(str(custom_dir)))


def test_no_local_data_and_hub_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv(DATA_ENV, raising=False)
    # Both libraries read these variables once, at import: patch them if already imported.
    import datasets.config
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)

    with pytest.raises(UserError) as err:
        load_task(resolve_task("sst2"), str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "SST-2" / "train.tsv") in msg and "not found" in msg
    assert "the hub nyu-mll/glue/sst2" in msg

    with pytest.raises(UserError, match=r"no local folder .*the hub nyu-mll/glue/cola"):
        load_task(resolve_task("cola"))


# ---------------------------------------------------------------------------
# Metrics

GOLD = np.array([1, 1, 1, 0, 0, 0, 1, 0])
PRED = np.array([1, 1, 0, 0, 0, 1, 1, 1])  # TP 3, FN 1, TN 2, FP 2


def test_accuracy_and_majority():
    assert accuracy(PRED, GOLD) == 5 / 8
    assert majority(PRED, GOLD) == 0.5
    assert majority(PRED, np.array([1, 1, 1, 0])) == 0.75


def test_mcc():
    tp, fn, tn, fp = 3, 1, 2, 2
    by_hand = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # 4 / sqrt(240)
    assert mcc(PRED, GOLD) == pytest.approx(by_hand) == pytest.approx(0.2581989)
    assert mcc(GOLD, GOLD) == pytest.approx(1.0)
    assert mcc(1 - GOLD, GOLD) == pytest.approx(-1.0)
    assert mcc(np.ones_like(GOLD), GOLD) == 0.0
    assert mcc(np.zeros_like(GOLD), GOLD) == 0.0


def test_macro_f1():
    f1_pos, f1_neg = 2 * 3 / (5 + 4), 2 * 2 / (3 + 4)
    assert macro_f1(PRED, GOLD) == pytest.approx((f1_pos + f1_neg) / 2)
    assert macro_f1(GOLD, GOLD) == 1.0
    assert macro_f1(np.ones_like(GOLD), GOLD) == pytest.approx((2 * 4 / 12 + 0) / 2)


def test_score_uses_task_metric(loaded):
    cola = score(TASKS["cola"], PRED, GOLD)
    assert cola == {"mcc": mcc(PRED, GOLD), "metric": mcc(PRED, GOLD)}
    sst2 = score(TASKS["sst2"], PRED, GOLD)
    assert sst2 == {"accuracy": 5 / 8, "metric": 5 / 8}
    # Amazon dev is 84% positive: the majority baseline SOURCES.md quotes (0.839).
    gold = loaded("amazon").dev.labels
    amazon = score(TASKS["amazon"], np.ones_like(gold), gold)
    assert set(amazon) == {"accuracy", "macro_f1", "majority", "metric"}
    assert amazon["metric"] == amazon["accuracy"] == amazon["majority"] == pytest.approx(1170 / 1395)
    assert round(amazon["majority"], 3) == 0.839


# ---------------------------------------------------------------------------
# Tokenization and batching with the packaged base's tokenizer

@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from fastbert_nas.core.teacher import DEFAULT_BASE, base_path

    return AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))


def test_encode_and_collate(tokenizer, loaded):
    dev = loaded("amazon").dev.subset(np.arange(24))  # reviews: many longer than 32 tokens
    full = encode(dev, tokenizer, max_len=512)
    enc = encode(dev, tokenizer, max_len=32)
    assert len(enc) == 24 and np.array_equal(enc.labels, dev.labels)
    assert enc.lengths().max() == 32 and (full.lengths() > 32).any()
    for short, long in zip(enc.ids, full.ids):
        assert short.dtype == np.int64
        assert short[0] == tokenizer.cls_token_id and short[-1] == tokenizer.sep_token_id
        assert len(short) == min(len(long), 32)
        assert np.array_equal(short[:-1], long[: len(short) - 1])

    idx = np.array([3, 0, 7, 12, 5])
    lengths = enc.lengths()[idx]
    batch = collate(enc, idx, pad_id=tokenizer.pad_token_id)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (5, lengths.max())  # (B, T): padded to the longest in the batch
    assert ids.dtype == torch.int64
    assert mask.sum(1).tolist() == lengths.tolist()
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()
    for row, i in enumerate(idx):
        assert ids[row, : lengths[row]].tolist() == enc.ids[i].tolist()
    assert batch["labels"].tolist() == dev.labels[idx].tolist()


def test_head_and_tail_truncation(tokenizer, loaded):
    dev = loaded("amazon").dev.subset(np.arange(40))
    full = encode(dev, tokenizer, max_len=512)
    enc = encode(dev, tokenizer, max_len=32, tail=24)
    assert (full.lengths() > 32).sum() >= 10 and (full.lengths() <= 32).any()
    for cut, whole in zip(enc.ids, full.ids):
        if len(whole) <= 32:
            assert np.array_equal(cut, whole)
        else:  # [CLS] and the first 7 tokens, then the last 23 and [SEP]
            assert len(cut) == 32 and np.array_equal(cut[:8], whole[:8]) and np.array_equal(cut[8:], whole[-24:])
    assert TASKS["amazon"].tail_tokens == 96 and TASKS["sst2"].tail_tokens == 0
    assert all(np.array_equal(a, b) for a, b in zip(encode_for(TASKS["amazon"], dev, tokenizer).ids,
                                                     encode(dev, tokenizer, 128, tail=96).ids))


def test_amazon_html_line_breaks_become_spaces(loaded, data_dir):
    raw = [r[0] for r in raw_rows(data_dir / "amazon" / "dev.tsv")]
    assert sum("<br />" in t for t in raw) > 100
    texts = loaded("amazon").dev.texts
    assert len(texts) == len(raw) and not any("<br" in t.lower() for t in texts)
    i = next(i for i, t in enumerate(raw) if "<br /><br />" in t)
    assert texts[i].split() == raw[i].replace("<br />", " ").split()  # the same words, nothing else lost
    assert strip_html(Split(["good.<br /><br />Bad <BR>ok"], np.zeros(1))).texts == ["good. Bad ok"]


def test_collate_pads_to_batch_not_max_len(tokenizer, loaded):
    dev = loaded("sst2").dev.subset(np.arange(16))
    enc = encode(dev, tokenizer, max_len=64)
    batch = collate(enc, [int(np.argmin(enc.lengths()))], pad_id=tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (1, enc.lengths().min())
    assert batch["attention_mask"].all()


def test_eval_batches_cover_in_length_order(tokenizer, loaded):
    enc = encode(loaded("sst2").dev.subset(np.arange(50)), tokenizer, max_len=64)
    batches = list(eval_batches(enc, batch_size=8))
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(50)) and len(batches) == 7
    assert (np.diff(enc.lengths()[order]) >= 0).all()
    assert sorted(np.concatenate(list(eval_batches(enc, 8, limit=20))).tolist()) == list(range(20))
