"""StudentArch parsing and validation, layer sources, and building students (random or teacher init)."""

import numpy as np
import pytest
import torch

from fastbert_nas.config import StudentArch, UserError
from fastbert_nas.core.student import build_student, importance, layer_sources, top_k
from fastbert_nas.core.tasks import collate, encode

TEACHER_LAYERS = 3   # the tiny teacher: L3-H48-A4-I96
MAX_LEN = 64


# ---------------------------------------------------------------------------
# Parsing and validation

def test_parse_round_trips():
    a = StudentArch.parse(" L8-H256-A4-I1024 ", "2:1,4:2,6:4,8:6").validate(6)
    assert (a.layers, a.hidden, a.heads, a.ffn) == (8, 256, 4, 1024)
    assert a.hints == ((2, 1), (4, 2), (6, 4), (8, 6))
    assert a.name == "L8-H256-A4-I1024" and a.hints_str == "2:1,4:2,6:4,8:6"
    assert StudentArch.parse("L4-H64-A2-I128").with_default_hints(6).hints == ((4, 6),)


@pytest.mark.parametrize("arch, hints, match", [
    ("L4-H30-A4-I64", None, r"heads=4: must divide hidden=30"),
    ("L0-H32-A4-I64", None, r"layers=0"),
    ("L4-H32-A4-I64", "2:1,5:3", r"student layer 5 out of range 1\.\.4"),
    ("L4-H32-A4-I64", "0:1", r"student layer 0 out of range"),
    ("L4-H32-A4-I64", "2:1,4:7", r"teacher layer 7 out of range 1\.\.6"),
    ("L4-H32-A4-I64", "2:0", r"teacher layer 0 out of range"),
    ("L4-H32-A4-I64", "3:1,2:2", r"student layers must increase"),        # student layers go down
    ("L4-H32-A4-I64", "2:1,2:3", r"student layers must increase"),        # a student layer twice
])
def test_validate_names_the_field(arch, hints, match):
    with pytest.raises(UserError, match=match):
        StudentArch.parse(arch, hints).validate(6)


def test_teacher_layers_may_fall_along_the_mapping():
    arch = StudentArch.parse("L4-H32-A4-I64", "2:3,4:1").validate(6)
    assert arch.hints == ((2, 3), (4, 1))
    assert layer_sources(arch, 6) == [2, 3, 2, 1]  # teacher init follows the hints down


@pytest.mark.parametrize("arch", ["L4H32A4I64", "L4-H32-A4", "l4-h32-a4-i64", "L4-H32-A4-I64-X", "L-H32-A4-I64", ""])
def test_malformed_arch(arch):
    with pytest.raises(UserError, match=r"--arch .*L<layers>-H<hidden>-A<heads>-I<ffn>"):
        StudentArch.parse(arch)


@pytest.mark.parametrize("hints", ["2-1", "2:1,", "2:1:3", "a:b", "2:1;4:2", ":"])
def test_malformed_hints(hints):
    with pytest.raises(UserError, match=r"--hints .*student:teacher"):
        StudentArch.parse("L4-H32-A4-I64", hints)


# ---------------------------------------------------------------------------
# Which teacher layer each student layer starts from

def test_layer_sources_follow_the_hints():
    arch = StudentArch.parse("L8-H64-A2-I128", "2:1,4:2,6:4,8:6")
    assert layer_sources(arch, 6) == [1, 1, 2, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("hints", [(), ((6, 6),), ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)), ((3, 3),)])
def test_layer_sources_identity_for_the_teachers_shape(hints):
    assert layer_sources(StudentArch(6, 384, 12, 1536, hints), 6) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("layers", [1, 2, 3, 4, 5])
def test_shallower_student_picks_increasing_layers(layers):
    src = layer_sources(StudentArch(layers, 64, 2, 128, ((layers, 6),)), 6)
    assert len(src) == layers and src[-1] == 6
    assert all(a < b for a, b in zip(src, src[1:])) and all(1 <= s <= 6 for s in src)


def test_deeper_student_reuses_teacher_layers():
    src = layer_sources(StudentArch(12, 64, 2, 128), 6)
    assert src == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]


# ---------------------------------------------------------------------------
# Building students from the tiny teacher

@pytest.fixture
def batches(sst2_data, tiny_teacher):
    """A calibration batch and another real batch, tokenized by the teacher's tokenizer."""
    enc = encode(sst2_data.train.subset(np.arange(48)), tiny_teacher.tokenizer, MAX_LEN)
    return collate(enc, np.arange(32)), collate(enc, np.arange(32, 48))


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_teacher_init_of_the_teachers_shape_reproduces_it(tiny_teacher, batches):
    calib, other = batches
    arch = StudentArch.parse("L3-H48-A4-I96").with_default_hints(TEACHER_LAYERS)
    student = build_student(arch, tiny_teacher.model, "teacher", calib)
    diff = (logits(student, other) - logits(tiny_teacher.model, other)).abs().max().item()
    assert diff < 1e-5
    assert student.bert.encoder.layer[0] is not tiny_teacher.model.bert.encoder.layer[0]  # a copy


