"""distill.py: the pure losses, the learning-rate schedule, the truncated student, the two-stage
loop on a tiny teacher (with resume), and the two teacher sources (disk cache and live forward) agreeing."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification, BertModel

import fastbert_nas.core.distill as distill_mod
import fastbert_nas.core.relation as relation_mod
import fastbert_nas.core.training as training
from fastbert_nas.config import StudentArch, budget_config
from fastbert_nas.core.distill import CachedTeacher, LiveTeacher, distill, hint_loss, kd_loss, truncated
from fastbert_nas.core.pipeline import run_tag
from fastbert_nas.core.student import build_student
from fastbert_nas.core.tasks import collate, encode
from fastbert_nas.core.teacher import teacher_outputs
from fastbert_nas.core.training import learning_rate

CPU = torch.device("cpu")
ROWS = 64        # real SST-2 rows distilled on in the end-to-end runs
MAX_LEN = 64     # SST-2's tokens per example


def toy_bert(layers=4, hidden=16, heads=2, ffn=32, vocab=50, cls=BertForSequenceClassification):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, max_position_embeddings=32, num_labels=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return cls(cfg)


# ---------------------------------------------------------------------------
# kd_loss

@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_kd_loss_is_zero_for_identical_logits(temperature):
    torch.manual_seed(0)
    logits = torch.randn(8, 3) * 3
    assert kd_loss(logits, logits.clone(), temperature).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_loss_is_positive_for_different_logits(temperature):
    torch.manual_seed(1)
    s, t = torch.randn(8, 3), torch.randn(8, 3)
    assert kd_loss(s, t, temperature).item() > 1e-4
    # a constant shift per row changes no softmax: still zero
    assert kd_loss(t + torch.randn(8, 1), t, temperature).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_loss_gradient_points_student_towards_teacher(temperature):
    torch.manual_seed(2)
    s = torch.randn(6, 4, requires_grad=True)
    t = torch.randn(6, 4)
    loss = kd_loss(s, t, temperature)
    loss.backward()
    p_s, p_t = F.softmax(s.detach() / temperature, -1), F.softmax(t / temperature, -1)
    # d/ds of T²·KL(p_t || p_s) / B = T·(p_s - p_t) / B
    torch.testing.assert_close(s.grad, temperature * (p_s - p_t) / len(s), rtol=1e-4, atol=1e-6)
    # descending moves every student probability towards the teacher's
    s_next = s.detach() - 0.5 * s.grad
    p_next = F.softmax(s_next / temperature, -1)
    assert kd_loss(s_next, t, temperature) < loss
    assert ((p_next - p_t).abs().sum(-1) < (p_s - p_t).abs().sum(-1)).all()


# ---------------------------------------------------------------------------
# hint_loss

def test_hint_loss_ignores_padded_positions():
    torch.manual_seed(0)
    reg = torch.nn.Linear(16, 24)
    s_h, t_h = torch.randn(3, 7, 16), torch.randn(3, 7, 24)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    base = hint_loss(s_h, t_h, reg, mask)

    pad = ~mask.bool()
    t_other, s_other = t_h.clone(), s_h.clone()
    t_other[pad] = 1e3
    s_other[pad] = -1e3
    torch.testing.assert_close(hint_loss(s_other, t_other, reg, mask), base)

    real_changed = t_h.clone()
    real_changed[1, 0] += 5.0  # a real token: the loss must see it
    assert hint_loss(s_h, real_changed, reg, mask) > base + 1e-3

    # it is the MSE over real tokens only
    expected = F.mse_loss(reg(s_h[mask.bool()]), t_h[mask.bool()])
    torch.testing.assert_close(base, expected)


def test_hint_loss_training_fits_a_fixed_target():
    """Student (BERT, hidden 16) + regressor learn a fixed random target of width 24."""
    student = toy_bert(layers=2, hidden=16, cls=BertModel)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (2, 6), generator=g)                  # (B, T)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    target = torch.randn(2, 6, 24, generator=g)                      # (B, T, Ht)
    reg = torch.nn.Linear(16, 24)
    opt = torch.optim.Adam(list(student.parameters()) + list(reg.parameters()), lr=1e-2)

    def loss_now():
        out = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return hint_loss(out.hidden_states[-1], target, reg, mask)

    first = loss_now().item()
    for _ in range(50):
        loss = loss_now()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_now().item() < 0.5 * first


# ---------------------------------------------------------------------------
# learning_rate

def test_learning_rate_warms_up_to_the_peak_then_decays_to_zero():
    peak, steps, warmup = 1e-3, 100, 0.1  # 10 warm-up steps
    lrs = [learning_rate(k, peak, steps, warmup) for k in range(steps + 1)]
    assert lrs[0] == pytest.approx(peak / 10) and lrs[9] == pytest.approx(peak)  # warm-up: 1/10 .. 10/10
    assert max(lrs) == pytest.approx(peak)
    assert lrs[10] == pytest.approx(peak) and lrs[55] == pytest.approx(peak / 2)  # decay: (100 - k) / 90
    assert lrs[99] == pytest.approx(peak / 90) and lrs[100] == 0.0
    assert learning_rate(150, peak, steps, warmup) == 0.0                         # past the end: 0, not negative
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10])) and all(a > b for a, b in zip(lrs[10:], lrs[11:]))


def test_learning_rate_takes_at_least_one_warm_up_step():
    assert learning_rate(0, 2.0, 10, 0.0) == 2.0          # no warm-up asked: the first step at the peak
    assert learning_rate(1, 2.0, 10, 0.0) == 2.0          # the decay starts at once: (10 - 1) / (10 - 1)
    assert learning_rate(0, 2.0, 0, 0.1) == 2.0           # no steps planned: one step at the peak
    assert learning_rate(3, 2.0, 4, 0.1) == pytest.approx(2.0 / 3)  # the last of 4 steps: (4 - 3) / 3


# ---------------------------------------------------------------------------
# truncated

def test_truncated_keeps_the_first_layers_and_restores_them():
    student = toy_bert(layers=4).eval()
    ids = torch.randint(5, 50, (2, 5))
    layers = list(student.bert.encoder.layer)
    with truncated(student, 2) as part:
        assert len(part.bert.encoder.layer) == 2
        out = part.bert(input_ids=ids, output_hidden_states=True)
        assert len(out.hidden_states) == 3
        inside = out.hidden_states[2]
    assert list(student.bert.encoder.layer) == layers
    full = student.bert(input_ids=ids, output_hidden_states=True)
    assert len(full.hidden_states) == 5
    torch.testing.assert_close(full.hidden_states[2], inside)  # the same first two layers ran

    with pytest.raises(RuntimeError), truncated(student, 1):
        raise RuntimeError("boom")
    assert list(student.bert.encoder.layer) == layers


# ---------------------------------------------------------------------------
# The loop, end to end on the tiny teacher and real SST-2 rows

@pytest.fixture
def rows(sst2_data, tiny_teacher):
    """(train, val) encoded with the teacher's tokenizer: ROWS train rows, 64 val rows."""
    train = encode(sst2_data.train.subset(np.arange(ROWS)), tiny_teacher.tokenizer, MAX_LEN)
    val = encode(sst2_data.val.subset(np.arange(64)), tiny_teacher.tokenizer, MAX_LEN)
    return train, val


