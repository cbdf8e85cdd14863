"""`fastbert-nas export` (fastbert_nas.export): from a trial of a real smoke study to a saved model folder.

A smoke study (the tiny random teacher, the `tiny` space, the `smoke` budget) is built once by the search
command; its trials are exported on the smoke budget with one thread and short latency timings.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime
import optuna
import pytest
import torch
from conftest import SMOKE_STUDY, TINY_TEACHER, assert_user_error, cache_tiny_teacher, invoke, quick_timings
from optuna.trial import TrialState, create_trial
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification
from transformers import pipeline as hf_pipeline

import fastbert_nas.core.cost as cost
import fastbert_nas.export.checkpoint as checkpoint_mod
import fastbert_nas.export.onnx as onnx_mod
import fastbert_nas.export.plan as plan_mod
import fastbert_nas.export.quantized as quantized_mod
import fastbert_nas.export.run as export_run
from fastbert_nas.config import BUDGETS, StudentArch, UserError, trial_recipe
from fastbert_nas.core.tasks import TASKS, encode, load_task
from fastbert_nas.core.training import evaluate
from fastbert_nas.report.rows import REMEASURED, gather

STUDY = SMOKE_STUDY
TRIAL = 0
EVERY = 3               # checkpoint every 3 steps: the smoke budget's 4 hint + 8 KD steps save at 3, 6, 9, 12
TEXTS = ["a gripping , funny and moving film", "dull , flat and far too long", "it is"]


@pytest.fixture(autouse=True)
def quick(monkeypatch, restore_threads):
    quick_timings(monkeypatch)


@pytest.fixture(scope="module")
def study_dir(smoke_study_dir):
    """RESULTS of the real 3-trial smoke study STUDY (conftest.smoke_study_dir)."""
    return smoke_study_dir


def export_args(data_dir, results, out, *extra, **over) -> list[str]:
    """`export` of trial TRIAL on the smoke budget, one thread; `over` replaces options (None drops one)."""
    opts = {"--trial": TRIAL, "--out": out, "--results": results, "--budget": "smoke", "--data-dir": data_dir,
            "--threads": 1, "--checkpoint-every": EVERY, **over}
    return ["export", *[str(x) for k, v in opts.items() if v is not None for x in (k, v)], *extra]


def options(data_dir, results, out, **over) -> plan_mod.ExportOptions:
    """The library's options for what export_args gives the command line."""
    return plan_mod.ExportOptions(out=out, trial=TRIAL, results=results, budget="smoke", data_dir=str(data_dir),
                                    threads=1, checkpoint_every=EVERY, **over)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, study_dir, data_dir) -> export_run.Exported:
    """Trial TRIAL exported without interruption (the in-memory student and the folder)."""
    out = tmp_path_factory.mktemp("exported") / "model"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        quick_timings(mp)
        result = export_run.run_export(options(data_dir, study_dir, out), log=lambda line: None)
    torch.set_num_threads(threads)
    return result


def logits(model, texts, tokenizer) -> torch.Tensor:
    model.eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


# ---------------------------------------------------------------------------
# The model folder

def test_export_round_trips_through_from_pretrained_and_pipeline(exported, study_dir):
    out, report = exported.path, exported.report
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "export.json"} <= {p.name for p in out.iterdir()}
    assert not (out / checkpoint_mod.CHECKPOINT_DIR).exists()  # removed once the folder is complete

    tokenizer = AutoTokenizer.from_pretrained(out)
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert loaded.config.id2label == {0: "negative", 1: "positive"}
    assert loaded.config.label2id == {"negative": 0, "positive": 1}
    trial = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{study_dir}/{STUDY}.db").trials[TRIAL]
    arch = trial.user_attrs["arch"]
    assert (loaded.config.num_hidden_layers, loaded.config.hidden_size, loaded.config.num_attention_heads,
            loaded.config.intermediate_size) == (arch["layers"], arch["hidden"], arch["heads"], arch["ffn"])
    expected = logits(exported.student, TEXTS, tokenizer)
    assert torch.equal(logits(loaded, TEXTS, tokenizer), expected)

    classify = hf_pipeline("text-classification", model=str(out))
    for text, row, got in zip(TEXTS, expected, classify(TEXTS)):
        probs = row.softmax(-1)
        assert got["label"] == loaded.config.id2label[int(probs.argmax())], text
        assert got["score"] == pytest.approx(float(probs.max()), abs=1e-6)

    # the trial's student and settings, on the chosen budget
    assert report["trial"] == TRIAL and report["study"] == STUDY and report["resumed_from"] is None
    assert report["arch"] == arch and report["config"]["lr"] == trial.user_attrs["config"]["lr"]
    assert report["distill"]["hint_steps"] == BUDGETS["smoke"]["hint_steps"]
    assert report["distill"]["kd_steps"] == BUDGETS["smoke"]["kd_steps"]


