"""`fastbert-nas bench families`: one SST-2 row per teacher family (BERT, RoBERTa, ELECTRA, DistilBERT).

    for each family:
      a small classifier of the family, randomly initialized from its config class (FAMILY_SHAPE), with the
      packaged base's tokenizer, saved as a model folder
    -> fine-tuned on SST-2 into the teacher through `--base FOLDER`, the path a user's own base takes
       (FAMILY_TEACHER_EPOCHS, FAMILY_TEACHER_LR; cached in RESULTS/families/<family>/teachers/)
    -> a student of the family at half the teacher's depth and width (FAMILY_STUDENT), distilled from it
       with teacher init, hints and KD (FAMILY_BUDGET with FAMILY_KD_STEPS)
    -> teacher and student: validation and dev accuracy, params, FLOPs at the task's length, batch-1
       speed-up (pipeline.distill_one's report)
    + the BERT row with pre-trained weights, the packaged MiniLM-L6 base: read from `bench export`'s report.

No pre-trained RoBERTa, ELECTRA or DistilBERT weights are reachable offline, and the packaged base is a
BERT: the other families' teachers start from random weights, so their accuracies say that each family
runs through fine-tuning, distillation and scoring, not what a pre-trained model of that family gives.
Nothing is chosen here (the settings are fixed); validation and dev are both reported.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
)

from fastbert_nas.bench import settings
from fastbert_nas.bench.common import machine, save_report
from fastbert_nas.bench.export import parse_tasks
from fastbert_nas.config import UserError, run_env
from fastbert_nas.core import pipeline
from fastbert_nas.core.teacher import DEFAULT_BASE, base_path

BENCH_FILE = "families"
RUNS_DIR = "families"        # RESULTS/families/<family>/: the base folder, its teacher, the finished row
ROW_FILE = "row.json"
FAMILY_SEED = 0              # torch seed of each family's random initialization
POSITIONS = 512              # position embeddings of the random bases (RoBERTa's start after its padding id)


def parse_families(text: str) -> list[str]:
    """'bert,roberta' -> ['bert', 'roberta']; UserError for a family without a random base here."""
    chosen = list(parse_tasks(text))
    if not chosen or any(f not in settings.FAMILIES for f in chosen):
        raise UserError(f"--families {text!r}: choose among {', '.join(settings.FAMILIES)}")
    return chosen


def family_config(family: str, vocab_size: int, pad_id: int):
    """The config of a randomly initialized SST-2 classifier of `family` (FAMILY_SHAPE), for a tokenizer of
    `vocab_size` tokens with padding id `pad_id`."""
    layers, hidden, heads, ffn = settings.FAMILY_SHAPE
    common = dict(vocab_size=vocab_size, pad_token_id=pad_id, num_labels=2)
    bert_like = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, **common)
    if family == "bert":
        return BertConfig(max_position_embeddings=POSITIONS, **bert_like)
    if family == "roberta":  # positions counted from pad_id + 1; one token type, as RoBERTa has
        return RobertaConfig(max_position_embeddings=POSITIONS + pad_id + 1, type_vocab_size=1, **bert_like)
    if family == "electra":  # embeddings narrower than the encoder, projected up (as ELECTRA-small's are)
        return ElectraConfig(embedding_size=hidden // 2, max_position_embeddings=POSITIONS, **bert_like)
    if family == "distilbert":
        return DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=ffn,
                                max_position_embeddings=POSITIONS, **common)
    raise ValueError(f"no random base for family {family!r}")


def make_base(family: str, folder: Path) -> Path:
    """A model folder with a random `family` classifier and the packaged base's tokenizer (made once)."""
    if (folder / "config.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))
    torch.manual_seed(FAMILY_SEED)
    model = AutoModelForSequenceClassification.from_config(family_config(family, len(tokenizer),
                                                                         tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def setting() -> dict:
    """What a row depends on: a row made with other settings is made again."""
    return {"shape": list(settings.FAMILY_SHAPE), "teacher_epochs": settings.FAMILY_TEACHER_EPOCHS,
            "teacher_lr": settings.FAMILY_TEACHER_LR, "student": settings.FAMILY_STUDENT,
            "hints": settings.FAMILY_HINTS, "budget": settings.FAMILY_BUDGET, "kd_steps": settings.FAMILY_KD_STEPS,
            "hint_steps": settings.FAMILY_HINT_STEPS}


def family_row(family: str, results: Path, data_dir: str | None, device: str, threads: int | None,
               log: Callable[[str], None]) -> dict:
    """One family's teacher and student, as a row (kept in RESULTS/families/<family>/row.json)."""
    folder = results / RUNS_DIR / family
    row_file = folder / ROW_FILE
    recorded = json.loads(row_file.read_text()) if row_file.exists() else {}
    if recorded.get("setting") == setting():
        log(f"{family}: on record ({row_file})")
        return recorded
    base = make_base(family, folder / "base")
    env = run_env("sst2", data_dir, base=str(base), device=device, threads=threads, results=folder)
    log(f"{family}: the teacher (random {family} base, {settings.FAMILY_TEACHER_EPOCHS:g} epochs)")
    manifest = pipeline.fine_tune_teacher(env, epochs=settings.FAMILY_TEACHER_EPOCHS, lr=settings.FAMILY_TEACHER_LR)
    log(f"{family}: the student {settings.FAMILY_STUDENT} hints {settings.FAMILY_HINTS}")
    r = pipeline.distill_one(env, settings.FAMILY_STUDENT, settings.FAMILY_HINTS, "teacher", settings.FAMILY_BUDGET,
                             overrides={"kd_steps": settings.FAMILY_KD_STEPS, "hint_steps": settings.FAMILY_HINT_STEPS,
                                        "augment": 0}, show_progress=False)
    model_type = json.loads((base / "config.json").read_text())["model_type"]
    row = {"family": family, "model_type": model_type, "weights": "random init, fine-tuned on SST-2",
           "teacher": {"shape": "L{}-H{}-A{}-I{}".format(*settings.FAMILY_SHAPE),
                       "params": r["teacher"]["costs"]["params"]["total"], "val": manifest["val"]["metric"],
                       "dev": r["teacher"]["dev"]["metric"], "minutes": manifest["minutes"],
                       "steps": manifest["steps"]},
           "student": {"name": r["name"], "hints": r["hints"], "params": r["costs"]["params"]["total"],
                       "val": r["val"]["metric"], "dev": r["dev"]["metric"], "minutes": r["distill_minutes"]},
           "retention": r["retention"], "flops_share": r["vs_teacher"]["flops_share"],
           "speedup_b1": r["vs_teacher"]["speedup_b1"], "majority_dev": r["dev_majority"]["metric"],
           "setting": setting()}
    row_file.write_text(json.dumps(row, indent=2))
    return row


def pretrained_bert_row(results: Path) -> dict | None:
    """The SST-2 rows of `bench export` (pre-trained MiniLM-L6 teacher, a BERT), when it has run here."""
    path = results / "benchmarks" / "export.json"
    if not path.exists():
        return None
    over = [r for r in json.loads(path.read_text())["over_seeds"] if r["task"] == "sst2"]
    return {"source": str(path), "rows": over} if over else None


def bench_families(families: list[str], results: Path, data_dir: str | None = None, device: str = "auto",
                   threads: int | None = None, log: Callable[[str], None] = print) -> dict:
    rows = [family_row(f, Path(results), data_dir, device, threads, log) for f in families]
    report = {"task": "sst2", "rows": rows, "pretrained_bert": pretrained_bert_row(Path(results)),
              "setting": setting(), "machine": machine(), "time": datetime.now(timezone.utc).isoformat()}
    return save_report(report, results, BENCH_FILE, families_markdown)


def families_markdown(r: dict) -> str:
    s = r["setting"]
    lines = [
        "# Teacher families on SST-2", "",
        f"Each family's teacher is a {s['shape'][0]}-layer, {s['shape'][1]}-wide classifier of its own config class, "
        "**randomly initialized** (no pre-trained RoBERTa, ELECTRA or DistilBERT weights are reachable offline; the "
        f"packaged base is a BERT) with the packaged base's tokenizer, fine-tuned on SST-2 ({s['teacher_epochs']:g} "
        f"epochs, peak lr {s['teacher_lr']:g}) through `--base FOLDER`. Its student, of the same family, is "
        f"{s['student']} (hints {s['hints']}), teacher init, {s['hint_steps']} hint + {s['kd_steps']} KD steps "
        f"of the `{s['budget']}` budget without augmentation. The accuracies show that each family runs through "
        "fine-tuning, distillation and scoring; they are not what a pre-trained model of the family gives. "
        "Nothing was chosen: the settings are fixed; validation (the leak-free split) and dev are both reported. "
        "FLOPs at the task's length (64 tokens); speed-up at batch 1.", "",
        "| family | teacher params, M | teacher val / dev | student | student val / dev | dev retention "
        "| FLOPs share | speed-up b1 | dev majority |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        t, st = x["teacher"], x["student"]
        lines.append(f"| {x['family']} (random init) | {t['params'] / 1e6:.2f} | "
                     f"{t['val']:.4f} / {t['dev']:.4f} | {st['name']} {st['hints']} | "
                     f"{st['val']:.4f} / {st['dev']:.4f} "
                     f"| {x['retention']:.1%} | {x['flops_share']:.1%} | {x['speedup_b1']:.2f}x | "
                     f"{x['majority_dev']:.4f} |")
    p = r.get("pretrained_bert")
    if p:
        lines += ["", f"BERT with pre-trained weights (the packaged MiniLM-L6 base), from `bench "
                  f"export` ({p['source']}; mean ± sd over seeds, chosen on validation, dev reported):", ""]
        for x in p["rows"]:
            d, k = x["dev_metric"], x["retention"]
            lines.append(f"- <= {x['share_limit']:.0%} of the FLOPs: {x['student']} ({x['flops_share']:.1%}), dev "
                         f"{d['mean']:.4f} ± {d['sd']:.4f}, retention {k['mean']:.1%} ± {k['sd']:.1%} (n={d['n']})")
    else:
        lines += ["", "BERT with pre-trained weights: `bench export` has not run here (its SST-2 rows are that row)."]
    m = r["machine"]
    lines += ["", f"Measured {r['time'][:16]} on {m['cpu']} ({m['threads']} threads, torch {m['torch']}).", ""]
    return "\n".join(lines)
