"""The search benchmark (`fastbert-nas bench search`, fastbert_nas.bench.search): the hypervolume-against-steps
curve of studies built by hand with optuna.create_trial, the arms' budgets, the goals on plain numbers, and one
whole run on the tiny setup (tiny random teacher, the `tiny` space, the `smoke` budget, one thread; no PNG: no
browser)."""

from __future__ import annotations

import inspect
import json
import math
import os
import socket

import optuna
import pytest
from conftest import assert_user_error, invoke
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

import fastbert_nas.bench.search as bs
import fastbert_nas.bench.search_curves as sc
import fastbert_nas.cli.bench as cli_bench
import fastbert_nas.report.plots as plots
import fastbert_nas.search.objective as objective_mod
import fastbert_nas.search.run as search_run
from fastbert_nas.config import RunEnv, UserError
from fastbert_nas.search.options import Search, SearchOptions
from fastbert_nas.search.space import load_space, sample

TEACHER_FLOPS = 1e9  # reference point: the majority level MAJORITY at the teacher's FLOPs, on log FLOPs
MAJORITY = 0.5

# (state, metric, FLOPs, training steps, why pruned), in the order they finish
TRIALS = [
    (TrialState.COMPLETE, 0.8, 0.5e9, 100, None),
    (TrialState.PRUNED, 0.6, 0.3e9, 40, "pareto"),
    (TrialState.PRUNED, None, 3e9, 0, "constraint"),
    (TrialState.COMPLETE, 0.9, 1.0e9, 100, None),
    (TrialState.FAIL, None, 0.4e9, 0, None),
    (TrialState.COMPLETE, 0.7, 0.25e9, 100, None),
]
# After each: cumulative steps, and the front's area above MAJORITY x decades of FLOPs saved (trial 3, at
# the teacher's FLOPs, saves none and adds nothing).
FIRST = 0.3 * math.log10(2)  # trial 0 alone: 0.8 at half the teacher's FLOPs
CURVE = [(100, FIRST), (140, FIRST), (140, FIRST), (240, FIRST), (240, FIRST),
         (340, 0.2 * math.log10(4) + 0.1 * math.log10(2))]


def hand_made_study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("teacher_flops", TEACHER_FLOPS)
    study.set_user_attr("majority_val", MAJORITY)
    for i, (state, metric, flops, steps, reason) in enumerate(TRIALS):
        attrs = {"flops": flops, "train_steps": steps, "wall_s": 1.0, "name": f"s{i}", "hints": "1:1",
                 "params": 1000, "latency_ms": 1.0, "latency_device": "cpu"}
        if reason:
            attrs["prune_reason"] = reason
        if state == TrialState.PRUNED and metric is not None:
            attrs["curve"] = {"2": metric}
        study.add_trial(create_trial(state=state, values=[metric, flops] if state == TrialState.COMPLETE else None,
                                     params={"layers": i + 1}, distributions={"layers": IntDistribution(1, 10)},
                                     user_attrs=attrs))
    return study


def test_the_curve_sums_steps_in_finishing_order_and_tracks_the_front():
    figures = bs.arm_figures(hand_made_study(), seed=7)
    curve = figures["curve"]
    assert [p["trial"] for p in curve] == list(range(len(TRIALS)))
    assert [p["steps"] for p in curve] == [s for s, _ in CURVE]
    assert [p["hypervolume"] for p in curve] == pytest.approx([h for _, h in CURVE])
    assert figures["seed"] == 7 and figures["train_steps"] == 340
    assert figures["hypervolume"] == pytest.approx(curve[-1]["hypervolume"])
    assert figures["states"] == {"COMPLETE": 3, "PRUNED": 1, "REJECTED": 1, "FAIL": 1}
    assert [p["wall_s"] for p in curve] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and figures["promotions"] == 0
    assert sc.hv_at(curve, 99) == 0 and sc.hv_at(curve, 239) == pytest.approx(FIRST)
    assert sc.hv_at(curve, 10**6) == pytest.approx(CURVE[-1][1]) and sc.hv_at(curve, 1.5, "wall_s") == pytest.approx(FIRST)
    assert sc.steps_to_reach(curve, CURVE[-1][1]) == 340 and sc.steps_to_reach(curve, FIRST) == 100
    assert sc.steps_to_reach(curve, CURVE[-1][1] + 0.01) is None


def curve(*points):
    return [{"steps": s, "wall_s": s / 10, "hypervolume": h} for s, h in points]


RANDOM = [curve((400, 0.50), (1000, 0.60)), curve((600, 0.55), (1200, 0.62)), curve((500, 0.64), (1100, 0.64))]


