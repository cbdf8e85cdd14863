"""Search-space files: loading, checking, sampling, budgets and the baseline round trip (no torch)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from fastbert_nas.config import TRIAL_BUDGETS, StudentArch, UserError, trial_recipe
from fastbert_nas.search.hints import hint_params, hint_student_layers, sample_hints, slot_layers, slot_name
from fastbert_nas.search.space import (
    DEFAULT_SPACE,
    fixed_params,
    heads_param,
    load_space,
    sample,
    shipped_spaces,
    space_budget,
    spaces_dir,
)

TEACHER_LAYERS = 6  # the default teacher, MiniLM-L6
SHIPPED = ("thin-deep", "shallow-wide", "tiny", "compact")
SAMPLED_TRIALS = 200  # per shipped space, with a real TPE study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_every_shipped_space_loads():
    assert set(SHIPPED) <= set(shipped_spaces())
    assert DEFAULT_SPACE == "thin-deep"
    for name in shipped_spaces():
        space = load_space(name)
        assert space.name == name and Path(space.path).parent == spaces_dir()
        for h in space.hidden:
            assert space.heads_for(h), (name, h)


def test_shipped_spaces_have_their_documented_ranges():
    thin, wide, tiny, compact = (load_space(n) for n in SHIPPED)
    assert thin.layers == (4, 12) and min(thin.hidden) == 128 and max(thin.hidden) == 384
    assert wide.layers == (1, 4) and min(wide.hidden) == 256 and max(wide.hidden) == 768
    assert tiny.layers == (1, 2) and max(tiny.hidden) <= 32 and "smoke" in tiny.budget
    assert compact.layers == (2, 4) and compact.hidden == (192, 256, 320, 384)
    assert thin.sampled_recipe == wide.sampled_recipe == compact.sampled_recipe == ()  # trial_recipe for all
    # the students that results/README.md measured, which the export benchmark's study queues
    for arch in (StudentArch(3, 320, 10, 640, ((1, 2), (2, 4), (3, 6))), StudentArch(2, 256, 8, 384, ((1, 3), (2, 6)))):
        params = fixed_params(compact, arch, TEACHER_LAYERS)
        assert sample(compact, optuna.trial.FixedTrial(params), TEACHER_LAYERS) == (arch, trial_recipe(arch))


def test_a_path_loads_too(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((spaces_dir() / "tiny.yaml").read_text())
    assert load_space(str(path)).name == "mine"
    assert load_space(path).hidden == load_space("tiny").hidden


def test_unknown_name_and_missing_file():
    with pytest.raises(UserError, match="no such search space.*thin-deep"):
        load_space("no-such-space")
    with pytest.raises(UserError, match="file not found"):
        load_space("nowhere/x.yaml")


# ---------------------------------------------------------------------------
# Broken files: each gives a UserError naming the file and the key

def tiny_data() -> dict:
    return yaml.safe_load((spaces_dir() / "tiny.yaml").read_text())


def edit(data: dict, key: str, value) -> dict:
    """data with data[a][b] = value for key 'a.b'; value None deletes it."""
    *parents, last = key.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


BROKEN = [  # (key to edit, new value (None = delete), key named in the message, words of the message)
    ("colour", "blue", "colour", "unknown key"),
    ("layers.step", 2, "layers.step", "unknown key"),
    ("budget.smoke.kd_stepz", 5, "budget.smoke.kd_stepz", "unknown key"),
    ("hidden", [], "hidden", "empty"),
    ("heads", [], "heads", "empty"),
    ("init", [], "init", "empty"),
    ("hint_weight", [], "hint_weight", "empty"),
    ("hidden", [16, 15], "hidden", "width 15 is divided by none"),
    ("heads", [5, 7], "hidden", "divided by none"),
    ("layers", {"min": 3, "max": 2}, "layers", "min 3 is greater than max 2"),
    ("lr", {"min": 1e-2, "max": 1e-4}, "lr", "greater than max"),
    ("temperature", {"min": 4, "max": 1}, "temperature", "greater than max"),
    ("layers", {"min": 0, "max": 2}, "layers.min", "must be > 0"),
    ("hidden", [16, -32], "hidden[1]", "must be > 0"),
    ("heads", [2, 0], "heads[1]", "must be > 0"),
    ("ffn_ratio", [0], "ffn_ratio[0]", "must be > 0"),
    ("max_hints", 0, "max_hints", "must be > 0"),
    ("lr", {"min": 0, "max": 1e-3}, "lr.min", "must be > 0"),
    ("hint_weight", [-1.0], "hint_weight[0]", "must be >= 0"),
    ("kd_alpha", {"min": 0.5, "max": 1.5}, "kd_alpha.max", "at most 1"),
    ("hidden", [16, 24.5], "hidden[1]", "not a whole number"),
    ("lr", {"min": "fast", "max": 1e-3}, "lr.min", "not a number"),
    ("hidden", [16, 16], "hidden", "duplicate"),
    ("layers", [1, 2], "layers", "expected a range"),
    ("hidden", 16, "hidden", "expected a list"),
    ("init", ["teacher", "pretrained"], "init[1]", "choose among"),
    ("layers.max", None, "layers.max", "missing"),
    ("max_hints", None, "max_hints", "missing"),
    ("budget.huge", {"kd_steps": 10}, "budget.huge", "unknown trial budget; choose among smoke, cpu, gpu"),
    ("budget.smoke.kd_steps", 0, "budget.smoke.kd_steps", "must be > 0"),
    ("budget.smoke.eval_every", 8, "budget.smoke.eval_every", "exceeds kd_steps"),
]


@pytest.mark.parametrize("key, value, named, words", BROKEN, ids=[f"{b[0]}={b[1]}" for b in BROKEN])
def test_broken_space_names_file_and_key(tmp_path, key, value, named, words):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(edit(tiny_data(), key, value)))
    with pytest.raises(UserError) as err:
        load_space(str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: {named}: "), msg
    assert words in msg, msg


def test_not_yaml_and_not_a_mapping(tmp_path):
    for text, words in (("layers: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "mapping")):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(UserError, match=words) as err:
            load_space(str(path))
        assert str(path) in str(err.value)


def test_exponents_without_a_dot_are_numbers(tmp_path):
    """PyYAML reads 1e-4 (no dot) as a string; a space file may still write it."""
    path = tmp_path / "exp.yaml"
    path.write_text((spaces_dir() / "tiny.yaml").read_text().replace("1.0e-4", "1e-4"))
    assert load_space(str(path)).lr == (1e-4, 1e-2)


# ---------------------------------------------------------------------------
# Budgets

def test_budget_layers_config_space_overrides():
    tiny = load_space("tiny")
    cfg = space_budget(tiny, "smoke")
    assert (cfg.hint_steps, cfg.kd_steps, cfg.eval_every) == (2, 4, 2)   # the space's smoke section
    cfg = space_budget(tiny, "cpu")                                      # no section: config.TRIAL_BUDGETS
    assert cfg.kd_steps == TRIAL_BUDGETS["cpu"]["kd_steps"] and cfg.augment == 0
    cfg = space_budget(tiny, "smoke", kd_steps=6, examples=None)         # None = not given
    assert (cfg.kd_steps, cfg.examples) == (6, 16)
    with pytest.raises(UserError, match="--budget 'huge'"):
        space_budget(tiny, "huge")
    with pytest.raises(UserError, match="'kd_stepz'"):
        space_budget(tiny, "smoke", kd_stepz=3)
    with pytest.raises(UserError, match="--eval-every 9"):
        space_budget(tiny, "smoke", eval_every=9)
    with pytest.raises(UserError, match="--kd-steps 0"):
        space_budget(tiny, "smoke", kd_steps=0)


# ---------------------------------------------------------------------------
# Sampling

def test_hint_student_layers():
    assert hint_student_layers(8, 4) == (2, 4, 6, 8)
    assert hint_student_layers(6, 4) == (1, 3, 4, 6)
    assert hint_student_layers(5, 1) == (5,)
    assert hint_student_layers(3, 3) == (1, 2, 3)
    for layers in range(1, 13):
        for n in range(1, layers + 1):
            s = hint_student_layers(layers, n)
            assert len(s) == n and s[-1] == layers and s[0] >= 1
            assert all(a < b for a, b in zip(s, s[1:]))


def fixed(**params) -> dict:
    base = dict(layers=8, hidden=256, heads_h256=4, ffn_ratio=4.0,
                hint_slot1=5, hint_slot2=1, hint_slot3=6, hint_slot4=3,
                init="teacher", temperature=2.0, kd_alpha=0.9, hint_weight=0.1, lr=3e-4)
    return {**base, **params}


def test_sample_with_a_fixed_trial(recipe_space):
    arch, overrides = sample(recipe_space, optuna.trial.FixedTrial(fixed()), TEACHER_LAYERS)
    # each slot's teacher layer as drawn (none sorted), on the slot's student layer
    assert arch == StudentArch(8, 256, 4, 1024, ((2, 5), (4, 1), (6, 6), (8, 3)))
    assert overrides == dict(init="teacher", temperature=2.0, kd_alpha=0.9, hint_weight=0.1, lr=3e-4)
    # the shipped space samples no recipe: the same params give trial_recipe's
    arch, overrides = sample(load_space("thin-deep"), optuna.trial.FixedTrial(fixed()), TEACHER_LAYERS)
    assert overrides == trial_recipe(arch)


def test_slots_that_share_a_student_layer_give_way_to_the_later_one():
    space = load_space("shallow-wide")  # 4 slots
    trial = optuna.trial.FixedTrial(fixed(layers=2, hidden=384, heads_h384=12, ffn_ratio=2.0))
    arch, _ = sample(space, trial, TEACHER_LAYERS)
    assert slot_layers(2, 4) == (1, 1, 2, 2)
    assert arch.hints == ((1, 1), (2, 3))        # slots 2 and 4 decide layers 1 and 2
    # every slot is a parameter whatever the depth: a fixed length
    assert set(trial.params) == (set(fixed(heads_h384=12)) - {"heads_h256"}
                                 - {"init", "temperature", "kd_alpha", "hint_weight", "lr"})


def check_arch(arch: StudentArch, space, teacher_layers: int) -> None:
    arch.validate(teacher_layers)
    assert space.layers[0] <= arch.layers <= space.layers[1]
    assert arch.hidden in space.hidden and arch.hidden % arch.heads == 0 and arch.heads in space.heads
    assert arch.ffn in {round(r * arch.hidden) for r in space.ffn_ratio}
    assert 1 <= len(arch.hints) <= min(arch.layers, space.max_hints)
    s, t = zip(*arch.hints)
    assert list(s) == sorted(set(s)) and s[-1] == arch.layers    # student layers increasing, the last hinted
    assert set(s) <= set(slot_layers(arch.layers, space.max_hints))
    assert all(1 <= x <= teacher_layers for x in t)


@pytest.mark.parametrize("name", SHIPPED)
def test_sample_with_a_real_study(name):
    """TPE (Optuna 5's multi-objective default) always gets valid students and stable names."""
    space = load_space(name)
    teacher_layers = 3 if name == "tiny" else TEACHER_LAYERS
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=20))
    names = {"layers", "hidden", "ffn_ratio", *space.sampled_recipe}
    names |= {heads_param(h) for h in space.hidden} | {slot_name(k) for k in range(1, space.max_hints + 1)}
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any out-of-range or incompatible-distribution warning fails
        for _ in range(SAMPLED_TRIALS):
            trial = study.ask()
            arch, overrides = sample(space, trial, teacher_layers)
            check_arch(arch, space, teacher_layers)
            if space.sampled_recipe:
                assert overrides["init"] in space.init and overrides["hint_weight"] in space.hint_weight
                assert space.lr[0] <= overrides["lr"] <= space.lr[1]
            else:
                assert overrides == trial_recipe(arch)
            assert set(trial.params) <= names
            assert trial.params[slot_name(space.max_hints)] >= 1 and f"heads_h{arch.hidden}" in trial.params
            assert {slot_name(k) for k in range(1, space.max_hints + 1)} <= set(trial.params)  # fixed length
            seen |= set(trial.params)
            # made-up objectives so TPE leaves its random start-up and models the space
            study.tell(trial, [arch.layers * 0.01 + overrides["kd_alpha"], arch.hidden * arch.layers])
    assert seen == names  # every conditional part was visited


