"""`fastbert-nas bench depth` (fastbert_nas.bench.depth): the equal-FLOPs ladder on plain numbers and on the
real base's shape, where a hint loss flattens, and the benchmark end to end on a tiny teacher (resumed, and
a shorter run kept apart)."""

from __future__ import annotations

import json

import pytest
from conftest import cache_tiny_teacher, invoke, quick_timings
from transformers import AutoConfig

import fastbert_nas.bench.depth as bd
from fastbert_nas.bench.common import teacher_id
from fastbert_nas.core.cost import analytic_flops
from fastbert_nas.core.teacher import DEFAULT_BASE, base_path


def test_ladder_hints_spread_over_the_student_and_the_teacher():
    assert bd.ladder_hints(2, 6) == ((1, 3), (2, 6))
    assert bd.ladder_hints(4, 6) == ((1, 2), (2, 3), (3, 5), (4, 6))
    assert bd.ladder_hints(12, 6) == tuple((2 * k, k) for k in range(1, 7))
    assert bd.ladder_hints(6, 6) == tuple((k, k) for k in range(1, 7))
    assert bd.ladder_hints(1, 6) == ((1, 6),)
    assert bd.ladder_hints(12, 6, max_hints=4) == ((3, 2), (6, 3), (9, 5), (12, 6))  # sparse: the search's baseline's
    assert bd.ladder_hints(2, 6, max_hints=4) == bd.ladder_hints(2, 6)


@pytest.mark.parametrize("share", [0.10, 0.25])
def test_ladder_of_the_base_holds_its_flops_within_tolerance(share):
    """The default base's shape (MiniLM-L6-H384-A12, head width 32) at SST-2's 64 tokens: every depth from 1 to
    12 gets a student of the share's FLOPs within 5%, of heads the teacher's width, hinted on its last layer."""
    config = AutoConfig.from_pretrained(base_path(DEFAULT_BASE))
    teacher = bd.StudentArch(6, 384, 12, 1536)
    depths = (1, 2, 3, 4, 6, 8, 12)
    archs = bd.ladder(config, share, depths, 64)
    assert [a.layers for a in archs] == list(depths)
    for a in archs:
        a.validate(6)
        assert abs(analytic_flops(a, 64) / (share * analytic_flops(teacher, 64)) - 1) <= bd.LADDER_TOLERANCE
        assert a.hidden // a.heads == 32 and a.hidden % 32 == 0 and a.ffn % 32 == 0
        assert bd.FFN_RATIOS[0] <= a.ffn / a.hidden <= bd.FFN_RATIOS[1]
        assert a.hints[-1] == (a.layers, 6)
    widths = [a.hidden for a in archs]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]  # deeper is thinner


def test_equal_flops_arch_refuses_a_depth_no_width_fits():
    teacher = bd.StudentArch(6, 384, 12, 1536)
    with pytest.raises(bd.UserError, match="no 40-layer student"):
        bd.equal_flops_arch(40, 0.02 * analytic_flops(teacher, 64), 64, 32, 6, 768)


def test_flat_step_on_plain_curves():
    decaying = [(20 * i, 1.0 + 4.0 * 0.7 ** i) for i in range(60)]
    step = bd.flat_step(decaying)
    assert step is not None and 100 <= step <= 600
    loss = dict(decaying)  # there the loss is within about 5% of where it ends, a window before it was not
    assert loss[step] <= 1.05 * loss[1180] and loss[step - 20 * bd.FLAT_WINDOW] > 1.05 * loss[1180]
    noisy = [(s, v * (1.1 if i % 2 else 0.9)) for i, (s, v) in enumerate(decaying)]  # minibatch noise of +-10%
    assert bd.flat_step(noisy) is not None and abs(bd.flat_step(noisy) - step) <= 20 * bd.FLAT_WINDOW
    falling = [(20 * i, 10.0 - 0.1 * i) for i in range(60)]
    assert bd.flat_step(falling) is None          # still falling when the stage ends
    assert bd.flat_step(decaying[:2 * bd.FLAT_WINDOW - 1]) is None     # too short to say
    assert bd.flat_step([(20 * i, 2.0) for i in range(20)]) == 20 * (bd.FLAT_WINDOW - 1)  # flat from the start


