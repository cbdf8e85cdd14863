"""The search (`fastbert-nas search`, fastbert_nas.search): create, resume, refuse, reject, prune, survive a kill.

Tiny random teacher, the `tiny` space, the `smoke` budget, SQLite in tmp_path (or a throwaway PostgreSQL
server: the postgres_url fixture), one thread.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Callable

import optuna
import pytest
import sqlalchemy.engine
import torch
from conftest import assert_each_student_run_once, assert_user_error, cli_command, invoke, search_args
from optuna.trial import TrialState, create_trial
from transformers import BertConfig

import fastbert_nas.core.distill as distill_mod
import fastbert_nas.core.pipeline as pipeline
import fastbert_nas.search.baselines as baselines_mod
import fastbert_nas.search.objective as objective_mod
import fastbert_nas.search.options as options_mod
import fastbert_nas.search.run as search_run
import fastbert_nas.search.storage as storage_mod
import fastbert_nas.search.trials as trials_mod
from fastbert_nas.config import ENV_ATTR, RunEnv, StudentArch, UserError, trial_recipe
from fastbert_nas.core.backends import TORCH_FP32, Runtime
from fastbert_nas.search.promotion import enqueue_promotion
from fastbert_nas.search.pruning import PRUNE_MARGIN
from fastbert_nas.search.space import load_space

STUDY = "sst2-tiny"  # the default name: <task>-<space>
ATTRS = {"arch", "name", "hints", "config", "budget", "seed", "teacher_id", "teacher_fingerprint", "device",
         "params", "params_parts", "flops", "latency_ms", "latency_device", "latency_threads", "curve",
         "train_steps", "wall_s", "worker", "val"}


@pytest.fixture(autouse=True)
def quick(monkeypatch, restore_threads):
    """Short latency timings, one thread."""
    monkeypatch.setattr(objective_mod, "TRIAL_LATENCY_RUN_S", 0.05)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def load(results: Path, name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{results}/{name}.db")


# ---------------------------------------------------------------------------
# Create, resume, refuse

def test_smoke_study_completes_then_resumes(data_dir, tiny_teacher_dir, tmp_path):
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path))
    assert r.exit_code == 0, r.output
    assert f"study {STUDY} (new)" in r.output
    assert "baseline TinyBERT-4-like skipped: space 'tiny' cannot represent it (4 layers" in r.output
    assert "ran 3 trials" in r.output and "Front of sst2-tiny" in r.output
    assert sum(line.startswith("trial ") for line in r.output.splitlines()) == 3
    first = load(tmp_path).get_trials()
    assert [t.number for t in first] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in first)
    for t in first:
        a = t.user_attrs
        assert ATTRS <= set(a), ATTRS - set(a)
        assert a["arch"]["layers"] == t.params["layers"] and isinstance(a["arch"]["hints"], list)
        assert a["flops"] > 0 and a["params"] > 0 and a["latency_ms"] > 0 and a["latency_device"] == "cpu"
        assert a["teacher_id"] == str(tiny_teacher_dir) and a["seed"] == 0
        assert list(a["curve"]) == ["2", "4"] and a["train_steps"] == 2 + 4
        assert t.values[0] == pytest.approx(a["curve"]["4"]) and t.values[1] == a["flops"]
    attrs = load(tmp_path).user_attrs
    assert attrs["space"] == "tiny" and attrs["objectives"] == "metric,flops" and attrs["task"] == "sst2"

    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 5}))
    assert r.exit_code == 0, r.output
    assert f"study {STUDY} (resumed)" in r.output and "ran 2 trials" in r.output
    assert "baseline" not in r.output  # queued only in a new study
    after = load(tmp_path).get_trials()
    assert [t.number for t in after] == [0, 1, 2, 3, 4]
    for old, new in zip(first, after):
        assert (new.state, new.params, new.datetime_start, new.datetime_complete) == \
               (old.state, old.params, old.datetime_start, old.datetime_complete)

    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 5}))
    assert r.exit_code == 0 and "ran 0 trials" in r.output
    assert len(load(tmp_path).get_trials()) == 5


def test_reopening_with_another_space_or_objectives_is_refused(data_dir, tiny_teacher_dir, tmp_path):
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 0}))  # creates, runs nothing
    assert r.exit_code == 0, r.output
    assert load(tmp_path).get_trials() == []
    other_space = search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--study": STUDY, "--space": "shallow-wide"})
    assert_user_error(invoke(*other_space), "created with --space tiny", "--space shallow-wide", "--study NEW_NAME")
    other_obj = search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--objectives": "metric,latency"})
    assert_user_error(invoke(*other_obj), "--objectives metric,flops", "--objectives metric,latency",
                      "--study NEW_NAME")
    edited = tmp_path / "tiny.yaml"  # same name, other choices
    edited.write_text(Path(load_space("tiny").path).read_text().replace("ffn_ratio: [2]", "ffn_ratio: [2, 4]"))
    assert_user_error(invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--space": edited})),
                      "a space with other choices", "--study NEW_NAME")
    assert load(tmp_path).get_trials() == []


def test_the_sampler_is_recorded_and_another_is_refused_on_reopen(data_dir, tiny_teacher_dir, tmp_path):
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", **{"--sampler": "random",
                                                                                     "--trials": 1}))
    assert r.exit_code == 0, r.output
    assert "sampler random, pruning pareto" in r.output and "ran 1 trials" in r.output
    assert load(tmp_path).user_attrs["sampler"] == "random"
    assert_user_error(invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 2})),
                      "created with --sampler random", "this run asks for --sampler tpe", "--study NEW_NAME")
    assert len(load(tmp_path).get_trials()) == 1
    assert isinstance(search_run.make_sampler(0, 0, 0, "random"), optuna.samplers.RandomSampler)
    assert isinstance(search_run.make_sampler(0, 0, 0), optuna.samplers.TPESampler)


def test_a_gaussian_process_study_models_past_its_random_start(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    """--sampler gp: Optuna's GPSampler after TPE_STARTUP_TRIALS random ones, conditional heads and the trials'
    constraint values included; no trial fails."""
    monkeypatch.setattr(search_run, "TPE_STARTUP_TRIALS", 2)
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines",
                            **{"--sampler": "gp", "--trials": 5, "--max-params": 2e6}))
    assert r.exit_code == 0, r.output
    assert "sampler gp" in r.output and load(tmp_path).user_attrs["sampler"] == "gp"
    trials = load(tmp_path).get_trials()
    assert len(trials) == 5 and TrialState.FAIL not in {t.state for t in trials}, r.output
    assert all(t.constraints for t in trials)  # what the GP models beside the objectives
    assert isinstance(search_run.make_sampler(0, 0, 0, "gp"), optuna.samplers.GPSampler)


def test_a_space_that_lists_relation_weight_trains_trials_with_the_relation_loss(data_dir, tiny_teacher_dir,
                                                                                  tmp_path):
    """A space file's relation_weight choices are sampled like the other recipe keys; trials train with the
    relation loss from the teacher cache (the relation layer's input read from it) and finish."""
    from fastbert_nas.search.space import load_space

    space = tmp_path / "relation.yaml"
    space.write_text(Path(load_space("tiny").path).read_text() + "relation_weight: [1.0, 2.0]\n")
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines",
                            **{"--space": space, "--trials": 3, "--study": "relation"}))
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="relation", storage=f"sqlite:///{tmp_path}/relation.db")
    trials = study.get_trials()
    assert len(trials) == 3 and TrialState.FAIL not in {t.state for t in trials}, r.output
    assert all(t.params["relation_weight"] == t.user_attrs["config"]["relation_weight"] in (1.0, 2.0)
               for t in trials)