# ---------------------------------------------------------------------------
# Baselines: hand-designed students back to params

SETTINGS = dict(init="random", temperature=4.0, kd_alpha=0.7, hint_weight=0.0, lr=1e-4)
RECIPE_LINES = """
init: [teacher, random]
temperature: {min: 1.0, max: 8.0}
kd_alpha: {min: 0.5, max: 1.0}
hint_weight: [0.0, 0.1, 1.0]
lr: {min: 5.0e-5, max: 1.0e-3}
"""


@pytest.fixture
def recipe_space(tmp_path):
    """thin-deep with the whole recipe sampled too."""
    path = tmp_path / "thin-deep-recipe.yaml"
    path.write_text((spaces_dir() / "thin-deep.yaml").read_text() + RECIPE_LINES)
    return load_space(path)


@pytest.mark.parametrize("arch", [
    StudentArch(4, 256, 4, 1024, ((1, 2), (2, 3), (3, 4), (4, 6))),
    StudentArch(12, 384, 12, 768, ((6, 3), (12, 6))),
    StudentArch(6, 128, 2, 384),                           # no hints: the default last -> last
    StudentArch(5, 192, 6, 768, ((5, 6),)),
])
def test_baseline_round_trip(arch, recipe_space):
    space = recipe_space
    params = fixed_params(space, arch, TEACHER_LAYERS, **SETTINGS)
    got, overrides = sample(space, optuna.trial.FixedTrial(params), TEACHER_LAYERS)
    assert got == arch.with_default_hints(TEACHER_LAYERS)
    assert overrides == SETTINGS


