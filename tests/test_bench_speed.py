"""bench speed: the FLOPs of a training step, and the command end to end on the tiny teacher."""

import json
from dataclasses import replace

import pytest
import torch
from conftest import invoke
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForSequenceClassification

from fastbert_nas.bench import speed as bench_speed
from fastbert_nas.bench.speed import TRAIN_FLOPS_FACTOR, step_flops
from fastbert_nas.config import StudentArch
from fastbert_nas.core.cost import analytic_flops

STUDENT = StudentArch.parse("L2-H32-A4-I64", "1:1,2:3")
TEACHER = StudentArch(3, 48, 4, 96)     # the tiny teacher's shape
B, T, REAL = 4, 16, 50                  # batch, padded length, real tokens


def counted_train_step(arch: StudentArch, batch: int, seq_len: int) -> int:
    """FlopCounterMode's count of a forward and backward pass, eager attention (SDPA counts as 0)."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=arch.hidden, num_hidden_layers=arch.layers,
                     num_attention_heads=arch.heads, intermediate_size=arch.ffn, num_labels=2,
                     attn_implementation="eager")
    model = BertForSequenceClassification(cfg)
    ids = torch.randint(1, 100, (batch, seq_len))                       # (B, T)
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
    return counter.get_total_flops()


def test_a_kd_step_counts_what_flop_counter_counts_for_forward_and_backward():
    assert step_flops(STUDENT, 2, B, T, REAL, TEACHER, 2, live_teacher=False) == counted_train_step(STUDENT, B, T)


def test_the_live_teacher_the_cut_and_the_regressors_are_counted():
    kd = step_flops(STUDENT, 2, B, T, REAL, TEACHER, 2, live_teacher=False)
    teacher_forward = B * analytic_flops(TEACHER, T) + 2 * B * (48 * 48 + 48 * 2)
    assert step_flops(STUDENT, 2, B, T, REAL, TEACHER, 2, live_teacher=True) == kd + teacher_forward
    regressors = 2 * REAL * 32 * 48 * 2  # two hints, 32 -> 48, on real tokens
    assert step_flops(STUDENT, 2, B, T, REAL, TEACHER, 2, False, hint_weight=0.5) == kd + 3 * regressors
    # stage 1 runs the student up to its last hinted layer (2 of 2 here; 1 of 2 with hints 1:1), no head
    one = replace(STUDENT, hints=((1, 1),))
    assert step_flops(one, 1, B, T, REAL, TEACHER, 2, False) == TRAIN_FLOPS_FACTOR * (
        B * analytic_flops(replace(one, layers=1), T) + 2 * REAL * 32 * 48)


def test_bench_speed_writes_figures_for_both_cache_modes(data_dir, tiny_teacher_dir, tmp_path, restore_threads):
    r = invoke("bench", "speed", "--task", "sst2", "--data-dir", data_dir, "--teacher", tiny_teacher_dir,
               "--results", tmp_path, "--threads", 1, "--device", "cpu", "--repeats", 1,
               "--student", "L1-H16-A2-I32@1:1", "--student", "L2-H32-A4-I64@1:1,2:3",
               "--warmup-steps", 1, "--steps", 2, "--profile-steps", 1, "--space", "tiny", "--budget", "smoke",
               "--peak-size", 256)
    assert r.exit_code == 0, r.output
    path = tmp_path / "benchmarks" / "speed-sst2.json"
    assert f"written to {path}" in r.output
    report = json.loads(path.read_text())
    assert report["machine"]["threads"] == 1 and report["machine"]["device"] == "cpu"
    peak = report["matmul_peak_gflops"]
    assert peak["n"] == 5 and peak["best"] == peak["max"] >= peak["median"] >= peak["min"]
    assert [s["name"] for s in report["students"]] == ["L1-H16-A2-I32", "L2-H32-A4-I64"]
    for s in report["students"]:
        for mode in ("cache", "no_cache"):
            for stage in ("stage1", "stage2"):
                f = s[mode][stage]
                for key in ("examples_per_s", "tokens_per_s", "gflops"):
                    assert f[key]["n"] == 1 and 0 < f[key]["min"] <= f[key]["median"] <= f[key]["max"], (mode, key)
                assert f["peak_share"]["median"] == pytest.approx(f["gflops"]["median"] / peak["best"])
                # smoke batches of 4 (16 examples): padded tokens = examples x mean padded length
                real_per_example = f["tokens_per_s"]["median"] / f["examples_per_s"]["median"]
                assert f["padding_share"] == pytest.approx(1 - real_per_example / f["mean_padded_len"])
        # one timed run per mode: the speed-up is the ratio of the two trial estimates
        assert s["cache_speedup"]["trial"]["median"] == pytest.approx(
            s["no_cache"]["trial_s"]["median"] / s["cache"]["trial_s"]["median"])
    goals = report["goals"]
    small, large = report["students"]
    speedup, share = small["cache_speedup"]["trial"]["median"], large["cache"]["stage2"]["peak_share"]["median"]
    assert goals["cache_speedup"] == {"goal": bench_speed.GOAL_CACHE_SPEEDUP, "student": "L1-H16-A2-I32",
                                      "median": speedup, "met": speedup >= bench_speed.GOAL_CACHE_SPEEDUP}
    assert goals["peak_share"] == {"goal": bench_speed.GOAL_PEAK_SHARE, "student": "L2-H32-A4-I64",
                                   "median": share, "met": share >= bench_speed.GOAL_PEAK_SHARE}
    for name in ("L1-H16-A2-I32", "L2-H32-A4-I64"):
        for stage in ("stage1", "stage2"):
            table = report["profiles"][name][stage]
            assert 0 < len(table["top"]) <= 10
            assert sum(o["share"] for o in table["top"]) <= 1 + 1e-9
            # each op's ms per step is its share of the stage's ms per step
            for o in table["top"]:
                assert o["ms_per_step"] == pytest.approx(o["share"] * table["ms_per_step"])
    md = path.with_suffix(".md").read_text()
    assert "share of peak" in md and "## Goals" in md and "## Profile: L2-H32-A4-I64" in md


@pytest.mark.parametrize("option, value, words", [("--repeats", 0, "--repeats 0: must be at least 1"),
                                                  ("--student", "L2-H32-A3-I64", "heads=3: must divide")])
def test_bad_options_are_one_line(data_dir, tiny_teacher_dir, tmp_path, option, value, words):
    from conftest import assert_user_error

    r = invoke("bench", "speed", "--data-dir", data_dir, "--teacher", tiny_teacher_dir, "--results", tmp_path,
               "--space", "tiny", "--budget", "smoke", option, value)
    assert_user_error(r, words)


def test_the_command_defaults_are_the_modules_constants():
    import inspect

    from fastbert_nas.cli.bench import bench_speed as command

    defaults = {k: p.default for k, p in inspect.signature(command).parameters.items()}
    assert (defaults["repeats"], defaults["warmup_steps"], defaults["steps"], defaults["profile_steps"],
            defaults["peak_size"]) == (bench_speed.REPEATS, bench_speed.WARMUP_STEPS, bench_speed.TIMED_STEPS,
                                       bench_speed.PROFILE_STEPS, bench_speed.PEAK_SIZE)
    assert inspect.signature(bench_speed.bench_speed).parameters["space"].default == defaults["space"]
    assert [f"{a}@{h}" for a, h in bench_speed.STUDENTS] == [
        "L4-H128-A2-I512@2:3,4:6", "L3-H320-A10-I640@1:2,2:4,3:6", "L6-H384-A12-I1536@2:2,4:4,6:6"]