class Spy:
    """A teacher source that snapshots the student when stage 2 asks its first batch."""

    def __init__(self, inner, student):
        self.inner, self.student, self.after_hints, self.calls = inner, student, None, []

    def __call__(self, idx, batch, hidden):
        self.calls.append(hidden)
        if not hidden and self.after_hints is None:
            self.after_hints = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
        return self.inner(idx, batch, hidden)


def test_distill_end_to_end(tiny_teacher, sst2_data, rows):
    train, val = rows
    arch = StudentArch.parse("L3-H32-A4-I64", "1:1,2:2").validate(tiny_teacher.layers)
    calib = collate(train, np.arange(16))
    student = build_student(arch, tiny_teacher.model, "teacher", calib)
    before = {k: v.detach().clone() for k, v in student.state_dict().items()}
    cfg = budget_config("smoke")
    source = Spy(LiveTeacher(tiny_teacher.model, [1, 2]), student)

    r = distill(student, arch, source, 48, train, val, sst2_data.spec, cfg, CPU, show_progress=False)

    assert r.hint_steps == cfg.hint_steps and r.kd_steps == cfg.kd_steps and r.stopped_at is None
    assert [s for s, _ in r.curve] == [4, 8]
    assert 0.0 <= r.metrics["metric"] <= 1.0 and r.metrics["metric"] == r.metrics["accuracy"]
    assert r.curve[-1][1] == r.metrics["metric"]
    assert r.train_seconds > 0 and r.examples_per_s > 0
    assert source.calls == [True] * cfg.hint_steps + [False] * cfg.kd_steps  # hint_weight 0: no hiddens
    # the hint loss as it was read: the first step and the last (LOG_EVERY apart in between)
    assert [s for s, _ in r.hint_curve] == [1, cfg.hint_steps] and all(v > 0 for _, v in r.hint_curve)

    # stage 1 trains the embeddings and layers 1..2 only (layer 3, pooler, classifier untouched)
    mid = source.after_hints
    changed = {k for k in before if not torch.equal(before[k], mid[k])}
    assert "bert.embeddings.word_embeddings.weight" in changed
    assert any(k.startswith("bert.encoder.layer.0.") for k in changed)
    assert any(k.startswith("bert.encoder.layer.1.") for k in changed)
    assert not [k for k in changed if k.startswith(("bert.encoder.layer.2.", "bert.pooler.", "classifier."))]
    # stage 2 trains the whole student
    after = student.state_dict()
    assert not torch.equal(mid["bert.encoder.layer.2.output.dense.weight"], after["bert.encoder.layer.2.output.dense.weight"])
    assert not torch.equal(mid["classifier.weight"], after["classifier.weight"])
    assert len(student.bert.encoder.layer) == 3


