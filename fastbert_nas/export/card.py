"""The model card (README.md of the model folder): what the model is, its figures beside the teacher's, how to use and remake it.
"""

from __future__ import annotations

from pathlib import Path

from fastbert_nas.core.metrics import others
from fastbert_nas.core.tasks import as_text

CARD_FILE = "README.md"
CARD_EXAMPLE_CHARS = 200  # longest dev text the model card's usage example quotes whole


def card_example(texts: list) -> str | tuple[str, str]:
    """The model card's usage example: the first of the task's dev texts (or pairs) short enough to quote."""
    short = [t for t in texts if len(as_text(t)) <= CARD_EXAMPLE_CHARS]
    return short[0] if short else texts[0] if isinstance(texts[0], tuple) else texts[0][:CARD_EXAMPLE_CHARS]


def example_inputs(example) -> tuple[str, str]:
    """(the pipeline's argument, the tokenizer's arguments) quoting the example: a text, or a sentence pair
    (export.json keeps it as a list)."""
    if isinstance(example, (list, tuple)):
        a, b = example
        return f"{{'text': {a!r}, 'text_pair': {b!r}}}", f"[{a!r}], [{b!r}]"
    return repr(example), f"[{example!r}]"


def preprocessing(r: dict) -> str:
    """What the model card says of text handling a pipeline does not do by itself."""
    notes = []
    if r.get("tail_tokens"):
        notes.append(f"a longer text kept its first {r['max_len'] - r['tail_tokens']} and last {r['tail_tokens']} "
                     "tokens (a pipeline keeps the first ones: do the same before calling it)")
    if r.get("strip_html"):
        notes.append('"<br />" line breaks replaced by spaces')
    return "".join(f"; {n}" for n in notes)


def deploy_rows(r: dict) -> list[tuple[str, ...]]:
    """(model, runtime, size MB, ms, speed-up vs the PyTorch fp32 teacher, vs the teacher in the same runtime,
    val, dev) for every model and runtime of export.json's "deploy" record."""
    d = r["deploy"]
    rows = []
    for name, by_runtime in d["models"].items():
        for label, x in by_runtime.items():
            val = f"{x['val']['metric']:.4f}" if "val" in x else ""
            dev = f"{x['dev']['metric']:.4f}" if "dev" in x else ""
            rows.append((name, label, f"{x['size_mb']:.1f}", f"{x['ms']:.2f}",
                         f"{x['speedup_vs_teacher_pytorch_fp32']:.1f}x", f"{x['speedup_vs_teacher_same_runtime']:.1f}x",
                         val, dev))
    return rows


def deploy_section(r: dict, out: Path) -> str:
    """The model card's runtimes section: the side-by-side table and how to load the ONNX files."""
    d = r["deploy"]
    flags = ", ".join(f for f, has in d["cpu_flags"].items() if has) or "none of AVX2, AVX-512, VNNI"
    head = ("| model | runtime | size, MB | ms | speed-up vs PyTorch fp32 teacher | vs teacher, same runtime | "
            f"val {d['metric']} | dev {d['metric']} |\n|---|---|---|---|---|---|---|---|\n")
    table = head + "\n".join("| " + " | ".join(row) + " |" for row in deploy_rows(r))
    change = ", ".join(f"{split} {delta * 100:+.2f} points" for split, delta in d["int8_change"].items())
    return f"""
## Runtimes

Batch 1, {d['seq_len']} tokens (the task's length), CPU ({r.get('cpu', '?')}; {flags}), {d['threads']} threads:
every model timed in every runtime in one process, median of {d['rounds']} rounds. int8: {d['quantization']};
its {d['metric']} change against PyTorch fp32, measured: {change}.

{table}

```python
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{out}")
session = ort.InferenceSession("{out}/model-int8.onnx", providers=["CPUExecutionProvider"])
batch = tokenizer({example_inputs(r['example'])[1]}, return_tensors="np", truncation=True, max_length={r['max_len']})
logits = session.run(["logits"], {{i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}})[0]
```

With Hugging Face optimum (`pip install optimum-onnx`; it needs transformers < 4.58, not tested here):

```python
from optimum.onnxruntime import ORTModelForSequenceClassification

model = ORTModelForSequenceClassification.from_pretrained("{out}", file_name="model-int8.onnx")
```
"""


def origin(r: dict) -> str:
    """Where the exported student came from: a study's trial, or a shape given by --student."""
    if r["study"] is None:
        return (f"Its shape was given by `--student` (not picked from a study); it was distilled on the "
                f"`{r['budget']}` budget with the recipe a search trial of that shape gets.")
    return f"It is trial {r['trial']} of\nthe study `{r['study']}`, distilled again on the `{r['budget']}` budget."


