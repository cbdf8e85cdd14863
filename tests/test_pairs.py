"""Sentence-pair tasks: MRPC from the GLUE layout (real rows of ../shared/data/MRPC), a custom task with
--text-column a,b, pairs tokenized as pairs with token types from the separator, augmentation of both
sides, F1, and a smoke search and export on MRPC end to end."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import invoke, quick_timings, search_args
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fastbert_nas.core.augment import augment
from fastbert_nas.core.metrics import f1
from fastbert_nas.core.tasks import TASKS, Split, collate, encode, load_task, resolve_task, text_key
from fastbert_nas.core.teacher import DEFAULT_BASE, base_path


@pytest.fixture(scope="module")
def mrpc(data_dir):
    return load_task(TASKS["mrpc"], str(data_dir))


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))


def test_mrpc_loads_as_pairs_and_no_pair_straddles_the_splits(mrpc):
    assert TASKS["mrpc"].pairs and not TASKS["sst2"].pairs
    assert len(mrpc.dev) == 1725 and len(mrpc.train) + len(mrpc.val) <= 4080
    assert all(isinstance(t, tuple) and len(t) == 2 and all(t) for t in mrpc.train.texts[:50])
    first = mrpc.dev.texts[0]
    assert first[0].startswith("PCCW's chief operating officer") and first[1].startswith("Current Chief Operating")
    keys = [{text_key(t) for t in split.texts} for split in (mrpc.train, mrpc.val, mrpc.dev)]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    assert mrpc.fingerprint() == load_task(TASKS["mrpc"], mrpc.source.rsplit("/", 1)[0]).fingerprint()


def test_pairs_are_tokenized_as_pairs_with_token_types(tokenizer):
    split = Split([("the cat sat", "a cat was sitting"), ("yes", "no way at all")], np.array([1, 0]))
    enc = encode(split, tokenizer, max_len=64)
    assert enc.sep_id == tokenizer.sep_token_id
    batch = collate(enc, np.arange(2))
    ref = tokenizer(["the cat sat", "yes"], ["a cat was sitting", "no way at all"], padding=True,
                    return_tensors="pt")
    assert torch.equal(batch["input_ids"], ref["input_ids"])
    assert torch.equal(batch["token_type_ids"], ref["token_type_ids"] * ref["attention_mask"])
    # a pair longer than max_len keeps both sides (the longer one cut first)
    long = Split([(" ".join(["word"] * 40), "short side")], np.array([0]))
    ids = encode(long, tokenizer, max_len=16).ids[0]
    assert len(ids) == 16 and (ids == tokenizer.sep_token_id).sum() == 2
    assert tokenizer.decode(ids[ids.tolist().index(tokenizer.sep_token_id) + 1:-1]) == "short side"
    assert "token_type_ids" not in collate(encode(Split(["one text"], np.array([0])), tokenizer, 64), [0])


def test_augmentation_replaces_words_on_both_sides_and_keeps_the_separators(tokenizer, mrpc):
    from fastbert_nas.core.teacher import load_classifier

    enc = encode(mrpc.train.subset(np.arange(40)), tokenizer, 128)
    model, _ = load_classifier(base_path(DEFAULT_BASE), 2)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    out = augment(enc, vocab, model.bert.embeddings.word_embeddings.weight.detach().numpy(), copies=1, min_tokens=3)
    assert out.sep_id == enc.sep_id and len(out) == len(enc)
    changed_sides = [0, 0]
    for a, b in zip(enc.ids, out.ids):
        seps = np.flatnonzero(a == enc.sep_id)
        assert len(a) == len(b) and np.array_equal(np.flatnonzero(b == enc.sep_id), seps)
        changed_sides[0] += int((a[:seps[0]] != b[:seps[0]]).any())
        changed_sides[1] += int((a[seps[0]:] != b[seps[0]:]).any())
    assert min(changed_sides) > 20


def test_f1_of_the_positive_class():
    assert f1(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    assert f1(np.array([0, 0]), np.array([0, 0])) == 0.0
    assert f1(np.array([1, 1, 1]), np.array([1, 1, 1])) == 1.0


def test_custom_task_with_two_text_columns(tmp_path):
    for name in ("train", "dev"):
        rows = [f"q{i}\tquestion {i} {name}\tanswer {i}\t{i % 2}" for i in range(30)]
        (tmp_path / f"{name}.tsv").write_text("id\tquestion\tanswer\tlabel\n" + "\n".join(rows) + "\n")
    spec = resolve_task(str(tmp_path), text_column="question,answer")
    data = load_task(spec)
    assert spec.pairs and data.dev.texts[3] == ("question 3 dev", "answer 3")
    with pytest.raises(Exception, match="one column, or two"):
        load_task(resolve_task(str(tmp_path), text_column="id,question,answer"))


def test_mrpc_search_and_export_end_to_end(tmp_path, data_dir, tiny_teacher_dir, monkeypatch, restore_threads):
    """A smoke search on real MRPC rows (tiny teacher), then its best trial exported: F1 and accuracy on dev,
    a model folder that reads pairs, an ONNX graph with token types that matches PyTorch, a card quoting a pair."""
    quick_timings(monkeypatch)
    results = tmp_path / "results"
    r = invoke(*search_args(data_dir, tiny_teacher_dir, results, **{"--task": "mrpc"}))
    assert r.exit_code == 0, r.output
    r = invoke("export", "--pick", "flops<=1", "--study", "mrpc-tiny", "--results", results, "--budget", "smoke",
               "--data-dir", data_dir, "--out", tmp_path / "model", "--threads", 1, "--onnx")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "model" / "export.json").read_text())
    assert report["metric"] == "f1" and set(report["dev"]) >= {"f1", "accuracy", "metric"}
    assert report["dev"]["metric"] == report["dev"]["f1"] and 0 <= report["dev"]["accuracy"] <= 1
    # accuracy beside F1: in --pick's choice, the closing line, the card (with the majority level) and show
    assert "chose trial" in r.output and ", accuracy 0." in r.output
    assert f"dev {report['dev']['f1']:.4f} (accuracy {report['dev']['accuracy']:.4f})" in r.output
    card = (tmp_path / "model" / "README.md").read_text()
    assert (f"| dev accuracy | {report['dev']['accuracy']:.4f} | {report['teacher']['dev']['accuracy']:.4f} |"
            in card)
    majority = report["dev_majority"]  # always "paraphrase" (MRPC's majority): F1 = 2 share / (1 + share)
    assert majority["accuracy"] > 0.5 and majority["f1"] == pytest.approx(2 * majority["accuracy"] / (1 + majority["accuracy"]))
    assert f"| dev majority-class level (f1 of always the most frequent class) | {majority['metric']:.4f} |" in card
    shown = json.loads(invoke("show", "--study", "mrpc-tiny", "--results", results, "--format", "json").output)
    assert shown and all(row["others"].startswith("accuracy 0.") for row in shown)
    # the ONNX graph takes the token types, and matches PyTorch on real pairs
    sess = onnxruntime.InferenceSession(str(tmp_path / "model" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert report["onnx"]["max_abs_diff"] <= report["onnx"]["tolerance"]
    assert "classify({'text': " in card and "'text_pair': " in card
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        logits = model(**tok("He left early.", "He went home early.", return_tensors="pt")).logits
    assert logits.shape == (1, 2)


@pytest.mark.parametrize("task, columns", [("qnli", ("question", "sentence")), ("rte", ("sentence1", "sentence2"))])
def test_qnli_and_rte_from_a_glue_layout_folder(tmp_path, task, columns):
    """GLUE's own files: an index column, the two texts, string labels (entailment first, as on the hub)."""
    folder = tmp_path / TASKS[task].glue_dir
    folder.mkdir()
    for name in ("train", "dev"):
        rows = [f"{i}\tfirst text {i} {name}\tsecond text {i}\t{('entailment', 'not_entailment')[i % 2]}"
                for i in range(40)]
        (folder / f"{name}.tsv").write_text(f"index\t{columns[0]}\t{columns[1]}\tlabel\n" + "\n".join(rows) + "\n")
    data = load_task(TASKS[task], str(tmp_path))
    assert data.dev.texts[1] == ("first text 1 dev", "second text 1") and data.dev.labels[:4].tolist() == [0, 1, 0, 1]
    assert len(data.train) + len(data.val) == 40
