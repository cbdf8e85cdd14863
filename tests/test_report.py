"""Plots and reports (report/: rows.py, plots.py, remeasure.py, fasttext.py) on studies built by hand
with optuna.create_trial: no training. The figures are checked point by point; the HTML is opened
in headless Chromium and the PNGs read back (marked slow: they start a browser)."""

from __future__ import annotations

import functools
import json
import math
import struct
import subprocess

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from transformers import AutoModelForSequenceClassification
from typer.testing import CliRunner

import fastbert_nas.report.remeasure as remeasure_mod
from fastbert_nas.cli import app
from fastbert_nas.config import StudentArch
from fastbert_nas.core.runtime import latency
from fastbert_nas.core.tasks import VAL_SENTENCES
from fastbert_nas.report import fasttext as fasttext_ref
from fastbert_nas.report import plots
from fastbert_nas.report import rows as report
from fastbert_nas.search.space import load_space, space_budget

TEACHER_FLOPS = 2.7e9
TEACHER_VAL = 0.9
TEACHER_LATENCY_MS = 10.0
MAJORITY = 0.5  # the majority-class accuracy on the trials' validation rows
EXAMPLES = 300  # training examples the trials "distilled" on: the fastText reference trains on as many
DISTRIBUTIONS = {"layers": IntDistribution(1, 12), "hidden": CategoricalDistribution([32, 48, 64]),
                 "lr": FloatDistribution(1e-5, 1e-3, log=True)}

# (state, metric, FLOPs, latency ms, arch, baseline): trial numbers are the positions.
TRIALS = [
    (TrialState.COMPLETE, 0.85, 1.4e9, 8.0, "L6-H64-A4-I256", "DistilBERT-like"),
    (TrialState.COMPLETE, 0.80, 0.3e9, 2.0, "L4-H32-A4-I128", ""),
    (TrialState.COMPLETE, 0.78, 0.5e9, 3.0, "L2-H48-A4-I96", ""),      # dominated on both fronts
    (TrialState.COMPLETE, 0.83, 0.6e9, 1.5, "L3-H48-A4-I192", ""),
    (TrialState.PRUNED, 0.60, 0.2e9, 1.0, "L2-H32-A4-I64", ""),
    (TrialState.FAIL, None, None, None, "L1-H32-A4-I64", ""),
    (TrialState.COMPLETE, 0.70, 0.1e9, 3.5, "L1-H48-A4-I96", ""),
]
FLOPS_FRONT = [6, 1, 3, 0]     # cheapest first
LATENCY_FRONT = [3, 0]


def trial(state, metric, flops, latency, arch, baseline, beside=False):
    """`beside`: the trial's validation record has macro-F1 and the majority level beside accuracy (as a
    multi-class task's does)."""
    a = StudentArch.parse(arch, "1:1")
    attrs = {"name": a.name, "hints": a.hints_str, "arch": a.to_dict(), "config": {"examples": EXAMPLES},
             "latency_device": "cpu", "latency_threads": 1, "wall_s": 1.0, "curve": {}}
    if flops is not None:
        attrs.update(flops=flops, params=int(flops / 300), latency_ms=latency, curve={"10": metric})
    if beside and state == TrialState.COMPLETE:
        attrs["val"] = {"accuracy": metric, "macro_f1": metric - 0.1, "majority": MAJORITY, "metric": metric}
    if baseline:
        attrs["baseline"] = baseline
    params = {"layers": a.layers, "hidden": a.hidden, "lr": 1e-4 * (1 + a.layers)}
    return create_trial(state=state, values=[metric, flops] if state == TrialState.COMPLETE else None,
                        params=params, distributions=DISTRIBUTIONS, user_attrs=attrs)


