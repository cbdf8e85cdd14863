"""`fastbert-nas bench fidelity`: do the search's rungs rank students as the export budget does?

    a study's students: those --pick chooses, then by Pareto rank and hypervolume share (rungs.promotion_order)
    -> each distilled again at every rung of the ladder (the trial's recipe, the rung's KD steps and, at the
       top, augmentation: rungs.rung_config, what the search would measure), scored on the validation rows
       trials score
    -> each exported at the export budget (export.run_export --trial N, as `fastbert-nas export` does),
       scored on validation and on the official dev set
    -> Spearman and Kendall between each rung's validation metric and the export's validation and dev metrics;
       --pick's regret: the best exported dev metric in the pick's band less the picked student's
    -> RESULTS/benchmarks/fidelity.json and .md

Every run is kept as it finishes (RESULTS/fidelity/<study>/runs.json; exports in RESULTS/fidelity/<study>/trial-N/
with their checkpoints), so the same command resumes. Choices are made on validation (the picks, the students);
dev only reports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from fastbert_nas.bench.common import kendall_tau, machine, rank_correlation, save_report
from fastbert_nas.bench.settings import BENCH_EXPORT_BUDGET, BENCH_EXPORT_KD_STEPS, BENCH_FIDELITY_STUDENTS
from fastbert_nas.config import ENV_ATTR, TRIAL_RUNGS, DistillConfig, RunEnv, StudentArch, UserError, at_least, run_env
from fastbert_nas.core import pipeline
from fastbert_nas.export.checkpoint import REPORT_FILE
from fastbert_nas.export.plan import ExportOptions, parse_pick, pick_row
from fastbert_nas.export.run import run_export
from fastbert_nas.report.rows import find_study, gather
from fastbert_nas.search.options import TOP_RUNG_CACHE
from fastbert_nas.search.rungs import promotion_order, rung_config
from fastbert_nas.search.trials import student_of

BENCH_FILE = "fidelity"
FIDELITY_PICKS = ("flops<=0.25", "flops<=0.1")  # --pick rules whose regret is measured
GOAL_SPEARMAN = 0.8                      # top rung against the export's dev metric
GOAL_REGRET_POINTS = 0.5                 # metric points (accuracy x 100) on SST-2
GOAL_TASKS = ("sst2",)                   # tasks the regret goal is judged on


@dataclass(frozen=True)
class FidelityOptions:
    """What `fastbert-nas bench fidelity` takes; field names are its option names."""

    study: str
    students: int = BENCH_FIDELITY_STUDENTS
    rungs: int | None = None             # None: the trial budget's (config.TRIAL_RUNGS)
    budget: str = BENCH_EXPORT_BUDGET    # the exports' budget
    kd_steps: int | None = BENCH_EXPORT_KD_STEPS
    data_dir: str | None = None
    results: Path = Path("results")
    threads: int | None = None
    device: str = "auto"

    def check(self) -> "FidelityOptions":
        at_least(2, students=self.students)
        at_least(1, rungs=self.rungs, kd_steps=self.kd_steps)
        return self


def picked_rows(rows: list[dict], teacher: dict) -> dict[str, int | None]:
    """The trial each of FIDELITY_PICKS chooses among the rows (None: no student in its band)."""
    picks: dict[str, int | None] = {}
    for rule in FIDELITY_PICKS:
        try:
            picks[rule] = pick_row(rows, teacher, *parse_pick(rule))["trial"]
        except UserError:
            picks[rule] = None
    return picks


def chosen_students(rows: list[dict], teacher: dict, n: int, picks: dict[str, int | None]) -> list[int]:
    """Trial numbers of up to n COMPLETE rows: those `picks` (picked_rows) chose first, then by
    promotion_order (the front and its neighbours, spread over the costs)."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["flops"] is not None]
    picked = [p for p in picks.values() if p is not None]
    order = promotion_order([(r["metric"], r["flops"]) for r in done], teacher["flops"], 0.0)
    out = list(dict.fromkeys(picked + [done[i]["trial"] for i in order]))
    return out[:max(n, len(set(picked)))]


class Runs:
    """RESULTS/fidelity/<study>/runs.json: {"<trial>/<rung>": {...}}, written after every run."""

    def __init__(self, folder: Path):
        self.path = folder / "runs.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, trial: int, rung: int) -> dict | None:
        return self.data.get(f"{trial}/{rung}")

    def put(self, trial: int, rung: int, record: dict) -> None:
        self.data[f"{trial}/{rung}"] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2))


