"""`fastbert-nas bench throughput`: the fastText-style table (Joulin et al. 2017 report accuracy beside speed):
accuracy and inference speed of the teacher, the exported students and a fastText classifier on the same splits.

    per task: its cached teacher (RESULTS/teachers/<task>), one export per FLOPs share (RESULTS/exports/<task>-<NN>
    [-seed<K>]/ with its weights, the lowest seed: the students --pick took from a study's front), and fastText
    trained on the rows the exports were distilled on (report/fasttext.py's settings)
    -> each scored on the validation split and on dev (here, the same rows for all)
    -> examples per second over the first THROUGHPUT_EXAMPLES dev examples at their real lengths (each batch
       padded to its longest example, never to max_len), at batch 1 and THROUGHPUT_BATCH, on one thread and
       on all of the machine's; torch.utils.benchmark medians
    -> RESULTS/benchmarks/throughput.json and .md

The texts are tokenized (word pieces for the BERTs, fastText's lower-casing and punctuation split) before
the clock starts. Nothing is chosen here: dev reports, validation is shown beside it.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.benchmark import Timer
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fastbert_nas.bench.common import machine, save_report
from fastbert_nas.bench.export import has_weights
from fastbert_nas.config import ALL_EXAMPLES, UserError
from fastbert_nas.core.cost import count_flops, count_params
from fastbert_nas.core.family import model_inputs
from fastbert_nas.core.metrics import score
from fastbert_nas.core.pipeline import distill_rows
from fastbert_nas.core.tasks import Split, collate, encode_for, load_task, resolve_task
from fastbert_nas.core.training import evaluate
from fastbert_nas.export.checkpoint import REPORT_FILE
from fastbert_nas.report import fasttext as ft

BENCH_FILE = "throughput"
THROUGHPUT_EXAMPLES = 256   # dev examples timed per figure
THROUGHPUT_BATCH = 32       # examples per forward pass of the batched figures
THROUGHPUT_MIN_RUN_S = 1.0  # seconds of timed passes per figure (after blocked_autorange's warm-up)
EXPORT_NAME = re.compile(r"^(?P<task>.+)-(?P<share>\d\d)(?:-seed(?P<seed>\d+))?$")


def exports_of(task: str, results: Path, log: Callable[[str], None]) -> list[Path]:
    """For each FLOPs share, the export folder of `task` with weights and the lowest seed."""
    found: dict[str, tuple[int, Path]] = {}
    for report in sorted((Path(results) / "exports").glob(f"{task}-*/{REPORT_FILE}")):
        m = EXPORT_NAME.match(report.parent.name)
        if not m or m["task"] != task:
            continue
        if not has_weights(report.parent):
            log(f"{report.parent}: no weights here (export.json only): left out")
            continue
        seed = int(m["seed"] or 0)
        if m["share"] not in found or seed < found[m["share"]][0]:
            found[m["share"]] = (seed, report.parent)
    return [folder for _, folder in sorted(found.values(), key=lambda x: x[1].name)]


def examples_per_s(run: Callable[[], None], examples: int, threads: int) -> float:
    """`examples` divided by the median time of run() (one pass over them) on `threads` threads."""
    before = torch.get_num_threads()
    try:
        m = Timer(stmt="run()", globals={"run": run}, num_threads=threads).blocked_autorange(
            min_run_time=THROUGHPUT_MIN_RUN_S)
    finally:
        torch.set_num_threads(before)
    return examples / m.median


def bert_speed(model, enc, batch: int, threads: int) -> float:
    """Examples per second of a classifier over the encoded examples, `batch` at a time."""
    batches = [model_inputs(model, collate(enc, np.arange(i, min(i + batch, len(enc)))))
               for i in range(0, len(enc), batch)]

    @torch.inference_mode()
    def run():
        for b in batches:
            model(**b)

    return examples_per_s(run, len(enc), threads)


def fasttext_speed(model, lines: list[str], batch: int, threads: int) -> float:
    """Examples per second of fastText's predict over the cleaned lines, `batch` lines a call."""
    chunks = [lines[i:i + batch] for i in range(0, len(lines), batch)]

    def run():
        for chunk in chunks:
            model.predict(chunk)

    return examples_per_s(run, len(lines), threads)


def speeds(timed: Callable[[int, int], float], all_threads: int) -> dict:
    """{"t1_b1": ..., "tN_b1": ..., "t1_bB": ..., "tN_bB": ...}: examples/s per thread count and batch."""
    return {f"t{'N' if t == all_threads and t > 1 else t}_b{'B' if b > 1 else 1}": timed(b, t)
            for b in (1, THROUGHPUT_BATCH) for t in dict.fromkeys((1, all_threads))}


def bert_row(name: str, model, spec, data, tokenizer, timed_enc, all_threads: int, seq_len: int) -> dict:
    model.eval()
    val = evaluate(model, spec, encode_for(spec, data.val, tokenizer), torch.device("cpu"))
    dev = evaluate(model, spec, encode_for(spec, data.dev, tokenizer), torch.device("cpu"))
    return {"model": name, "params": count_params(model)["total"], "flops": count_flops(model, seq_len),
            "val": val, "dev": dev, "speed": speeds(lambda b, t: bert_speed(model, timed_enc, b, t), all_threads)}


