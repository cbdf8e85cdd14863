"""`fastbert-nas bench deploy`: the export benchmark's students and their teachers in every runtime.

    for each task and share: RESULTS/exports/<task>-<NN>[<variant>]/ (seed 0, as `bench export` leaves it; a
    variant report's folders with --exports) and its teacher
    -> each model saved, exported to ONNX and quantized to int8 in a temporary folder (export/quantized.py)
    -> scored in every runtime on the validation split and on dev: int8's accuracy is measured, never assumed
    -> timed side by side, every model in every runtime, --rounds rounds, batch 1 at the task's length
    -> what timing in ONNX Runtime costs a search: runtime.latency of each student's shape (random weights),
       per runtime, as a trial times it, against the median wall time of the study's trials
    -> RESULTS/benchmarks/deploy[<variant>].json and .md, with the goals judged here and the CPU's flags

A missing export is listed, not made: `bench export` makes them (hours on a CPU).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from optuna.trial import TrialState
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fastbert_nas.bench.common import check_report_name, machine, save_report
from fastbert_nas.bench.export import BENCH_FILE as EXPORT_REPORT
from fastbert_nas.bench.export import EXPORTS_DIR, export_dir, load_teacher, variant_suffix
from fastbert_nas.bench.export_report import TASK_TITLES
from fastbert_nas.bench.settings import BENCH_EXPORT_ROUNDS, BENCH_EXPORT_SHARES, BENCH_EXPORT_STUDY, BENCH_EXPORT_TASKS
from fastbert_nas.config import StudentArch, UserError, at_least
from fastbert_nas.core import runtime
from fastbert_nas.core.backends import TORCH_FP32, Runtime
from fastbert_nas.core.student import student_config
from fastbert_nas.core.tasks import encode_for, load_task, resolve_task
from fastbert_nas.core.training import set_threads
from fastbert_nas.export.checkpoint import REPORT_FILE
from fastbert_nas.export.quantized import DEPLOY_RUNTIMES, against_teacher, scores, side_by_side
from fastbert_nas.report.rows import find_study
from fastbert_nas.search.objective import TRIAL_LATENCY_RUN_S

BENCH_FILE = "deploy"
INT8 = DEPLOY_RUNTIMES[2].label
# Goals (SST-2, batch 1, the task's length): share -> (least speed-up of the int8 student over the PyTorch fp32
# teacher, largest dev drop from the student's own PyTorch fp32 figure, in metric units)
SPEED_GOALS = {0.25: (10.0, 0.005), 0.10: (25.0, 0.01)}
GOAL_TASK = "sst2"
INT8_SIZE_GOAL = (0.10, 8.0)          # (share, MB): the <= 10% student's int8 file on disk at most
SEARCH_OVERHEAD_GOAL = 0.10           # extra wall time per trial of timing in ONNX Runtime int8, at most


@dataclass(frozen=True)
class DeployBenchOptions:
    """What `fastbert-nas bench deploy` takes; field names are its option names."""

    tasks: tuple[str, ...] = BENCH_EXPORT_TASKS
    shares: tuple[float, ...] = BENCH_EXPORT_SHARES
    study: str = BENCH_EXPORT_STUDY   # whose trials' wall time the search overhead is measured against
    trial_overhead: bool = True       # measure the search overhead (needs the study); False: left unmeasured
    exports: str = EXPORT_REPORT      # the bench export report whose export folders are measured
    data_dir: str | None = None
    results: Path = Path("results")
    threads: int | None = None
    rounds: int = BENCH_EXPORT_ROUNDS

    def check(self) -> "DeployBenchOptions":
        for task in self.tasks:
            resolve_task(task)
        at_least(1, rounds=self.rounds)
        check_report_name(self.exports, "--exports")
        Runtime("onnxruntime", "int8").check()
        return self

    @property
    def report(self) -> str:
        """The report's name: deploy for the main exports, deploy-given for export-given's."""
        return BENCH_FILE + variant_suffix(self.exports)


def found_exports(opts: DeployBenchOptions) -> tuple[list[tuple[str, float, Path]], list[str]]:
    """(task, share, folder) of each finished seed-0 export, and the folders missing."""
    have, missing = [], []
    for task in opts.tasks:
        for share in opts.shares:
            folder = export_dir(opts.results, task, share, variant=variant_suffix(opts.exports))
            (have.append((task, share, folder)) if (folder / REPORT_FILE).exists() else missing.append(str(folder)))
    return have, missing


def staged(model, folder: Path):
    """`model` saved (model.safetensors: its size on disk), exported to ONNX and quantized in `folder`."""
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    runtime.onnx_files(model, folder, "int8")
    return model, folder


def search_overhead(archs: list[tuple[str, StudentArch]], teacher_configs: dict, threads: int,
                    trial_s: float) -> dict:
    """Seconds a trial spends timing its student in each runtime (export and quantization included), for each
    (task, student shape) of `archs`, built from that task's teacher config and timed at its length, and the
    median extra share of a trial's wall time `trial_s` over PyTorch fp32."""
    seconds = {}
    for task, arch in archs:
        seq_len = resolve_task(task).max_len
        model = AutoModelForSequenceClassification.from_config(student_config(arch, teacher_configs[task]))
        for rt in DEPLOY_RUNTIMES:
            start = time.perf_counter()
            runtime.latency(model, rt, 1, seq_len, threads=threads, min_run_time=TRIAL_LATENCY_RUN_S)
            seconds.setdefault(rt.label, []).append(time.perf_counter() - start)
    torch_s = statistics.median(seconds[TORCH_FP32.label])
    return {"seconds": seconds, "trial_wall_s": trial_s,
            "extra_share": {label: (statistics.median(s) - torch_s) / trial_s for label, s in seconds.items()}}