def trial_config(t) -> DistillConfig:
    """The DistillConfig a (rung-0) trial recorded."""
    return DistillConfig.from_dict(t.user_attrs["config"])


def rung_runs(opts: FidelityOptions, study, trials: list, rungs: int, runs: Runs, log: Callable[[str], None]) -> None:
    """Distill each trial's student at every rung not yet in `runs`, as a trial of the search would."""
    todo = [(t, r) for t in trials for r in range(rungs) if runs.get(t.number, r) is None]
    if not todo:
        return
    recorded = RunEnv.from_dict(study.user_attrs[ENV_ATTR])
    env = run_env(recorded.task, opts.data_dir, device=opts.device, threads=opts.threads,
                  results=opts.results).adopt(recorded, f"study {study.study_name!r}")
    contexts: dict[int, pipeline.Context] = {}  # augment copies -> Context: the top rung's has its own
    for t, rung in todo:
        cfg = rung_config(trial_config(t), rung, rungs)
        if cfg.augment not in contexts:  # one study: every trial the same examples
            contexts[cfg.augment] = pipeline.prepare(env, cfg, cache_split=TOP_RUNG_CACHE if cfg.augment else None)
        ctx, arch = contexts[cfg.augment], StudentArch.from_dict(t.user_attrs["arch"])
        log(f"trial {t.number} {arch.name}: rung {rung} ({cfg.kd_steps} KD steps"
            + (f", {cfg.augment} augmented copies" if cfg.augment else "") + ") ...")
        start = time.perf_counter()
        student = pipeline.init_student(ctx, arch, cfg)
        result = pipeline.distill_student(ctx, student, arch, cfg, show_progress=False)
        runs.put(t.number, rung, {"kd_steps": cfg.kd_steps, "augment": cfg.augment, "val": result.metrics["metric"],
                                  "minutes": (time.perf_counter() - start) / 60})


def exported(opts: FidelityOptions, study_name: str, number: int, folder: Path, log: Callable[[str], None]) -> dict:
    """The trial's export at the export budget (made or resumed here, as `fastbert-nas export --trial N`)."""
    if not (folder / REPORT_FILE).exists():
        log(f"exporting trial {number} into {folder}/ ...")
        run_export(ExportOptions(out=folder, trial=number, study=study_name, results=Path(opts.results),
                                 budget=opts.budget, kd_steps=opts.kd_steps, seed=0, data_dir=opts.data_dir,
                                 device=opts.device, threads=opts.threads), log=log)
    return json.loads((folder / REPORT_FILE).read_text())


def correlations(rows: list[dict], rungs: int) -> list[dict]:
    """Per rung: Spearman and Kendall of its validation metric against the export's validation and dev."""
    out = []
    for rung in range(rungs):
        got = [r for r in rows if r["rungs"][rung] is not None]
        at = [r["rungs"][rung] for r in got]
        out.append({"rung": rung, "kd_steps": got[0]["kd_steps"][rung] if got else None, "students": len(got),
                    "spearman_val": rank_correlation(at, [r["export_val"] for r in got]),
                    "spearman_dev": rank_correlation(at, [r["export_dev"] for r in got]),
                    "kendall_val": kendall_tau(at, [r["export_val"] for r in got]),
                    "kendall_dev": kendall_tau(at, [r["export_dev"] for r in got])})
    return out


def regrets(rows: list[dict], picks: dict[str, int | None]) -> list[dict]:
    """Per --pick rule: the picked student's exported dev metric against the best exported in its band."""
    out = []
    for rule, number in picks.items():
        _, share, low = parse_pick(rule)
        band = [r for r in rows if low < r["flops_share"] <= share]
        picked = next((r for r in band if r["trial"] == number), None)
        if picked is None:
            out.append({"pick": rule, "trial": number, "regret_points": None})
            continue
        best = max(band, key=lambda r: r["export_dev"])
        out.append({"pick": rule, "trial": number, "best_trial": best["trial"],
                    "regret_points": 100 * (best["export_dev"] - picked["export_dev"])})
    return out


def check_goals(task: str, corr: list[dict], regret: list[dict]) -> list[dict]:
    top = corr[-1]
    goals = [{"goal": f"Spearman(top rung val, export dev) >= {GOAL_SPEARMAN}", "value": top["spearman_dev"],
              "met": top["spearman_dev"] is not None and top["spearman_dev"] >= GOAL_SPEARMAN}]
    if task in GOAL_TASKS:
        for r in regret:
            goals.append({"goal": f"--pick {r['pick']} regret <= {GOAL_REGRET_POINTS} points",
                          "value": r["regret_points"],
                          "met": r["regret_points"] is not None and r["regret_points"] <= GOAL_REGRET_POINTS})
    return goals