def test_a_study_keeps_its_hint_scheme_rungs_and_runtime_and_an_older_one_resumes_with_the_old_ones():
    """Resumed without the options, a study keeps what it was made with, its recorded environment included;
    a study made before hint slots, rungs and runtimes were recorded resumes sorted, with one rung, in
    PyTorch fp32; an option that contradicts the study is refused."""
    opts = options_mod.SearchOptions(env=RunEnv("sst2"), space="tiny", budget="smoke")
    search = options_mod.Search.from_options(opts)
    made = options_mod.Search.from_options(replace(opts, rungs=2, latency_backend="onnxruntime", precision="int8"))
    attrs = {**made.study_attrs(), ENV_ATTR: RunEnv("sst2", max_len=64).to_dict()}
    assert attrs["hint_scheme"] == search.hint_scheme == "slots"
    again = search.resumed(attrs)
    assert (again.hint_scheme, again.rungs, again.runtime) == ("slots", 2, Runtime("onnxruntime", "int8"))
    assert again.opts.env.max_len == 64 == again.seq_len
    older = {k: v for k, v in attrs.items() if k not in ("hint_scheme", "rungs", "latency_backend", "latency_precision")}
    old = search.resumed(older)
    assert (old.hint_scheme, old.rungs, old.runtime) == ("sorted", 1, TORCH_FP32)
    with pytest.raises(UserError, match="times latency in ONNX Runtime int8; this run asks for ONNX Runtime fp32"):
        options_mod.Search.from_options(replace(opts, precision="fp32")).resumed(attrs)


def test_a_resumed_study_keeps_its_trial_budget_and_refuses_another():
    """A study runs every trial at the budget it was made with: resumed with no step option it keeps the
    recorded counts (a changed default or space file does not mix budgets); a contradicting --budget or
    step option is refused; a study made before budgets were recorded resumes at this run's."""
    opts = options_mod.SearchOptions(env=RunEnv("sst2"), space="tiny", budget="smoke")
    made = options_mod.Search.from_options(replace(opts, hint_steps=3, kd_steps=6))
    attrs = {**made.study_attrs(), ENV_ATTR: RunEnv("sst2").to_dict()}
    assert attrs["trial_budget"]["budget"] == "smoke" and attrs["trial_budget"]["hint_steps"] == 3
    search = options_mod.Search.from_options(opts)
    assert (search.cfg.hint_steps, search.cfg.kd_steps) != (3, 6)
    again = search.resumed(attrs)
    assert (again.cfg.hint_steps, again.cfg.kd_steps, again.cfg.seed) == (3, 6, search.cfg.seed)
    assert options_mod.Search.from_options(replace(opts, hint_steps=3)).resumed(attrs).cfg.kd_steps == 6
    with pytest.raises(UserError, match="runs its trials at hint_steps=3; this run asks for --hint-steps 5"):
        options_mod.Search.from_options(replace(opts, hint_steps=5)).resumed(attrs)
    with pytest.raises(UserError, match="runs its trials at --budget smoke; this run asks for --budget cpu"):
        options_mod.Search.from_options(replace(opts, budget="cpu")).resumed(attrs)
    older = {k: v for k, v in attrs.items() if k != "trial_budget"}
    assert search.resumed(older).cfg == search.cfg


def test_a_study_made_before_the_sampler_option_resumes_as_tpe():
    tpe = options_mod.Search.from_options(options_mod.SearchOptions(env=RunEnv("sst2"), space="tiny", budget="smoke"))
    old = {k: v for k, v in tpe.study_attrs().items() if k != "sampler"}
    options_mod.check_compatible(tpe, old)
    random = options_mod.Search.from_options(options_mod.SearchOptions(env=RunEnv("sst2"), space="tiny", sampler="random"))
    with pytest.raises(UserError, match="created with --sampler tpe; this run asks for --sampler random"):
        options_mod.check_compatible(random, old)


@pytest.mark.parametrize("over, fragments", [
    ({"--objectives": "flops,metric"}, ["--objectives 'flops,metric'"]),
    ({"--objectives": "metric,flops,flops"}, ["--objectives"]),
    ({"--objectives": "metric"}, ["needs a cost constraint"]),
    ({"--max-flops": -1}, ["--max-flops -1"]),
    ({"--pruning": "median"}, ["--pruning 'median'"]),
    ({"--pruner": "asha"}, ["--pruner 'asha'"]),
    ({"--sampler": "nsga2"}, ["--sampler 'nsga2'"]),
    ({"--workers": 0}, ["--workers 0"]),
    ({"--pruning-margin": -0.1}, ["--pruning-margin -0.1"]),
    ({"--space": "nosuchspace"}, ["--space 'nosuchspace'"]),
    ({"--budget": "huge"}, ["--budget 'huge'"]),
    ({"--storage": "nosuchdb://x"}, ["--storage nosuchdb://x"]),
    ({"--enqueue": "L2-X"}, ["--enqueue 'L2-X'", "L<layers>-H<hidden>", "ARCH@HINTS"]),
    ({"--enqueue": "L2-H32-A4-I64@2:1,x"}, ["--enqueue 'L2-H32-A4-I64@2:1,x'", "student:teacher pairs"]),
    ({"--enqueue": "L2-H40-A4-I80"}, ["--enqueue L2-H40-A4-I80@2:3", "hidden=40 is not among"]),
    ({"--enqueue": "L2-H32-A4-I64@1:4"}, ["--enqueue L2-H32-A4-I64@1:4"]),  # the teacher has 3 layers
])
def test_bad_options_are_one_error_line(data_dir, tiny_teacher_dir, tmp_path, over, fragments):
    assert_user_error(invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **over)), *fragments)


def test_enqueued_students_run_first_with_the_trial_recipe(data_dir, tiny_teacher_dir, tmp_path):
    queue = ["--enqueue", "L2-H32-A4-I64@1:2,2:3", "--enqueue", "L1-H16-A2-I32"]
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", *queue, **{"--trials": 2}))
    assert r.exit_code == 0, r.output
    assert "student L2-H32-A4-I64 hints 1:2,2:3 queued (--enqueue)" in r.output
    assert "student L1-H16-A2-I32 hints 1:3 queued (--enqueue)" in r.output  # default hint: last -> last
    trials = load(tmp_path).get_trials()
    assert [t.user_attrs["arch"] for t in trials] == [
        {"layers": 2, "hidden": 32, "heads": 4, "ffn": 64, "hints": [[1, 2], [2, 3]]},
        {"layers": 1, "hidden": 16, "heads": 2, "ffn": 32, "hints": [[1, 3]]}]
    for t in trials:  # the tiny space samples the recipe: the queued params are trial_recipe's, where it allows
        assert t.user_attrs["enqueued"] is True and t.state == TrialState.COMPLETE
        recipe = trial_recipe(StudentArch.from_dict(t.user_attrs["arch"]))
        assert {k: t.params[k] for k in ("init", "temperature", "kd_alpha", "hint_weight", "lr")} == recipe
        assert {k: t.user_attrs["config"][k] for k in recipe} == recipe

    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, *queue, **{"--trials": 3}))
    assert r.exit_code == 0, r.output
    assert "--enqueue queues students in a new study only" in r.output and "queued (--enqueue)" not in r.output
    third = load(tmp_path).get_trials()[2]
    assert "enqueued" not in third.user_attrs  # sampled, not queued again

    one = tmp_path / "one"  # more students queued than --trials: the rest are left out, said so
    r = invoke(*search_args(data_dir, tiny_teacher_dir, one, "--no-baselines", *queue, **{"--trials": 1}))
    assert r.exit_code == 0, r.output
    assert "note: student L1-H16-A2-I32 not queued: the students queued before it use all of --trials" in r.output
    assert [t.state for t in load(one).get_trials()] == [TrialState.COMPLETE]  # nothing left WAITING

    refused = tmp_path / "refused"
    r = invoke(*search_args(data_dir, tiny_teacher_dir, refused, "--enqueue", "L2-H40-A4-I80"))
    assert_user_error(r, "hidden=40")
    assert not (refused / f"{STUDY}.db").exists()  # refused before the study file is made