def test_stage_two_hints_see_every_layer(tiny_teacher, sst2_data, rows, monkeypatch):
    """Regression: stage 1's cut must not leave the student's later layers out of hidden_states
    (transformers 5 hooks the layers present at the first output_hidden_states call, once)."""
    train, val = rows
    arch = StudentArch.parse("L3-H32-A4-I64", "1:1,2:2").validate(tiny_teacher.layers)
    student = build_student(arch, tiny_teacher.model, "random")
    seen = []  # widths of the hidden_states tuples the stage-2 hint losses index into
    real_hint_loss = distill_mod.hint_loss

    def spy(student_h, teacher_h, regressor, mask):
        seen.append(student_h)
        return real_hint_loss(student_h, teacher_h, regressor, mask)

    monkeypatch.setattr(distill_mod, "hint_loss", spy)
    cfg = budget_config("smoke", hint_weight=1.0, kd_steps=2, eval_every=2)
    distill(student, arch, LiveTeacher(tiny_teacher.model, [1, 2]), 48, train, val, sst2_data.spec, cfg, CPU,
            show_progress=False)
    assert len(seen) == 2 * (cfg.hint_steps + cfg.kd_steps)

    student.eval()
    batch = collate(train, np.arange(4))
    with torch.no_grad():
        out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      output_hidden_states=True)
        last = student.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert len(out.hidden_states) == arch.layers + 1
    assert not torch.allclose(out.hidden_states[2], last)  # layer 2's own output, not the final one


def test_distill_on_eval_true_stops_early(tiny_teacher, sst2_data, rows):
    train, val = rows
    arch = StudentArch.parse("L2-H32-A4-I64", "2:3").validate(tiny_teacher.layers)
    student = build_student(arch, tiny_teacher.model, "random")
    cfg = budget_config("smoke")
    seen = []

    def on_eval(step, metrics):
        seen.append((step, metrics["metric"]))
        return True

    r = distill(student, arch, LiveTeacher(tiny_teacher.model, [3]), 48, train, val, sst2_data.spec, cfg, CPU,
                on_eval=on_eval, show_progress=False)
    assert r.stopped_at == cfg.eval_every == 4
    assert r.kd_steps == 4 < cfg.kd_steps
    assert seen == r.curve == [(4, r.metrics["metric"])]


@pytest.mark.parametrize("stage, when", [("hints", "after 0 hint and 0 KD steps"),
                                         ("kd", "after 4 hint and 0 KD steps")])
def test_a_non_finite_loss_stops_the_run_saying_when(tiny_teacher, sst2_data, rows, stage, when):
    """A teacher output with an inf (stage 1's hidden states) or a NaN (stage 2's logits): no step is taken."""
    train, val = rows
    arch = StudentArch.parse("L2-H32-A4-I64", "2:3").validate(tiny_teacher.layers)
    student = build_student(arch, tiny_teacher.model, "random")
    live = LiveTeacher(tiny_teacher.model, [3])

    def poisoned(idx, batch, hidden):
        logits, states = live(idx, batch, hidden)
        if stage == "hints" and hidden:
            states = states.clone()  # (B, K, T, H), made outside inference mode
            states[0, 0, 0, 0] = float("inf")  # the first token is always real
        if stage == "kd" and not hidden:
            logits = logits.clone()
            logits[0, 0] = float("nan")
        return logits, states

    with pytest.raises(FloatingPointError, match=f"non-finite loss \\((inf|nan)\\) {when}: training diverged"):
        distill(student, arch, poisoned, 48, train, val, sst2_data.spec, budget_config("smoke"), CPU,
                show_progress=False)


