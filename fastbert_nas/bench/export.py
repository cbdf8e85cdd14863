"""`fastbert-nas bench export`: exported students beside their teachers, timed side by side.

    for each task, FLOPs share and seed: RESULTS/exports/<task>-<NN>[-seed<K>]/ finished (its export.json),
    or exported now
    -> load every student back from its folder (what users get) and each task's teacher
    -> time them all at batch 1 in this one process, in rounds -> table, mean over seeds, goals
    -> RESULTS/benchmarks/export.*

The students' architectures come from one study (SST-2's by default: there are no CoLA or Amazon studies),
picked on the study's validation metric by `--pick "LOWER<flops<=SHARE"` (LOWER: the next smaller share
of the benchmark, so that each row is its own student; the smallest share from 0); `export --task T` distills each from
task T's own fine-tuned teacher. A missing or unfinished export folder is exported (resumed) here by
export.run_export with the same options as `fastbert-nas export --study S --pick "LOWER<flops<=SHARE" --task T
--budget B --kd-steps N --seed K --out RESULTS/exports/<task>-<NN>[-seed<K>]`; where the study's database is not
here (it is not committed), with `--again` the share's seed-0 export of the first task: its student and trial
recipe, as that export.json records them. A task with goals (SST-2)
is exported with --seeds seeds, 0 to N-1, the others with --other-seeds; the goals are judged on the mean
retention over a row's seeds.

Latency as cost.py measures it (cost.measure_latency: batch 1, REF_SEQ_LEN tokens, torch.utils.benchmark
median, the same thread count for every model), in --rounds rounds: each round times every task's
teacher and then that task's students once, so a stretch of machine noise hits teachers and students alike.
Each model gets min / median / max over the rounds; speed-up = teacher median / student median.
Dev metrics, retention and the teacher's dev metric are export.json's (the official dev set).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from transformers import AutoModelForSequenceClassification

from fastbert_nas.bench.common import check_report_name, machine, save_report, spread
from fastbert_nas.bench.export_report import GOAL_TASKS, check_goals, export_markdown, over_seeds
from fastbert_nas.bench.settings import (
    BENCH_EXPORT_BUDGET,
    BENCH_EXPORT_KD_STEPS,
    BENCH_EXPORT_OTHER_SEEDS,
    BENCH_EXPORT_ROUNDS,
    BENCH_EXPORT_SEEDS,
    BENCH_EXPORT_SHARES,
    BENCH_EXPORT_STUDY,
    BENCH_EXPORT_TASKS,
)
from fastbert_nas.config import BUDGETS, StudentArch, UserError, at_least, retention
from fastbert_nas.core.cost import REF_SEQ_LEN, count_flops, count_params, measure_latency
from fastbert_nas.core.tasks import resolve_task
from fastbert_nas.core.training import resolve_device, set_threads
from fastbert_nas.export.checkpoint import REPORT_FILE, differences
from fastbert_nas.export.plan import ExportOptions, chosen_trial, parse_pick, pick_text
from fastbert_nas.export.run import run_export
from fastbert_nas.report.remeasure import load_recorded_teacher
from fastbert_nas.report.rows import find_study
from fastbert_nas.search.baselines import parse_student

EXPORTS_DIR = "exports"                   # RESULTS/exports/<task>-<NN>/, NN = the share in percent
BENCH_FILE = "export"                     # RESULTS/benchmarks/export.json and export.md


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
    seeds: int = BENCH_EXPORT_SEEDS              # of each row of a task with goals
    other_seeds: int = BENCH_EXPORT_OTHER_SEEDS  # of each row of the other tasks
    hint_steps: int | None = None                # None: the budget's own
    students: tuple[tuple[float, str], ...] = ()  # (share, ARCH@HINTS): that share's student given, not picked
    chosen_by: str | None = None                 # how the given students were chosen (which split), for the report
    report: str = BENCH_FILE                     # RESULTS/benchmarks/<report>.*; another name: a variant

    @property
    def variant(self) -> str:
        """The export folders' suffix of this report (see variant_suffix)."""
        return variant_suffix(self.report)

    def given(self) -> dict[float, str]:
        """Share -> the ARCH@HINTS given for it by --student."""
        return dict(self.students)

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
        at_least(1, kd_steps=self.kd_steps, rounds=self.rounds, seeds=self.seeds, other_seeds=self.other_seeds)
        at_least(0, hint_steps=self.hint_steps)
        for share, text in self.students:
            parse_student(text, "--student")
            if share not in self.shares:
                raise UserError(f"--student {share:g}={text}: {share:g} is not one of --shares")
        if self.students and not self.chosen_by:
            raise UserError("--student needs --chosen-by: say how (on which split) the given students were chosen")
        check_report_name(self.report, "--report")
        return self

    def seeds_of(self, task: str) -> range:
        """The seeds a task's rows are exported with: --seeds for a task with goals, else --other-seeds."""
        return range(self.seeds if resolve_task(task).name in GOAL_TASKS else self.other_seeds)


