"""Trials that learn: the default recipe, the collapse check, and the hypervolume on log FLOPs.

The collapse check runs end to end against a teacher with skill: the tiny teacher's BERT fine-tuned for a
few seconds on real SST-2 rows by `fastbert-nas teacher --base`, so that a smoke-budget student that
learns nothing is told apart from one that copied a teacher with nothing to teach.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
from conftest import TINY_TEACHER, assert_user_error, invoke, quick_timings
from optuna.trial import TrialState

import fastbert_nas.search.objective as objective
from fastbert_nas.config import StudentArch, trial_lr, trial_recipe
from fastbert_nas.search.pruning import COLLAPSE_MARGIN, collapse_reason, front_hypervolume
from fastbert_nas.search.space import RECIPE_KEYS, load_space, sample, shipped_spaces

TEACHER_LAYERS = 6


# ---------------------------------------------------------------------------
# The collapse rule and the hypervolume, on plain numbers

def test_collapse_needs_a_student_at_the_majority_level_and_a_teacher_above_it():
    assert collapse_reason(0.547, majority=0.547, teacher=0.90) is not None
    assert collapse_reason(0.453, majority=0.547, teacher=0.90) is not None        # the other class, constantly
    assert collapse_reason(0.547 + COLLAPSE_MARGIN, 0.547, 0.90) is not None       # the margin is inclusive
    assert collapse_reason(0.547 + COLLAPSE_MARGIN + 1e-6, 0.547, 0.90) is None    # learned something
    assert collapse_reason(0.547, 0.547, teacher=0.547 + COLLAPSE_MARGIN) is None  # the teacher has nothing to teach
    assert collapse_reason(0.547, 0.547, 0.90, margin=-1) is None                  # turned off
    assert "0.5470" in collapse_reason(0.547, 0.547, 0.90) and "0.9000" in collapse_reason(0.547, 0.547, 0.90)


def test_skill_levels_come_from_the_study_when_measured_with_this_teacher_on_these_rows(monkeypatch):
    measured = []
    monkeypatch.setattr(objective, "evaluate", lambda *a: measured.append(a) or {"metric": 0.70})
    monkeypatch.setattr(objective, "majority_metric", lambda ctx, rows: 0.51)
    ctx = SimpleNamespace(teacher=SimpleNamespace(fingerprint="f", model=None), val=list(range(800)), spec=None,
                          device="cpu")
    attrs = {"teacher_fingerprint": "f", "teacher_val_rows": 800, "teacher_val": {"metric": 0.9}, "majority_val": 0.5}
    assert objective.skill_levels(ctx, 1000, attrs) == (0.5, 0.9) and not measured  # 1,000 asked, 800 there
    for changed in ({"teacher_fingerprint": "g"}, {"teacher_val_rows": 500}, {"majority_val": None}):
        over = {k: v for k, v in (attrs | changed).items() if v is not None}
        assert objective.skill_levels(ctx, 1000, over) == (0.51, 0.70)           # another teacher, rows or none
    assert len(measured) == 3


def test_hypervolume_on_log_flops_from_the_majority_level_at_the_teacher_cost():
    teacher = 1e9
    assert front_hypervolume([], teacher, 0.5) == 0.0
    assert front_hypervolume([(0.9, 0.1 * teacher)], teacher, 0.5) == pytest.approx(0.4 * 1.0)  # 1 decade saved
    # two front points: (0.8 - 0.5) x 2 decades + (0.9 - 0.8) x 1 decade
    assert front_hypervolume([(0.8, 0.01 * teacher), (0.9, 0.1 * teacher)], teacher, 0.5) == pytest.approx(0.7)
    # a dominated point, one no cheaper than the teacher, one at the majority level: nothing added
    pts = [(0.8, 0.01 * teacher), (0.9, 0.1 * teacher), (0.7, 0.05 * teacher), (0.95, teacher), (0.5, 1e-3 * teacher)]
    assert front_hypervolume(pts, teacher, 0.5) == pytest.approx(0.7)
    # the log axis discriminates where the linear one did not: a front at 1-25% of the FLOPs against one
    # point at 25% differs by far more than 1/8 of the metric
    wide = front_hypervolume([(0.85, 0.01 * teacher), (0.89, 0.25 * teacher)], teacher, 0.5)
    one = front_hypervolume([(0.89, 0.25 * teacher)], teacher, 0.5)
    assert wide == pytest.approx(0.35 * 2 + 0.04 * math.log10(4)) and wide > 3 * one


# ---------------------------------------------------------------------------
# The default recipe

def test_shipped_spaces_search_the_architecture_and_train_with_the_trial_recipe():
    for name in shipped_spaces():
        space = load_space(name)
        if name == "tiny":  # the test space samples the recipe, so that its path is covered (relation_weight:
            # a space of its own in test_study, so that tiny's studies keep their fingerprint)
            assert space.sampled_recipe == tuple(k for k in RECIPE_KEYS if k != "relation_weight")
            continue
        assert space.sampled_recipe == (), name
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(20):
            trial = study.ask()
            arch, overrides = sample(space, trial, TEACHER_LAYERS)
            assert overrides == trial_recipe(arch)
            assert not set(trial.params) & set(RECIPE_KEYS)
            study.tell(trial, 0.0)


def test_the_trial_learning_rate_falls_with_width_and_depth():
    narrow, wide = StudentArch(4, 128, 2, 256), StudentArch(4, 768, 12, 3072)
    shallow, deep = StudentArch(2, 256, 4, 512), StudentArch(12, 256, 4, 512)
    assert trial_lr(narrow) > trial_lr(wide) and trial_lr(shallow) > trial_lr(deep)
    assert trial_recipe(narrow)["init"] == "teacher"


# ---------------------------------------------------------------------------
# End to end: a student that learned nothing from a teacher with skill

SPACE = """
layers: {min: 1, max: 1}
hidden: [16]
heads: [2]
ffn_ratio: [2]
max_hints: 1
budget:
  smoke: {hint_steps: 2, kd_steps: 4, eval_every: 2, batch_size: 4, examples: 16, eval_examples: 400}