def rungs_of(trials) -> dict[int, list]:
    """Trials per rung."""
    out: dict[int, list] = {}
    for t in trials:
        out.setdefault(trials_mod.rung_of(t), []).append(t)
    return out


def assert_promotions_train_their_student(trials) -> None:
    """Each promoted trial trains its parent's student (same params) for 3x the parent's KD steps, and no
    student holds a rung twice (duplicates PRUNED aside)."""
    by_number = {t.number: t for t in trials}
    held = [(trials_mod.student_of(t), trials_mod.rung_of(t)) for t in trials
            if trials_mod.rung_of(t) and t.user_attrs.get("prune_reason") != trials_mod.DUPLICATE
            and t.state != TrialState.FAIL]
    assert len(held) == len(set(held))
    for t in trials:
        if trials_mod.rung_of(t) and t.state == TrialState.COMPLETE:
            parent = by_number[t.user_attrs["parent"]]
            assert t.params == parent.params and trials_mod.rung_of(parent) == trials_mod.rung_of(t) - 1
            assert t.user_attrs["kd_steps"] == 3 * parent.user_attrs["kd_steps"]
            assert t.user_attrs["config"]["eval_every"] == 3 * parent.user_attrs["config"]["eval_every"]
            assert len(t.user_attrs["curve"]) == len(parent.user_attrs["curve"])  # as many checkpoints


RUNGS_ARGS = ("--no-baselines", "--pruning", "none", "--collapse-margin", "-1")  # every trial completes: exact counts


def test_rungs_promote_one_in_three_and_a_resume_runs_what_is_left(data_dir, tiny_teacher_dir, tmp_path):
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, *RUNGS_ARGS, **{"--trials": 9, "--rungs": 3})
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert "rungs 4 -> 12 -> 36 KD steps" in r.output and "rung (KD steps)" in r.output
    trials = load(tmp_path).get_trials()
    per_rung = rungs_of(trials)
    assert [len(per_rung[k]) for k in sorted(per_rung)] == [9, 3, 1], r.output
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert_promotions_train_their_student(trials)
    top = per_rung[2][0]
    assert f"trial {top.number} COMPLETE" in r.output
    assert f"rung 2 (36 KD steps) of trial {trials_mod.student_of(top)}" in r.output
    assert "9 of 9 trials used" in r.output and trials_mod.trials_used(trials) == 9
    # the top rung trains with the exports' augmentation, from a teacher cache of its own
    assert top.user_attrs["config"]["augment"] == 2
    assert all(t.user_attrs["config"]["augment"] == 0 for t in per_rung[0] + per_rung[1])
    assert len(list((tmp_path / "cache").glob("sst2-rung-augmented-*"))) == 1
    assert load(tmp_path).user_attrs["rungs"] == 3
    # every report takes the student at its highest rung
    shown = invoke("show", "--results", tmp_path, "--format", "json")
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output[shown.output.index("["):])
    on_front = {trials_mod.student_of(t) for t in trials if t.number in {row["trial"] for row in rows}}
    assert len(on_front) == len(rows)  # a student once
    highest = {trials_mod.student_of(t): t.number for t in trials_mod.top_rung_trials(trials)}
    assert all(highest[trials_mod.student_of(next(t for t in trials if t.number == row["trial"]))] == row["trial"]
               for row in rows)

    r = invoke(*args)  # the same command again: nothing left, no promotion due
    assert r.exit_code == 0, r.output
    assert "ran 0 trials" in r.output and "rungs 4 -> 12 -> 36" in r.output  # the study's own rungs
    assert len(load(tmp_path).get_trials()) == 13

    # two workers that promoted one student at once: the later start gives way
    study = load(tmp_path)
    again = per_rung[1][0]
    enqueue_promotion(study, next(t for t in trials if t.number == again.user_attrs["parent"]), 1)
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    dup = load(tmp_path).get_trials()[-1]
    assert dup.state == TrialState.PRUNED and dup.user_attrs["prune_reason"] == trials_mod.DUPLICATE, r.output
    assert "kd_steps" not in dup.user_attrs  # stopped before any work


def test_parse_objectives_and_limits():
    assert options_mod.parse_objectives("metric,flops,latency") == ("metric", "flops", "latency")
    assert options_mod.parse_objectives("metric") == ("metric",)
    for bad in ("", "metric,", "metric,flops,latency,params", "metric,speed"):
        with pytest.raises(UserError):
            options_mod.parse_objectives(bad)
    limits = options_mod.Limits(flops=100, latency=2.0)
    costs = {"flops": 150, "params": 10, "latency": 1.0}
    assert limits.excess(costs) == {"max_flops": pytest.approx(0.5), "max_latency": pytest.approx(-0.5)}
    assert limits.violated(costs) == "FLOPs 150 > --max-flops 100"
    assert limits.violated({**costs, "flops": 100}) is None


# ---------------------------------------------------------------------------
# Cost constraints: rejected before any training step

def test_constraint_rejects_before_training(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    """(--max-params: a --max-flops no student fits is refused before the study, see test_bad_input.)"""

    def no_training(*args, **kwargs):
        raise AssertionError("a student over the constraint was trained")

    monkeypatch.setattr(pipeline, "distill_student", no_training)
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--max-params": 1000}))
    assert r.exit_code == 0, r.output
    trials = load(tmp_path).get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.PRUNED for t in trials)  # they count toward --trials
    for t in trials:
        a = t.user_attrs
        assert a["prune_reason"] == "constraint" and "> --max-params 1000" in a["prune_detail"]
        assert a["train_steps"] == 0 and a["curve"] == {} and a["params"] > 1000
        assert t.constraints["max_params"] > 0  # TPE is told the region is infeasible
    lines = [ln for ln in r.output.splitlines() if ln.startswith("trial ")]
    assert len(lines) == 3 and all(" PRUNED " in ln and "(constraint: params" in ln for ln in lines), r.output


def test_single_objective_with_a_constraint(data_dir, tiny_teacher_dir, tmp_path):
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--objectives": "metric", "--max-params": 1e9,
                                                                     "--trials": 2}))
    assert r.exit_code == 0, r.output
    study = load(tmp_path)
    assert len(study.directions) == 1 and study.user_attrs["objectives"] == "metric"
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(t.intermediate_values == {2: t.user_attrs["curve"]["2"], 4: t.user_attrs["curve"]["4"]}
               for t in trials)  # reported to Optuna's pruner
    assert all(t.constraints["max_params"] < 0 for t in trials)


# ---------------------------------------------------------------------------
# Pareto pruning

# (costs, curve) of finished trials: a cheap, good one and a costly, better one
FINISHED = [({"flops": 10.0, "latency": 5.0, "params": 1.0}, {"100": 0.80, "200": 0.85}),
            ({"flops": 50.0, "latency": 1.0, "params": 1.0}, {"100": 0.90, "200": 0.92})]