def test_options_refuse_bad_values():
    for over, fragment in [({"methods": ("fitnets", "nope")}, "--methods: unknown nope"),
                           ({"depths": (2, 0)}, "--depths"), ({"shares": (1.5,)}, "--shares 1.5"),
                           ({"seeds": 0}, "--seeds 0"), ({"tasks": ("mnli",)}, "mnli"),
                           ({"report": "../depth"}, "--report '../depth'"),
                           ({"budget": "huge"}, "--budget 'huge': unknown"),
                           ({"max_hints": 0}, "--max-hints 0"), ({"hint_lr": -1e-3}, "--hint-lr -0.001")]:
        with pytest.raises(bd.UserError, match=fragment):
            bd.DepthOptions(**over).check()


def test_a_trial_budget_runs_as_search_trials_do_at_the_benchmarks_step_counts():
    cfg = bd.DepthOptions(budget="cpu", kd_steps=700, hint_steps=200).check().config()
    trial = bd.TRIAL_BUDGETS["cpu"]
    assert (cfg.kd_steps, cfg.hint_steps) == (700, 200)
    for key in ("examples", "batch_size", "eval_every"):
        assert getattr(cfg, key) == trial[key]
    assert cfg.augment == 0                       # trials do not augment; distill's small budget does
    assert bd.DepthOptions(budget="small").config().augment > 0


def test_two_benchmarks_sharing_runs_json_keep_each_others_runs(tmp_path):
    one, two = bd.Runs(tmp_path), bd.Runs(tmp_path)   # e.g. one benchmark per core, other tasks
    one.put("sst2/a", {"val": 0.8})
    two.put("cola/b", {"val": 0.3})                    # two read the file before one wrote
    one.put("sst2/c", {"val": 0.9})
    assert set(json.loads((tmp_path / "depth" / "runs.json").read_text())) == {"sst2/a", "cola/b", "sst2/c"}
    assert set(two.refresh()) == {"sst2/a", "cola/b", "sst2/c"}
    assert [p.name for p in (tmp_path / "depth").iterdir()] == ["runs.json"]


def bench_args(data_dir, results, **over) -> list[str]:
    opts = {"--tasks": "sst2", "--shares": "0.5", "--depths": "1,2", "--seeds": 1, "--budget": "smoke",
            "--kd-steps": 8, "--hint-steps": 40, "--data-dir": data_dir, "--results": results, "--threads": 1, **over}
    return ["bench", "depth", *[str(x) for k, v in opts.items() for x in (k, v)]]