def test_the_loop_sets_each_steps_learning_rate_and_reads_the_loss_at_log_steps(tiny_teacher, sst2_data, rows,
                                                                                   monkeypatch):
    """Every step runs at its stage's learning_rate(step); the loss is read (a wait for the device) only
    every LOG_EVERY steps, at a stage's last step, and before an evaluation."""
    train, val = rows
    arch = StudentArch.parse("L2-H32-A4-I64", "2:3").validate(tiny_teacher.layers)
    student = build_student(arch, tiny_teacher.model, "random")
    cfg = budget_config("smoke", hint_steps=7, kd_steps=8, eval_every=4, warmup=0.3, hint_lr=2e-3, lr=1e-3)
    monkeypatch.setattr(distill_mod, "LOG_EVERY", 3)
    opts, lrs, reads, steps = [], [], [], []
    real_optimizer, real_loss = distill_mod.make_optimizer, distill_mod.step_loss

    def make_optimizer(*args, **kwargs):
        opts.append(real_optimizer(*args, **kwargs))
        return opts[-1]

    def step_loss(stage, *args):
        loss = real_loss(stage, *args)
        steps.append(stage)
        taken = steps.count(stage)  # this stage's steps, this one included
        real_item = loss.item
        loss.item = lambda: reads.append((stage, taken)) or real_item()
        return loss

    def on_step(stage, batch):
        lrs.append((stage, [g["lr"] for g in opts[-1].param_groups]))

    monkeypatch.setattr(distill_mod, "make_optimizer", make_optimizer)
    monkeypatch.setattr(distill_mod, "step_loss", step_loss)
    distill(student, arch, LiveTeacher(tiny_teacher.model, [3]), 48, train, val, sst2_data.spec, cfg, CPU,
            show_progress=False, on_step=on_step)

    assert len(opts) == 2 and steps == [1] * 7 + [2] * 8
    want = ([(1, learning_rate(k, 2e-3, 7, 0.3)) for k in range(7)]
            + [(2, learning_rate(k, 1e-3, 8, 0.3)) for k in range(8)])
    assert [(stage, groups[0]) for stage, groups in lrs] == want
    assert all(len(set(groups)) == 1 for _, groups in lrs)   # every parameter group at the same rate
    assert lrs[1][1][0] == pytest.approx(2e-3) and lrs[-1][1][0] == pytest.approx(1e-3 / 6)  # peak; last step
    # LOG_EVERY 3: steps 1, 4, 7 of each stage; stage 1 ends at 7, stage 2 evaluates at 4 and 8
    assert reads == [(1, 1), (1, 4), (1, 7), (2, 1), (2, 4), (2, 7), (2, 8)]


class MemoryCheckpoint:
    """A distill.Checkpointer in memory; `stop_after` raises KeyboardInterrupt once that step is saved."""

    def __init__(self, every, state=None, stop_after=None):
        self.every, self.state, self.stop_after, self.saved = every, state, stop_after, []

    def load(self):
        return self.state

    def save(self, state):
        buffer = io.BytesIO()
        torch.save(state, buffer)  # as a file would keep it: a copy, not the live tensors
        buffer.seek(0)
        self.state = torch.load(buffer, weights_only=True)
        self.saved.append(state["result"]["hint_steps"] + state["result"]["kd_steps"])
        if self.saved[-1] == self.stop_after:
            raise KeyboardInterrupt


