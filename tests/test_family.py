"""Teacher families (core/family.py) on tiny random classifiers built from their config classes: BERT,
RoBERTa, ELECTRA (embedding at its width, and narrower with a projection), DistilBERT. A student is of its teacher's
family, teacher init reproduces a same-shape teacher's logits, costs hold, hints and KD train it, the
saved student loads back with the Auto classes; other families are refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMOKE_STUDY, TINY_TEACHER, invoke, quick_timings, search_args
from transformers import (
    AlbertConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
    pipeline,
)

from fastbert_nas.config import StudentArch, UserError, budget_config
from fastbert_nas.core.cost import analytic_flops, count_flops, count_params
from fastbert_nas.core.distill import LiveTeacher, distill
from fastbert_nas.core.family import check_family, config_shape, encoder_layers, encoder_prefix
from fastbert_nas.core.student import build_student, importance
from fastbert_nas.core.tasks import TASKS, Encoded, collate
from fastbert_nas.core.teacher import DEFAULT_BASE, base_path

SHAPE = dict(vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
             max_position_embeddings=80, num_labels=2)
FAMILIES = {
    "bert": lambda: BertConfig(**SHAPE),
    "roberta": lambda: RobertaConfig(**SHAPE, pad_token_id=1),
    "electra": lambda: ElectraConfig(**SHAPE, embedding_size=48),
    "electra-projected": lambda: ElectraConfig(**SHAPE, embedding_size=32),
    "distilbert": lambda: DistilBertConfig(vocab_size=120, dim=48, n_layers=3, n_heads=4, hidden_dim=96,
                                           max_position_embeddings=80, num_labels=2),
}
SEQ = 16


def teacher_of(family: str):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(FAMILIES[family]()).eval()


def batch(n: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (n, SEQ), generator=g)  # (B, T), no padding id
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def encoded(n: int, seed: int) -> Encoded:
    rng = np.random.default_rng(seed)
    return Encoded([rng.integers(5, 120, size=rng.integers(4, SEQ)).astype(np.int64) for _ in range(n)],
                   rng.integers(0, 2, size=n).astype(np.int64))


@pytest.mark.parametrize("family", FAMILIES)
def test_teacher_init_of_a_same_shape_student_gives_the_teachers_logits(family):
    teacher = teacher_of(family)
    arch = StudentArch(3, 48, 4, 96, ((1, 1), (2, 2), (3, 3)))
    student = build_student(arch, teacher, "teacher", batch(16, seed=1)).eval()
    assert type(student) is type(teacher)
    with torch.no_grad():
        assert torch.allclose(student(**batch()).logits, teacher(**batch()).logits, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_smaller_student_is_of_the_family_and_its_costs_hold(family, tmp_path):
    teacher = teacher_of(family)
    arch = StudentArch(2, 32, 2, 64, ((1, 2), (2, 3)))
    student = build_student(arch, teacher, "teacher", scores=importance(teacher, batch(16)))
    assert student.config.model_type == teacher.config.model_type and config_shape(student.config) == (2, 32, 2, 64)
    params = count_params(student)
    assert params["total"] == sum(p.numel() for p in student.parameters()) and min(params.values()) > 0
    # FlopCounterMode against the encoder formula plus what it leaves out: the head on the first token
    # (BERT's pooler or the classifier's dense layer, then the output layer) and ELECTRA's projection
    extra = 2 * 32 * 32 + 2 * 32 * 2
    embedding = getattr(student.config, "embedding_size", 32)
    if embedding != 32:
        extra += 2 * SEQ * embedding * 32
    assert count_flops(student, SEQ) == analytic_flops(arch, SEQ) + extra
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    student.eval()
    with torch.no_grad():
        assert type(loaded) is type(teacher) and torch.allclose(loaded(**batch()).logits, student(**batch()).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_hints_then_kd_train_a_student_of_each_family(family):
    teacher = teacher_of(family)
    arch = StudentArch(2, 32, 2, 64, ((1, 2), (2, 3)))
    train, val = encoded(64, 0), encoded(16, 1)
    student = build_student(arch, teacher, "teacher", collate(train, np.arange(16)))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    r = distill(student, arch, LiveTeacher(teacher, [2, 3]), 48, train, val, TASKS["sst2"],
                budget_config("smoke"), torch.device("cpu"), show_progress=False)
    assert r.hint_steps == 4 and r.kd_steps == 8 and all(v > 0 for _, v in r.hint_curve)
    assert len(encoder_layers(student)) == 2  # stage 1's cut undone
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith(encoder_prefix(student) + "layer.1.") for k in changed)
    assert any(k.startswith("classifier") for k in changed)


def test_other_families_are_refused_in_one_line(tmp_path, data_dir):
    with pytest.raises(UserError, match="is a albert classifier; supported teacher families: bert, roberta"):
        check_family(AlbertConfig(), "some/albert")
    model = AutoModelForSequenceClassification.from_config(AlbertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        embedding_size=16))
    model.save_pretrained(tmp_path / "albert")
    AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE)).save_pretrained(tmp_path / "albert")
    r = invoke("distill", "--task", "sst2", "--teacher", str(tmp_path / "albert"), "--arch", "L1-H16-A2-I32",
               "--budget", "smoke", "--data-dir", str(data_dir), "--results", str(tmp_path / "results"))
    assert r.exit_code == 2 and "is a albert classifier; supported teacher families" in r.output
    assert "Traceback" not in r.output


CLI_FAMILIES = {  # a tiny teacher of each family with the base's tokenizer (TINY_TEACHER's shape)
    "roberta": lambda vocab: RobertaConfig(vocab_size=vocab, pad_token_id=0,  # positions start after padding:
                                           **(TINY_TEACHER | {"max_position_embeddings": 130})),  # 128 + 2
    "electra": lambda vocab: ElectraConfig(vocab_size=vocab, embedding_size=32, **TINY_TEACHER),
    "distilbert": lambda vocab: DistilBertConfig(vocab_size=vocab, dim=48, n_layers=3, n_heads=4, hidden_dim=96,
                                                 num_labels=2, max_position_embeddings=128),
}


@pytest.mark.parametrize("family", CLI_FAMILIES)
def test_search_and_export_with_a_teacher_of_each_family(family, tmp_path, data_dir, monkeypatch, restore_threads):
    """A smoke search on real SST-2 rows with a tiny teacher of the family, then its best trial exported
    (with ONNX): the model folder loads with the Auto classes and `pipeline`, as the teacher's family."""
    tokenizer = AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(CLI_FAMILIES[family](len(tokenizer)))
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    quick_timings(monkeypatch)
    r = invoke(*search_args(data_dir, tmp_path / "teacher", tmp_path / "results"))
    assert r.exit_code == 0, r.output
    r = invoke("export", "--pick", "flops<=1", "--study", SMOKE_STUDY, "--results", tmp_path / "results",
               "--budget", "smoke", "--data-dir", data_dir, "--out", tmp_path / "model", "--onnx", "--threads", 1)
    assert r.exit_code == 0, r.output
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert model.config.model_type == teacher.config.model_type
    classify = pipeline("text-classification", model=str(tmp_path / "model"))
    assert classify("a gripping, funny film")[0]["label"] in ("negative", "positive")
    report = json.loads((tmp_path / "model" / "export.json").read_text())
    assert report["onnx"]["max_abs_diff"] <= 1e-4 and 0 <= report["dev"]["metric"] <= 1