def test_pareto_reason_compares_with_cheaper_finished_trials():
    costs = {"flops": 20.0, "latency": 10.0, "params": 1.0}
    kw = dict(finished=FINISHED, warmup=1)
    assert "below 0.8000" in objective_mod.pareto_reason(100, 0.70, costs, ("flops",), **kw)
    assert objective_mod.pareto_reason(100, 0.80 - PRUNE_MARGIN / 2, costs, ("flops",), **kw) is None  # within margin
    assert objective_mod.pareto_reason(100, 0.70, {**costs, "flops": 5.0}, ("flops",), **kw) is None  # nothing cheaper
    assert objective_mod.pareto_reason(100, 0.70, costs, ("flops",), finished=FINISHED, warmup=3) is None  # warm-up
    # three objectives: the cheaper-FLOPs trial is costlier in latency here, so it is no bar
    assert objective_mod.pareto_reason(100, 0.70, {**costs, "latency": 2.0}, ("flops", "latency"), **kw) is None
    assert objective_mod.pareto_reason(100, 0.70, costs, ("flops", "latency"), **kw) is not None
    # latency as the cost: the costly-FLOPs trial is the fastest, and sets the bar
    assert "below 0.9000" in objective_mod.pareto_reason(100, 0.85, costs, ("latency",), **kw)


class FakeTrial:
    def __init__(self):
        self.user_attrs = {}

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


def test_checkpoints_record_the_curve_and_stop_a_hopeless_trial():
    trial = FakeTrial()
    check = objective_mod.Checkpoints(trial, "pareto", {"flops": 20.0, "latency": 1.0, "params": 1.0}, ("flops",),
                                      warmup=1, finished=lambda: FINISHED, margin=0.03)
    assert check(100, {"metric": 0.79}) is False and check.reason is None  # within the margin of 0.80
    assert trial.user_attrs["curve"] == {"100": 0.79}
    assert check(200, {"metric": 0.70}) is True and "pruned at step 200" in check.reason
    assert trial.user_attrs["curve"] == {"100": 0.79, "200": 0.70}
    off = objective_mod.Checkpoints(FakeTrial(), "none", {"flops": 20.0}, ("flops",), 0, lambda: FINISHED)
    assert off(100, {"metric": 0.0}) is False


def test_pareto_pruning_prunes_a_trial_in_a_study(data_dir, tiny_teacher_dir, tmp_path):
    """A finished trial of lowest cost with a perfect curve: a new trial falls short at its first checkpoint."""
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 0, "--pruning-warmup": 1})
    assert invoke(*args).exit_code == 0
    study = load(tmp_path)
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[1.0, 1.0],
                                 user_attrs={"flops": 1, "params": 1, "latency_ms": 1e-3, "curve": {"2": 1.0, "4": 1.0},
                                             "name": "perfect"}))
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 2, "--pruning-warmup": 1})
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    t = load(tmp_path).get_trials()[1]
    assert t.state == TrialState.PRUNED, r.output
    a = t.user_attrs
    assert a["prune_reason"] == "pareto" and "pruned at step 2" in a["prune_detail"]
    assert list(a["curve"]) == ["2"] and a["kd_steps"] == 2  # stopped at the first checkpoint
    assert "(pareto: pruned at step 2" in r.output
    # a margin as wide as the metric's range stops nothing: the next trial runs its whole budget
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 3, "--pruning-warmup": 1,
                                                                "--pruning-margin": 1.0})
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    t = load(tmp_path).get_trials()[2]
    assert t.state == TrialState.COMPLETE and t.user_attrs["kd_steps"] == 4, r.output


# ---------------------------------------------------------------------------
# Baselines

def test_baselines_for_the_default_teacher():
    """MiniLM-L6-H384 (12 heads, FFN 1536) in the shipped spaces; what a space cannot hold is a note."""
    teacher = BertConfig(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)
    queued, notes = baselines_mod.baseline_params(load_space("thin-deep"), teacher)
    assert notes == ["baseline DistilBERT-like skipped: space 'thin-deep' cannot represent it "
                     "(3 layers, the space allows 4-12)"]
    assert {name: (arch.name, arch.hints_str) for name, arch, _ in queued} == {
        "TinyBERT-4-like": ("L4-H320-A8-I1280", "1:2,2:3,3:5,4:6"),       # 312 -> 320 wide; 8 heads divide it
        "MobileBERT-like": ("L12-H128-A4-I512", "3:2,6:3,9:5,12:6"),
        "teacher-depth-half-width": ("L6-H192-A12-I768", "2:2,3:3,5:5,6:6")}  # the slots of 6 layers
    assert all("init" not in p for _, _, p in queued)  # thin-deep samples no recipe: trial_recipe's teacher init

    queued, notes = baselines_mod.baseline_params(load_space("shallow-wide"), teacher)
    assert {name: arch.name for name, arch, _ in queued} == {"DistilBERT-like": "L3-H384-A12-I1536",
                                                             "TinyBERT-4-like": "L4-H256-A8-I1024"}
    assert [n.split(" skipped")[0] for n in notes] == ["baseline MobileBERT-like", "baseline teacher-depth-half-width"]


def test_baselines_run_first_in_a_new_study(data_dir, tiny_teacher_dir, tmp_path):
    space = tmp_path / "small3.yaml"  # holds two of the four baselines of the L3-H48 tiny teacher
    space.write_text(Path(load_space("tiny").path).read_text()
                     .replace("layers: {min: 1, max: 2}", "layers: {min: 1, max: 3}")
                     .replace("hidden: [16, 24, 32]", "hidden: [24, 48]"))
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--space": space, "--trials": 2}))
    assert r.exit_code == 0, r.output
    assert "baseline DistilBERT-like: L1-H48-A4-I96 hints 1:3 queued" in r.output
    assert "baseline teacher-depth-half-width: L3-H24-A4-I48 hints 2:2,3:3 queued" in r.output
    assert "baseline TinyBERT-4-like skipped" in r.output and "baseline MobileBERT-like skipped" in r.output
    trials = load(tmp_path, "sst2-small3").get_trials()
    assert [(t.user_attrs["baseline"], t.user_attrs["name"], t.state) for t in trials] == [
        ("DistilBERT-like", "L1-H48-A4-I96", TrialState.COMPLETE),
        ("teacher-depth-half-width", "L3-H24-A4-I48", TrialState.COMPLETE)]


# ---------------------------------------------------------------------------
# Trial budget: a retried FAIL counts once

def test_trials_used_counts_a_retried_failure_once():
    def trial(number, state, **system_attrs):
        t = create_trial(state=state, values=[0.5, 1.0] if state == TrialState.COMPLETE else None,
                         system_attrs=system_attrs)
        t.number = number
        return t

    trials = [trial(0, TrialState.COMPLETE), trial(1, TrialState.FAIL), trial(2, TrialState.PRUNED),
              trial(3, TrialState.WAITING, failed_trial=1, retry_history=[1]), trial(4, TrialState.FAIL)]
    assert trials_mod.trials_used(trials) == 4 - 1  # 0, 2 and 4; 1 counts through its retry, 3, once it runs
    trials[3].state = TrialState.COMPLETE
    assert trials_mod.trials_used(trials) == 4


# ---------------------------------------------------------------------------
# Faults in a trial: recorded FAIL with the reason, and the study goes on

def fails_once(real: Callable, fault: Callable) -> Callable:
    """`real`, except that its first call is `fault` (the first trial's)."""
    calls = []

    def patched(*args, **kwargs):
        calls.append(1)
        return (fault if len(calls) == 1 else real)(*args, **kwargs)
    return patched


def raise_(exc: BaseException) -> Callable:
    def fault(*args, **kwargs):
        raise exc
    return fault