def test_export_json_and_model_card_give_the_figures(exported, data_dir, study_dir):
    out = exported.path
    r = json.loads((out / "export.json").read_text())
    assert r == json.loads(json.dumps(exported.report))
    assert 0 <= r["dev"]["metric"] <= 1 and 0 <= r["teacher"]["dev"]["metric"] <= 1
    assert r["retention"] == pytest.approx(r["dev"]["metric"] / r["teacher"]["dev"]["metric"])
    assert r["costs"]["params"]["total"] > 0 and 0 < r["vs_teacher"]["flops_share"] < 1
    assert r["costs"]["latency"]["b1"]["median_ms"] > 0 and r["vs_teacher"]["speedup_b1"] > 0
    assert r["command"] == (f"fastbert-nas export --out {out} --trial {TRIAL} --results {study_dir} --budget smoke "
                            f"--checkpoint-every {EVERY} --data-dir {data_dir} --threads 1")
    # the dev metric is the saved model's on the official dev set
    dev = encode(load_task(TASKS["sst2"], str(data_dir)).dev, AutoTokenizer.from_pretrained(out), r["max_len"])
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert evaluate(loaded, TASKS["sst2"], dev, torch.device("cpu")) == r["dev"]

    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    for figure in (f"| dev accuracy | {r['dev']['metric']:.4f} | {r['teacher']['dev']['metric']:.4f} |",
                   f"{r['retention']:.1%}", f"{r['costs']['params']['total'] / 1e6:.2f}",
                   f"{r['costs']['flops'] / 1e9:.3f} G ({r['vs_teacher']['flops_share']:.1%} of the teacher)",
                   f"{r['costs']['latency']['b1']['median_ms']:.2f} ms", f"{r['vs_teacher']['speedup_b1']:.2f}x",
                   r["command"], "Labels: 0 negative, 1 positive"):
        assert figure in card, figure


@pytest.mark.slow
def test_onnx_matches_pytorch_and_is_timed(study_dir, data_dir, tmp_path):
    out = tmp_path / "model"
    r = invoke(*export_args(data_dir, study_dir, out, "--onnx"))
    assert r.exit_code == 0, r.output
    assert "model.onnx: max |logit difference|" in r.output
    o = json.loads((out / "export.json").read_text())["onnx"]
    assert o["max_abs_diff"] <= onnx_mod.ONNX_TOLERANCE and o["check_examples"] > 0
    assert o["onnxruntime_ms"] > 0 and o["pytorch_ms"] > 0 and o["seq_len"] == cost.REF_SEQ_LEN
    assert "`model.onnx`" in (out / "README.md").read_text()

    # checked again here, on batches and lengths of its own
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    sess = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for texts in (TEXTS, TEXTS[:1], [" ".join(TEXTS * 4)]):
        batch = tokenizer(texts, padding=True, return_tensors="np")
        got = sess.run(["logits"], {i.name: batch[i.name].astype(np.int64) for i in sess.get_inputs()})[0]
        assert np.abs(got - logits(model, texts, tokenizer).numpy()).max() <= onnx_mod.ONNX_TOLERANCE


