"""Latency runtimes: ONNX export and int8 quantization round-trip against PyTorch, records that name their
runtime, a search timed in ONNX Runtime, and a front re-measured in another runtime."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from conftest import assert_user_error, invoke, quick_timings, search_args
from transformers import AutoTokenizer, BertForSequenceClassification

import fastbert_nas.core.runtime as runtime_mod
from fastbert_nas.config import UserError
from fastbert_nas.core.backends import TORCH_FP32, Runtime, asked_runtime
from fastbert_nas.core.tasks import collate, encode
from fastbert_nas.export.onnx import ONNX_TOLERANCE

INT8_AGREEMENT = 0.9   # share of real dev rows whose int8 prediction is the fp32 model's
FIT_ROWS, FIT_STEPS = 512, 160  # the tiny classifier is fitted a little, so that its logits mean something
CHECK_ROWS = 256


@pytest.fixture(scope="module")
def fitted(tiny_teacher_dir, sst2_data):
    """The tiny teacher fitted for FIT_STEPS steps on real SST-2 train rows (seeded), and encoded dev rows."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    train = encode(sst2_data.train, tokenizer, 64)
    dev = encode(sst2_data.dev, tokenizer, 64)
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_teacher_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(FIT_STEPS):
        b = collate(train, rng.choice(FIT_ROWS, 32, replace=False))
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), collate(dev, np.arange(CHECK_ROWS))


def onnx_logits(path, batch) -> np.ndarray:
    sess = runtime_mod.session(path, threads=1)
    return sess.run(["logits"], {k: batch[k].numpy() for k in runtime_mod.INPUTS})[0]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_fp32_and_int8_onnx_round_trip_against_pytorch(fitted, tmp_path, monkeypatch, exporter):
    """By either exporter, fp32 ONNX gives PyTorch's logits within ONNX_TOLERANCE on real dev rows (padded,
    of several lengths); int8 is a third of the size or less and predicts as PyTorch does on at least
    INT8_AGREEMENT of them; the model keeps its own attention."""
    monkeypatch.setattr(runtime_mod, "ONNX_EXPORTER", exporter)
    model, batch = fitted
    attention = model.config._attn_implementation
    with torch.inference_mode():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
    assert (expected.argmax(1) == batch["labels"].numpy()).mean() > 0.55  # it learned something to agree on
    fp32 = runtime_mod.onnx_files(model, tmp_path, "fp32")
    assert np.abs(onnx_logits(fp32, batch) - expected).max() <= ONNX_TOLERANCE
    int8 = runtime_mod.onnx_files(model, tmp_path, "int8")
    assert int8.name == runtime_mod.INT8_FILE and int8.stat().st_size < fp32.stat().st_size / 3
    agree = (onnx_logits(int8, batch).argmax(1) == expected.argmax(1)).mean()
    assert agree >= INT8_AGREEMENT, agree
    assert model.config._attn_implementation == attention and not model.training


@pytest.mark.parametrize("runtime", [TORCH_FP32, Runtime("onnxruntime", "fp32"), Runtime("onnxruntime", "int8")])
def test_a_latency_record_names_its_runtime_and_leaves_the_model_as_it_was(tiny_teacher_dir, runtime):
    model = BertForSequenceClassification.from_pretrained(tiny_teacher_dir).train()
    r = runtime_mod.latency(model, runtime, 1, 32, threads=1, min_run_time=0.05)
    assert r["median_ms"] > 0 and (r["backend"], r["precision"]) == (runtime.backend, runtime.precision)
    assert (r["batch"], r["seq_len"], r["threads"], r["device"]) == (1, 32, 1, "cpu")
    assert model.training


def test_runtimes_are_checked_and_labelled():
    assert Runtime("onnxruntime", "int8").check().label == "ONNX Runtime int8"
    assert Runtime.of({}) == TORCH_FP32 and Runtime.of({"teacher_latency_backend": "onnxruntime"},
                                                       "teacher_latency_") == Runtime("onnxruntime")
    with pytest.raises(UserError, match="add --latency-backend onnxruntime"):
        Runtime("torch", "int8").check()
    with pytest.raises(UserError, match="choose one of torch, onnxruntime"):
        Runtime("tvm").check()
    # what options leave out comes from the recorded runtime; another backend alone means fp32
    ort8 = Runtime("onnxruntime", "int8")
    assert asked_runtime(ort8, None, None) == ort8 and asked_runtime(ort8, None, "int8") == ort8
    assert asked_runtime(ort8, "torch", None) == TORCH_FP32
    assert asked_runtime(TORCH_FP32, "onnxruntime", None) == Runtime("onnxruntime", "fp32")