def make_study(results, name="sst2-test", rows=TRIALS, teacher_id="results/teachers/sst2", beside=False):
    """A study as `search` leaves one, in RESULTS/<name>.db."""
    results.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{results / name}.db",
                                directions=["maximize", "minimize"])
    for key, value in {"task": "sst2", "space": "tiny", "objectives": "metric,flops", "metric": "accuracy",
                       "teacher_id": teacher_id, "teacher_fingerprint": "f" * 16, "teacher_params": 22_000_000,
                       "teacher_flops": TEACHER_FLOPS, "teacher_val": {"accuracy": TEACHER_VAL, "metric": TEACHER_VAL},
                       "teacher_latency_ms": TEACHER_LATENCY_MS, "teacher_latency_device": "cpu",
                       "teacher_latency_threads": 1, "seq_len": 128, "majority_val": MAJORITY}.items():
        study.set_user_attr(key, value)
    for row in rows:
        study.add_trial(trial(*row, beside=beside))
    return study


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result, *fragments):
    """Exit code 2, one 'error:' line, the expected words, no traceback."""
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


def trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


# ---------------------------------------------------------------------------
# Rows, fronts, hypervolume

def test_pareto_front_is_cheapest_first_and_keeps_only_improvements():
    rows = [{"trial": n, "state": s.name, "metric": m, "flops": f, "latency_ms": lat}
            for n, (s, m, f, lat, _, _) in enumerate(TRIALS) if m is not None]
    assert [r["trial"] for r in report.pareto_front(rows, "flops")] == FLOPS_FRONT
    assert [r["trial"] for r in report.pareto_front(rows, "latency_ms")] == LATENCY_FRONT
    tie = rows + [{"trial": 9, "state": "COMPLETE", "metric": 0.80, "flops": 0.3e9, "latency_ms": 2.0}]
    assert [r["trial"] for r in report.pareto_front(tie, "flops")] == FLOPS_FRONT  # an equal point adds nothing
    assert report.pareto_front([], "flops") == []


def test_gather_rows_teacher_and_hypervolume_history(tmp_path):
    study = make_study(tmp_path)
    data = report.gather(study, tmp_path)
    assert data.metric == "accuracy" and data.task == "sst2" and data.examples == EXAMPLES
    assert sorted(r["trial"] for r in data.rows) == [0, 1, 2, 3, 4, 6]  # the FAIL trial has no metric
    assert {r["trial"]: r["state"] for r in data.rows}[4] == "PRUNED"
    assert data.teacher["metric"] == TEACHER_VAL and data.teacher["flops"] == TEACHER_FLOPS
    assert data.teacher["latency_ms"] == TEACHER_LATENCY_MS
    assert data.hv_reference == (MAJORITY, TEACHER_FLOPS) and data.majority == MAJORITY
    history = data.hv_history
    assert [h["trial"] for h in history] == list(range(len(TRIALS)))
    assert all(a["hypervolume"] <= b["hypervolume"] for a, b in zip(history, history[1:]))
    assert history[0]["hypervolume"] == pytest.approx((0.85 - MAJORITY) * math.log10(TEACHER_FLOPS / 1.4e9))
    # the front (FLOPS_FRONT, cheapest first), slab by slab: metric gained x decades of FLOPs saved
    log = lambda flops: math.log10(TEACHER_FLOPS / flops)  # noqa: E731
    expected = 0.2 * log(0.1e9) + 0.1 * log(0.3e9) + 0.03 * log(0.6e9) + 0.02 * log(1.4e9)
    assert history[-1]["hypervolume"] == pytest.approx(expected)


def test_importances_need_enough_trials(tmp_path):
    found, note = report.param_importances(make_study(tmp_path))
    assert note is None and set(found) == {"layers", "hidden", "lr"}
    assert sum(found.values()) == pytest.approx(1.0)
    few = make_study(tmp_path, "few", TRIALS[:2])
    found, note = report.param_importances(few)
    assert found == {} and "too few completed trials" in note


def test_front_table_retention_and_speedup(tmp_path):
    study = make_study(tmp_path)
    rows = report.front_table(study, report.gather(study, tmp_path))
    assert [r["trial"] for r in rows] == FLOPS_FRONT  # the study's objectives are metric,flops: the same front
    first = rows[0]
    assert first["retention"] == pytest.approx(0.70 / TEACHER_VAL)
    assert first["speedup"] == pytest.approx(TEACHER_LATENCY_MS / 3.5)
    assert first["gflops"] == pytest.approx(0.1) and first["student"] == "L1-H48-A4-I96"
    assert rows[-1]["note"] == "DistilBERT-like"