def trial_wall_s(study_name: str, results: Path) -> float:
    """Median wall time of the study's completed rung-0 trials: what a trial costs today."""
    study = find_study(study_name, None, results)
    walls = [t.user_attrs["wall_s"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if "wall_s" in t.user_attrs and not t.user_attrs.get("rung")]
    if not walls:
        raise UserError(f"--study {study_name}: no completed trial to compare a trial's latency timing with")
    return statistics.median(walls)


def goals(rows: list[dict], overhead: dict) -> list[dict]:
    """Each goal with its measured figure and whether it is met (None: its row was not measured)."""
    out = []
    for share, (speedup, drop) in SPEED_GOALS.items():
        row = next((r for r in rows if r["task"] == GOAL_TASK and r["share"] == share), None)
        s = row["runtimes"][INT8] if row else None
        fp32 = row["runtimes"][TORCH_FP32.label]["dev"]["metric"] if row else None
        out.append({"goal": f"{GOAL_TASK} <= {share:.0%} student, int8 ONNX: >= {speedup:g}x the PyTorch fp32 "
                            f"teacher, dev within {drop * 100:g} point{'s' if drop != 0.01 else ''} of its fp32 figure",
                    "speedup": s["speedup_vs_teacher_pytorch_fp32"] if s else None,
                    "dev_change": s["dev"]["metric"] - fp32 if s else None,
                    "met": (s["speedup_vs_teacher_pytorch_fp32"] >= speedup and fp32 - s["dev"]["metric"] <= drop)
                    if s else None})
    share, mb = INT8_SIZE_GOAL
    row = next((r for r in rows if r["task"] == GOAL_TASK and r["share"] == share), None)
    size = row["runtimes"][INT8]["size_mb"] if row else None
    out.append({"goal": f"{GOAL_TASK} <= {share:.0%} student's int8 model <= {mb:g} MB", "size_mb": size,
                "met": size <= mb if row else None})
    extra = overhead["extra_share"][INT8] if overhead else None
    out.append({"goal": f"search timed in ONNX Runtime int8: <= {SEARCH_OVERHEAD_GOAL:.0%} more wall time per trial",
                "extra_share": extra, "met": extra <= SEARCH_OVERHEAD_GOAL if extra is not None else None})
    return out


def bench_deploy(opts: DeployBenchOptions, log: Callable[[str], None] = print) -> dict:
    """Stage, score and time every found export and its teacher; RESULTS/benchmarks/deploy.*"""
    opts.check()
    threads = set_threads(opts.threads)
    # before the work: a missing study is refused at once
    trial_s = trial_wall_s(opts.study, opts.results) if opts.trial_overhead else None
    have, missing = found_exports(opts)
    for folder in missing:
        log(f"note: no finished export in {folder}/ (bench export makes it): left out")
    rows, models, teachers, data, archs = [], {}, {}, {}, []
    with tempfile.TemporaryDirectory(prefix="fastbert-nas-deploy-") as tmp:
        for task, share, folder in have:
            spec = resolve_task(task)
            report = json.loads((folder / REPORT_FILE).read_text())
            archs.append((task, StudentArch.from_dict(report["arch"])))
            if task not in data:
                data[task] = load_task(spec, opts.data_dir)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            splits = {name: encode_for(spec, getattr(data[task], name), tokenizer) for name in ("val", "dev")}
            if task not in teachers:
                teacher = load_teacher(report, opts.results).eval()
                teachers[task] = staged(teacher, Path(tmp) / f"teacher-{task}")
                log(f"scoring the {task} teacher in {', '.join(rt.label for rt in DEPLOY_RUNTIMES)} ...")
                rows.append({"task": task, "share": None, "model": f"teacher {task}", "folder": report["teacher"]["id"],
                             "scores": scores(teacher, teachers[task][1], spec, splits, threads)})
            student = AutoModelForSequenceClassification.from_pretrained(folder).eval()
            models[str(folder)] = staged(student, Path(tmp) / folder.name)
            log(f"scoring {folder.name} ({report['name']}) ...")
            rows.append({"task": task, "share": share, "model": report["name"], "folder": str(folder),
                         "seq_len": spec.max_len, "scores": scores(student, models[str(folder)][1], spec, splits,
                                                                     threads)})
        timed = {}
        for task in dict.fromkeys(t for t, _, _ in have):  # each task at its own length, teacher first
            group = {f"teacher {task}": teachers[task], **{str(f): models[str(f)] for t, _, f in have if t == task}}
            log(f"timing {task}: {len(group)} models x {len(DEPLOY_RUNTIMES)} runtimes, {opts.rounds} rounds ...")
            timed.update(side_by_side(group, threads, resolve_task(task).max_len, opts.rounds, log))
    for r in rows:
        key = r["folder"] if r["share"] is not None else r["model"]
        r["runtimes"] = against_teacher(timed[key], timed[f"teacher {r['task']}"], r.pop("scores"))
    overhead = None
    if have and opts.trial_overhead:
        log(f"timing {len(archs)} students' shapes as a trial does, in every runtime ...")
        overhead = search_overhead(archs, {task: teacher.config for task, (teacher, _) in teachers.items()}, threads,
                                   trial_s)
    report = {"study": opts.study if opts.trial_overhead else None, "exports": opts.exports,
              "tasks": list(opts.tasks), "shares": list(opts.shares), "rounds": opts.rounds,
              "threads": threads, "batch": 1, "device": "cpu", "cpu_flags": runtime.cpu_flags(), "machine": machine(),
              "quantization": "onnxruntime dynamic, int8 weights (QInt8), uint8 activations", "rows": rows,
              "missing": missing, "search_overhead": overhead, "goals": goals(rows, overhead),
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "exports_dir": str(Path(opts.results) / EXPORTS_DIR)}
    return save_report(report, opts.results, opts.report, deploy_markdown)


def deploy_markdown(r: dict) -> str:
    """The report as Markdown: the CPU, one table row per model and runtime, the search overhead, the goals."""
    flags = ", ".join(f for f, has in r["cpu_flags"].items() if has) or "none of " + ", ".join(r["cpu_flags"])
    lines = [f"# Deployment: students and teachers in every runtime ({r['time']})", "",
             f"CPU {r['machine']['cpu']} ({flags}), {r['threads']} threads, batch 1 at each task's length, median of "
             f"{r['rounds']} rounds (every model in every runtime once per round, in one process). int8: "
             f"{r['quantization']}. Students: the seed-0 exports of bench export's report "
             f"`{r.get('exports', EXPORT_REPORT)}`. Metrics: the validation split carved from train and the official "
             "dev set; nothing here was chosen on either.", "",
             "| task | model | runtime | size MB | ms | x PyTorch fp32 teacher | x teacher, same runtime | val | dev |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        name = row["model"] + (f" (<= {row['share']:.0%})" if row["share"] is not None else "")
        for label, x in row["runtimes"].items():
            lines.append(f"| {TASK_TITLES.get(row['task'], row['task'])} | {name} | {label} | {x['size_mb']:.1f} | "
                         f"{x['ms']:.2f} | {x['speedup_vs_teacher_pytorch_fp32']:.1f}x | "
                         f"{x['speedup_vs_teacher_same_runtime']:.1f}x | {x['val']['metric']:.4f} | "
                         f"{x['dev']['metric']:.4f} |")
    if r["missing"]:
        lines += ["", "Not measured (no finished export): " + ", ".join(f"`{m}`" for m in r["missing"]) + "."]
    o = r["search_overhead"]
    if o:
        lines += ["", f"A trial's latency timing, per runtime (median s over {len(o['seconds'][INT8])} student shapes; "
                  f"a completed trial of study {r['study']} ran {o['trial_wall_s']:.0f} s): "
                  + ", ".join(f"{label} {statistics.median(s):.1f} s ({o['extra_share'][label]:+.1%} of a trial)"
                              for label, s in o["seconds"].items()) + "."]
    elif r["study"] is None:
        lines += ["", "A trial's latency timing per runtime: not measured here (--no-trial-overhead)."]
    lines += ["", "Goals:", ""]
    for g in r["goals"]:
        verdict = {True: "met", False: "not met", None: "not measured"}[g["met"]]
        figure = ", ".join(f"{k} {v:.3g}" for k, v in g.items() if k not in ("goal", "met") and v is not None)
        lines.append(f"- {g['goal']}: **{verdict}**" + (f" ({figure})" if figure else ""))
    return "\n".join(lines) + "\n"