"""


@pytest.fixture(scope="module")
def skilled_teacher(tmp_path_factory):
    """(base folder, results): a teacher fine-tuned from the tiny BERT on real SST-2 rows, cached in results."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from fastbert_nas.core.teacher import DEFAULT_BASE, base_path

    tokenizer = AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("tiny_base")
    BertModel(BertConfig(vocab_size=len(tokenizer), **{k: v for k, v in TINY_TEACHER.items() if k != "num_labels"})
              ).save_pretrained(base)
    tokenizer.save_pretrained(base)
    results = tmp_path_factory.mktemp("skilled")
    threads = torch.get_num_threads()
    r = invoke("teacher", "--task", "sst2", "--base", base, "--results", results, "--threads", 1,
               "--epochs", 0.1, "--lr", 1e-3)  # 175 steps: a few seconds
    torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return base, results


def test_a_collapsed_trial_is_recorded_as_such_and_is_not_on_the_front(skilled_teacher, data_dir, tmp_path,
                                                                       monkeypatch, restore_threads):
    quick_timings(monkeypatch)
    base, results = skilled_teacher
    space = tmp_path / "one.yaml"
    space.write_text(SPACE)
    r = invoke("search", "--task", "sst2", "--base", base, "--results", results, "--data-dir", data_dir,
               "--space", space, "--budget", "smoke", "--trials", 2, "--threads", 1, "--no-baselines")
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="sst2-one", storage=f"sqlite:///{results}/sst2-one.db")
    attrs = study.user_attrs
    assert attrs["teacher_val"]["metric"] > attrs["majority_val"] + COLLAPSE_MARGIN  # a teacher with skill
    assert attrs["teacher_val_rows"] == 400
    # costs at the task's length (SST-2 runs at 64 tokens), and at 128 beside them
    assert attrs["seq_len"] == 64 and attrs["ref_seq_len"] == 128
    assert 0 < attrs["teacher_flops"] < attrs["teacher_flops_ref_len"]
    for t in study.trials:
        assert t.user_attrs["seq_len"] == 64 and 0 < t.user_attrs["flops"] < t.user_attrs["flops_ref_len"]
    collapsed = [t for t in study.trials if t.user_attrs.get("prune_reason") == "collapsed"]
    assert collapsed, [(t.state, t.user_attrs.get("val")) for t in study.trials]
    for t in collapsed:
        assert t.state == TrialState.PRUNED
        assert t.user_attrs["val"]["metric"] <= attrs["majority_val"] + COLLAPSE_MARGIN
        assert "majority-class level" in t.user_attrs["prune_detail"]
    assert not {t.number for t in collapsed} & {t.number for t in study.best_trials}
    assert "(collapsed: final metric" in r.output and "collapsed: collapsed" not in r.output  # the line says why
    # with the check turned off the same students are completed trials
    r = invoke("search", "--task", "sst2", "--base", base, "--results", results, "--data-dir", data_dir,
               "--space", space, "--budget", "smoke", "--trials", 2, "--threads", 1, "--no-baselines",
               "--study", "kept", "--collapse-margin", -1)
    assert r.exit_code == 0, r.output
    kept = optuna.load_study(study_name="kept", storage=f"sqlite:///{results}/kept.db")
    assert all(t.state == TrialState.COMPLETE for t in kept.trials)
    # a study whose costs were measured at another length (128 tokens, as older versions did) is not mixed with
    # trials measured at the task's
    kept.set_user_attr("seq_len", 128)
    r = invoke("search", "--task", "sst2", "--base", base, "--results", results, "--data-dir", data_dir,
               "--space", space, "--budget", "smoke", "--trials", 3, "--threads", 1, "--study", "kept")
    assert_user_error(r, "measured its costs at 128 tokens", "the task's 64")