@pytest.mark.slow
def test_quantize_int8_writes_scores_and_times_it_beside_the_teacher(study_dir, data_dir, tmp_path, monkeypatch):
    """--quantize int8: model-int8.onnx beside model.onnx; the student scored in every runtime on validation and
    dev (PyTorch fp32 as the export's own figure), the int8 change measured; student and teacher timed in
    every runtime, each round; the card's table and loading code."""
    monkeypatch.setattr(quantized_mod, "DEPLOY_ROUNDS", 2)
    out = tmp_path / "model"
    r = invoke(*export_args(data_dir, study_dir, out, **{"--quantize": "int8"}))
    assert r.exit_code == 0, r.output
    report = json.loads((out / "export.json").read_text())
    d = report["deploy"]
    assert (out / "model.onnx").exists() and report["onnx"]["max_abs_diff"] <= onnx_mod.ONNX_TOLERANCE
    labels = {rt.label for rt in quantized_mod.DEPLOY_RUNTIMES}
    assert set(d["models"]) == {"student", "teacher"} and all(set(m) == labels for m in d["models"].values())
    assert all(len(x["ms_rounds"]) == 2 and x["ms"] > 0 for m in d["models"].values() for x in m.values())
    student = d["models"]["student"]
    assert student["ONNX Runtime int8"]["size_mb"] == pytest.approx((out / "model-int8.onnx").stat().st_size / 1e6)
    assert student["ONNX Runtime int8"]["size_mb"] < student["ONNX Runtime fp32"]["size_mb"] / 2
    dev_rows = len(load_task(TASKS["sst2"], str(data_dir)).dev.labels)
    assert student["PyTorch fp32"]["dev"]["metric"] == report["dev"]["metric"]
    assert student["ONNX Runtime fp32"]["dev"]["metric"] == pytest.approx(report["dev"]["metric"], abs=2 / dev_rows)
    assert d["int8_change"]["dev"] == pytest.approx(student["ONNX Runtime int8"]["dev"]["metric"]
                                                    - report["dev"]["metric"])
    assert set(d["int8_change"]) == {"val", "dev"} and "avx2" in d["cpu_flags"]
    assert d["models"]["teacher"]["PyTorch fp32"]["speedup_vs_teacher_pytorch_fp32"] == 1.0
    card = (out / "README.md").read_text()
    assert "## Runtimes" in card and "ORTModelForSequenceClassification" in card and "model-int8.onnx" in card
    assert "student in ONNX Runtime int8:" in r.output
    assert_user_error(invoke(*export_args(data_dir, study_dir, tmp_path / "other", **{"--quantize": "int4"})),
                      "--quantize 'int4': only int8")


@pytest.mark.slow
def test_an_onnx_file_that_differs_fails_loudly(tiny_teacher_dir, sst2_data, tmp_path, monkeypatch):
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    dev = encode(sst2_data.dev, AutoTokenizer.from_pretrained(tiny_teacher_dir), 64)
    monkeypatch.setattr(onnx_mod, "ONNX_TOLERANCE", -1.0)  # any difference, even 0, is too much
    with pytest.raises(onnx_mod.OnnxMismatch, match="above ONNX_TOLERANCE"):
        onnx_mod.export_onnx(model, tmp_path, dev, threads=1)
    assert (tmp_path / "model.onnx").exists()  # left for inspection


# ---------------------------------------------------------------------------
# Checkpoints: an interrupted export resumes

@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [3, 6], ids=["in stage 1", "in stage 2"])
def test_an_interrupted_export_resumes_from_its_checkpoint(study_dir, data_dir, tmp_path, monkeypatch, exported,
                                                          stop_after):
    out = tmp_path / "model"
    save = checkpoint_mod.FileCheckpoint.save

    def save_then_stop(self, state):
        save(self, state)
        if state["result"]["hint_steps"] + state["result"]["kd_steps"] == stop_after:
            raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(checkpoint_mod.FileCheckpoint, "save", save_then_stop)
        r = invoke(*export_args(data_dir, study_dir, out))
    assert r.exit_code == 130, r.output
    assert "interrupted: run the same command to resume" in r.output
    assert (out / ".checkpoint" / "state.pt").exists() and not (out / "export.json").exists()

    # another trial is refused while this one's checkpoint is there
    assert_user_error(invoke(*export_args(data_dir, study_dir, out, **{"--trial": TRIAL + 1})),
                      "checkpoint of another export", f"trial: {TRIAL} -> {TRIAL + 1}")

    r = invoke(*export_args(data_dir, study_dir, out))
    assert r.exit_code == 0, r.output
    assert f"resuming from the checkpoint after step {stop_after}" in r.output
    report = json.loads((out / "export.json").read_text())
    assert report["resumed_from"] == stop_after
    assert (report["distill"]["hint_steps"], report["distill"]["kd_steps"]) == (4, 8)
    assert not (out / ".checkpoint").exists()
    # the same weights as the uninterrupted export: nothing was replayed or skipped
    resumed, whole = load_file(out / "model.safetensors"), load_file(exported.path / "model.safetensors")
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert report["dev"] == exported.report["dev"]