def variant_suffix(report: str) -> str:
    """The export folders' suffix of a bench export report: 'export-given' -> '-given'; '' for the main one."""
    return "" if report == BENCH_FILE else "-" + report.removeprefix(BENCH_FILE + "-")


def parse_tasks(text: str) -> tuple[str, ...]:
    """'sst2,cola' -> ('sst2', 'cola')."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_given(texts: list[str] | None) -> tuple[tuple[float, str], ...]:
    """['0.1=L4-H160-A5-I448@1:2,2:3'] -> ((0.1, 'L4-H160-A5-I448@1:2,2:3'),)."""
    out = []
    for text in texts or ():
        share, sep, student = text.partition("=")
        try:
            out.append((float(share), student.strip()))
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--student {text!r}: expected SHARE=ARCH[@HINTS], "
                            "e.g. 0.1=L4-H160-A5-I448@1:2,2:3,3:5,4:6")
    return tuple(out)


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


def export_dir(results: Path, task: str, share: float, seed: int = 0, variant: str = "") -> Path:
    """RESULTS/exports/<task>-<NN>[<variant>][-seed<K>]: 0.25 -> sst2-25, 0.10 -> sst2-10, 0.05 -> sst2-05; seed 2
    of 0.25 -> sst2-25-seed2 (seed 0 has no suffix); a variant report's: sst2-10-given-seed2."""
    name = re.sub(r"[^\w.-]", "_", resolve_task(task).name)
    return Path(results) / EXPORTS_DIR / f"{name}-{share * 100:02g}{variant}{f'-seed{seed}' if seed else ''}"


def export_options(opts: ExportBenchOptions, task: str, share: float, seed: int, out: Path) -> ExportOptions:
    """The `fastbert-nas export` this benchmark row stands for: --pick in the study, or the --student given."""
    student = opts.given().get(share)
    source = {"student": student} if student else {"pick": pick_rule(share, opts.shares), "study": opts.study}
    return ExportOptions(out=out, **source, results=Path(opts.results), budget=opts.budget,
                         hint_steps=opts.hint_steps, kd_steps=opts.kd_steps, seed=seed, task=task,
                         data_dir=opts.data_dir, device=opts.device, threads=opts.threads)


# ---------------------------------------------------------------------------
# The exports

@dataclass
class Row:
    """One (task, share, seed): its export folder and export.json; how it was had (found or exported); its
    timings once measured."""

    task: str
    share: float
    seed: int
    folder: Path
    report: dict
    source: str
    figures: dict = field(default_factory=dict)


def expected(opts: ExportBenchOptions, task: str, share: float, seed: int, picked: tuple[int, str] | None = None
             ) -> dict:
    """What a row's export.json must say to be this benchmark's export; with `picked` (the trial the pick
    chooses in the study now, and its student), those too, so that an export of a study since re-made is
    not taken for one of this study."""
    kd = opts.kd_steps if opts.kd_steps is not None else BUDGETS[opts.budget]["kd_steps"]
    hint = opts.hint_steps if opts.hint_steps is not None else BUDGETS[opts.budget]["hint_steps"]
    given = share in opts.given()
    want = {"study": None if given else opts.study, "task": resolve_task(task).name,
            "pick": None if given else pick_rule(share, opts.shares), "budget": opts.budget, "hint_steps": hint,
            "kd_steps": kd, "seed": seed}
    if picked is not None:
        want |= {"trial": picked[0], "student": picked[1]}
    return want


