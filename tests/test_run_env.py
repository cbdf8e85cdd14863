"""The run environment a study records, on a custom 6-class task made from real SST-2 rows.

A study made with a non-default --base folder, --max-len and --text-column is resumed, exported and
re-plotted without those options: each reads them from the study, the cached teacher is used as it is
(its folder and record stay byte-identical), an option contradicting the study is refused, and the
exported model loads with `from_pretrained` and answers in `pipeline` with the task's own label names.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import optuna
import pytest
from conftest import TINY_TEACHER, assert_user_error, invoke, quick_timings
from transformers import AutoModelForSequenceClassification
from transformers import pipeline as hf_pipeline

from fastbert_nas.config import ENV_ATTR, RunEnv, TeacherRef, UserError

LABELS = [str(k) for k in range(6)]  # the user's own label values
TRAIN_ROWS, DEV_ROWS = 600, 60
MAX_LEN = 48                         # not the custom tasks' default (128)
TASK_NAME = "six-class"


@pytest.fixture(autouse=True)
def quick(monkeypatch, restore_threads):
    quick_timings(monkeypatch)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, sst2_data) -> Path:
    """train.csv and dev.csv with a `text` column and labels 0-5, from real SST-2 sentences."""
    folder = tmp_path_factory.mktemp("custom") / TASK_NAME
    folder.mkdir()
    texts = sst2_data.dev.texts
    for name, rows in (("train", range(TRAIN_ROWS)), ("dev", range(TRAIN_ROWS, TRAIN_ROWS + DEV_ROWS))):
        with open(folder / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in rows:
                w.writerow([texts[i % len(texts)], LABELS[i % len(LABELS)]])
    return folder


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A tiny random BERT encoder (no classifier head) with the packaged base's tokenizer: a --base folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from fastbert_nas.core.teacher import DEFAULT_BASE, base_path

    tokenizer = AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))
    torch.manual_seed(0)
    config = {k: v for k, v in TINY_TEACHER.items() if k != "num_labels"}
    folder = tmp_path_factory.mktemp("tiny_base")
    BertModel(BertConfig(vocab_size=len(tokenizer), **config)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tree_digest(*paths: Path) -> str:
    """One hash of every file's name and bytes under the given files and folders."""
    h = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for p in files:
            h.update(str(p.relative_to(root.parent)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def search(task_dir, results, *extra, trials=2) -> list[str]:
    return ["search", "--task", task_dir, "--space", "tiny", "--budget", "smoke", "--trials", trials,
            "--results", results, "--threads", 1, "--no-baselines", *extra]


@pytest.fixture(scope="module")
def made(tmp_path_factory, task_dir, base_dir):
    """RESULTS with the teacher fine-tuned from base_dir, and a 2-trial study made with --base, --max-len
    and --text-column; the teacher's folder and record digested right after the teacher was made."""
    results = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        quick_timings(mp)
        r = invoke("teacher", "--task", task_dir, "--text-column", "text", "--base", base_dir, "--max-len", MAX_LEN,
                   "--results", results, "--threads", 1, "--epochs", 1)
        assert r.exit_code == 0, r.output
        teacher = [results / "teachers" / TASK_NAME, results / f"teacher-{TASK_NAME}.json"]
        digest = tree_digest(*teacher)
        r = invoke(*search(task_dir, results, "--text-column", "text", "--base", base_dir, "--max-len", MAX_LEN))
        assert r.exit_code == 0, r.output
    return results, teacher, digest


def test_the_study_records_the_environment_whole(made, task_dir, base_dir):
    results, _, _ = made
    study = optuna.load_study(study_name=f"{TASK_NAME}-tiny", storage=f"sqlite:///{results}/{TASK_NAME}-tiny.db")
    env = RunEnv.from_dict(study.user_attrs[ENV_ATTR])
    assert (env.task, env.text_column, env.label_column, env.max_len) == (str(task_dir), "text", "label", MAX_LEN)
    assert env.teacher == TeacherRef(None, str(base_dir)) and env.labels == tuple(LABELS)
    assert study.metric_names == ["accuracy", "FLOPs"]  # what optuna-dashboard labels the axes


def test_resume_export_and_remeasure_read_the_study_and_keep_its_teacher(made, task_dir, base_dir, tmp_path):
    results, teacher, digest = made
    r = invoke(*search(task_dir, results, trials=3))  # no --base, --max-len, --text-column: the study's
    assert r.exit_code == 0, r.output
    assert "ran 1 trials" in r.output, r.output

    out = tmp_path / "model"
    r = invoke("export", "--pick", "flops<=100", "--task", task_dir, "--study", f"{TASK_NAME}-tiny",
               "--results", results, "--budget", "smoke", "--threads", 1, "--out", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "export.json").read_text())
    assert report["max_len"] == MAX_LEN and report["env"]["teacher"]["base"] == str(base_dir)
    assert report["labels"] == LABELS

    r = invoke("plot", "--study", f"{TASK_NAME}-tiny", "--results", results, "--remeasure")
    assert r.exit_code == 0, r.output
    assert list((results / "fasttext").glob(f"{TASK_NAME}-*.json"))  # the custom task found by its recorded folder
    assert tree_digest(*teacher) == digest  # never re-trained, never rewritten

    # the exported 6-class model loads as it is and answers with the data's own labels
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 6 and model.config.id2label == dict(enumerate(LABELS))
    answers = hf_pipeline("text-classification", model=str(out))(["a gripping film", "dull and flat"])
    assert {a["label"] for a in answers} <= set(LABELS)
    card = (out / "README.md").read_text()
    dev_first = next(csv.DictReader(open(task_dir / "dev.csv")))["text"]
    assert "Labels: 0 0, 1 1, 2 2, 3 3, 4 4, 5 5." in card and repr(dev_first) in card
    assert "film review" not in card


def test_options_that_contradict_the_study_are_refused(made, task_dir, base_dir, tmp_path):
    results, teacher, digest = made
    r = invoke(*search(task_dir, results, "--max-len", 32, trials=3))
    assert_user_error(r, "--max-len 32", f"--max-len {MAX_LEN}")
    r = invoke(*search(task_dir, results, "--teacher", base_dir, trials=3))
    assert_user_error(r, "--teacher", "no --teacher")
    r = invoke("export", "--trial", 0, "--task", task_dir, "--study", f"{TASK_NAME}-tiny", "--results", results,
               "--budget", "smoke", "--threads", 1, "--out", tmp_path / "m", "--base", tmp_path)
    assert_user_error(r, f"--base {tmp_path}", f"--base {base_dir}")
    assert not (tmp_path / "m").exists()
    assert tree_digest(*teacher) == digest


def test_a_cached_teacher_is_replaced_only_when_asked(made, task_dir, base_dir):
    results, teacher, digest = made
    # another base (the packaged default) for the same task: refused, the teacher kept
    r = invoke("teacher", "--task", task_dir, "--text-column", "text", "--max-len", MAX_LEN, "--results", results)
    assert_user_error(r, "kept", "--force")
    assert tree_digest(*teacher) == digest
    # the same options: the cached teacher is the answer, untouched
    r = invoke("teacher", "--task", task_dir, "--text-column", "text", "--base", base_dir, "--max-len", MAX_LEN,
               "--results", results)
    assert r.exit_code == 0, r.output
    assert tree_digest(*teacher) == digest


def test_adopt_fills_what_was_not_given_and_refuses_contradictions():
    recorded = RunEnv("t", data_dir="d", max_len=48, teacher=TeacherRef(None, "b"), labels=("x", "y"))
    env = RunEnv("t").adopt(recorded, "study s")
    assert (env.max_len, env.data_dir, env.teacher, env.labels) == (48, "d", TeacherRef(None, "b"), ("x", "y"))
    assert RunEnv("t", max_len=48, data_dir="e").adopt(recorded, "study s").data_dir == "e"  # the machine's
    with pytest.raises(UserError, match="--max-len 64: study s was made with --max-len 48"):
        RunEnv("t", max_len=64).adopt(recorded, "study s")
    with pytest.raises(UserError, match="--teacher m: study s was made with no --teacher"):
        RunEnv("t", teacher=TeacherRef("m")).adopt(recorded, "study s")
    assert RunEnv.from_dict(recorded.to_dict()) == recorded


def test_the_same_fine_tune_twice_gives_the_same_teacher(task_dir, base_dir, tmp_path):
    """No wall-clock re-planning by default: one command, seed and data give one teacher, bit for bit."""
    made = []
    for run in ("a", "b"):
        results = tmp_path / run
        r = invoke("teacher", "--task", task_dir, "--text-column", "text", "--base", base_dir, "--max-len", MAX_LEN,
                   "--results", results, "--threads", 1, "--epochs", 1)
        assert r.exit_code == 0, r.output
        manifest = json.loads((results / "teachers" / TASK_NAME / "manifest.json").read_text())
        assert manifest["steps"] == manifest["planned_steps"] > 10 and manifest["recipe"]["max_minutes"] is None
        made.append((manifest["fingerprint"], (results / "teachers" / TASK_NAME / "model.safetensors").read_bytes()))
    assert made[0] == made[1]


def test_teacher_seeds_keep_the_best_on_validation_and_score_only_it_on_dev(task_dir, base_dir, tmp_path):
    """--seeds 3: three fine-tunes (seeds 0-2), each scored on validation; the kept teacher is the one with the
    best validation metric (its weights, its seed in the recipe), and dev scores it alone."""
    r = invoke("teacher", "--task", task_dir, "--text-column", "text", "--base", base_dir, "--max-len", MAX_LEN,
               "--results", tmp_path, "--threads", 1, "--epochs", 1, "--seeds", 3)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "teachers" / TASK_NAME / "manifest.json").read_text())
    candidates = manifest["candidates"]
    assert [c["seed"] for c in candidates] == [0, 1, 2] and all("dev" not in c for c in candidates)
    best = max(candidates, key=lambda c: c["val"]["metric"])
    assert manifest["recipe"]["seed"] == best["seed"] and manifest["val"] == best["val"]
    assert len({c["val"]["metric"] for c in candidates}) > 1 or best["seed"] == 0  # ties keep the first
    again = invoke("teacher", "--task", task_dir, "--text-column", "text", "--base", base_dir, "--max-len", MAX_LEN,
                   "--results", tmp_path / "one", "--threads", 1, "--epochs", 1)
    one = json.loads((tmp_path / "one" / "teachers" / TASK_NAME / "manifest.json").read_text())
    assert again.exit_code == 0 and one["candidates"] == [] and one["val"] == candidates[0]["val"]
    if best["seed"] == 0:
        assert one["fingerprint"] == manifest["fingerprint"]
    else:
        assert one["fingerprint"] != manifest["fingerprint"]
    assert_user_error(invoke("teacher", "--task", task_dir, "--text-column", "text", "--base", base_dir,
                             "--results", tmp_path / "x", "--seeds", 0), "--seeds 0: must be at least 1")
