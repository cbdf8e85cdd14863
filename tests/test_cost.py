"""cost.py on tiny random BERTs: params by part, FLOPs (counted and analytic), latency."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from fastbert_nas.config import StudentArch
from fastbert_nas.core import cost
from fastbert_nas.core.cost import analytic_flops, cost_summary, count_flops, count_params, measure_latency

VOCAB = 100      # tokens in the toy vocabulary
MAX_POS = 64     # position embeddings
TYPES = 2        # token types
LABELS = 2       # classes
SEQ = 32         # tokens per example in these tests


def tiny_bert(layers=2, hidden=32, heads=2, ffn=64, attn="sdpa"):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, max_position_embeddings=MAX_POS, type_vocab_size=TYPES,
                     num_labels=LABELS, attn_implementation=attn)
    return BertForSequenceClassification(cfg)


def test_params_parts_sum_to_total():
    model = tiny_bert(layers=3, hidden=48, heads=4, ffn=96)
    p = count_params(model)
    assert p["embeddings"] + p["encoder"] + p["head"] == p["total"]
    assert p["total"] == sum(t.numel() for t in model.parameters())
    h = 48
    assert p["embeddings"] == VOCAB * h + MAX_POS * h + TYPES * h + 2 * h  # + LayerNorm weight and bias
    assert p["head"] == h * h + h + h * LABELS + LABELS                    # pooler + classifier


def test_flops_grow_with_depth_and_width():
    base = count_flops(tiny_bert(layers=2, hidden=32), SEQ)
    assert count_flops(tiny_bert(layers=3, hidden=32), SEQ) > base
    assert count_flops(tiny_bert(layers=2, hidden=64, heads=4), SEQ) > base
    assert count_flops(tiny_bert(layers=2, hidden=32, ffn=128), SEQ) > base


@pytest.mark.parametrize("layers,hidden,heads,ffn,seq", [(2, 32, 2, 64, 32), (4, 64, 4, 256, 48), (1, 48, 3, 96, 16)])
def test_counted_flops_match_analytic(layers, hidden, heads, ffn, seq):
    model = tiny_bert(layers, hidden, heads, ffn)
    head = 2 * hidden * hidden + 2 * hidden * LABELS  # pooler + classifier on the first token
    expected = analytic_flops(StudentArch(layers, hidden, heads, ffn), seq) + head
    assert count_flops(model, seq) == pytest.approx(expected, rel=0.02)


def test_sdpa_model_counted_as_eager_and_restored():
    sdpa, eager = tiny_bert(attn="sdpa"), tiny_bert(attn="eager")
    sdpa.train()
    flops = count_flops(sdpa, SEQ)
    assert flops == count_flops(eager, SEQ)
    assert sdpa.config._attn_implementation == "sdpa"
    assert eager.config._attn_implementation == "eager"
    assert sdpa.training


def test_attention_restored_on_error():
    model = tiny_bert(attn="sdpa")
    with pytest.raises(Exception):
        count_flops(model, MAX_POS + 1)  # longer than the position embeddings
    assert model.config._attn_implementation == "sdpa"


def test_measure_latency():
    model = tiny_bert().train()
    lat = measure_latency(model, batch_size=2, seq_len=SEQ, threads=1, min_run_time=0.05)
    assert lat["batch"] == 2 and lat["seq_len"] == SEQ and lat["threads"] == 1
    assert lat["device"] == "cpu"
    assert model.training  # training flag given back


def test_measure_latency_reports_the_timers_median_of_eval_forwards(monkeypatch):
    """With a stand-in timer of a known median: the figure is that median in ms, and what is timed is a
    forward of `batch_size` x `seq_len` tokens in eval and inference mode, at the given thread count."""
    seen = []

    class FakeTimer:
        def __init__(self, stmt, globals, num_threads):
            self.forward, self.threads = globals["forward"], num_threads

        def blocked_autorange(self, min_run_time):
            self.forward()
            return type("Measurement", (), {"median": 0.0025})()

    model = tiny_bert().train()
    model.register_forward_hook(lambda m, args, kwargs, out: seen.append(
        (tuple(kwargs["input_ids"].shape), m.training, torch.is_inference_mode_enabled())), with_kwargs=True)
    monkeypatch.setattr(cost, "Timer", FakeTimer)
    lat = measure_latency(model, batch_size=3, seq_len=SEQ, threads=1, min_run_time=0.05)
    assert lat == {"batch": 3, "seq_len": SEQ, "median_ms": 2.5, "threads": 1, "device": "cpu"}
    assert seen == [((3, SEQ), False, True)]
    assert model.training


def test_cost_summary_plain_numbers():
    lat = lambda b1, b32: {"b1": {"median_ms": b1}, "b32": {"median_ms": b32}}
    teacher = {"params": {"total": 1000}, "flops": 400, "latency": lat(10.0, 80.0)}
    student = {"params": {"total": 250}, "flops": 100, "latency": lat(2.0, 10.0)}
    s = cost_summary(student, teacher)
    assert s == {"flops_share": 0.25, "params_share": 0.25, "speedup_b1": 5.0, "speedup_b32": 8.0}
    no_lat = cost_summary({k: v for k, v in student.items() if k != "latency"}, teacher)
    assert no_lat == {"flops_share": 0.25, "params_share": 0.25}