# ---------------------------------------------------------------------------
# Figures

def test_pareto_figures_have_the_front_the_dominated_and_the_references(tmp_path):
    study = make_study(tmp_path)
    data = report.gather(study, tmp_path)
    data.fasttext = {"val": {"metric": 0.75}, "latency_ms": 0.01, "examples": EXAMPLES}
    by_number = {n: t for n, t in enumerate(TRIALS)}

    fig = plots.pareto_figure([data], "flops")
    front = trace(fig, "front")
    assert list(front.x) == [by_number[n][2] for n in FLOPS_FRONT]
    assert list(front.y) == [by_number[n][1] for n in FLOPS_FRONT]
    assert front.line.shape == "hv" and fig.layout.xaxis.type == "log"
    assert sorted(trace(fig, "dominated").x) == [0.5e9]
    assert trace(fig, "dominated").opacity < 1
    assert not [t for t in fig.data if t.name.startswith("pruned")]  # only with --all
    assert list(trace(fig, "baselines").text) == ["DistilBERT-like"]
    teacher = trace(fig, "teacher")
    assert (teacher.x[0], teacher.y[0]) == (TEACHER_FLOPS, TEACHER_VAL)
    assert set(trace(fig, "fastText (no FLOPs figure)").y) == {0.75}
    hovertext = front.hovertext[0]
    for fragment in ("trial 6", "L1-H48-A4-I96", "hints 1:1", "accuracy 0.7000", "params", "FLOPs 0.1 G",
                     "latency 3.5 ms"):
        assert fragment in hovertext, hovertext

    fig = plots.pareto_figure([data], "latency", show_pruned=True)
    assert list(trace(fig, "front").x) == [by_number[n][3] for n in LATENCY_FRONT]
    assert list(trace(fig, "pruned (last checkpoint)").y) == [0.60]
    assert (trace(fig, "teacher").x[0], trace(fig, "fastText").x[0]) == (TEACHER_LATENCY_MS, 0.01)


def test_several_studies_overlay_in_their_own_colours(tmp_path):
    a = report.gather(make_study(tmp_path, "a"), tmp_path)
    b = report.gather(make_study(tmp_path, "b", TRIALS[1:4]), tmp_path)
    fig = plots.pareto_figure([a, b], "flops")
    front_a, front_b = trace(fig, "a: front"), trace(fig, "b: front")
    assert list(front_b.x) == [0.3e9, 0.6e9]
    assert front_a.line.color != front_b.line.color
    assert fig.layout.title.text.startswith("a, b: accuracy against FLOPs<br><sup>")  # the note on a line of its own
    assert {t.name for t in plots.hypervolume_figure([a, b]).data} == {"a", "b"}


def test_importance_figure_with_too_few_trials_says_why(tmp_path):
    study = make_study(tmp_path, "few", TRIALS[:2])
    fig = plots.importance_figure(report.gather(study, tmp_path), *report.param_importances(study))
    assert not fig.data and "too few completed trials" in fig.layout.annotations[0].text


# ---------------------------------------------------------------------------
# fastText

def test_fasttext_reference_is_trained_once_per_task_split(data_dir, tmp_path, monkeypatch):
    r = fasttext_ref.fasttext_reference("sst2", EXAMPLES, tmp_path, str(data_dir))
    assert r["examples"] == EXAMPLES and r["val_examples"] == VAL_SENTENCES and r["latency_batch"] == 1
    assert 0.5 < r["val"]["metric"] <= 1 and r["val"]["metric"] == r["val"]["accuracy"]
    assert 0 < r["latency_ms"] < 5
    [cached] = (tmp_path / "fasttext").glob("sst2-300-*.json")
    assert json.loads(cached.read_text()) == r

    monkeypatch.setattr(fasttext_ref, "train", lambda *a: pytest.fail("trained again despite the cache"))
    assert fasttext_ref.fasttext_reference("sst2", EXAMPLES, tmp_path, str(data_dir)) == r


