"""`fastbert-nas bench fidelity` (fastbert_nas.bench.fidelity) on the smoke study: every student at every
rung and exported on the smoke budget; correlations, regrets, goals; a second run resumes from its records."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest
import torch
from conftest import SMOKE_STUDY, invoke, quick_timings

import fastbert_nas.bench.fidelity as bf

SMOKE_KD_STEPS = 8


def bench_args(data_dir, results, **over) -> list[str]:
    opts = {"--study": SMOKE_STUDY, "--students": 3, "--rungs": 2, "--budget": "smoke", "--kd-steps": SMOKE_KD_STEPS,
            "--data-dir": data_dir, "--results": results, "--threads": 1, **over}
    return ["bench", "fidelity", *[str(x) for k, v in opts.items() for x in (k, v)]]


def test_bench_fidelity_measures_each_student_at_each_rung_and_resumes(smoke_study_dir, data_dir, tmp_path,
                                                                       monkeypatch):
    shutil.copy(smoke_study_dir / f"{SMOKE_STUDY}.db", tmp_path)
    threads = torch.get_num_threads()
    quick_timings(monkeypatch)
    r = invoke(*bench_args(data_dir, tmp_path))
    torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "benchmarks" / "fidelity.json").read_text())
    study = optuna.load_study(study_name=SMOKE_STUDY, storage=f"sqlite:///{tmp_path}/{SMOKE_STUDY}.db")
    trials = {t.number: t for t in study.get_trials()}
    rows = report["rows"]
    assert 2 <= len(rows) <= 3 and report["rungs"] == 2 and report["chosen_on"] == "validation"
    for row in rows:
        t = trials[row["trial"]]
        assert row["kd_steps"] == [t.user_attrs["kd_steps"], 3 * t.user_attrs["kd_steps"]]
        # rung 0 is the trial again: same student, recipe, seed and rows, so the same validation metric
        assert row["rungs"][0] == pytest.approx(t.values[0])
        assert 0 <= row["rungs"][1] <= 1 and 0 <= row["export_dev"] <= 1
        assert (tmp_path / "fidelity" / SMOKE_STUDY / f"trial-{row['trial']}" / "export.json").exists()
    assert [c["rung"] for c in report["correlations"]] == [0, 1]
    for c in report["correlations"]:
        assert all(c[k] is None or -1 <= c[k] <= 1 for k in ("spearman_val", "spearman_dev", "kendall_val",
                                                               "kendall_dev"))
    assert [g["goal"].split(" >=")[0] for g in report["goals"]][0] == "Spearman(top rung val, export dev)"
    assert len(report["goals"]) == 1 + len(bf.FIDELITY_PICKS)  # SST-2: the regret goals too
    assert "# Rank fidelity of the rungs" in (tmp_path / "benchmarks" / "fidelity.md").read_text()

    r = invoke(*bench_args(data_dir, tmp_path))  # the same command again: every run is on record
    assert r.exit_code == 0, r.output
    assert "rung 0 (" not in r.output and "exporting trial" not in r.output
    assert json.loads((tmp_path / "benchmarks" / "fidelity.json").read_text())["rows"] == rows


def test_correlations_and_regret_on_plain_rows():
    rows = [{"trial": n, "rungs": [v0, v1], "kd_steps": [4, 12], "export_val": ev, "export_dev": ed,
             "flops_share": share}
            for n, v0, v1, ev, ed, share in [(0, 0.70, 0.80, 0.85, 0.84, 0.20), (1, 0.75, 0.78, 0.80, 0.79, 0.22),
                                             (2, 0.60, 0.70, 0.75, 0.74, 0.05)]]
    corr = bf.correlations(rows, 2)
    assert corr[1]["spearman_dev"] == pytest.approx(1.0) and corr[0]["spearman_dev"] == pytest.approx(0.5)
    regret = bf.regrets(rows, {"flops<=0.25": 1, "flops<=0.1": 2})
    assert regret[0]["regret_points"] == pytest.approx(5.0) and regret[0]["best_trial"] == 0
    assert regret[1]["regret_points"] == pytest.approx(0.0)