def picks(opts: ExportBenchOptions, log: Callable[[str], None]) -> dict[float, tuple[int, str, Path | None]]:
    """Per share: (trial, student, None) as the pick chooses them in the study; where the study's database is
    not here (it is not committed), (trial, student, folder) of the share's seed-0 export of the first task,
    whose student the missing rows are exported again from (export --again); (None, student, None) for a share
    whose student --student gives (no study needed)."""
    first = opts.tasks[0]
    given = {share: (None, parse_student(text, "--student").name, None) for share, text in opts.students}
    studied = tuple(share for share in opts.shares if share not in given)
    if not studied:
        return given
    try:
        study = find_study(opts.study, None, opts.results)
    except UserError:
        folders = {share: export_dir(opts.results, first, share, 0, opts.variant) for share in studied}
        missing = [str(f) for f in folders.values() if not (f / REPORT_FILE).exists()]
        if missing:
            raise
        log(f"study {opts.study} not here: each share's student is taken from its seed-0 export "
            f"({', '.join(f.name for f in folders.values())}/export.json)")
        reports = {share: json.loads((f / REPORT_FILE).read_text()) for share, f in folders.items()}
        return given | {share: (r["trial"], r["name"], folders[share]) for share, r in reports.items()}
    # the pick depends on the share alone: one study serves every task and seed
    chosen = {share: chosen_trial(study, export_options(opts, first, share, 0, export_dir(opts.results, first, share)))
              for share in studied}
    return given | {share: (t.number, StudentArch.from_dict(t.user_attrs["arch"]).name, None)
                    for share, t in chosen.items()}


def found(report: dict, want: dict) -> dict:
    """The keys of `want` (expected's), from an export.json."""


    pick = parse_pick(report["pick"]) if report.get("pick") else None
    have = {"study": report["study"], "task": report["task"], "pick": pick_text(*pick) if pick else report.get("pick"),
            "budget": report["budget"], "hint_steps": report["config"]["hint_steps"],
            "kd_steps": report["config"]["kd_steps"], "seed": report["config"]["seed"],
            "trial": report["trial"], "student": report["name"]}
    return {k: have[k] for k in want}


def read_export(folder: Path, want: dict) -> dict:
    """A finished export's export.json; UserError when it is another export than this benchmark asks for."""
    report = json.loads((folder / REPORT_FILE).read_text())
    changed = differences(found(report, want), want)
    if changed:
        raise UserError(f"{folder} holds another export than this benchmark's ({'; '.join(changed)}, as "
                        "'found -> wanted'): remove the folder to export it again, or give the matching options")
    return report


def gather_exports(opts: ExportBenchOptions, log: Callable[[str], None] = print) -> list[Row]:
    """Every (task, share, seed) row's finished export, exporting (or resuming) the ones missing: seed 0 of
    every share first, so that an interrupted benchmark has whole tables of seeds. Rows in (task, share, seed)
    order."""
    rows: list[Row] = []
    picked = picks(opts, log)
    for task in opts.tasks:
        for seed in opts.seeds_of(task):
            for share in opts.shares:
                folder = export_dir(opts.results, task, share, seed, opts.variant)
                trial, student, again = picked[share]
                want = expected(opts, task, share, seed, (trial, student))
                if (folder / REPORT_FILE).exists():
                    rows.append(Row(task, share, seed, folder, read_export(folder, want), "found"))
                    continue
                what = opts.given().get(share) or pick_rule(share, opts.shares)
                log(f"exporting {what} for {task}, seed {seed}, into {folder}/ ...")
                export = export_options(opts, task, share, seed, folder)
                run_export(export if again is None else replace(export, pick=None, again=again), log=log)
                rows.append(Row(task, share, seed, folder, read_export(folder, want), "exported"))
    return sorted(rows, key=lambda r: (opts.tasks.index(r.task), opts.shares.index(r.share), r.seed))


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
        "task": r["task"], "share_limit": row.share, "seed": row.seed,
        "pick": r["pick"] or (f"trial {r['trial']}" if r["trial"] is not None else "--student"),
        "trial": r["trial"],
        "student": r["name"], "hints": r["hints"], "export_dir": str(row.folder), "source": row.source,
        "budget": r["budget"], "hint_steps": r["distill"]["hint_steps"], "kd_steps": r["distill"]["kd_steps"],
        "batch_size": r["config"]["batch_size"], "examples_used": r["examples_used"],
        "distill_minutes": r["distill_minutes"], "teacher_id": r["teacher"]["id"],
        "teacher_fingerprint": r["teacher"]["fingerprint"],
        "metric": r["metric"], "dev": r["dev"], "val": r["val"], "teacher_dev": r["teacher"]["dev"],
        "retention": retention(r["dev"]["metric"], r["teacher"]["dev"]["metric"]),
        "params": s_params, "teacher_params": t_params, "params_share": s_params / t_params,
        "task_len": task_len, "flops": s_flops, "teacher_flops": t_flops, "flops_share": s_flops / t_flops,
        "flops_ref_len": s_ref, "teacher_flops_ref_len": t_ref, "flops_share_ref_len": s_ref / t_ref,
        "latency_ms": latency, "teacher_latency_ms": teacher_latency,
        "speedup_b1": teacher_latency["median"] / latency["median"],
    }