def test_a_checkpoint_made_before_a_config_field_existed_resumes_at_its_default(tmp_path):
    """A plan.json without augment_min_tokens (written before it existed) ran the default: the same export;
    another value is another export."""
    from fastbert_nas.config import DistillConfig

    ckpt = checkpoint_mod.FileCheckpoint(tmp_path / ".checkpoint", every=1, log=lambda line: None)
    now = DistillConfig(augment=2).to_dict()
    ckpt.claim({"trial": 1, "config": {k: v for k, v in now.items() if k not in ("augment_min_tokens",
                                                                               "augment_examples")}})
    ckpt.check({"trial": 1, "config": now})
    with pytest.raises(UserError, match=r"config\.augment_min_tokens: 16 -> 3"):
        ckpt.check({"trial": 1, "config": {**now, "augment_min_tokens": 3}})


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    ckpt = checkpoint_mod.FileCheckpoint(tmp_path / ".checkpoint", every=1, log=lambda line: None)
    ckpt.claim({"trial": 1, "config": {"kd_steps": 8, "lr": 0.1}})
    ckpt.check({"trial": 1, "config": {"kd_steps": 8, "lr": 0.1}})  # the same export: fine
    with pytest.raises(UserError, match=r"config\.kd_steps: 8 -> 80.*remove .*\.checkpoint"):
        ckpt.check({"trial": 1, "config": {"kd_steps": 80, "lr": 0.1}})
    assert ckpt.load() is None  # claimed, nothing saved yet: start at step 0
    ckpt.save({"result": {"hint_steps": 2, "kd_steps": 5}, "w": torch.ones(2)})
    assert torch.equal(ckpt.load()["w"], torch.ones(2)) and ckpt.resumed_from == 7
    assert sorted(p.name for p in ckpt.folder.iterdir()) == ["plan.json", "state.pt"]  # no temporary file left


# ---------------------------------------------------------------------------
# Which trial, which settings

def test_the_plan_is_the_trials_student_on_the_full_budget(study_dir, data_dir, tmp_path):
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{study_dir}/{STUDY}.db")
    trial = study.trials[TRIAL]
    plan = plan_mod.export_plan(study, trial, plan_mod.ExportOptions(out=tmp_path, trial=TRIAL))
    cfg, recorded = plan.cfg, trial.user_attrs["config"]
    assert plan.arch.to_dict() == trial.user_attrs["arch"] and plan.env.task == "sst2"
    assert plan.env.teacher.given == study.user_attrs["teacher_id"]  # the study's --teacher
    assert {k: getattr(cfg, k) for k in BUDGETS["full"]} == BUDGETS["full"]
    for key in ("lr", "temperature", "kd_alpha", "hint_weight", "init", "seed"):  # the trial's settings
        assert getattr(cfg, key) == recorded[key], key
    overridden = plan_mod.export_plan(study, trial, plan_mod.ExportOptions(
        out=tmp_path, trial=TRIAL, kd_steps=100, hint_steps=0, examples=500))
    assert (overridden.cfg.kd_steps, overridden.cfg.hint_steps, overridden.cfg.examples) == (100, 0, 500)