@pytest.mark.parametrize("tpe, needed, met", [
    # target 0.62 (random's median final), random's median total 1100 steps: 550 allowed
    ([curve((300, 0.62)), curve((200, 0.5), (500, 0.63)), curve((900, 0.61))], [300, 500, None], True),
    ([curve((300, 0.62)), curve((600, 0.7)), curve((900, 0.61))], [300, 600, None], False),   # median 600 > 550
    ([curve((100, 0.7)), curve((900, 0.61)), curve((900, 0.5))], [100, None, None], False),   # median not reached
    ([curve((550, 0.62)), curve((550, 0.62)), curve((550, 0.62))], [550, 550, 550], True),     # exactly 50%
])
def test_the_reach_goal_on_plain_numbers(tpe, needed, met):
    g = sc.reach_goal(tpe, RANDOM, share=0.5)
    assert g["target_hypervolume"] == 0.62 and g["random_total_steps"] == 1100 and g["allowed_steps"] == 550
    assert g["steps_to_target"] == needed and g["met"] is met
    spread = g["steps_to_target_spread"]
    ordered = sorted(needed, key=lambda n: float("inf") if n is None else n)
    assert (spread["min"], spread["median"], spread["max"]) == tuple(ordered)
    assert spread["reached"] == sum(n is not None for n in needed)
    assert g["share_of_random_steps"]["min"] == pytest.approx(ordered[0] / 1100)
    assert g["wall_minutes_to_target"]["min"] == pytest.approx(ordered[0] / 10 / 60)
    assert g["random_hypervolume_at_allowed"]["median"] == 0.50  # by step 550: 0.50, 0 (its first is at 600), 0.64


def test_the_median_curve_stops_where_the_shortest_seed_does():
    med = sc.median_curve(RANDOM)
    assert med[0] == (0, 0) and med[-1][0] == 1000
    assert dict(med)[500] == 0.50 and dict(med)[600] == 0.55 and dict(med)[1000] == 0.60


def test_a_ladder_arms_front_holds_only_students_at_the_top_rung_while_every_steps_count():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("teacher_flops", TEACHER_FLOPS)
    study.set_user_attr("majority_val", MAJORITY)
    # (metric, FLOPs, steps, rung, student): two first-rung students, then student 0 promoted
    for i, (metric, flops, steps, rung, student) in enumerate([(0.8, 0.5e9, 100, 0, 0), (0.7, 0.25e9, 100, 0, 1),
                                                               (0.85, 0.5e9, 300, 1, 0)]):
        attrs = {"flops": flops, "train_steps": steps, "wall_s": 2.0, "rung": rung, "student": student,
                 "name": f"s{student}", "hints": "1:1", "params": 1000, "latency_ms": 1.0, "latency_device": "cpu"}
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=[metric, flops], params={"layers": student + 1},
                                     distributions={"layers": IntDistribution(1, 10)}, user_attrs=attrs))
    top = bs.arm_figures(study, seed=0, min_rung=1)
    assert [p["steps"] for p in top["curve"]] == [100, 200, 500] and [p["rung"] for p in top["curve"]] == [0, 0, 1]
    assert [p["hypervolume"] for p in top["curve"]] == pytest.approx([0, 0, 0.35 * math.log10(2)])
    assert top["hypervolume"] == pytest.approx(0.35 * math.log10(2)) and top["promotions"] == 1
    # every student at its highest rung: student 1 (first rung only) is on that front too
    assert top["hypervolume_all_rungs"] == pytest.approx(0.2 * math.log10(4) + 0.15 * math.log10(2))
    assert bs.arm_figures(study, seed=0)["hypervolume"] == pytest.approx(top["hypervolume_all_rungs"])


def test_equal_steps_and_the_goals_on_plain_numbers():
    # default's median total 1100, tpe's 1000: compared at 1000 steps, medians 0.60 (default) and 0.55 (tpe)
    tpe = [curve((500, 0.50), (1000, 0.55)), curve((400, 0.55), (900, 0.56)), curve((700, 0.52), (1100, 0.6))]
    g = sc.equal_steps_goal(RANDOM, tpe)
    assert g["steps"] == 1000 and g["hypervolume"]["median"] == 0.60 and g["other_hypervolume"]["median"] == 0.55
    assert g["met"] and not sc.equal_steps_goal(tpe, RANDOM)["met"]
    fast = [curve((300, 0.62), (1100, 0.7))] * 3  # reaches random's 0.62 at 300 steps <= 1100 / 3
    goals = sc.search_goals({"default": fast, "tpe": tpe, "random": RANDOM})
    assert goals["reach"]["met"] and goals["beat_tpe"]["met"] and goals["met"] and "gp_vs_default" not in goals
    assert goals["reach"]["allowed_steps"] == pytest.approx(1100 / 3)
    assert not sc.search_goals({"default": fast, "random": RANDOM})["met"]  # one goal judged is not both met
    assert "gp_vs_default" in sc.search_goals({"default": fast, "gp": tpe})