def has_weights(folder: Path) -> bool:
    """Whether an export folder holds its model's weights (export.json and the card are committed, they are not)."""
    return any(Path(folder).glob("*.safetensors"))


def loaded_folders(rows: list[Row]) -> dict[str, str]:
    """Row folder -> the folder its student is loaded from for timing and costs: its own where its weights are
    here, else that of another seed of the same student (weights are not committed: a fresh machine holds
    only the exports it made; latency and costs depend on the shape alone). UserError when no seed has them."""
    own = {str(r.folder) for r in rows if has_weights(r.folder)}
    with_weights = {}
    for r in rows:
        if str(r.folder) in own:
            with_weights.setdefault(r.report["name"], str(r.folder))
    missing = sorted({str(r.folder) for r in rows if r.report["name"] not in with_weights})
    if missing:
        raise UserError(f"no model weights for {', '.join(missing)} nor another seed of its student on this "
                        "machine (export.json only): remove the folder to export it again")
    return {str(r.folder): str(r.folder) if str(r.folder) in own else with_weights[r.report["name"]] for r in rows}


def measure(rows: list[Row], opts: ExportBenchOptions, log: Callable[[str], None] = print) -> dict:
    """Load every student from its folder and each task's teacher, time them side by side, fill row.figures.
    Returns the timing setup."""
    device, threads = resolve_device(opts.device), set_threads(opts.threads)
    models, groups, timed_as = {}, [], {}  # timed_as: row folder -> the folder its student is loaded from
    for task in dict.fromkeys(r.task for r in rows):
        task_rows = [r for r in rows if r.task == task]
        teacher_key = f"teacher {task}"
        models[teacher_key] = load_teacher(task_rows[0].report, opts.results).to(device).eval()
        timed_as |= loaded_folders(task_rows)
        students = list(dict.fromkeys(timed_as[str(r.folder)] for r in task_rows))
        for key in students:
            models[key] = AutoModelForSequenceClassification.from_pretrained(key).to(device).eval()
        groups.append((teacher_key, students))
    log(f"timing {len(models)} models side by side on {device}, threads {threads}, batch 1, {REF_SEQ_LEN} tokens, "
        f"{opts.rounds} rounds ...")
    timings = time_side_by_side(groups, models, opts.rounds, threads, log)
    for r in rows:
        teacher_key = f"teacher {r.task}"
        key = timed_as[str(r.folder)]
        r.figures = row_figures(r, models[key], models[teacher_key], timings[key], timings[teacher_key])
        r.figures["timed_from"] = key
    return {"device": str(device), "threads": threads, "batch": 1, "seq_len": REF_SEQ_LEN, "rounds": opts.rounds}


# ---------------------------------------------------------------------------
# The report

def bench_export(opts: ExportBenchOptions, log: Callable[[str], None] = print) -> dict:
    """Gather (or make) the exports, time them beside their teachers, write RESULTS/benchmarks/export.*"""
    opts.check()
    rows = gather_exports(opts, log)
    timing = measure(rows, opts, log)
    figures = [r.figures for r in rows]
    means = over_seeds(figures)
    report = {
        "study": opts.study, "tasks": list(opts.tasks), "shares": list(opts.shares), "budget": opts.budget,
        "kd_steps": opts.kd_steps, "hint_steps": opts.hint_steps, "seeds": opts.seeds,
        "other_seeds": opts.other_seeds, "report": opts.report,
        "students": {f"{share:g}": text for share, text in opts.students}, "chosen_by": opts.chosen_by,
        "timing": timing,
        "rows": figures, "over_seeds": means, "goals": check_goals(means),
        "flops_unit": "FLOPs, 2 per multiply-add, batch 1, 128 tokens", "machine": machine(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return save_report(report, opts.results, opts.report, export_markdown)