def test_export_for_another_task_distills_from_that_tasks_teacher(study_dir, data_dir, tmp_path):
    """The SST-2 study's student exported with --task cola learns from the CoLA teacher, not the study's."""
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{study_dir}/{STUDY}.db")
    trial, studied = study.trials[TRIAL], study.user_attrs["teacher_id"]  # the study's: the tiny teacher's folder

    def plan(**over) -> plan_mod.Plan:
        return plan_mod.export_plan(study, trial, plan_mod.ExportOptions(out=tmp_path, trial=TRIAL, **over))

    assert plan().env.teacher.given == studied and plan(task="sst2").env.teacher.given == studied
    cola = plan(task="cola")
    assert (cola.env.task, cola.teacher_id, cola.env.teacher.given) == ("cola", "results/teachers/cola", None)  # the cached one
    assert plan(task="cola", teacher="my/teacher").env.teacher.given == "my/teacher"  # --teacher still wins
    assert cola.arch == plan().arch and cola.identity() != plan().identity()

    # end to end: RESULTS holding the study and a CoLA teacher with weights of its own
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(study_dir / f"{STUDY}.db", results)
    cola_fingerprint = cache_tiny_teacher(results, "cola", data_dir, seed=1)
    assert cola_fingerprint != study.user_attrs["teacher_fingerprint"]
    out = tmp_path / "cola-model"
    r = invoke(*export_args(data_dir, results, out, **{"--task": "cola"}))
    assert r.exit_code == 0, r.output
    assert "weights differ from the study's" not in r.output  # another task's teacher, not a changed one
    report = json.loads((out / "export.json").read_text())
    assert (report["task"], report["metric"], report["arch"]) == ("cola", "mcc", trial.user_attrs["arch"])
    assert report["teacher"]["id"] == "results/teachers/cola"
    assert report["teacher"]["fingerprint"] == cola_fingerprint
    assert AutoModelForSequenceClassification.from_pretrained(out).config.id2label == {0: "unacceptable",
                                                                                      1: "acceptable"}


def test_same_task_knows_a_folder_however_spelled(tmp_path, monkeypatch):
    (tmp_path / "reviews").mkdir()
    monkeypatch.chdir(tmp_path)
    same = plan_mod.same_task
    assert same("sst2", "sst2") and not same("cola", "sst2") and not same("sst2", None)
    assert same("reviews", str(tmp_path / "reviews")) and same("./reviews/", "reviews")
    assert not same("reviews", str(tmp_path)) and not same("sst2", "reviews")

    # a study of the custom task, recorded by its absolute path, exported with --task ./reviews: its teacher
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("task", str(tmp_path / "reviews"))
    study.set_user_attr("teacher_id", "my/reviews-teacher")
    arch = {"layers": 2, "hidden": 32, "heads": 4, "ffn": 64, "hints": [[2, 3]]}
    study.add_trial(create_trial(values=[0.8, 100], user_attrs={"arch": arch, "config": {}}))
    plan = plan_mod.export_plan(study, study.trials[0], plan_mod.ExportOptions(out=tmp_path, trial=0,
                                                                                    task="./reviews"))
    assert plan.env.teacher.given == "my/reviews-teacher"


def picks_study(results, remeasured: dict | None = None) -> optuna.Study:
    """A study made with optuna.create_trial: teacher 1000 FLOPs and 10 ms; (metric, FLOPs, ms) per trial."""
    study = optuna.create_study(study_name="picks", storage=f"sqlite:///{results}/picks.db",
                                directions=["maximize", "minimize"])
    for key, value in {"task": "sst2", "metric": "accuracy", "teacher_flops": 1000, "teacher_latency_ms": 10.0,
                       "teacher_val": {"metric": 0.9}, **({REMEASURED: remeasured} if remeasured else {})}.items():
        study.set_user_attr(key, value)
    student = {"arch": {"layers": 2, "hidden": 32, "heads": 4, "ffn": 64, "hints": [[2, 3]]}, "config": {}}
    for metric, flops, ms in [(0.80, 200, 2.0), (0.85, 250, 6.0), (0.90, 400, 3.0), (0.85, 240, 5.0)]:
        study.add_trial(create_trial(values=[metric, flops], user_attrs={"flops": flops, "latency_ms": ms, **student}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"flops": 100, "latency_ms": 1.0,
                                                                      "curve": {"4": 0.99}}))
    return study


def pick(study, rule: str, results) -> int:
    data = gather(study, results)
    return plan_mod.pick_row(data.rows, data.teacher, *plan_mod.parse_pick(rule))["trial"]


