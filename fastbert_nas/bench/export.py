"""`fastbert-nas bench export`: exported students beside their teachers, timed side by side.

    for each task and FLOPs share: RESULTS/exports/<task>-<NN>/ finished (its export.json), or exported now
    -> load every student back from its folder (what users get) and each task's teacher
    -> time them all at batch 1 in this one process, in rounds -> table, goals -> RESULTS/benchmarks/export.*

The students' architectures come from one study (SST-2's by default: there are no CoLA or Amazon studies),
picked on the study's validation metric by `--pick "LOWER<flops<=SHARE"` (LOWER: the next smaller share
of the benchmark, so that each row is its own student; the smallest share from 0); `export --task T` distills each from
task T's own fine-tuned teacher. A missing or unfinished export folder is exported (resumed) here by
export.run_export with the same options as `fastbert-nas export --study S --pick "LOWER<flops<=SHARE" --task T
--budget B --kd-steps N --out RESULTS/exports/<task>-<NN>`.

Latency as cost.py measures it (cost.measure_latency: batch 1, REF_SEQ_LEN tokens, torch.utils.benchmark
median, the same thread count for every model), in --rounds rounds: each round times every task's
teacher and then that task's students once, so a stretch of machine noise hits teachers and students alike.
Each model gets min / median / max over the rounds; speed-up = teacher median / student median.
Dev metrics, retention and the teacher's dev metric are export.json's (the official dev set).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from transformers import AutoModelForSequenceClassification

from fastbert_nas.bench.common import machine, save_report, spread
from fastbert_nas.config import (
    BENCH_EXPORT_BUDGET,
    BENCH_EXPORT_KD_STEPS,
    BENCH_EXPORT_ROUNDS,
    BENCH_EXPORT_SHARES,
    BENCH_EXPORT_STUDY,
    BENCH_EXPORT_TASKS,
    BUDGETS,
    UserError,
    at_least,
    retention,
)
from fastbert_nas.core.cost import REF_SEQ_LEN, count_flops, count_params, measure_latency
from fastbert_nas.core.tasks import resolve_task
from fastbert_nas.core.training import resolve_device, set_threads
from fastbert_nas.export.checkpoint import REPORT_FILE, differences
from fastbert_nas.export.plan import ExportOptions, parse_pick, pick_text
from fastbert_nas.export.run import run_export
from fastbert_nas.report.remeasure import load_recorded_teacher

EXPORTS_DIR = "exports"                   # RESULTS/exports/<task>-<NN>/, NN = the share in percent
BENCH_FILE = "export"                     # RESULTS/benchmarks/export.json and export.md
# The goals, as (task, largest FLOPs share of the teacher, least dev retention); other tasks: as measured.
GOALS = (("sst2", 0.25, 0.98), ("sst2", 0.10, 0.95))
TASK_TITLES = {"sst2": "SST-2", "cola": "CoLA", "amazon": "Amazon"}


@dataclass(frozen=True)
class ExportBenchOptions:
    """What `fastbert-nas bench export` takes; field names are its option names."""

    study: str = BENCH_EXPORT_STUDY
    tasks: tuple[str, ...] = BENCH_EXPORT_TASKS
    shares: tuple[float, ...] = BENCH_EXPORT_SHARES
    budget: str = BENCH_EXPORT_BUDGET
    kd_steps: int | None = BENCH_EXPORT_KD_STEPS   # None: the budget's own
    data_dir: str | None = None
    results: Path = Path("results")
    threads: int | None = None
    device: str = "auto"
    rounds: int = BENCH_EXPORT_ROUNDS

    def check(self) -> "ExportBenchOptions":
        """Refuse bad options before anything is loaded or exported."""
        if not self.tasks or not self.shares:
            raise UserError("--tasks and --shares need at least one value each")
        for task in self.tasks:
            resolve_task(task)
        for share in self.shares:
            if not share > 0:
                raise UserError(f"--shares: {share:g} is not a positive share of the teacher's FLOPs")
        if self.budget not in BUDGETS:
            raise UserError(f"--budget {self.budget!r}: unknown; choose one of {', '.join(BUDGETS)}")
        at_least(1, kd_steps=self.kd_steps, rounds=self.rounds)
        return self


def parse_tasks(text: str) -> tuple[str, ...]:
    """'sst2,cola' -> ('sst2', 'cola')."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_shares(text: str) -> tuple[float, ...]:
    """'0.25,0.10' -> (0.25, 0.1)."""
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--shares {text!r}: expected shares of the teacher's FLOPs, e.g. 0.25,0.10") from None