def test_baseline_enqueued_in_a_study(recipe_space):
    """Settings left out are sampled; the student is exactly the baseline."""
    space = recipe_space
    arch = StudentArch(8, 256, 4, 1024, ((2, 1), (4, 2), (6, 4), (8, 6)))
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial(fixed_params(space, arch, TEACHER_LAYERS, init="teacher"))
    got, overrides = sample(space, study.ask(), TEACHER_LAYERS)
    assert got == arch and overrides["init"] == "teacher"


@pytest.mark.parametrize("arch, words", [
    (StudentArch(8, 200, 4, 800), "hidden=200"),                       # not a width choice
    (StudentArch(8, 256, 16, 1024), "heads=16"),                       # not a heads choice
    (StudentArch(8, 256, 4, 1000), "ffn=1000"),                        # no ffn_ratio gives it
    (StudentArch(8, 256, 4, 1024, ((3, 2), (8, 6))), "student layers among [2, 4, 6, 8]"),  # off the slots
])
def test_baseline_outside_the_space(arch, words, recipe_space):
    with pytest.raises(UserError, match=words.replace("[", r"\[")):
        fixed_params(load_space("thin-deep"), arch, TEACHER_LAYERS)
    with pytest.raises(UserError, match="init='pretrained'"):
        fixed_params(recipe_space, StudentArch(8, 256, 4, 1024), TEACHER_LAYERS, init="pretrained")
    with pytest.raises(UserError, match="setting 'init' is not sampled by the space"):
        fixed_params(load_space("thin-deep"), StudentArch(8, 256, 4, 1024), TEACHER_LAYERS, init="teacher")