def test_narrower_teacher_init_carries_cut_teacher_weights(tiny_teacher, batches):
    calib, _ = batches
    t = tiny_teacher.model
    arch = StudentArch.parse("L2-H24-A2-I48", "1:1,2:3").validate(TEACHER_LAYERS)
    student = build_student(arch, t, "teacher", calib)
    random = build_student(arch, t, "random")

    # every student embedding column is one of the teacher's, in the teacher's order
    s_emb, t_emb = student.bert.embeddings.word_embeddings.weight, t.bert.embeddings.word_embeddings.weight
    match = torch.cdist(s_emb.T.detach(), t_emb.T.detach()).argmin(1)       # (24,) teacher column per column
    torch.testing.assert_close(s_emb, t_emb[:, match], rtol=0, atol=0)
    assert (match.diff() > 0).all()
    assert not torch.equal(random.bert.embeddings.word_embeddings.weight, t_emb[:, match])

    # ... namely the most important dims; each layer's FFN is a sub-matrix of its source layer's
    scores = importance(t, calib)
    keep = top_k(scores["hidden"], arch.hidden)
    assert torch.equal(match, keep)
    for k, src in enumerate(layer_sources(arch, TEACHER_LAYERS)):          # [1, 3]
        sl, tl = student.bert.encoder.layer[k], t.bert.encoder.layer[src - 1]
        neurons = top_k(scores["ffn"][src - 1], arch.ffn)
        assert torch.equal(sl.intermediate.dense.weight, tl.intermediate.dense.weight[neurons][:, keep])
        assert torch.equal(sl.output.dense.weight, tl.output.dense.weight[keep][:, neurons])
        assert torch.equal(sl.output.LayerNorm.weight, tl.output.LayerNorm.weight[keep])
        rl = random.bert.encoder.layer[k]
        assert not torch.equal(rl.intermediate.dense.weight, tl.intermediate.dense.weight[neurons][:, keep])
    assert torch.equal(student.classifier.weight, t.classifier.weight[:, keep])


@pytest.mark.parametrize("arch", ["L5-H48-A4-I96", "L6-H64-A4-I128", "L4-H24-A3-I48"])
@pytest.mark.parametrize("init", ["teacher", "random"])
def test_other_shapes_build_and_run(tiny_teacher, batches, arch, init):
    """Deeper than the teacher, wider than it, heads of another size: builds, runs, finite logits."""
    calib, other = batches
    a = StudentArch.parse(arch).with_default_hints(TEACHER_LAYERS)
    student = build_student(a, tiny_teacher.model, init, calib)
    assert student.config.num_hidden_layers == a.layers and student.config.hidden_size == a.hidden
    out = logits(student, other)
    assert out.shape == (len(other["input_ids"]), 2) and torch.isfinite(out).all()


def test_build_student_rejects_unknown_init(tiny_teacher):
    with pytest.raises(UserError, match=r"--init 'bogus'"):
        build_student(StudentArch.parse("L2-H32-A4-I64"), tiny_teacher.model, "bogus")


def test_build_student_validates_the_arch(tiny_teacher):
    with pytest.raises(UserError, match=r"teacher layer 4 out of range 1\.\.3"):
        build_student(StudentArch.parse("L2-H32-A4-I64", "2:4"), tiny_teacher.model, "random")


def test_init_student_scores_the_teacher_once_per_context(tiny_teacher, sst2_data, monkeypatch):
    """Teacher init of many students (a search worker's trials) runs the calibration forward pass once;
    each student is the one build_student makes from the calibration batch itself."""
    from fastbert_nas.config import RunEnv, budget_config
    from fastbert_nas.core import pipeline

    train = encode(sst2_data.train.subset(np.arange(200)), tiny_teacher.tokenizer, MAX_LEN)
    ctx = pipeline.Context(RunEnv("sst2"), sst2_data.spec, sst2_data, torch.device("cpu"), 1, tiny_teacher, "tiny",
                           train, train, None, 0.0)
    calls = []
    monkeypatch.setattr(pipeline, "importance", lambda *a: calls.append(1) or importance(*a))
    cfg = budget_config("smoke", seed=3)
    for arch in (StudentArch.parse("L2-H24-A2-I48", "1:1,2:3"), StudentArch.parse("L1-H32-A4-I64", "1:2")):
        student = pipeline.init_student(ctx, arch.validate(TEACHER_LAYERS), cfg)
        calib = collate(train, np.arange(pipeline.CALIBRATION_EXAMPLES))
        direct = build_student(arch, tiny_teacher.model, "teacher", calib, seed=3)
        for (name, a), b in zip(student.state_dict().items(), direct.state_dict().values()):
            assert torch.equal(a, b), name
    assert calls == [1]
    pipeline.init_student(ctx, StudentArch.parse("L1-H16-A2-I32", "1:1"), budget_config("smoke", init="random"))
    assert calls == [1]