def fidelity_markdown(report: dict) -> str:
    lines = [f"# Rank fidelity of the rungs: study {report['study']} ({report['task']})", "",
             f"Each student distilled at every rung (validation rows the trials score) and exported at the "
             f"{report['budget']} budget, {report['kd_steps']} KD steps, seed 0 (validation and dev). Students "
             "and picks chosen on validation; dev only reports.", "",
             "| trial | student | FLOPs share | " + " | ".join(f"rung {i}" for i in range(report["rungs"]))
             + " | export val | export dev |", "|---|---|---|" + "---|" * report["rungs"] + "---|---|"]
    for r in report["rows"]:
        cells = " | ".join("-" if v is None else f"{v:.4f}" for v in r["rungs"])
        lines.append(f"| {r['trial']} | {r['student']} | {r['flops_share']:.1%} | {cells} | {r['export_val']:.4f} "
                     f"| {r['export_dev']:.4f} |")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines += ["", "| rung | KD steps | students | Spearman val | Spearman dev | Kendall val | Kendall dev |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {c['rung']} | {c['kd_steps']} | {c['students']} | {fmt(c['spearman_val'])} | "
              f"{fmt(c['spearman_dev'])} | {fmt(c['kendall_val'])} | {fmt(c['kendall_dev'])} |"
              for c in report["correlations"]]
    lines += ["", "| pick | picked | best in band | regret (points of dev metric) |", "|---|---|---|---|"]
    lines += [f"| `{r['pick']}` | {r['trial']} | {r.get('best_trial', '-')} | {fmt(r['regret_points'])} |"
              for r in report["regrets"]]
    lines += ["", "Goals: " + "; ".join(f"{g['goal']}: {fmt(g['value'])} ({'met' if g['met'] else 'not met'})"
                                        for g in report["goals"]), ""]
    return "\n".join(lines)


def bench_fidelity(opts: FidelityOptions, log: Callable[[str], None] = print) -> dict:
    """Distill the chosen students at every rung, export them, compare the rankings; RESULTS/benchmarks/fidelity.*"""
    opts.check()
    study = find_study(opts.study, None, opts.results)
    data = gather(study, opts.results)
    budget = next((t.user_attrs.get("budget") for t in study.get_trials(deepcopy=False) if "budget" in t.user_attrs),
                  "cpu")
    rungs = opts.rungs or TRIAL_RUNGS.get(budget, 1)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    picked = picked_rows(data.rows, data.teacher)
    roots = [by_number[student_of(by_number[n])] for n in chosen_students(data.rows, data.teacher, opts.students,
                                                                          picked)]
    folder = Path(opts.results) / "fidelity" / study.study_name
    runs = Runs(folder)
    log(f"{len(roots)} students of {study.study_name} at {rungs} rungs, then exported: trials "
        + ", ".join(str(t.number) for t in roots))
    rung_runs(opts, study, roots, rungs, runs, log)
    rows = []
    for t in roots:
        rep = exported(opts, study.study_name, t.number, folder / f"trial-{t.number}", log)
        rows.append({"trial": t.number, "student": t.user_attrs["name"], "hints": t.user_attrs["hints"],
                     "flops_share": t.user_attrs["flops"] / data.teacher["flops"],
                     "rungs": [runs.get(t.number, r)["val"] for r in range(rungs)],
                     "kd_steps": [runs.get(t.number, r)["kd_steps"] for r in range(rungs)],
                     "export_val": rep["val"]["metric"], "export_dev": rep["dev"]["metric"],
                     "export_minutes": rep["distill_minutes"]})
    picks = {rule: None if n is None else student_of(by_number[n]) for rule, n in picked.items()}
    corr = correlations(rows, rungs)
    regret = regrets(rows, picks)
    report = {"study": study.study_name, "task": data.task, "metric": data.metric, "rungs": rungs,
              "budget": opts.budget, "kd_steps": opts.kd_steps, "rows": rows, "correlations": corr, "regrets": regret,
              "goals": check_goals(data.task, corr, regret), "chosen_on": "validation", "reported_on": "dev",
              "machine": machine(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return save_report(report, opts.results, BENCH_FILE, fidelity_markdown)