def test_a_search_timed_in_onnx_runtime_records_it_and_resumes_in_it(data_dir, tiny_teacher_dir, tmp_path,
                                                                     monkeypatch):
    """Trials and the teacher carry the backend and precision they were timed in; resuming without the
    options keeps them, asking for another runtime is refused; plot --remeasure in PyTorch re-times the front
    there, and the trials off it lose their (int8) latency."""
    quick_timings(monkeypatch)
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", "--latency-backend",
                            "onnxruntime", "--precision", "int8", **{"--trials": 2}))
    assert r.exit_code == 0, r.output
    assert "latency in ONNX Runtime int8" in r.output
    study = optuna.load_study(study_name="sst2-tiny", storage=f"sqlite:///{tmp_path}/sst2-tiny.db")
    attrs = study.user_attrs
    assert (attrs["latency_backend"], attrs["latency_precision"]) == ("onnxruntime", "int8")
    assert (attrs["teacher_latency_backend"], attrs["teacher_latency_precision"]) == ("onnxruntime", "int8")
    trials = [t for t in study.get_trials() if "latency_ms" in t.user_attrs]
    assert trials and all((t.user_attrs["latency_backend"], t.user_attrs["latency_precision"])
                          == ("onnxruntime", "int8") and t.user_attrs["latency_ms"] > 0 for t in trials)
    again = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", "--precision", "int8",
                                **{"--trials": 2}))  # the study's backend fills in what is left out
    assert again.exit_code == 0 and "latency in ONNX Runtime int8" in again.output, again.output
    assert_user_error(invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines",
                                          "--latency-backend", "torch", **{"--trials": 2})),
                      "times latency in ONNX Runtime int8; this run asks for PyTorch fp32")
    show = invoke("show", "--study", "sst2-tiny", "--results", tmp_path, "--format", "json")
    assert show.exit_code == 0, show.output
    assert_user_error(invoke("plot", "--study", "sst2-tiny", "--results", tmp_path, "--latency-backend", "torch"),
                      "add --remeasure")
    p = invoke("plot", "--study", "sst2-tiny", "--results", tmp_path, "--remeasure", "--latency-backend", "torch",
               "--precision", "fp32", "--no-fasttext")
    assert p.exit_code == 0, p.output
    assert "in PyTorch fp32" in p.output
    re = optuna.load_study(study_name="sst2-tiny", storage=f"sqlite:///{tmp_path}/sst2-tiny.db").user_attrs
    assert (re["latency_remeasured"]["backend"], re["latency_remeasured"]["precision"]) == ("torch", "fp32")
    from fastbert_nas.report.rows import gather

    data = gather(optuna.load_study(study_name="sst2-tiny", storage=f"sqlite:///{tmp_path}/sst2-tiny.db"), tmp_path)
    assert "PyTorch fp32" in data.latency_note
    assert all((r["latency_ms"] is not None) == r["remeasured"] for r in data.rows)
    assert data.teacher["latency_ms"] == re["latency_remeasured"]["teacher_ms"]


def test_a_run_that_loses_the_race_to_create_the_study_takes_the_studys_runtime(data_dir, tiny_teacher_dir,
                                                                               tmp_path, monkeypatch):
    """Two machines start at once: the one whose create_study finds the study made a moment before by the other
    resumes it, and runs with its runtime (the options it left out come from the study)."""
    import fastbert_nas.search.options as options_mod
    import fastbert_nas.search.run as search_run
    from fastbert_nas.config import run_env
    from fastbert_nas.search.storage import make_storage

    quick_timings(monkeypatch)
    r = invoke(*search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines", "--latency-backend",
                            "onnxruntime", **{"--trials": 1}))
    assert r.exit_code == 0, r.output
    env = run_env("sst2", str(data_dir), teacher=str(tiny_teacher_dir), threads=1, results=tmp_path)
    search = options_mod.Search.from_options(options_mod.SearchOptions(env=env, space="tiny", budget="smoke"))
    assert search.runtime == TORCH_FP32
    names, calls = search_run.optuna.study.get_all_study_names, []

    def not_yet(storage):  # open_study's own look does not see the study; later ones do
        calls.append(1)
        return [] if len(calls) == 1 else names(storage)

    monkeypatch.setattr(search_run.optuna.study, "get_all_study_names", not_yet)
    storage = make_storage(search.storage_url)
    _, created, joined = search_run.open_study(search, storage, search.prepare())
    assert not created and joined.runtime == Runtime("onnxruntime", "fp32")