def test_pick_takes_the_best_completed_student_within_the_share(tmp_path):
    study = picks_study(tmp_path)
    assert pick(study, "flops<=0.25", tmp_path) == 3    # 0.85 at 24% beats 0.85 at 25%; pruned 0.99 ignored
    assert pick(study, "flops<=0.2", tmp_path) == 0     # at most: 20% itself is allowed
    assert pick(study, " flops <= 1 ", tmp_path) == 2
    assert pick(study, "latency<=0.3", tmp_path) == 2   # 3 ms of the teacher's 10
    assert pick(study, "latency<=2.5e-1", tmp_path) == 0
    with pytest.raises(UserError, match=r"at most 10.0% of the teacher's FLOPs; the cheapest has 20.0%"):
        pick(study, "flops<=0.1", tmp_path)
    by_pick = plan_mod.ExportOptions(out=tmp_path, pick="flops<=0.25", results=tmp_path)
    assert plan_mod.chosen_trial(study, by_pick).number == 3
    with pytest.raises(UserError, match=r"trial 4 of study 'picks' \(PRUNED\) recorded no student"):
        plan_mod.chosen_trial(study, plan_mod.ExportOptions(out=tmp_path, trial=4, results=tmp_path))
    assert pick(study, "0.2<flops<=0.25", tmp_path) == 3  # a band: more than 20%, at most 25%
    assert pick(study, "0.241<flops<=1", tmp_path) == 2
    with pytest.raises(UserError, match=r"no completed student has more than 25.0% and at most 30.0%"):
        pick(study, "0.25<flops<=0.3", tmp_path)
    assert plan_mod.parse_pick(" 0.10 < flops <= 0.25") == ("flops", 0.25, 0.1)
    assert plan_mod.pick_text(*plan_mod.parse_pick("0.10<flops<=0.250")) == "0.1<flops<=0.25"
    for bad in ("flops<0.25", "params<=0.5", "flops<=0", "flops<=x", "", "0.3<flops<=0.25", "0.1<flops<0.25"):
        with pytest.raises(UserError, match=r"expected \[LOW<\]COST<=SHARE"):
            plan_mod.parse_pick(bad)


def test_pick_uses_re_measured_latencies_beside_the_teachers(tmp_path):
    # re-measured side by side: teacher 20 ms, trial 2 8 ms (40%); the others keep their trial figures
    study = picks_study(tmp_path, {"teacher_ms": 20.0, "trials": {"2": 8.0}})
    assert pick(study, "latency<=0.35", tmp_path) == 0
    assert pick(study, "latency<=0.4", tmp_path) == 2


def test_pick_that_matches_nothing_is_one_error_line(tmp_path):
    picks_study(tmp_path)
    assert_user_error(invoke("export", "--pick", "flops<=0.05", "--study", "picks", "--results", tmp_path,
                             "--out", tmp_path / "m"), "--pick flops<=0.05", "the cheapest has 20.0%")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("over, fragments", [
    ({"--pick": "flops<=0.5"}, ["exactly one of --trial N, --pick RULE"]),
    ({"--trial": None}, ["exactly one of --trial N, --pick RULE", "--again EXPORT_DIR"]),
    ({"--trial": None, "--again": "nowhere"}, ["--again nowhere: no export.json there"]),
    ({"--trial": 99}, ["--trial 99", "no such trial (trials 0-2)"]),
    ({"--trial": None, "--pick": "flops<=0.0001"}, ["no completed student has at most 0.0%"]),
    ({"--trial": None, "--pick": "speed<=2"}, ["expected [LOW<]COST<=SHARE"]),
    ({"--study": "nope"}, ["--study nope", "not found"]),
    ({"--checkpoint-every": 0}, ["--checkpoint-every 0: must be at least 1"]),
    ({"--kd-steps": 0}, ["--kd-steps 0: must be at least 1"]),
    ({"--seed": -1}, ["--seed -1: must be at least 0"]),
    ({"--budget": "huge"}, ["--budget 'huge': unknown"]),
])
def test_bad_requests_are_one_error_line(study_dir, data_dir, tmp_path, over, fragments):
    assert_user_error(invoke(*export_args(data_dir, study_dir, tmp_path / "m", **over)), *fragments)