# ---------------------------------------------------------------------------
# Re-measuring the front

def test_remeasure_times_the_front_and_stores_it(tmp_path, tiny_teacher_dir, monkeypatch):
    timed = []  # the parameter count of every model timed

    def quick(model, *args, **kwargs):
        timed.append(sum(p.numel() for p in model.parameters()))
        return latency(model, *args, min_run_time=0.05, **kwargs)

    monkeypatch.setattr(remeasure_mod, "latency", quick)
    make_study(tmp_path, teacher_id=str(tiny_teacher_dir))
    study = report.find_study("sst2-test", None, tmp_path)
    lines = []
    n = remeasure_mod.remeasure(study, report.gather(study, tmp_path), tmp_path, log=lines.append)
    front = set(FLOPS_FRONT) | set(LATENCY_FRONT) | {0}  # both fronts and the baseline
    assert n == len(front) and lines[0] == (f"re-measuring the teacher and {n} students in PyTorch fp32 on cpu, 1 threads, "
                                         "128 tokens ...")
    stored = optuna.load_study(study_name="sst2-test", storage=f"sqlite:///{tmp_path}/sst2-test.db"
                               ).user_attrs[report.REMEASURED]
    assert set(map(int, stored["trials"])) == front and stored["threads"] == 1 and stored["teacher_ms"] > 0
    assert (stored["backend"], stored["precision"], stored["device"]) == ("torch", "fp32", "cpu")
    again = report.gather(study, tmp_path)
    rows = {r["trial"]: r for r in again.rows}
    assert rows[3]["remeasured"] and rows[3]["latency_ms"] == stored["trials"]["3"]
    assert rows[3]["latency_ms_trial"] == 1.5 and not rows[2]["remeasured"] and rows[2]["latency_ms"] == 3.0
    assert again.teacher["remeasured"] and again.teacher["latency_ms"] == stored["teacher_ms"]
    assert "4 students re-measured side by side with the teacher in PyTorch fp32" in again.latency_note
    # The teacher itself was timed, besides the students (a count, not a timing: the suite may share the CPU).
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir)
    assert sum(p.numel() for p in teacher.parameters()) in timed and len(timed) == n + 1


def test_show_re_times_the_front_in_the_runtime_asked_for(tmp_path, tiny_teacher_dir, monkeypatch):
    """show --remeasure --latency-backend onnxruntime --precision int8: the front re-timed in ONNX Runtime int8,
    stored with its runtime, and shown (the log on stderr, so --format json stays JSON)."""
    monkeypatch.setattr(remeasure_mod, "latency", functools.partial(latency, min_run_time=0.05))
    make_study(tmp_path, teacher_id=str(tiny_teacher_dir))
    r = invoke("show", "--results", tmp_path, "--format", "json", "--remeasure", "--latency-backend", "onnxruntime",
               "--precision", "int8")
    assert r.exit_code == 0, r.output
    assert "re-measuring the teacher and" in r.stderr and "in ONNX Runtime int8" in r.stderr
    stored = optuna.load_study(study_name="sst2-test", storage=f"sqlite:///{tmp_path}/sst2-test.db"
                               ).user_attrs[report.REMEASURED]
    assert (stored["backend"], stored["precision"]) == ("onnxruntime", "int8")
    rows = {row["trial"]: row for row in json.loads(r.stdout)}
    assert rows and all(row["latency_ms"] == stored["trials"][str(n)] for n, row in rows.items())
    r = invoke("show", "--results", tmp_path)
    assert r.exit_code == 0 and "ONNX Runtime int8" in r.output  # the title says which runtime the ms are
    assert_user_error(invoke("show", "--results", tmp_path, "--precision", "int8"), "add --remeasure")


# ---------------------------------------------------------------------------
# The commands