def test_ladder_arms_run_as_many_steps_and_flat_arms_train_at_the_top_rungs_budget(tmp_path):
    assert bs.ladder_trials(10, 2) == 15 and bs.ladder_trials(10, 3) == 30 and bs.ladder_trials(10, 1) == 10
    env = RunEnv(task="sst2", results=tmp_path)
    base = SearchOptions(env=env, space="thin-deep", budget="cpu", kd_steps=100, eval_every=50, baselines=False)
    ladder, flat = bs.arm_options(base, "default", 2, 10), bs.arm_options(base, "random", 2, 10)
    assert (ladder.sampler, ladder.pruning, ladder.rungs, ladder.trials, ladder.kd_steps) == ("tpe", "pareto", 2, 15, 100)
    assert (flat.sampler, flat.pruning, flat.rungs, flat.trials) == ("random", "none", 1, 10)
    top = Search.from_options(ladder).rung_config(1)
    cfg = Search.from_options(flat).cfg
    assert (cfg.kd_steps, cfg.eval_every, cfg.augment, cfg.hint_steps) == (top.kd_steps, top.eval_every, top.augment,
                                                                           top.hint_steps) == (300, 150, 2, 200)
    assert bs.parse_arms("random, default") == ("default", "random")
    with pytest.raises(UserError, match="--arms 'fast'"):
        bs.parse_arms("fast")


def test_the_arms_are_paired_tpe_starts_with_random_searchs_students():
    space = load_space("thin-deep")
    picks = {}
    for kind in ("tpe", "random"):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=search_run.make_sampler(1, 0, 0, kind))
        picks[kind] = []
        for i in range(search_run.TPE_STARTUP_TRIALS + 1):
            trial = study.ask()
            arch, settings = sample(space, trial, 6)
            picks[kind].append((arch, settings))
            study.tell(trial, [0.5 + 0.01 * i, float(i)])
    n = search_run.TPE_STARTUP_TRIALS
    assert picks["tpe"][:n] == picks["random"][:n]  # TPE's random startup trials
    assert picks["tpe"][n] != picks["random"][n]


@pytest.fixture
def quick(monkeypatch, restore_threads):
    """Short latency timings, one thread, no browser (HTML only: the PNG export is tested in test_report)."""
    monkeypatch.setattr(objective_mod, "TRIAL_LATENCY_RUN_S", 0.05)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(plots, "find_browser", lambda: None)


def bench_args(data_dir, teacher, results, **over):
    opts = {"--task": "sst2", "--setting": "tiny", "--trials": 2, "--seeds": 1, "--data-dir": data_dir,
            "--teacher": teacher, "--results": results, "--threads": 1, **over}
    return ["bench", "search", *[str(x) for k, v in opts.items() for x in (k, v)]]


def test_bench_search_runs_every_arm_writes_the_report_and_resumes(data_dir, tiny_teacher_dir, tmp_path, quick,
                                                                   monkeypatch):
    r = invoke(*bench_args(data_dir, tiny_teacher_dir, tmp_path))
    assert r.exit_code == 0, r.output
    assert not any(line.startswith("baseline ") for line in r.output.splitlines())  # none queued or skipped
    report = json.loads((tmp_path / "benchmarks" / "search-sst2.json").read_text())
    storage = f"sqlite:///{tmp_path / 'search-sst2.db'}"
    assert report["storage"] == storage and report["trials"] == 2 and report["seeds"] == 1
    assert list(report["runs"]) == ["default", "tpe", "random"] and report["ladder_trials"] == 3
    assert report["first_rung"]["kd_steps"] == 4 and report["top_rung"]["kd_steps"] == 12  # the tiny space's
    for arm, sampler, pruning, rungs in (("default", "tpe", "pareto", 2), ("tpe", "tpe", "pareto", 1),
                                         ("random", "random", "none", 1)):
        (run,) = report["runs"][arm]
        study = optuna.load_study(study_name=f"sst2-search-{arm}-s0", storage=storage)
        assert run["study"] == study.study_name and study.user_attrs["sampler"] == sampler
        assert study.user_attrs["rungs"] == rungs
        assert f"study sst2-search-{arm}-s0 (new)" in r.output and f"sampler {sampler}, pruning {pruning}" in r.output
        trials = study.get_trials()
        assert not any("baseline" in t.user_attrs for t in trials)
        first = [t for t in trials if t.user_attrs.get("rung", 0) == 0]
        assert len(first) == (3 if rungs == 2 else 2)
        top = [t for t in trials if t.user_attrs.get("rung", 0) == rungs - 1]
        assert {(t.user_attrs["config"]["kd_steps"], t.user_attrs["config"]["augment"]) for t in top} <= {(12, 2)}
        assert run["curve"][-1]["steps"] == run["train_steps"] == sum(t.user_attrs["train_steps"] for t in trials)
        front = [t for t in top if t.state == TrialState.COMPLETE]
        assert (run["hypervolume"] > 0) == any(t.values[0] > study.user_attrs["majority_val"] for t in front)
    assert report["goals"] == sc.search_goals({arm: [run["curve"] for run in runs]
                                               for arm, runs in report["runs"].items()})
    assert report["machine"]["threads"] == 1
    # the flat arms' augmented examples share the ladder's top-rung teacher cache; the exports' is left alone
    caches = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache").iterdir())
    assert caches == ["sst2-distill", "sst2-rung-augmented"], caches
    assert (tmp_path / "benchmarks" / "search-sst2.html").exists()
    assert (tmp_path / "benchmarks" / "search-sst2-wall.html").exists()
    assert "PNGs not written" in r.output
    md = (tmp_path / "benchmarks" / "search-sst2.md").read_text()
    assert "## Goals" in md and "--no-baselines" in md and "| random | 0 | sst2-search-random-s0 |" in md
    assert "Both goals:" in md and "3 first-rung trials a study" in md

    again = invoke(*bench_args(data_dir, tiny_teacher_dir, tmp_path))
    assert again.exit_code == 0 and again.output.count("(resumed)") == 3 and "used or running" not in again.output

    edited = bs.Setting("tiny", "smoke", {"kd_steps": 2, "eval_every": 2})  # the setting changed since
    monkeypatch.setitem(bs.SETTINGS, "tiny", edited)
    assert_user_error(invoke(*bench_args(data_dir, tiny_teacher_dir, tmp_path)), "sst2-search-default-s0",
                      "kd_steps 4 (now 2)", "another --results")