FAULTS = {  # name: (module, function replaced, what its first call does, words of the trial's fail_reason)
    "nan-loss": (distill_mod, "kd_loss", lambda *a, **k: torch.tensor(float("nan")),
                 "FloatingPointError: non-finite loss (nan) after 2 hint and 0 KD steps: training diverged"),
    "gpu-out-of-memory": (pipeline, "distill_student",
                          raise_(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")),
                          "OutOfMemoryError: CUDA out of memory"),
    "cpu-out-of-memory": (pipeline, "distill_student",
                          raise_(RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory")),
                          "RuntimeError: DefaultCPUAllocator: can't allocate memory"),
    "unbuildable-student": (pipeline, "build_student", raise_(ValueError("no such student can be built")),
                            "ValueError: no such student can be built"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_trial_is_recorded_and_the_study_goes_on(data_dir, tiny_teacher_dir, tmp_path, monkeypatch, fault):
    module, name, first_call, reason = FAULTS[fault]
    monkeypatch.setattr(module, name, fails_once(getattr(module, name), first_call))
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines"))
    assert r.exit_code == 0, r.output
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE], r.output
    assert reason in trials[0].user_attrs["fail_reason"] and "wall_s" in trials[0].user_attrs
    assert "retry_history" not in trials[1].system_attrs  # a trial that failed by itself is not run again
    assert "trial 0 FAIL" in r.output and f"({reason}" in r.output
    assert trials_mod.trials_used(trials) == 3 and "ran 3 trials" in r.output


def test_workers_joining_a_study_at_once_sample_differently(monkeypatch):
    """The same command started twice at once (two machines, or the soak's two workers): same seed, rank and
    study length, yet different students; the creator of a study samples as its seed says."""
    def first_pick(pid: int, joined: bool) -> float:
        monkeypatch.setattr(os, "getpid", lambda: pid)
        study = optuna.create_study(sampler=search_run.make_sampler(0, 0, 0, joined=joined))
        return study.ask().suggest_float("lr", 1e-4, 1e-2, log=True)

    assert first_pick(100, joined=True) != first_pick(101, joined=True)
    assert first_pick(100, joined=False) == first_pick(101, joined=False)


def test_a_study_being_created_elsewhere_is_waited_for(tmp_path):
    """Two workers started at once: the second finds the study before the first has written its attrs."""
    storage = storage_mod.make_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="s")
    assert storage_mod.existing_attrs(storage, "s", wait_s=0.2) == {}  # still without attrs: not one of ours
    threading.Timer(0.5, lambda: [study.set_user_attr(k, 1) for k in ("task", storage_mod.LAST_ATTR)]).start()
    assert storage_mod.existing_attrs(storage, "s", wait_s=30) == {"task": 1, storage_mod.LAST_ATTR: 1}
    assert storage_mod.existing_attrs(storage, "other") is None


def test_a_spawned_worker_reports_a_user_error_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        search_run._worker(options_mod.SearchOptions(env=RunEnv("nosuchtask")), rank=1)
    assert exit_.value.code == 2
    assert capsys.readouterr().out.startswith("[worker 1] error: --task 'nosuchtask': not a built-in task")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the dead worker's trial is made by ask()
def test_a_dead_workers_trial_is_waited_for_and_retried(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    """Once --trials are used or running, a worker waits for the trials others run: one whose heartbeat stops
    is failed after the grace period and its retry run here, so that none is left RUNNING."""
    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "1,3")
    assert invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 0})).exit_code == 0
    storage = storage_mod.make_storage(f"sqlite:///{tmp_path}/{STUDY}.db")
    dead = optuna.load_study(study_name=STUDY, storage=storage).ask()  # a worker's trial; the worker then dies

    def last_beat_of_the_dead_worker(*args, **kwargs):  # while this worker's first trial runs
        storage.record_heartbeat(dead._trial_id)
        return distill_student(*args, **kwargs)

    distill_student = pipeline.distill_student
    monkeypatch.setattr(pipeline, "distill_student", fails_once(distill_student, last_beat_of_the_dead_worker))
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 2}))
    assert r.exit_code == 0, r.output
    assert f"trial {dead.number} FAIL: its worker sent no heartbeat for 3 s" in r.output
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE], r.output
    assert trials[2].system_attrs["failed_trial"] == dead.number and trials_mod.trials_used(trials) == 2


# ---------------------------------------------------------------------------
# Crash safety and workers (subprocesses: slower)

def running_mid_distillation(db: Path, promoted: bool = False) -> int | None:
    """The number of a RUNNING trial past its first checkpoint (`promoted`: at a rung above 0), read-only
    (opening the file through optuna while the search creates its tables would race with it)."""
    if not db.exists():
        return None
    rung = (" AND EXISTS (SELECT 1 FROM trial_user_attributes r WHERE r.trial_id = t.trial_id AND r.key = 'rung')"
            if promoted else "")
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            row = con.execute("SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                              "WHERE t.state = 'RUNNING' AND a.key = 'curve' AND a.value_json != '{}'"
                              + rung).fetchone()
    except sqlite3.Error:  # tables not there yet, or locked
        return None
    return row[0] if row else None


CATCH_S = 900  # seconds a search subprocess gets to start a trial (minutes where a busy machine starves it)