def test_bench_depth_runs_every_student_and_method_and_resumes(tmp_path, data_dir, monkeypatch, restore_threads):
    fingerprint = cache_tiny_teacher(tmp_path, "sst2", data_dir, seed=0)
    quick_timings(monkeypatch)
    r = invoke(*bench_args(data_dir, tmp_path))
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "benchmarks" / "depth.json").read_text())
    runs = json.loads((tmp_path / "depth" / "runs.json").read_text())
    manifest = json.loads((tmp_path / "teachers" / "sst2" / "manifest.json").read_text())
    key = teacher_id(manifest, fingerprint)
    assert key.startswith("recipe-")  # the teacher's recipe and data: another machine's bits keep the runs
    assert len(runs) == 2 * len(bd.METHODS) and all(k.endswith(f"/teacher-{key}") for k in runs)
    assert {r["teacher_fingerprint"] for r in runs.values()} == {fingerprint}
    by_method = {}
    for record in runs.values():
        by_method.setdefault(record["method"], []).append(record)
        assert 0 <= record["val"] <= 1 and 0 <= record["dev"] <= 1 and record["config"]["kd_steps"] == 8
    assert all(r["config"]["hint_steps"] == 0 and not r["hint_curve"] for r in by_method["kd"])
    assert all(r["config"]["hint_steps"] == 40 and r["hint_curve"] for r in by_method["fitnets"])
    assert {r["config"]["init"] for r in by_method["random-hints"]} == {"random"}
    (ladder,) = report["tasks"][0]["ladders"].values()
    assert [a["layers"] for a in ladder] == [1, 2]
    assert len(report["rows"]) == 6 and {row["method"] for row in report["rows"]} == set(bd.METHODS)
    assert all(row["dev"]["n"] == 1 and abs(row["flops_share"] - 0.5) < 0.1 for row in report["rows"])
    assert [p.name for p in (tmp_path / "depth").iterdir()] == ["runs.json"]  # finished runs leave no checkpoint
    assert (tmp_path / "benchmarks" / "depth" / "metric_vs_depth.png").exists()
    assert "# Depth at equal FLOPs" in (tmp_path / "benchmarks" / "depth.md").read_text()

    r = invoke(*bench_args(data_dir, tmp_path))  # the same command: every run is on record
    assert r.exit_code == 0 and ") ..." not in r.output, r.output
    assert json.loads((tmp_path / "depth" / "runs.json").read_text()) == runs

    r = invoke(*bench_args(data_dir, tmp_path, **{"--seeds": 2}), "--recorded-only")  # a report of seed 0 alone
    assert r.exit_code == 0 and ") ..." not in r.output, r.output
    assert json.loads((tmp_path / "depth" / "runs.json").read_text()) == runs
    task = json.loads((tmp_path / "benchmarks" / "depth.json").read_text())["tasks"][0]
    assert (task["on_record"], task["planned"]) == (6, 12)
    assert "Runs on record: 6 of the 12 planned" in (tmp_path / "benchmarks" / "depth.md").read_text()

    main_report = (tmp_path / "benchmarks" / "depth.json").read_text()
    r = invoke(*bench_args(data_dir, tmp_path, **{"--kd-steps": 4, "--methods": "kd", "--report": "depth-kd4"}))
    assert r.exit_code == 0, r.output     # other steps: runs of their own, in a report of its own name
    after = json.loads((tmp_path / "depth" / "runs.json").read_text())
    assert len(after) == len(runs) + 2 and all(after[k] == v for k, v in runs.items())
    assert len(json.loads((tmp_path / "benchmarks" / "depth-kd4.json").read_text())["rows"]) == 2
    assert (tmp_path / "benchmarks" / "depth-kd4" / "metric_vs_depth.png").exists()
    assert "shallower-wider (`depth-kd4`)" in (tmp_path / "benchmarks" / "depth-kd4.md").read_text()
    assert (tmp_path / "benchmarks" / "depth.json").read_text() == main_report

    r = invoke(*bench_args(data_dir, tmp_path, **{"--methods": "fitnets", "--depths": "2", "--max-hints": 1,
                                                  "--hint-lr": 3e-3, "--report": "depth-sparse"}))
    assert r.exit_code == 0, r.output     # sparse hints and another hint learning rate: runs of their own
    new = {k: v for k, v in json.loads((tmp_path / "depth" / "runs.json").read_text()).items() if k not in after}
    (record,) = new.values()
    assert "-hints1-hintlr0.003/" in next(iter(new)) and record["hints"] == "2:3"  # the tiny teacher has 3
    assert record["config"]["hint_lr"] == 3e-3 and record["config"]["hint_steps"] == 40
    assert "at most 1 hints a student, hint-stage peak learning rate 0.003" in \
        (tmp_path / "benchmarks" / "depth-sparse.md").read_text()


def test_bench_depth_bad_input_is_one_line(tmp_path, data_dir):
    r = invoke(*bench_args(data_dir, tmp_path, **{"--depths": "2,x"}))
    assert r.exit_code == 2 and "--depths '2,x'" in r.output and "Traceback" not in r.output


def test_depth_figure_gives_each_method_one_colour_in_every_panel():
    """Two panels (two shares): a method's line has the same colour in both, and the colours differ."""
    from fastbert_nas.bench.depth_report import depth_figure

    stat = {"mean": 0.8, "sd": None, "n": 1}
    rows = [{"task": "sst2", "share": share, "depth": depth, "method": method, "dev": stat, "student": "s",
             "hints": "1:1"} for share in (0.1, 0.25) for depth in (2, 4) for method in bd.METHODS]
    report = {"tasks": [{"task": "sst2", "metric": "accuracy", "teacher_dev": 0.9,
                         "ladders": {"0.1": [], "0.25": []}}],
              "rows": rows, "settings": {"methods": list(bd.METHODS), "depths": [2, 4]}}
    colours = {}
    for trace in depth_figure(report).data:
        colours.setdefault(trace.legendgroup, set()).add(trace.line.color)
    assert set(colours) == set(bd.METHODS) and all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == len(bd.METHODS)