def test_bench_search_jobs_runs_each_study_in_a_process_of_its_own(data_dir, tiny_teacher_dir, tmp_path, quick,
                                                                    capfd):
    r = invoke(*bench_args(data_dir, tiny_teacher_dir, tmp_path, **{"--jobs": 2, "--arms": "tpe,random"}))
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "benchmarks" / "search-sst2.json").read_text())
    assert report["jobs"] == 2 and "2 studies at a time" in (tmp_path / "benchmarks" / "search-sst2.md").read_text()
    workers = {}
    for arm in ("tpe", "random"):
        study = optuna.load_study(study_name=f"sst2-search-{arm}-s0", storage=f"sqlite:///{tmp_path / 'search-sst2.db'}")
        trials = study.get_trials()
        assert len(trials) == 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
        assert [p["steps"] for p in report["runs"][arm][0]["curve"]][-1] == report["runs"][arm][0]["train_steps"]
        workers[arm] = {t.user_attrs["worker"] for t in trials}
    assert len(workers["tpe"]) == len(workers["random"]) == 1 and workers["tpe"] != workers["random"]
    assert f"{socket.gethostname()}:{os.getpid()}" not in workers["tpe"] | workers["random"]  # not this process
    out = capfd.readouterr().out  # the studies' processes write to the terminal, each line led by its study
    assert "[sst2-search-tpe-s0] study sst2-search-tpe-s0 (new)" in out
    assert "[sst2-search-random-s0] study sst2-search-random-s0 (new)" in out


def test_bench_search_jobs_a_study_refused_in_its_process_is_one_error(data_dir, tmp_path, quick, capfd):
    r = invoke(*bench_args(data_dir, tmp_path / "no-such-teacher", tmp_path, **{"--jobs": 2}))
    assert_user_error(r, "stopped with exit code 2", "the same command resumes")
    assert "] error: " in capfd.readouterr().out  # the study's own reason, led by its name


def test_bench_search_bad_options_and_cli_defaults(tmp_path):
    assert_user_error(invoke("bench", "search", "--setting", "huge", "--results", tmp_path), "--setting 'huge'")
    assert_user_error(invoke("bench", "search", "--seeds", 0, "--results", tmp_path), "--seeds 0")
    assert_user_error(invoke("bench", "search", "--jobs", 0, "--results", tmp_path), "--jobs 0")
    assert_user_error(invoke("bench", "search", "--arms", "tpe,fast", "--results", tmp_path), "--arms 'tpe,fast'")
    assert not any(tmp_path.iterdir())
    defaults = {k: p.default for k, p in inspect.signature(cli_bench.bench_search).parameters.items()}
    assert (defaults["trials"], defaults["seeds"], defaults["setting"], defaults["arms"]) == \
           (bs.DEFAULT_TRIALS, bs.DEFAULT_SEEDS, bs.DEFAULT_SETTING, ",".join(bs.DEFAULT_ARMS))