def pick_rule(share: float, shares: tuple[float, ...] = ()) -> str:
    """The --pick of a share's row: the best student above the next smaller share of `shares` and at most
    this one ('0.1<flops<=0.25'), so that each row is its own student; the smallest share from 0."""
    return pick_text("flops", share, max((s for s in shares if s < share), default=0.0))


def export_dir(results: Path, task: str, share: float) -> Path:
    """RESULTS/exports/<task>-<NN>: 0.25 -> sst2-25, 0.10 -> sst2-10, 0.05 -> sst2-05."""
    name = re.sub(r"[^\w.-]", "_", resolve_task(task).name)
    return Path(results) / EXPORTS_DIR / f"{name}-{share * 100:02g}"


def export_options(opts: ExportBenchOptions, task: str, share: float, out: Path) -> ExportOptions:
    """The `fastbert-nas export` this benchmark row stands for."""
    return ExportOptions(out=out, pick=pick_rule(share, opts.shares), study=opts.study, results=Path(opts.results),
                         budget=opts.budget, kd_steps=opts.kd_steps, task=task, data_dir=opts.data_dir,
                         device=opts.device, threads=opts.threads)


# ---------------------------------------------------------------------------
# The exports

@dataclass
class Row:
    """One (task, share): its export folder and export.json; how it was had (found or exported); its
    timings once measured."""

    task: str
    share: float
    folder: Path
    report: dict
    source: str
    figures: dict = field(default_factory=dict)


def expected(opts: ExportBenchOptions, task: str, share: float) -> dict:
    """What a row's export.json must say to be this benchmark's export."""
    kd = opts.kd_steps if opts.kd_steps is not None else BUDGETS[opts.budget]["kd_steps"]
    return {"study": opts.study, "task": resolve_task(task).name, "pick": pick_rule(share, opts.shares), "budget": opts.budget,
            "kd_steps": kd}


def found(report: dict) -> dict:
    """The same keys as `expected`, from an export.json."""
    pick = parse_pick(report["pick"]) if report.get("pick") else None
    return {"study": report["study"], "task": report["task"],
            "pick": pick_text(*pick) if pick else report.get("pick"),
            "budget": report["budget"], "kd_steps": report["config"]["kd_steps"]}


def read_export(folder: Path, want: dict) -> dict:
    """A finished export's export.json; UserError when it is another export than this benchmark asks for."""
    report = json.loads((folder / REPORT_FILE).read_text())
    changed = differences(found(report), want)
    if changed:
        raise UserError(f"{folder} holds another export than this benchmark's ({'; '.join(changed)}, as "
                        "'found -> wanted'): remove the folder to export it again, or give the matching options")
    return report


def gather_exports(opts: ExportBenchOptions, log: Callable[[str], None] = print) -> list[Row]:
    """Every (task, share) row's finished export, exporting (or resuming) the ones missing."""
    rows: list[Row] = []
    for task in opts.tasks:
        for share in opts.shares:
            folder, want = export_dir(opts.results, task, share), expected(opts, task, share)
            if (folder / REPORT_FILE).exists():
                rows.append(Row(task, share, folder, read_export(folder, want), "found"))
                continue
            xopts = export_options(opts, task, share, folder)
            log(f"exporting {pick_rule(share, opts.shares)} for {task} into {folder}/ ...")
            run_export(xopts, log=log)
            rows.append(Row(task, share, folder, read_export(folder, want), "exported"))
    return rows


# ---------------------------------------------------------------------------
# Side-by-side timing