def start_mid_trial(args, db: Path, env: dict, promoted: bool = False) -> tuple[subprocess.Popen, int]:
    """The CLI as a subprocess, once one of its trials (`promoted`: one at a rung above 0) is RUNNING past its
    first checkpoint: (process, number)."""
    # SIGINT handled as in a terminal even when the tests run in a background job (`cmd &` ignores it there)
    proc = subprocess.Popen(cli_command(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    number = None
    deadline = time.monotonic() + CATCH_S
    while number is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        number = running_mid_distillation(db, promoted)
    if number is None:
        proc.kill()
        pytest.fail(f"no trial caught running:\n{proc.communicate()[0]}")
    return proc, number


@pytest.mark.slow
def test_a_killed_trial_is_failed_and_retried_once(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    env = {**os.environ, storage_mod.HEARTBEAT_ENV: "1,2", "OMP_NUM_THREADS": "1"}
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", **{"--kd-steps": 60})
    proc, number = start_mid_trial(args, tmp_path / f"{STUDY}.db", env)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    victim = load(tmp_path).get_trials()[number]
    assert victim.state == TrialState.RUNNING  # dead, but not yet known to be
    time.sleep(2 + 1.5)  # past the grace period

    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "1,2")
    r = invoke(*args)  # the same command again, in this process
    assert r.exit_code == 0, r.output
    assert f"trial {victim.number} FAIL: its worker sent no heartbeat" in r.output
    trials = load(tmp_path).get_trials()
    assert trials[victim.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == victim.params
    assert f"[retry of trial {victim.number}]" in r.output
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3 and trials_mod.trials_used(trials) == 3
    assert len({tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE}) == 3


@pytest.mark.slow
def test_a_killed_promotion_is_retried_at_its_rung(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    env = {**os.environ, storage_mod.HEARTBEAT_ENV: "1,2", "OMP_NUM_THREADS": "1"}
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, *RUNGS_ARGS, **{"--kd-steps": 20, "--rungs": 2})
    proc, number = start_mid_trial(args, tmp_path / f"{STUDY}.db", env, promoted=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    victim = load(tmp_path).get_trials()[number]
    assert trials_mod.rung_of(victim) == 1 and victim.state == TrialState.RUNNING
    time.sleep(2 + 1.5)  # past the grace period

    monkeypatch.setenv(storage_mod.HEARTBEAT_ENV, "1,2")
    r = invoke(*args)  # the same command again, in this process
    assert r.exit_code == 0, r.output
    trials = load(tmp_path).get_trials()
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE, r.output
    assert trials_mod.rung_of(retries[0]) == 1 and retries[0].user_attrs["kd_steps"] == 60
    assert trials_mod.student_of(retries[0]) == trials_mod.student_of(victim)
    assert [len(v) for _, v in sorted(rungs_of(trials).items())] == [3, 2]  # 3 students, the promotion and its retry
    assert trials_mod.trials_used(trials) == 3
    assert_promotions_train_their_student(trials)


@pytest.mark.slow
def test_ctrl_c_queues_the_trial_again_and_exits_130(data_dir, tiny_teacher_dir, tmp_path):
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", **{"--kd-steps": 60})
    proc, number = start_mid_trial(args, tmp_path / f"{STUDY}.db", {**os.environ, "OMP_NUM_THREADS": "1"})
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=CATCH_S)[0]
    assert proc.returncode == 130, out
    assert out.splitlines()[-1] == "interrupted: the running trial is queued again; run the same command to resume"
    assert "Traceback" not in out, out
    trials = load(tmp_path).get_trials()
    victim = trials[number]
    assert victim.state == TrialState.FAIL and victim.user_attrs["fail_reason"] == "interrupted"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert [t.state for t in retries] == [TrialState.WAITING] and retries[0].params == victim.params
    assert TrialState.RUNNING not in [t.state for t in trials]

    r = invoke(*args)  # the same command again: the interrupted student first, then the trials left
    assert r.exit_code == 0, r.output
    trials = load(tmp_path).get_trials()
    assert trials[retries[0].number].state == TrialState.COMPLETE and trials_mod.trials_used(trials) == 3
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.COMPLETE}, r.output


def wait_for_another_worker(monkeypatch, trials: Callable[[], list]) -> None:
    """Make this process's trials wait (up to 120 s) until a trial of another worker is in `trials()`, so
    that every worker runs some: patched here only, not in the spawned workers."""
    me = f"{socket.gethostname()}:{os.getpid()}"
    distill_student = pipeline.distill_student

    def once_the_other_worker_runs(*args, **kwargs):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and all(t.user_attrs.get("worker", me) == me for t in trials()):
            time.sleep(0.2)
        return distill_student(*args, **kwargs)

    monkeypatch.setattr(pipeline, "distill_student", once_the_other_worker_runs)


@pytest.mark.slow
def test_two_workers_share_the_study(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    """--workers 2: this process and a spawned one. This one's first trial waits for the other's first."""
    wait_for_another_worker(monkeypatch, lambda: load(tmp_path).get_trials())
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines",
                            **{"--trials": 4, "--workers": 2}))
    assert r.exit_code == 0, r.output
    assert "running 4 more on 2 workers" in r.output
    trials = load(tmp_path).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials), r.output  # no extra trial
    assert len({t.user_attrs["worker"] for t in trials}) == 2


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(data_dir, tiny_teacher_dir, tmp_path, monkeypatch, postgres_url):
    """--workers 2 on a real PostgreSQL server: every trial run exactly once, then a rerun has nothing left."""
    storage = optuna.storages.RDBStorage(postgres_url)
    wait_for_another_worker(monkeypatch, lambda: optuna.load_study(study_name=STUDY, storage=storage).get_trials())
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines",
                       **{"--trials": 6, "--workers": 2, "--storage": postgres_url})
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert f"study {STUDY} (new) in {postgres_url}" in r.output and "running 6 more on 2 workers" in r.output
    assert not list(tmp_path.glob("*.db"))  # nothing went to the default SQLite file
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    assert len(trials) == 6 and trials_mod.trials_used(trials) == 6, r.output
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), r.output  # none RUNNING/WAITING
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert_each_student_run_once(trials)

    r = invoke(*args)  # the same command again: resumes, nothing left to run
    assert r.exit_code == 0, r.output
    assert f"study {STUDY} (resumed)" in r.output and "ran 0 trials" in r.output
    assert len(optuna.load_study(study_name=STUDY, storage=storage).get_trials()) == 6


@pytest.mark.slow
def test_two_workers_share_rungs_on_postgresql(data_dir, tiny_teacher_dir, tmp_path, monkeypatch, postgres_url):
    """--workers 2 --rungs 2 on PostgreSQL: 6 students, 2 of them promoted, each once; nothing left running."""
    storage = optuna.storages.RDBStorage(postgres_url)
    wait_for_another_worker(monkeypatch, lambda: optuna.load_study(study_name=STUDY, storage=storage).get_trials())
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, *RUNGS_ARGS,
                       **{"--trials": 6, "--rungs": 2, "--workers": 2, "--storage": postgres_url})
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), r.output
    held = [t for t in rungs_of(trials).get(1, []) if t.user_attrs.get("prune_reason") != trials_mod.DUPLICATE]
    assert len(rungs_of(trials)[0]) == 6 and len(held) == 2, r.output
    assert all(t.state == TrialState.COMPLETE for t in held)
    assert_promotions_train_their_student(trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2

    r = invoke(*args)  # resumed: nothing left
    assert r.exit_code == 0, r.output
    assert "ran 0 trials" in r.output


def test_postgresql_storage_without_its_driver_names_the_extra(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    for driver in ("psycopg", "psycopg2"):  # `import psycopg` fails as if it were not installed
        monkeypatch.setitem(sys.modules, driver, None)
    over = {"--storage": "postgresql://user:pass@127.0.0.1:9/db"}
    assert_user_error(invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **over)),
                      "--storage postgresql://", "the PostgreSQL driver is not installed",
                      "pip install 'fastbert-nas[postgres]'")


# ---------------------------------------------------------------------------
# Storage faults: retried with pauses, then one error line; the study intact

@pytest.fixture
def retries_seen(monkeypatch) -> list[str]:
    """The transient storage errors met (each one retried, or a heartbeat skipped)."""
    seen = []
    transient = storage_mod.transient

    def spy(exc):
        if transient(exc):
            seen.append(str(exc.__cause__ or exc).splitlines()[0])  # Optuna's own message is generic
            return True
        return False

    monkeypatch.setattr(storage_mod, "transient", spy)
    return seen


def goes_away_during_the_second_trial(monkeypatch, away: Callable[[], None], back: Callable[[], None],
                                      seconds: float) -> None:
    """The database goes away (`away()`) as the second trial starts distilling, and is back `seconds` later."""
    distill_student = pipeline.distill_student
    calls = []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            away()
            threading.Timer(seconds, back).start()
        return distill_student(*args, **kwargs)

    monkeypatch.setattr(pipeline, "distill_student", patched)


def test_a_sqlite_file_locked_mid_study_is_waited_for(data_dir, tiny_teacher_dir, tmp_path, monkeypatch,
                                                      retries_seen):
    monkeypatch.setattr(storage_mod, "SQLITE_TIMEOUT_S", 0.1)
    lock = sqlite3.connect(tmp_path / f"{STUDY}.db", isolation_level=None, check_same_thread=False)
    goes_away_during_the_second_trial(monkeypatch, lambda: lock.execute("BEGIN EXCLUSIVE"), lock.close, 2.0)
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines"))
    assert r.exit_code == 0, r.output
    assert [t.state for t in load(tmp_path).get_trials()] == [TrialState.COMPLETE] * 3
    assert any("database is locked" in e for e in retries_seen), retries_seen