def fasttext_row(data, examples: int, timed_texts: list[str], all_threads: int) -> dict:
    rows = distill_rows(data, examples)
    model = ft.train(rows.texts, rows.labels)

    def predict(texts):
        labels, _ = model.predict([ft.clean(x) for x in texts])
        return np.array([int(label[0][len(ft.LABEL_PREFIX):]) for label in labels])

    lines = [ft.clean(x) for x in timed_texts]
    args = model.f.getArgs()
    return {"model": "fastText", "params": (len(model.words) + args.bucket + len(model.labels)) * args.dim,
            "flops": None, "val": score(data.spec, predict(data.val.texts), data.val.labels),
            "dev": score(data.spec, predict(data.dev.texts), data.dev.labels), "train_examples": len(rows),
            "speed": speeds(lambda b, t: fasttext_speed(model, lines, b, t), all_threads)}


def task_table(task: str, results: Path, data_dir: str | None, log: Callable[[str], None]) -> dict:
    spec = resolve_task(task)
    data = load_task(spec, data_dir)
    teacher_dir = Path(results) / "teachers" / spec.name
    if not (teacher_dir / "config.json").exists():
        raise UserError(f"no cached {spec.name} teacher in {teacher_dir}: run `fastbert-nas teacher --task {task}`")
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    timed_texts = data.dev.texts[:THROUGHPUT_EXAMPLES]
    timed_enc = encode_for(spec, Split(timed_texts, data.dev.labels[:THROUGHPUT_EXAMPLES]), tokenizer)
    all_threads = os.cpu_count() or 1
    models = [("teacher", teacher_dir, None)]
    examples = ALL_EXAMPLES
    for folder in exports_of(spec.name, results, log):
        report = json.loads((folder / REPORT_FILE).read_text())
        models.append((f"{report['name']} ({folder.name})", folder, report))
        examples = report["examples_used"]
    rows = []
    for name, folder, report in models:
        log(f"{spec.name}: {name}: scoring and timing ...")
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        rows.append(bert_row(name, model, spec, data, tokenizer, timed_enc, all_threads, spec.max_len)
                    | ({"export_dir": str(folder), "hints": report["hints"]} if report else {}))
    shown = "all" if examples == ALL_EXAMPLES else examples
    log(f"{spec.name}: fastText: training on {shown} rows, scoring, timing ...")
    rows.append(fasttext_row(data, examples, timed_texts, all_threads))
    lengths = [len(x) for x in timed_enc.ids]
    return {"task": spec.name, "metric": spec.metric, "max_len": spec.max_len, "rows": rows,
            "timed_examples": len(lengths), "mean_tokens": float(np.mean(lengths)), "all_threads": all_threads}


def bench_throughput(tasks: tuple[str, ...], results: Path, data_dir: str | None,
                     log: Callable[[str], None] = print) -> dict:
    report = {"tasks": [task_table(t, results, data_dir, log) for t in tasks], "batch": THROUGHPUT_BATCH,
              "chosen_on": "nothing (every model is fixed beforehand)", "reported_on": "dev (validation beside it)",
              "machine": machine(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return save_report(report, results, BENCH_FILE, throughput_markdown)


def throughput_markdown(r: dict) -> str:
    """One table per task: model, params, FLOPs, val and dev metric, examples per second."""
    m = r["machine"]
    lines = ["# Accuracy and inference speed (fastText-style table)", "",
             f"Measured {r['time']} on {m['cpu']}, torch {m['torch']}, PyTorch eager fp32 for the BERTs. Examples "
             "per second over the first dev examples at their real lengths (batches padded to their longest "
             f"example), batch 1 and {r['batch']}, one thread and all; tokenization is done before timing. "
             "fastText predicts on one thread whatever the machine has. Nothing is chosen here; dev reports.", ""]
    for t in r["tasks"]:
        n = t["all_threads"]
        lines += [f"## {t['task']} ({t['metric']}; {t['timed_examples']} timed examples, {t['mean_tokens']:.1f} "
                  "word pieces on average)", "",
                  f"| model | params | GFLOPs at {t['max_len']} | val | dev | ex/s 1 thread b1 | ex/s {n} threads b1 "
                  f"| ex/s 1 thread b{r['batch']} | ex/s {n} threads b{r['batch']} |", "|---" * 9 + "|"]
        for row in t["rows"]:
            s = row["speed"]
            flops = f"{row['flops'] / 1e9:.3f}" if row["flops"] else "-"
            lines.append(f"| {row['model']} | {row['params'] / 1e6:.1f} M | {flops} | {row['val']['metric']:.4f} | "
                         f"{row['dev']['metric']:.4f} | {s['t1_b1']:,.0f} | {s.get('tN_b1', s['t1_b1']):,.0f} | "
                         f"{s['t1_bB']:,.0f} | {s.get('tN_bB', s['t1_bB']):,.0f} |")
        lines.append("")
    return "\n".join(lines)