def load_teacher(report: dict, results: Path):
    """The row's teacher as export.json records it (the cached one under RESULTS/teachers/<task>)."""
    return load_recorded_teacher(report["teacher"]["id"], report["task"], results,
                                 AutoModelForSequenceClassification.from_pretrained,
                                 f"cannot load the {report['task']} teacher of {report['name']}")


def time_side_by_side(groups: list[tuple[str, list[str]]], models: dict, rounds: int, threads: int,
                      log: Callable[[str], None] = print) -> dict[str, dict]:
    """Batch-1 latency of every model, `rounds` times each: per round, each group's teacher then its students.

    groups: (teacher key, [student keys]); models: key -> model on the timing device.
    Returns key -> spread (min, median, max, n) of the rounds' medians in ms."""
    order = [key for teacher, students in groups for key in (teacher, *students)]
    samples: dict[str, list[float]] = {key: [] for key in order}
    for i in range(rounds):
        for key in order:
            samples[key].append(measure_latency(models[key], 1, REF_SEQ_LEN, threads)["median_ms"])
        log(f"timing round {i + 1}/{rounds}: " + ", ".join(f"{Path(k).name} {v[-1]:.2f} ms"
                                                          for k, v in samples.items()))
    return {key: spread(values) for key, values in samples.items()}



def row_figures(row: Row, student, teacher, latency: dict, teacher_latency: dict) -> dict:
    """The benchmark's figures of one row: export.json's dev figures, costs of the loaded models, timings."""
    r = row.report
    s_params, t_params = count_params(student)["total"], count_params(teacher)["total"]
    task_len = r["max_len"]  # the length the study, its --pick and the goals measure FLOPs at
    s_flops, t_flops = count_flops(student, task_len), count_flops(teacher, task_len)
    s_ref, t_ref = count_flops(student), count_flops(teacher)  # at REF_SEQ_LEN, as published figures are
    return {
        "task": r["task"], "share_limit": row.share, "pick": r["pick"] or f"trial {r['trial']}", "trial": r["trial"],
        "student": r["name"], "hints": r["hints"], "export_dir": str(row.folder), "source": row.source,
        "budget": r["budget"], "hint_steps": r["distill"]["hint_steps"], "kd_steps": r["distill"]["kd_steps"],
        "batch_size": r["config"]["batch_size"], "examples_used": r["examples_used"],
        "distill_minutes": r["distill_minutes"], "teacher_id": r["teacher"]["id"],
        "teacher_fingerprint": r["teacher"]["fingerprint"],
        "metric": r["metric"], "dev": r["dev"], "teacher_dev": r["teacher"]["dev"],
        "retention": retention(r["dev"]["metric"], r["teacher"]["dev"]["metric"]),
        "params": s_params, "teacher_params": t_params, "params_share": s_params / t_params,
        "task_len": task_len, "flops": s_flops, "teacher_flops": t_flops, "flops_share": s_flops / t_flops,
        "flops_ref_len": s_ref, "teacher_flops_ref_len": t_ref, "flops_share_ref_len": s_ref / t_ref,
        "latency_ms": latency, "teacher_latency_ms": teacher_latency,
        "speedup_b1": teacher_latency["median"] / latency["median"],
    }


def measure(rows: list[Row], opts: ExportBenchOptions, log: Callable[[str], None] = print) -> dict:
    """Load every student from its folder and each task's teacher, time them side by side, fill row.figures.
    Returns the timing setup."""
    device, threads = resolve_device(opts.device), set_threads(opts.threads)
    models, groups = {}, []
    for task in dict.fromkeys(r.task for r in rows):
        task_rows = [r for r in rows if r.task == task]
        teacher_key = f"teacher {task}"
        models[teacher_key] = load_teacher(task_rows[0].report, opts.results).to(device).eval()
        students = list(dict.fromkeys(str(r.folder) for r in task_rows))
        for key in students:
            models[key] = AutoModelForSequenceClassification.from_pretrained(key).to(device).eval()
        groups.append((teacher_key, students))
    log(f"timing {len(models)} models side by side on {device}, threads {threads}, batch 1, {REF_SEQ_LEN} tokens, "
        f"{opts.rounds} rounds ...")
    timings = time_side_by_side(groups, models, opts.rounds, threads, log)
    for r in rows:
        teacher_key = f"teacher {r.task}"
        r.figures = row_figures(r, models[str(r.folder)], models[teacher_key], timings[str(r.folder)],
                                timings[teacher_key])
    return {"device": str(device), "threads": threads, "batch": 1, "seq_len": REF_SEQ_LEN, "rounds": opts.rounds}


