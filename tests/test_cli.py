"""The command line through typer's CliRunner: a smoke distillation, and one-line user errors."""

import functools
import json
import re

import pytest
from conftest import assert_user_error, invoke

import fastbert_nas.core.cost as cost
from fastbert_nas.core.training import cpu_name

ARCH = "L2-H32-A4-I64"


@pytest.fixture
def fast_latency(monkeypatch):
    """Latency still measured, with short timed runs (0.05 s a figure instead of 1 s)."""
    monkeypatch.setattr(cost, "measure_latency", functools.partial(cost.measure_latency, min_run_time=0.05))


def distill_args(data_dir, teacher, results, **over):
    opts = {"--task": "sst2", "--data-dir": data_dir, "--teacher": teacher, "--arch": ARCH,
            "--hints": "1:1,2:3", "--budget": "smoke", "--results": results, "--threads": 1, **over}
    return ["distill", *[x for k, v in opts.items() if v is not None for x in (k, v)]]


def test_distill_smoke_writes_the_report(data_dir, tiny_teacher_dir, tmp_path, fast_latency, restore_threads):
    r = invoke(*distill_args(data_dir, tiny_teacher_dir, tmp_path))
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert re.search(rf"^{ARCH} hints 1:1,2:3 init teacher: dev \d\.\d{{4}} \(teacher \d\.\d{{4}}, "
                     r"retention [\d.]+%\), val \d\.\d{4}$", r.output, re.M), r.output
    assert re.search(r"^params [\d,]+ .*FLOPs [\d.]+ G .*speed-up b1 [\d.]+x, b32 [\d.]+x$", r.output, re.M)

    path = tmp_path / "distill" / f"sst2-{ARCH}-teacher-smoke.json"
    assert f"written to {path}" in r.output
    report = json.loads(path.read_text())
    assert report["name"] == ARCH and report["hints"] == "1:1,2:3" and report["budget"] == "smoke"
    dev_rows = len((data_dir / "SST-2" / "dev.tsv").read_text().splitlines()) - 1  # its header
    eval_rows = report["config"]["eval_examples"]                                   # validation rows scored
    assert report["dev"]["metric"] * dev_rows == pytest.approx(round(report["dev"]["metric"] * dev_rows))
    assert report["val"]["metric"] * eval_rows == pytest.approx(round(report["val"]["metric"] * eval_rows))
    assert report["retention"] == pytest.approx(report["dev"]["metric"] / report["teacher"]["dev"]["metric"])
    costs = report["costs"]
    assert costs["params"]["total"] > 0 and costs["flops"] > 0
    assert set(costs["latency"]) == {"b1", "b32"} and costs["latency"]["b1"]["threads"] == 1
    assert 0 < report["vs_teacher"]["flops_share"] < 1 and 0 < report["vs_teacher"]["params_share"] < 1
    assert {"speedup_b1", "speedup_b32"} <= set(report["vs_teacher"])
    assert report["distill"]["hint_steps"] == 4 and report["distill"]["kd_steps"] == 8
    assert [s for s, _ in report["distill"]["curve"]] == [4, 8]
    assert report["threads"] == 1 and report["teacher_cache"] is True and report["cpu"] == cpu_name()
    assert report["teacher"]["id"] == str(tiny_teacher_dir)
    assert list((tmp_path / "cache").glob("sst2-distill-*"))        # the teacher's outputs were cached

    before = path.read_text()
    r = invoke(*distill_args(data_dir, tiny_teacher_dir, tmp_path))  # again: a record of its own
    assert r.exit_code == 0, r.output
    again = path.with_name(f"{path.stem}-2.json")
    assert f"written to {again}" in r.output and path.read_text() == before and again.exists()


@pytest.mark.parametrize("over, fragments", [
    ({"--task": "nosuchtask"}, ["--task 'nosuchtask'", "not a built-in task"]),
    ({"--arch": "L2H32"}, ["--arch 'L2H32'"]),
    ({"--arch": "L2-H30-A4-I64"}, ["heads=4", "hidden=30"]),
    ({"--hints": "1:1,3:3"}, ["student layer 3 out of range 1..2"]),
    ({"--hints": "1:1,2:9"}, ["teacher layer 9 out of range 1..3"]),
    ({"--hints": "1-1"}, ["--hints '1-1'"]),
    ({"--budget": "huge"}, ["--budget 'huge'", "smoke"]),
    ({"--init": "bogus"}, ["--init 'bogus'"]),
    ({"--device": "cuda"}, ["--device cuda"]),
    ({"--device": "tpu"}, ["--device 'tpu'"]),
])
def test_bad_input_is_one_error_line(data_dir, tiny_teacher_dir, tmp_path, restore_threads, over, fragments):
    if over.get("--device") == "cuda":
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is available here")
    r = invoke(*distill_args(data_dir, tiny_teacher_dir, tmp_path, **over))
    assert_user_error(r, *fragments)
    assert not (tmp_path / "distill").exists()


def test_missing_custom_folders(data_dir, tiny_teacher_dir, tmp_path, restore_threads):
    r = invoke(*distill_args(data_dir, tiny_teacher_dir, tmp_path, **{"--task": tmp_path / "no_such_task"}))
    assert_user_error(r, "no_such_task", "not a built-in task")
    empty = tmp_path / "empty_task"
    empty.mkdir()
    r = invoke(*distill_args(data_dir, tiny_teacher_dir, tmp_path, **{"--task": empty}))
    assert_user_error(r, "no train.tsv or train.csv")


def test_missing_teacher_folder(data_dir, tmp_path, restore_threads):
    missing = tmp_path / "no_such_teacher"
    r = invoke(*distill_args(data_dir, missing, tmp_path))
    assert_user_error(r, "cannot load model", str(missing))


def test_teacher_with_the_wrong_label_count(tmp_path, tiny_teacher_dir, restore_threads):
    """A 3-class custom task against the 2-label tiny teacher."""
    task = tmp_path / "three"
    task.mkdir()
    rows = "sentence\tlabel\n" + "".join(f"row number {i}\t{'abc'[i % 3]}\n" for i in range(30))
    (task / "train.tsv").write_text(rows)
    (task / "dev.tsv").write_text(rows.replace("row number", "dev row"))  # dev texts apart from train's
    r = invoke(*distill_args(None, tiny_teacher_dir, tmp_path, **{"--task": task}))
    assert_user_error(r, "has 2 labels", "has 3")


def test_storage_can_come_from_the_environment(tmp_path):
    """--storage's default is $FASTBERT_NAS_STORAGE: a database password need not be on the command line."""
    from typer.testing import CliRunner

    from fastbert_nas.cli import app

    missing = tmp_path / "elsewhere.db"
    r = CliRunner().invoke(app, ["show", "--results", str(tmp_path)], env={"FASTBERT_NAS_STORAGE": f"sqlite:///{missing}"})
    assert_user_error(r, f"--storage sqlite:///{missing}", "not found")


def test_debug_shows_the_traceback_behind_the_error_line(tmp_path):
    r = invoke("--debug", "show", "--results", tmp_path)
    assert r.exit_code == 2 and "Traceback" in r.output, r.output
    assert r.output.strip().splitlines()[-1].startswith("error: no study database"), r.output
    assert_user_error(invoke("show", "--results", tmp_path), "no study database")  # the next run: one line again