def test_show_prints_the_front_in_each_format(tmp_path):
    make_study(tmp_path)
    r = invoke("show", "--results", tmp_path, "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["trial"] for row in rows] == FLOPS_FRONT
    r = invoke("show", "--results", tmp_path, "--format", "csv")
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith("trial,student,hints,rung,kd_steps,metric,others,retention")
    assert len(r.output.splitlines()) == 1 + len(FLOPS_FRONT)
    r = invoke("show", "--results", tmp_path, "--study", "sst2-test")
    assert r.exit_code == 0 and "Front of sst2-test" in r.output and "DistilBERT-like" in r.output
    assert "retention" in r.output and "77.8%" in r.output and "2.86x" in r.output  # 0.70 / 0.9, 10 / 3.5
    assert_user_error(invoke("show", "--results", tmp_path, "--format", "xml"), "--format 'xml'")


def test_show_and_the_plots_give_the_metrics_beside_the_tasks_own(tmp_path):
    """A multi-class task's trials record macro-F1 beside accuracy: show has them in a column of their own, the
    title gives the majority-class level, the points' hover text and the trial lines carry them."""
    from fastbert_nas.search.trials import trial_line

    study = make_study(tmp_path, "multi", beside=True)
    r = invoke("show", "--results", tmp_path, "--study", "multi", "--format", "json")
    rows = json.loads(r.output)
    assert [row["others"] for row in rows] == [f"macro_f1 {TRIALS[n][1] - 0.1:.4f}" for n in FLOPS_FRONT]
    r = CliRunner().invoke(app, ["show", "--results", str(tmp_path), "--study", "multi"], env={"COLUMNS": "400"})
    assert r.exit_code == 0 and f"majority class {MAJORITY:.4f}" in r.output and "macro_f1 0.6000" in r.output
    fig = plots.pareto_figure([report.gather(study, tmp_path)], "flops")
    assert "macro_f1 0.6000" in trace(fig, "front").hovertext[0]
    assert "macro_f1 0.6000" in trial_line(study.trials[6], "accuracy")
    make_study(tmp_path)
    plain = CliRunner().invoke(app, ["show", "--results", str(tmp_path), "--study", "sst2-test"], env={"COLUMNS": "400"})
    assert "macro_f1" not in plain.output and "│ also" not in plain.output  # nothing beside accuracy: no column


def test_plot_and_show_refuse_what_is_not_there(tmp_path):
    assert_user_error(invoke("plot", "--results", tmp_path / "none"), "no study database")
    make_study(tmp_path, "empty", [])
    make_study(tmp_path, "failed", [r for r in TRIALS if r[0] == TrialState.FAIL])
    assert_user_error(invoke("plot", "--results", tmp_path, "--study", "empty"), "no completed trial", "no trials")
    assert_user_error(invoke("show", "--results", tmp_path, "--study", "failed"), "no completed trial", "FAIL 1")
    assert_user_error(invoke("plot", "--results", tmp_path, "--study", "nope"), "nope.db not found")
    url = f"sqlite:///{tmp_path / 'failed.db'}"
    assert_user_error(invoke("show", "--storage", url, "--study", "nope"), "no study 'nope'", "failed")
    assert_user_error(invoke("plot", "--storage", f"sqlite:///{tmp_path / 'x.db'}"), "x.db not found")
    assert not (tmp_path / "x.db").exists()


def test_the_newest_study_is_the_default(tmp_path):
    make_study(tmp_path, "old", TRIALS[:2])
    make_study(tmp_path, "new")
    study = report.find_study(None, None, tmp_path)
    assert study.study_name == "new"


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def chromium() -> str:
    path = plots.find_browser()
    if path is None:
        pytest.fail("no Chromium for the browser tests: apt-get install -y chromium (.ci/run does)", pytrace=False)
    return path


@pytest.mark.slow
def test_plot_writes_html_that_draws_and_pngs_of_the_set_size(data_dir, tmp_path):
    chromium()
    make_study(tmp_path)
    r = invoke("plot", "--results", tmp_path, "--data-dir", data_dir, "--all")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "sst2-test"
    stems = ("pareto_flops", "pareto_latency", "hypervolume", "importances")
    assert f"written to {folder}/" in r.output
    for stem in stems:
        assert png_size(folder / f"{stem}.png") == (plots.PNG_WIDTH, plots.PNG_HEIGHT)
    assert list((tmp_path / "fasttext").glob("sst2-300-*.json"))  # the fastText reference, cached
    dom, errors = open_in_chromium(folder / "pareto_flops.html", tmp_path)
    assert "main-svg" in dom and "scatterlayer" in dom, dom[:2000]
    assert "fastText" in dom and "teacher" in dom
    assert not errors, errors


@pytest.mark.slow
def test_plot_overlays_several_studies(tmp_path):
    chromium()
    make_study(tmp_path, "a")
    make_study(tmp_path, "b", TRIALS[1:4])
    r = invoke("plot", "--results", tmp_path, "--study", "a", "--study", "b", "--no-fasttext")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "compare-a-vs-b"
    assert sorted(p.name for p in folder.glob("*.png")) == ["hypervolume.png", "pareto_flops.png",
                                                            "pareto_latency.png"]
    dom, errors = open_in_chromium(folder / "pareto_latency.html", tmp_path)
    assert "main-svg" in dom and "a: front" in dom and "b: front" in dom
    assert not errors, errors


def open_in_chromium(html, tmp_path) -> tuple[str, list[str]]:
    """The DOM after headless Chromium ran the page's scripts, and the page's console messages."""
    proc = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                           "--virtual-time-budget=10000", "--dump-dom", html.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Chromium logs every console message as INFO:CONSOLE, without its level: a plotly page logs none.
    errors = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, errors


@pytest.mark.slow
def test_a_real_search_is_plotted_remeasured_and_shown(data_dir, tiny_teacher_dir, tiny_teacher, sst2_data, tmp_path,
                                                       monkeypatch, restore_threads):
    """search (tiny teacher, tiny space, smoke budget) -> plot --remeasure -> show: the study records the
    teacher's validation metric and latency at creation, and the re-measured figures are plotted."""
    import torch

    import fastbert_nas.search.objective as objective_mod
    from fastbert_nas.core.tasks import encode_for
    from fastbert_nas.core.training import evaluate

    monkeypatch.setattr(objective_mod, "TRIAL_LATENCY_RUN_S", 0.05)
    monkeypatch.setattr(remeasure_mod, "latency", functools.partial(latency, min_run_time=0.05))
    r = invoke("search", "--task", "sst2", "--space", "tiny", "--budget", "smoke", "--data-dir", data_dir,
               "--teacher", tiny_teacher_dir, "--results", tmp_path, "--threads", 1, "--trials", 3)
    assert r.exit_code == 0, r.output
    attrs = optuna.load_study(study_name="sst2-tiny", storage=f"sqlite:///{tmp_path}/sst2-tiny.db").user_attrs
    # the teacher is scored on the validation rows the trials are scored on: the tiny space's smoke budget's
    rows = space_budget(load_space("tiny"), "smoke").eval_examples
    val = encode_for(sst2_data.spec, sst2_data.val, tiny_teacher.tokenizer)
    expected = evaluate(tiny_teacher.model, sst2_data.spec, val, torch.device("cpu"), rows)
    assert attrs["teacher_val"] == pytest.approx(expected) and attrs["teacher_val_rows"] == rows
    assert attrs["teacher_val"] != pytest.approx(evaluate(tiny_teacher.model, sst2_data.spec, val, torch.device("cpu")))
    assert attrs["teacher_latency_ms"] > 0
    assert attrs["teacher_latency_threads"] == 1

    r = invoke("plot", "--results", tmp_path, "--data-dir", data_dir, "--remeasure")
    assert r.exit_code == 0, r.output
    assert "re-measuring the teacher and" in r.output and "written to" in r.output
    assert len(list((tmp_path / "sst2-tiny").glob("*.png"))) == 4
    r = invoke("show", "--results", tmp_path, "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert rows and all(row["note"].endswith("re-measured") for row in rows)
    assert [row["gflops"] for row in rows] == sorted(row["gflops"] for row in rows)
