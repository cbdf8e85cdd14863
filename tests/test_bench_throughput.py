"""`fastbert-nas bench throughput` (fastbert_nas.bench.throughput): the fastText-style table on a tiny teacher,
one export folder with weights and one without."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import cache_tiny_teacher, invoke
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import fastbert_nas.bench.throughput as bt
from fastbert_nas.core.tasks import TASKS, encode_for, load_task
from fastbert_nas.core.training import evaluate

EXAMPLES_USED = 200  # training rows the fake export records: fastText trains on as many


def fake_export(results, name: str, weights: bool) -> None:
    """An export folder as `fastbert-nas export` leaves one: the model (the tiny teacher's weights stand in
    for a student's) and export.json."""
    folder = results / "exports" / name
    if weights:
        AutoModelForSequenceClassification.from_pretrained(results / "teachers" / "sst2").save_pretrained(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "export.json").write_text(json.dumps({"name": "L3-H48-A4-I96", "hints": "3:3",
                                                    "examples_used": EXAMPLES_USED}))


def test_bench_throughput_scores_and_times_teacher_students_and_fasttext(tmp_path, data_dir, monkeypatch,
                                                                         restore_threads):
    cache_tiny_teacher(tmp_path, "sst2", data_dir, seed=0)
    fake_export(tmp_path, "sst2-25-seed1", weights=True)
    fake_export(tmp_path, "sst2-10", weights=False)
    monkeypatch.setattr(bt, "THROUGHPUT_MIN_RUN_S", 0.01)
    monkeypatch.setattr(bt, "THROUGHPUT_EXAMPLES", 16)
    r = invoke("bench", "throughput", "--tasks", "sst2", "--data-dir", str(data_dir), "--results", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert "sst2-10: no weights here" in r.output.replace(str(tmp_path / "exports") + "/", "")
    (task,) = json.loads((tmp_path / "benchmarks" / "throughput.json").read_text())["tasks"]
    assert [row["model"] for row in task["rows"]] == ["teacher", "L3-H48-A4-I96 (sst2-25-seed1)", "fastText"]
    teacher, student, fasttext = task["rows"]
    data = load_task(TASKS["sst2"], str(data_dir))
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teachers" / "sst2")
    tok = AutoTokenizer.from_pretrained(tmp_path / "teachers" / "sst2")
    dev = evaluate(model.eval(), data.spec, encode_for(data.spec, data.dev, tok), torch.device("cpu"))
    assert teacher["dev"]["metric"] == pytest.approx(dev["metric"]) == pytest.approx(student["dev"]["metric"])
    assert fasttext["train_examples"] == EXAMPLES_USED and 0 <= fasttext["dev"]["metric"] <= 1
    assert task["timed_examples"] == 16 and task["mean_tokens"] > 2
    for row in task["rows"]:
        assert set(row["speed"]) >= {"t1_b1", "t1_bB"} and all(v > 0 for v in row["speed"].values())
    assert "| fastText |" in (tmp_path / "benchmarks" / "throughput.md").read_text()


def test_bench_throughput_without_a_teacher_is_one_line(tmp_path, data_dir):
    r = invoke("bench", "throughput", "--tasks", "cola", "--data-dir", str(data_dir), "--results", str(tmp_path))
    assert r.exit_code == 2 and "run `fastbert-nas teacher --task cola`" in r.output and "Traceback" not in r.output