def model_card(r: dict, out: Path) -> str:
    """README.md of the model folder: what it is, its figures beside the teacher's, how to use and remake it."""
    s, t, vs = r["costs"], r["teacher"]["costs"], r["vs_teacher"]
    arch, metric = r["arch"], r["metric"]
    lat_s, lat_t = s["latency"]["b1"], t["latency"]["b1"]
    p_s, p_t = s["params"], t["params"]
    labels = ", ".join(f"{i} {name}" for i, name in enumerate(r["labels"]))
    teacher_dev = r["teacher"]["dev"]
    rows = [
        ("dev " + metric, f"{r['dev']['metric']:.4f}", f"{teacher_dev['metric']:.4f}"),
        *((f"dev {name}", f"{v:.4f}", f"{teacher_dev[name]:.4f}" if name in teacher_dev else "-")
          for name, v in others(r["dev"], metric).items()),
        *([(f"dev majority-class level ({metric} of always the most frequent class)",
            f"{r['dev_majority']['metric']:.4f}", "")] if "dev_majority" in r else []),
        ("retention (student / teacher)", f"{r['retention']:.1%}" if r["retention"] is not None else "-", ""),
        ("params, M (embeddings + encoder + head)", f"{p_s['total'] / 1e6:.2f} ({p_s['embeddings'] / 1e6:.2f} + "
         f"{p_s['encoder'] / 1e6:.2f} + {p_s['head'] / 1e6:.3f})", f"{p_t['total'] / 1e6:.2f}"),
        ("FLOPs (2 per multiply-add, batch 1, 128 tokens)",
         f"{s['flops'] / 1e9:.3f} G ({vs['flops_share']:.1%} of the teacher)", f"{t['flops'] / 1e9:.3f} G"),
        ("latency, batch 1, 128 tokens", f"{lat_s['median_ms']:.2f} ms", f"{lat_t['median_ms']:.2f} ms"),
        ("speed-up, batch 1", f"{vs['speedup_b1']:.2f}x", "1x"),
        ("latency, batch 32, 128 tokens", f"{s['latency']['b32']['median_ms']:.1f} ms",
         f"{t['latency']['b32']['median_ms']:.1f} ms"),
    ]
    if "costs_task_len" in r:  # the length the task runs at (its --max-len)
        n, s_n, t_n, vs_n = r["task_len"], r["costs_task_len"], r["teacher"]["costs_task_len"], r["vs_teacher_task_len"]
        rows += [(f"FLOPs (batch 1, {n} tokens: the task's length)",
                  f"{s_n['flops'] / 1e9:.3f} G ({vs_n['flops_share']:.1%} of the teacher)",
                  f"{t_n['flops'] / 1e9:.3f} G")]
        if "latency" in s_n:
            rows += [(f"latency, batch 1, {n} tokens", f"{s_n['latency']['b1']['median_ms']:.2f} ms",
                      f"{t_n['latency']['b1']['median_ms']:.2f} ms"),
                     (f"speed-up, batch 1, {n} tokens", f"{vs_n['speedup_b1']:.2f}x", "1x")]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    onnx = ""
    if r.get("onnx"):
        o = r["onnx"]
        onnx = (f"\n`model.onnx` (inputs `input_ids`, `attention_mask`; output `logits`; batch and length free) "
                f"gives the same logits as the PyTorch model within {o['max_abs_diff']:.2g} (largest absolute "
                f"difference on {o['check_examples']} dev examples; tolerance {o['tolerance']:g}). Batch 1, "
                f"{o['seq_len']} tokens, CPU, threads {o['threads']}: ONNX Runtime {o['onnxruntime']} "
                f"{o['onnxruntime_ms']:.2f} ms, PyTorch {o['pytorch_ms']:.2f} ms "
                f"({o['speedup_vs_pytorch']:.2f}x).\n")
    deploy = deploy_section(r, out) if r.get("deploy") else ""
    resumed = f", resumed after step {r['resumed_from']}" if r.get("resumed_from") is not None else ""
    cfg = r["config"]
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [bert, knowledge-distillation, fitnets, fastbert-nas]
---

# {r['name']} for {r['task']}

A BERT student with {arch['layers']} layers, hidden size {arch['hidden']}, {arch['heads']} attention heads
and FFN size {arch['ffn']}, distilled by fastbert-nas from the teacher `{r['teacher']['id']}` the FitNets
way: its layers {r['hints']} (student:teacher) first learned to predict the teacher's hidden states through
linear regressors, then the whole student learned the teacher's logits softened at temperature
{cfg['temperature']:.2f} (weight {cfg['kd_alpha']:.2f} against the hard labels). {origin(r)}

| | student | teacher |
|---|---|---|
{table}

The {metric} is on the task's official dev set. Latency is the median of `torch.utils.benchmark`, student and
teacher timed one after the other in one process (device {lat_s['device']}, threads {lat_s['threads']}).
{onnx}{deploy}
## Use

```python
from transformers import pipeline

classify = pipeline("text-classification", model="{out}")
classify({example_inputs(r['example'])[0]})
```

Labels: {labels}. It was trained on texts cut to {r['max_len']} tokens{preprocessing(r)}.

## Training

{r['distill']['hint_steps']} hint steps and {r['distill']['kd_steps']} KD steps of {cfg['batch_size']} examples, drawn
from {r['examples_used']:,} training examples; learning rate {cfg['lr']:.2g}, init `{cfg['init']}`, seed
{cfg['seed']}; {r['distill_minutes']:.1f} minutes on {r['device']}{resumed}. Teacher weights fingerprint
`{r['teacher']['fingerprint']}`; data from `{r['data_source']}`; torch {r['torch']}, transformers
{r['transformers']}. Every figure is in `export.json`.

Made by:

```
{r['command']}
```
"""