@pytest.mark.parametrize("layers, slots", [(layers, slots) for layers in range(1, 13) for slots in range(1, 5)])
def test_the_hint_slots_round_trip(layers, slots):
    """params -> hints -> params -> the same hints, for every depth and slot count; the params that come
    back are those drawn, less the slots another slot overrules."""
    rng = np.random.default_rng(layers * 10 + slots)
    deciding = {s: k for k, s in enumerate(slot_layers(layers, slots), start=1)}
    for _ in range(20):
        params = {slot_name(k): int(rng.integers(1 if k == slots else 0, TEACHER_LAYERS + 1))
                  for k in range(1, slots + 1)}
        hints = sample_hints(optuna.trial.FixedTrial(params), layers, slots, TEACHER_LAYERS)
        StudentArch(layers, 8, 1, 8, hints).validate(TEACHER_LAYERS)
        assert hints[-1][0] == layers
        back = hint_params(hints, layers, slots)
        assert back == {name: v if deciding[slot_layers(layers, slots)[k - 1]] == k else 0
                        for k, (name, v) in enumerate(params.items(), start=1)}
        assert sample_hints(optuna.trial.FixedTrial(back), layers, slots, TEACHER_LAYERS) == hints


def test_studies_made_before_the_slots_keep_their_sorted_hints():
    params = {"n_hints": 4, "hint_t1": 5, "hint_t2": 1, "hint_t3": 6, "hint_t4": 3}
    hints = sample_hints(optuna.trial.FixedTrial(params), 8, 4, TEACHER_LAYERS, scheme="sorted")
    assert hints == ((2, 1), (4, 3), (6, 5), (8, 6))
    assert hint_params(hints, 8, 4, scheme="sorted") == {"n_hints": 4, "hint_t1": 1, "hint_t2": 3, "hint_t3": 5,
                                                         "hint_t4": 6}
    short = sample_hints(optuna.trial.FixedTrial(params), 2, 4, TEACHER_LAYERS, scheme="sorted")
    assert short == ((1, 1), (2, 5))  # n_hints clipped to the depth


def test_the_shipped_spaces_keep_the_fingerprints_their_studies_recorded():
    """A key added to SearchSpace later (relation_weight) must not change the fingerprint of a space that does
    not set it, else every study made before is refused on resume. These are the fingerprints that
    results/sst2-compact.db and results/sst2-thin-deep.db recorded."""
    from fastbert_nas.search.options import space_fingerprint

    assert space_fingerprint(load_space("compact")) == "8e284d495ce114ac"
    assert space_fingerprint(load_space("thin-deep")) == "9f37d929f9a827c0"