@pytest.mark.parametrize("stop_after", [3, 6], ids=["in stage 1", "in stage 2"])
def test_a_resumed_run_ends_as_the_uninterrupted_one(tiny_teacher, sst2_data, rows, stop_after):
    """Interrupted after a save, then resumed from it: the same weights, curve and metrics as one whole run."""
    train, val = rows
    arch = StudentArch.parse("L3-H32-A4-I64", "1:1,2:2").validate(tiny_teacher.layers)
    cfg = budget_config("smoke", hint_weight=1.0)  # the regressors train in both stages

    def run(checkpoint):
        student = build_student(arch, tiny_teacher.model, "teacher", collate(train, np.arange(16)))
        r = distill(student, arch, LiveTeacher(tiny_teacher.model, [1, 2]), 48, train, val, sst2_data.spec, cfg,
                    CPU, show_progress=False, checkpoint=checkpoint)
        return student.state_dict(), r

    whole = MemoryCheckpoint(every=3)
    weights, r = run(whole)
    assert whole.saved == [3, 6, 9, 12]  # every 3 steps of 4 hint + 8 KD, and after the last
    assert set(whole.state) == {"stage", "student", "regressors", "optimizer", "result", "seen", "rng", "cuda_rng"}

    first = MemoryCheckpoint(every=3, stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        run(first)
    assert first.state["stage"] == (1 if stop_after <= cfg.hint_steps else 2)
    again = MemoryCheckpoint(every=3, state=first.state)
    resumed, r2 = run(again)
    assert again.saved == [s for s in whole.saved if s > stop_after]
    assert resumed.keys() == weights.keys() and all(torch.equal(resumed[k], weights[k]) for k in weights)
    assert (r2.hint_steps, r2.kd_steps, r2.curve, r2.metrics) == (r.hint_steps, r.kd_steps, r.curve, r.metrics)


# ---------------------------------------------------------------------------
# Teacher sources

def test_cached_and_live_teacher_agree(tiny_teacher, rows, tmp_path):
    train, _ = rows
    layers = [1, 3]
    outputs = teacher_outputs(tiny_teacher, train, "sst2", "distill", MAX_LEN, tmp_path, CPU)
    cached, live = CachedTeacher(outputs, layers), LiveTeacher(tiny_teacher.model, layers)
    idx = np.array([5, 0, 17, 3, 40])
    batch = collate(train, idx)
    real = batch["attention_mask"].bool()                               # (B, T)

    c_logits, c_states = cached(idx, batch, True)
    l_logits, l_states = live(idx, batch, True)
    assert c_states.shape == l_states.shape == (5, 2, real.shape[1], 48)
    torch.testing.assert_close(c_logits, l_logits, rtol=1e-2, atol=1e-3)
    for k in range(len(layers)):
        torch.testing.assert_close(c_states[:, k][real], l_states[:, k][real], rtol=1e-2, atol=1e-2)
        assert (c_states[:, k][~real] == 0).all()                       # the cache zero-pads
    # the right layers were picked: layers differ by far more than cache and live do
    error = max((c_states[:, k][real] - l_states[:, k][real]).abs().max() for k in range(len(layers)))
    gap = (c_states[:, 0][real] - c_states[:, 1][real]).abs().max()
    assert gap > 5 * error

    c_only, none_c = cached(idx, batch, False)
    l_only, none_l = live(idx, batch, False)
    assert none_c is None and none_l is None
    torch.testing.assert_close(c_only, l_only, rtol=1e-2, atol=1e-3)


def test_log_progress_eta_counts_only_this_runs_pace(monkeypatch, capsys):
    """A resumed run (600 of 1000 steps done before) that makes 100 steps a minute has 3 minutes left."""
    clock = iter([0.0, 0.0, 60.0])  # add_task (start, last), then the update a minute later
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    log = training.LogProgress()
    task = log.add_task("stage 2: KD", total=1000, completed=600)
    log.update(task, advance=100, info="loss 0.1")
    assert capsys.readouterr().err.strip() == "stage 2: KD: 700/1000 loss 0.1 elapsed 1.0 min, eta 3.0 min"


# ---------------------------------------------------------------------------
# The relation loss (MiniLM-v2)

def qkv(batch=2, tokens=5, hidden=8, seed=0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, tokens, hidden, generator=g) for _ in range(3))


def test_relation_loss_is_zero_for_equal_relations_and_positive_otherwise():
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    a, b = qkv(seed=0), qkv(seed=1)
    assert relation_mod.relation_loss(a, a, mask, 4).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_mod.relation_loss(a, b, mask, 4).item() > 0.01
    # only relations count: a teacher twice as wide with the same relations per head (each head's
    # features repeated, scaled by 2^-1/4 to keep X Xᵀ/√d) gives the student a loss of zero
    wide = tuple(torch.cat([x.view(2, 5, 4, 2), x.view(2, 5, 4, 2)], -1).view(2, 5, 16) / 2 ** 0.25 for x in a)
    assert relation_mod.relation_loss(a, wide, mask, 4).item() == pytest.approx(0.0, abs=1e-5)