def test_an_out_folder_holding_something_else_is_refused(study_dir, data_dir, tmp_path, exported):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    assert_user_error(invoke(*export_args(data_dir, study_dir, tmp_path / "m")), "holds something else (notes.txt)")
    (tmp_path / "f").write_text("a file")
    assert_user_error(invoke(*export_args(data_dir, study_dir, tmp_path / "f")), "is a file")
    assert_user_error(invoke(*export_args(data_dir, study_dir, exported.path)), "already holds a finished export")
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"


def test_command_line_names_what_differs_from_the_defaults(tmp_path):
    opts = plan_mod.ExportOptions(out=tmp_path / "a b", pick="flops<=0.25", onnx=True, kd_steps=100, seed=2)
    assert plan_mod.command_line(opts) == (f"fastbert-nas export --out '{tmp_path}/a b' --pick 'flops<=0.25' "
                                             "--kd-steps 100 --seed 2 --onnx")


def test_a_student_given_by_its_shape_is_exported_without_a_study(tiny_teacher_dir, data_dir, tmp_path):
    """--student ARCH@HINTS: no study is read; the student trains with the recipe a search trial of that shape
    gets, on the chosen budget; export.json and the card say where it came from; --again repeats it."""
    given = "L2-H32-A2-I64@1:2,2:3"
    out = tmp_path / "given"
    args = ["export", "--student", given, "--task", "sst2", "--teacher", tiny_teacher_dir, "--results",
            tmp_path / "results", "--budget", "smoke", "--data-dir", data_dir, "--threads", 1, "--seed", 3]
    r = invoke(*map(str, args), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "exporting the student given by --student: L2-H32-A2-I64 hints 1:2,2:3" in r.output
    report = json.loads((out / "export.json").read_text())
    arch = StudentArch.parse("L2-H32-A2-I64", "1:2,2:3")
    assert (report["study"], report["trial"], report["trial_state"], report["pick"]) == (None, None, "GIVEN", None)
    assert report["arch"] == arch.to_dict() and report["name"] == "L2-H32-A2-I64"
    recipe = trial_recipe(arch)
    assert {k: report["config"][k] for k in recipe} == recipe and report["config"]["seed"] == 3
    assert (report["distill"]["hint_steps"], report["distill"]["kd_steps"]) == (
        BUDGETS["smoke"]["hint_steps"], BUDGETS["smoke"]["kd_steps"])
    assert "--student L2-H32-A2-I64@1:2,2:3" in report["command"]
    assert "Its shape was given by `--student`" in (out / "README.md").read_text()
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert (loaded.config.num_hidden_layers, loaded.config.hidden_size, loaded.config.intermediate_size) == (2, 32, 64)

    # without hints: the last student layer learns from the last teacher layer
    plain = tmp_path / "plain"
    r = invoke(*map(str, args), "--student", "L1-H32-A2-I64", "--out", str(plain))
    assert r.exit_code == 0, r.output
    assert json.loads((plain / "export.json").read_text())["hints"] == f"1:{TINY_TEACHER['num_hidden_layers']}"

    # the same student again with another seed, from the first export's folder
    again = tmp_path / "again"
    r = invoke("export", "--again", str(out), "--seed", "4", "--out", str(again), "--results",
               str(tmp_path / "results"), "--budget", "smoke", "--data-dir", str(data_dir), "--threads", "1", "--teacher", str(tiny_teacher_dir))
    assert r.exit_code == 0, r.output
    repeated = json.loads((again / "export.json").read_text())
    assert repeated["arch"] == report["arch"] and repeated["config"] == {**report["config"], "seed": 4}


@pytest.mark.parametrize("over, fragments", [
    ({"--student": "L2-H32"}, ["--student 'L2-H32'", "ARCH@HINTS"]),
    ({"--student": "L2-H32-A2-I64", "--task": None}, ["--student needs --task"]),
    ({"--student": "L2-H32-A2-I64", "--trial": 0}, ["exactly one of"]),
])
def test_a_bad_student_is_one_error_line(data_dir, tmp_path, over, fragments):
    opts = {"--task": "sst2", "--out": tmp_path / "x", "--data-dir": data_dir, **over}
    result = invoke("export", *[str(x) for k, v in opts.items() if v is not None for x in (k, v)])
    assert_user_error(result, *fragments)