def test_a_sqlite_file_that_stays_locked_is_one_error_line(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(storage_mod, "SQLITE_TIMEOUT_S", 0.1)
    monkeypatch.setattr(storage_mod, "STORAGE_RETRY_DELAYS_S", (0.1, 0.1))
    one = search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", **{"--trials": 1})
    assert invoke(*one).exit_code == 0
    two = search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", **{"--trials": 2})
    with closing(sqlite3.connect(tmp_path / f"{STUDY}.db", isolation_level=None)) as lock:
        lock.execute("BEGIN EXCLUSIVE")
        r = invoke(*two)
    assert_user_error(r, f"--storage sqlite:///{tmp_path}/{STUDY}.db: 3 attempts over 0.2 s failed",
                      "database is locked", "run the same command again")
    assert [t.state for t in load(tmp_path).get_trials()] == [TrialState.COMPLETE]  # intact, and resumable
    assert invoke(*two).exit_code == 0
    assert [t.state for t in load(tmp_path).get_trials()] == [TrialState.COMPLETE] * 2


def test_a_read_only_sqlite_file_is_one_error_line_and_left_alone(data_dir, tiny_teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(storage_mod, "STORAGE_RETRY_DELAYS_S", (0.1,))
    one = search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", **{"--trials": 1})
    assert invoke(*one).exit_code == 0
    db = tmp_path / f"{STUDY}.db"
    before = db.read_bytes(), sorted(tmp_path.rglob("*"))
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines",
                            **{"--trials": 2, "--storage": read_only}))
    assert_user_error(r, "2 attempts over 0.1 s failed", "attempt to write a readonly database")
    assert (db.read_bytes(), sorted(tmp_path.rglob("*"))) == before


@pytest.mark.slow
def test_a_postgresql_server_restarting_mid_study_is_waited_for(data_dir, tiny_teacher_dir, tmp_path, monkeypatch,
                                                                postgres_server, retries_seen):
    study = "sst2-tiny-restart"
    monkeypatch.setattr(storage_mod, "STORAGE_RETRY_DELAYS_S", (1, 2, 4, 8, 16))  # room for a slow start here
    goes_away_during_the_second_trial(monkeypatch, postgres_server.stop, postgres_server.start, 1.0)
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines",
                            **{"--storage": postgres_server.url, "--study": study}))
    assert r.exit_code == 0, r.output
    trials = optuna.load_study(study_name=study, storage=postgres_server.url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert retries_seen, "the server was never missed"


def test_a_postgresql_server_that_is_down_is_one_error_line(data_dir, tiny_teacher_dir, tmp_path, monkeypatch,
                                                            postgres_server):
    monkeypatch.setattr(storage_mod, "STORAGE_RETRY_DELAYS_S", (0.1, 0.1))
    postgres_server.stop()
    try:
        r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--storage": postgres_server.url}))
    finally:
        postgres_server.start()
    password = sqlalchemy.engine.make_url(postgres_server.url).password
    assert_user_error(r, "--storage postgresql://fastbert:***@127.0.0.1", "3 attempts over 0.2 s failed")
    assert password not in r.output and not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------
# The pruning benchmark (fastbert-nas bench pruning)

def test_bench_pruning_runs_both_studies_per_seed_and_judges_the_goals(data_dir, tiny_teacher_dir, tmp_path):
    from datetime import datetime, timezone

    from fastbert_nas.bench.pruning import REPLAY_MARGINS

    args = search_args(data_dir, tiny_teacher_dir, tmp_path)[1:]
    r = invoke("bench", "pruning", *args, "--seeds", 2)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "benchmarks" / "pruning-sst2.json").read_text())
    assert [s["seed"] for s in report["seeds"]] == [0, 1]
    for s, names in zip(report["seeds"], (["sst2-tiny-pareto", "sst2-tiny-none"],
                                          ["sst2-tiny-pareto-seed1", "sst2-tiny-none-seed1"])):
        runs = s["runs"]
        assert [runs[m]["study"] for m in ("pareto", "none")] == names
        for mode, figures in runs.items():
            study = load(tmp_path, figures["study"])
            assert {t.user_attrs["seed"] for t in study.trials} == {s["seed"]}
            done = [t for t in study.trials if t.state == TrialState.COMPLETE]
            assert figures["trials"] == 3 and sum(figures["states"].values()) == 3
            assert figures["train_steps"] == sum(t.user_attrs["train_steps"] for t in study.trials) > 0
            assert figures["wall_s_per_trial"]["n"] == 3
            last = max(t.datetime_complete for t in study.trials).astimezone(timezone.utc)  # when it ran
            assert abs(datetime.fromisoformat(figures["measured"]) - last).total_seconds() < 1
            assert {row["trial"] for row in figures["front"]} == {t.number for t in study.best_trials}
            assert figures["hypervolume"] == pytest.approx(log_flops_hv(done, figures["teacher_flops"],
                                                                        study.user_attrs["majority_val"]))
        assert s["steps_saved"] == pytest.approx(1 - runs["pareto"]["train_steps"] / runs["none"]["train_steps"])
        # the rule replayed over the unpruned study: 3 trials, fewer than the warm-up, so nothing is stopped
        assert [x["margin"] for x in s["replay"]] == list(REPLAY_MARGINS)
        kept = 1 if runs["none"]["hypervolume"] else None  # a front of students no better than the majority: none
        assert all(x["pruned"] == 0 and x["steps_saved"] == 0 and x["hypervolume_kept"] == pytest.approx(kept)
                   for x in s["replay"])
    saved = [s["steps_saved"] for s in report["seeds"]]
    assert report["steps_saved"] == pytest.approx(sum(saved) / 2)
    goals = report["goals"]
    assert goals["steps_saved_met"] == (report["steps_saved"] >= 0.40)
    assert goals["met"] == (goals["steps_saved_met"] and goals["hypervolume_kept_met"])
    text = (tmp_path / "benchmarks" / "pruning-sst2.md").read_text()
    assert "Mean over seeds: training steps saved" in text and "Both goals:" in text
    assert "## The rule replayed over the unpruned studies" in text


def test_bench_pruning_counts_each_seeds_hypervolume_kept_at_most_100_percent_toward_the_goal():
    """A seed whose pruned study's sampler found a better front (kept 133.7%) cannot hide one that lost part of
    its front: the goal's mean counts it at 100%; the spread keeps the uncapped figures; the replay's mean too."""
    from fastbert_nas.bench.pruning import pruning_goals, seed_summary

    def seed(saved, kept, replay_kept):
        return {"steps_saved": saved, "hypervolume_kept": kept,
                "replay": [{"margin": 0, "steps_saved": saved, "hypervolume_kept": replay_kept},
                           {"margin": 0.01, "steps_saved": saved / 2, "hypervolume_kept": 1.0}]}

    seeds = [seed(0.485, 0.997, 0.997), seed(0.455, 0.940, 0.95), seed(0.442, 1.337, 1.2)]
    r = seed_summary(seeds)
    assert r["steps_saved"] == pytest.approx((0.485 + 0.455 + 0.442) / 3)
    assert r["hypervolume_kept"] == pytest.approx((0.997 + 0.940 + 1.0) / 3)  # 97.9%: below the goal
    assert not pruning_goals(r["steps_saved"], r["hypervolume_kept"])["hypervolume_kept_met"]
    assert r["spread"]["hypervolume_kept"]["mean"] == pytest.approx((0.997 + 0.940 + 1.337) / 3)  # 109%, uncapped
    assert r["spread"]["hypervolume_kept"]["max"] == 1.337 and r["spread"]["steps_saved"]["n"] == 3
    assert [x["margin"] for x in r["replay_mean"]] == [0, 0.01]
    assert r["replay_mean"][0]["hypervolume_kept"] == pytest.approx((0.997 + 0.95 + 1.0) / 3)
    assert r["replay_mean"][1]["steps_saved"] == pytest.approx(r["steps_saved"] / 2)
    seeds[1]["hypervolume_kept"] = None  # a seed without a front: no mean, no spread of it
    r = seed_summary(seeds)
    assert r["hypervolume_kept"] is None and "hypervolume_kept" not in r["spread"] and r["steps_saved"] is not None