def test_relation_loss_ignores_padding_and_keeps_finite_gradients():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s, t = qkv(seed=0), qkv(seed=1)
    other = tuple(x.clone() for x in s)
    for x in other:
        x[0, 3:] = 100.0  # what the padding positions hold does not matter
    assert relation_mod.relation_loss(other, t, mask, 2).item() == pytest.approx(
        relation_mod.relation_loss(s, t, mask, 2).item(), rel=1e-6)
    leaf = tuple(x.clone().requires_grad_() for x in s)
    relation_mod.relation_loss(leaf, t, mask, 2).backward()
    assert all(torch.isfinite(x.grad).all() for x in leaf)


def test_relation_heads_divide_both_widths():
    assert relation_mod.relation_heads(320, 384) == 16 and relation_mod.relation_heads(24, 48) == 12
    assert relation_mod.relation_heads(192, 384) == 16 and relation_mod.relation_heads(36, 48) == 12


def test_the_teachers_relation_inputs_give_its_own_queries_keys_and_values(tiny_teacher, rows):
    """From the input of its teacher layer (what the source returns last), Relation.teacher_qkv computes the
    queries, keys and values the teacher's own forward pass computes in that layer."""
    train, _ = rows
    arch = StudentArch.parse("L2-H32-A4-I64", "1:1,2:3").validate(tiny_teacher.layers)
    rel = relation_mod.teacher_relation(tiny_teacher.model, arch)
    assert rel.student_layer == 2 and rel.heads == 16
    batch = collate(train, np.arange(8))
    with distill_mod.captured(list(rel.teacher_projections)) as seen, torch.no_grad():
        out = tiny_teacher.model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                        output_hidden_states=True)
    mine = rel.teacher_qkv(out.hidden_states[2])  # the input of teacher layer 3
    assert all(torch.allclose(m, s, atol=1e-5) for m, s in zip(mine, seen))


def test_distill_with_the_relation_loss_adds_it_to_stage_two(tiny_teacher, sst2_data, rows):
    """relation_weight > 0: stage 2 asks the teacher for hidden states (the relation layer's input), its loss
    is the KD loss plus the weighted relation loss, and a run trains end to end; without the relation's
    layers it is refused."""
    train, val = rows
    arch = StudentArch.parse("L2-H32-A4-I64", "1:1,2:3").validate(tiny_teacher.layers)
    student = build_student(arch, tiny_teacher.model, "teacher", collate(train, np.arange(16)))
    rel = relation_mod.teacher_relation(tiny_teacher.model, arch)
    cfg = budget_config("smoke", relation_weight=2.0)
    source = LiveTeacher(tiny_teacher.model, [1, 3, 2])  # the hints' teacher layers, then layer 3's input
    batch = collate(train, np.arange(8))
    t_logits, t_hidden = source(np.arange(8), batch, True)
    regressors = distill_mod.make_regressors(arch, 48, CPU)
    student.eval()  # no dropout: the three forward passes see the same student
    with torch.no_grad():
        plain = distill_mod.step_loss(2, student, regressors, [1, 2], batch, t_logits, t_hidden,
                                      budget_config("smoke"), rel)
        both = distill_mod.step_loss(2, student, regressors, [1, 2], batch, t_logits, t_hidden, cfg, rel)
        with distill_mod.captured(rel.student_qkv(student)) as s_qkv:
            student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        relation = relation_mod.relation_loss(tuple(s_qkv), rel.teacher_qkv(t_hidden[:, -1]),
                                             batch["attention_mask"], rel.heads)
    assert relation.item() > 0 and both.item() == pytest.approx(plain.item() + 2.0 * relation.item(), rel=1e-5)
    r = distill(student, arch, source, 48, train, val, sst2_data.spec, cfg, CPU, show_progress=False, relation=rel)
    assert r.kd_steps == cfg.kd_steps and 0.0 <= r.metrics["metric"] <= 1.0
    with pytest.raises(ValueError, match="relation"):
        distill(student, arch, source, 48, train, val, sst2_data.spec, cfg, CPU, show_progress=False)


def test_run_tag_names_the_options_that_tell_distill_results_apart():
    assert run_tag(budget_config("smoke")) == ""
    assert run_tag(budget_config("small")) == "-aug2"
    assert run_tag(budget_config("small", seed=2)) == "-aug2-seed2"
    assert run_tag(budget_config("small", augment_min_tokens=1, augment_examples=100000, relation_weight=1.0,
                                 seed=1)) == "-aug2-augx100000-min1-relation1-seed1"