# ---------------------------------------------------------------------------
# Goals and the report

def check_goals(figures: list[dict]) -> list[dict]:
    """Each goal of a task in the benchmark: the row with the best retention within its FLOPs share."""
    out = []
    for task, share, least in GOALS:
        if not any(f["task"] == task for f in figures):
            continue
        fits = [f for f in figures if f["task"] == task and f["flops_share"] <= share and f["retention"] is not None]
        best = max(fits, key=lambda f: f["retention"], default=None)
        out.append({"task": task, "flops_share_at_most": share, "retention_at_least": least,
                    "met": best is not None and best["retention"] >= least,
                    "trial": best and best["trial"], "student": best and best["student"],
                    "retention": best and best["retention"], "flops_share": best and best["flops_share"]})
    return out


def bench_export(opts: ExportBenchOptions, log: Callable[[str], None] = print) -> dict:
    """Gather (or make) the exports, time them beside their teachers, write RESULTS/benchmarks/export.*"""
    opts.check()
    rows = gather_exports(opts, log)
    timing = measure(rows, opts, log)
    figures = [r.figures for r in rows]
    report = {
        "study": opts.study, "tasks": list(opts.tasks), "shares": list(opts.shares), "budget": opts.budget,
        "kd_steps": opts.kd_steps, "timing": timing, "rows": figures, "goals": check_goals(figures),
        "flops_unit": "FLOPs, 2 per multiply-add, batch 1, 128 tokens", "machine": machine(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return save_report(report, opts.results, BENCH_FILE, export_markdown)


def _limit(share: float) -> str:
    return f"{share * 100:g}%"


def _ms(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def export_markdown(r: dict) -> str:
    """The export benchmark as Markdown: the table, the goals, Amazon's (and custom tasks') extra metrics."""
    m, t = r["machine"], r["timing"]
    title = lambda task: TASK_TITLES.get(task, task)  # noqa: E731
    steps = sorted({(f["budget"], f["hint_steps"], f["kd_steps"], f["batch_size"]) for f in r["rows"]})
    budgets = "; ".join(f"`{b}` budget, {h:,} hint + {k:,} KD steps of {bs} examples" for b, h, k, bs in steps)
    lines = [
        f"# Export benchmark: students of `{r['study']}` distilled for {', '.join(map(title, r['tasks']))}", "",
        f"Measured {r['time']} on {m['cpu']}{', ' + m['cuda'] if m['cuda'] else ''}, torch {m['torch']}. "
        "Students: the architecture, hints and settings of the study's trial picked by `--pick` (the best "
        "validation metric in the study within that band of the teacher's FLOPs: above the next smaller share "
        "of the benchmark, so that each row is its own student), "
        f"distilled again from each task's own fine-tuned teacher ({budgets}). Dev metrics are on each task's "
        "official dev set (export.json); retention = student dev metric / teacher dev metric. "
        "Chosen on the validation split (the study's trials and `--pick`); reported on the official dev set, "
        "which chose nothing.", "",
        "FLOPs count 2 per multiply-add, batch 1, at the task's length (its --max-len: what the study's `--pick` "
        f"and the goals use) and at {t['seq_len']} tokens in the column beside. "
        f"Latency: batch 1, {t['seq_len']} tokens, "
        f"{t['device']}, threads {t['threads']}, the median of torch.utils.benchmark; every student (loaded back "
        f"from its folder with from_pretrained) and its teacher timed in one process, in {t['rounds']} rounds of "
        "each task's teacher then its students: median (min-max) over the rounds. Speed-up = teacher median / "
        "student median.", "",
        "| task | FLOPs limit | trial | student | hints | dev metric | teacher | retention | params (M) | GFLOPs "
        f"at the task's length (% of teacher) | GFLOPs at {t['seq_len']} tokens | latency b1 ms, student | teacher "
        "| speed-up b1 | budget (hint + KD steps) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in r["rows"]:
        ret = f"{f['retention']:.1%}" if f["retention"] is not None else "-"
        lines.append(
            f"| {title(f['task'])} | {_limit(f['share_limit'])} | {f['trial']} | {f['student']} | {f['hints']} | "
            f"{f['metric']} {f['dev']['metric']:.4f} | {f['teacher_dev']['metric']:.4f} | {ret} | "
            f"{f['params'] / 1e6:.2f} | {f['flops'] / 1e9:.3f} at {f.get('task_len', 128)} ({f['flops_share']:.1%}) | "
            + (f"{f['flops_ref_len'] / 1e9:.3f} ({f['flops_share_ref_len']:.1%}) | "
               if "flops_ref_len" in f else "- | ")
            + f"{_ms(f['latency_ms'])} | "
            f"{_ms(f['teacher_latency_ms'])} | {f['speedup_b1']:.2f}x | {f['budget']} "
            f"({f['hint_steps']:,} + {f['kd_steps']:,}) |")
    teachers = {f["task"]: f for f in r["rows"]}
    weights = {task: ", ".join(dict.fromkeys(f["teacher_fingerprint"] for f in r["rows"] if f["task"] == task))
               for task in teachers}  # more than one: the task's exports were distilled from different teachers
    lines += ["", "Teachers: " + "; ".join(
        f"{title(task)} `{f['teacher_id']}` (weights {weights[task]}), {f['teacher_params'] / 1e6:.2f} M params, "
        f"{f['teacher_flops'] / 1e9:.3f} GFLOPs at {f.get('task_len', 128)} tokens" for task, f in teachers.items()) + ".", ""]
    if r["goals"]:
        lines += ["## Goals", ""]
        for g in r["goals"]:
            head = (f"{title(g['task'])}, at least {g['retention_at_least']:.0%} retention with at most "
                    f"{g['flops_share_at_most']:.0%} of the teacher's FLOPs: ")
            if g["trial"] is None:
                lines.append(f"- {head}**not met**: no student in the benchmark is within that share.")
            else:
                lines.append(f"- {head}**{'met' if g['met'] else 'not met'}**: the best within it, trial "
                             f"{g['trial']} {g['student']} ({g['flops_share']:.1%} of the FLOPs), retains "
                             f"{g['retention']:.1%}.")
        others = [task for task in r["tasks"] if task not in {g["task"] for g in r["goals"]}]
        if others:
            lines.append(f"- {', '.join(map(title, others))}: no goal; as measured above.")
        lines.append("")
    extra = [f for f in r["rows"] if {"macro_f1", "majority"} <= f["dev"].keys()]
    if extra:
        lines += ["## Macro-F1 and the majority-class baseline", "",
                  "The dev sets below are unbalanced: accuracy is shown beside macro-F1 and the accuracy of always "
                  "predicting the most frequent class.", "",
                  "| task | FLOPs limit | trial | student | accuracy | macro-F1 | teacher accuracy | teacher "
                  "macro-F1 | majority baseline |", "|---|---|---|---|---|---|---|---|---|"]
        for f in extra:
            d, td = f["dev"], f["teacher_dev"]
            lines.append(f"| {title(f['task'])} | {_limit(f['share_limit'])} | {f['trial']} | {f['student']} | "
                         f"{d.get('accuracy', d['metric']):.4f} | {d['macro_f1']:.4f} | "
                         f"{td.get('accuracy', td['metric']):.4f} | {td.get('macro_f1', float('nan')):.4f} | "
                         f"{d['majority']:.4f} |")
        lines.append("")
    folders = dict.fromkeys(f["export_dir"] for f in r["rows"])
    lines += ["Exports: " + ", ".join(f"`{d}`" for d in folders) + " (export.json and README.md in each).", ""]
    return "\n".join(lines)