def test_bench_pruning_takes_recorded_seeds_whose_files_are_gone_and_reruns_changed_ones(
        data_dir, tiny_teacher_dir, tmp_path):
    import json

    args = search_args(data_dir, tiny_teacher_dir, tmp_path)[1:]
    assert invoke("bench", "pruning", *args, "--seeds", 1).exit_code == 0
    path = tmp_path / "benchmarks" / "pruning-sst2.json"
    first = json.loads(path.read_text())["seeds"][0]["runs"]
    assert first["pareto"]["settings"]["trials"] == 3 and first["none"]["settings"]["pruning"] == "none"
    assert first["pareto"]["teacher_fingerprint"] == first["none"]["teacher_fingerprint"]
    for db in ("sst2-tiny-pareto.db", "sst2-tiny-none.db"):  # as on a fresh clone: the report, no study files
        (tmp_path / db).unlink()
    r = invoke("bench", "pruning", *args, "--seeds", 2)
    assert r.exit_code == 0, r.output
    assert r.output.count("its figures are taken from the report") == 2  # seed 0's two studies
    assert "seed 0, pruning pareto: recorded" in r.output and "seed 0, pruning none: recorded" in r.output
    assert not (tmp_path / "sst2-tiny-pareto.db").exists()  # seed 0 not re-run ...
    assert (tmp_path / "sst2-tiny-pareto-seed1.db").exists()  # ... seed 1 run
    report = json.loads(path.read_text())
    assert report["seeds"][0]["runs"] == first and report["seeds"][1]["steps_saved"] is not None
    assert "| 0 | pareto |" in (tmp_path / "benchmarks" / "pruning-sst2.md").read_text()
    # a seed with one study on record runs the other with the same teacher: the recorded one stands
    for db in ("sst2-tiny-pareto-seed1.db", "sst2-tiny-none-seed1.db"):
        (tmp_path / db).unlink()
    del report["seeds"][1]["runs"]["none"]
    path.write_text(json.dumps(report))
    r = invoke("bench", "pruning", *args, "--seeds", 2)
    assert r.exit_code == 0 and r.output.count("taken from the report") == 3
    assert "seed 1, pruning pareto: recorded" in r.output
    assert not (tmp_path / "sst2-tiny-pareto-seed1.db").exists() and (tmp_path / "sst2-tiny-none-seed1.db").exists()
    again = json.loads(path.read_text())["seeds"][1]
    assert again["runs"]["pareto"] == report["seeds"][1]["runs"]["pareto"] and again["steps_saved"] is not None
    # ... but not when it was run with another teacher's bits: the pair is run whole
    (tmp_path / "sst2-tiny-none-seed1.db").unlink()
    again["runs"]["pareto"]["teacher_fingerprint"] = "0" * 16
    del again["runs"]["none"]
    path.write_text(json.dumps(json.loads(path.read_text()) | {"seeds": [report["seeds"][0], again]}))
    r = invoke("bench", "pruning", *args, "--seeds", 2)
    assert r.exit_code == 0 and r.output.count("taken from the report") == 2  # seed 0's only
    assert (tmp_path / "sst2-tiny-pareto-seed1.db").exists() and (tmp_path / "sst2-tiny-none-seed1.db").exists()
    # other settings (here: trials) are another benchmark: its studies are run, not taken from the report
    more = search_args(data_dir, tiny_teacher_dir, tmp_path, **{"--trials": 4})[1:]
    r = invoke("bench", "pruning", *more, "--seeds", 1)
    assert r.exit_code == 0 and "taken from the report" not in r.output
    assert json.loads(path.read_text())["seeds"][0]["runs"]["pareto"]["trials"] == 4


def test_bench_pruning_jobs_runs_the_studies_of_all_seeds_side_by_side(data_dir, tiny_teacher_dir, tmp_path,
                                                                       monkeypatch):
    import json

    import fastbert_nas.bench.pruning as bench_pruning

    queued, run_studies = [], bench_pruning.run_studies
    monkeypatch.setattr(bench_pruning, "run_studies", lambda plan, jobs, done: (
        queued.extend(o.study for o in plan), run_studies(plan, jobs, done)))
    args = search_args(data_dir, tiny_teacher_dir, tmp_path)[1:]
    r = invoke("bench", "pruning", *args, "--seeds", 2, "--jobs", 2)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "benchmarks" / "pruning-sst2.json").read_text())
    workers = {}
    for s in report["seeds"]:
        runs = s["runs"]
        assert list(runs) == ["pareto", "none"]  # the pair in the report's order, whichever finished first
        assert s["steps_saved"] == pytest.approx(1 - runs["pareto"]["train_steps"] / runs["none"]["train_steps"])
        for mode in runs:
            study = load(tmp_path, runs[mode]["study"])
            assert len(study.trials) == 3 and runs[mode]["jobs"] == 2 and runs[mode]["trials"] == 3
            assert {t.user_attrs["seed"] for t in study.trials} == {s["seed"]}
            workers[runs[mode]["study"]] = {t.user_attrs["worker"] for t in study.trials}
    assert all(len(w) == 1 for w in workers.values())  # each study in a process of its own
    assert len(set().union(*workers.values())) == 4
    # one queue over the seeds, a seed's unpruned study (the longer) first: each pair finishes as early as it can
    assert queued == ["sst2-tiny-none", "sst2-tiny-pareto", "sst2-tiny-none-seed1", "sst2-tiny-pareto-seed1"]


def test_a_recorded_study_stands_for_one_when_it_matches_and_its_pair_shares_a_teacher():
    from fastbert_nas.bench.common import teacher_id
    from fastbert_nas.bench.pruning import from_record

    want = {"pareto": {"seed": 1, "pruning": "pareto"}, "none": {"seed": 1, "pruning": "none"}}
    old = {m: {"settings": want[m], "teacher_fingerprint": "aa"} for m in want}
    assert from_record(old, want, set(), "bb") == ["pareto", "none"]  # a pair from another machine's teacher
    assert from_record(old, want, {"none"}, "bb") == []  # beside a study run with another teacher: run both
    assert from_record(old, want, {"none"}, "aa") == ["pareto"]  # beside one run with the same teacher
    assert from_record(old | {"none": None}, want, set(), "aa") == ["pareto"]
    assert from_record(old | {"none": None}, want, set(), "bb") == []
    mixed = old | {"none": {"settings": want["none"], "teacher_fingerprint": "bb"}}
    assert from_record(mixed, want, set(), "bb") == ["none"]  # the pareto study runs again with teacher bb
    assert from_record(old | {"none": {"settings": want["pareto"], "teacher_fingerprint": "aa"}}, want, set(),
                       "aa") == ["pareto"]  # other settings: not this study
    made = {"task": "sst2", "base": "b", "data_fingerprint": "d", "max_len": 64, "minutes": 3.0}
    assert teacher_id(made, "aa") == teacher_id(made | {"minutes": 9.0}, "bb")  # another machine's bits
    assert teacher_id(made, "aa") != teacher_id(made | {"data_fingerprint": "e"}, "aa")  # other data
    assert teacher_id({"teacher": "/x", "task": "sst2"}, "aa") == "aa"  # --teacher: its weights


def log_flops_hv(done, teacher_flops, floor):
    """The hypervolume of finished trials on log FLOPs (reference: the majority level, the teacher's FLOPs), by a
    sweep over log cost independent of pruning.py: the best metric above the floor within each budget."""
    import math

    pts = sorted((math.log10(t.user_attrs["flops"] / teacher_flops), t.values[0]) for t in done
                 if t.values[0] > floor and t.user_attrs["flops"] < teacher_flops)
    area, best = 0.0, floor
    edges = [c for c, _ in pts] + [0.0]
    for i, (c, m) in enumerate(pts):
        best = max(best, m)
        area += (best - floor) * (edges[i + 1] - c)
    return area
