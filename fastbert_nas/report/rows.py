"""A finished (or running) study -> plain rows: every trial's figures, the 2-D Pareto fronts of the
metric against FLOPs and against latency, the hypervolume history, parameter importances, and the
front as a table. No plotting here (plots.py draws these rows) and no torch.

Units, as the trials record them (search/objective.py): FLOPs count 2 per multiply-add, batch 1, at the task's
length (the study's user attr seq_len; 128 tokens in studies made before it was the task's); latency is the
batch-1 median in ms at that length, with the device, thread count and runtime (PyTorch or ONNX Runtime,
fp32 or int8) recorded; the study's attrs latency_backend and latency_precision name the search's runtime.
`plot --remeasure` (remeasure.py) re-times the teacher and the front side by side and keeps the
figures in the study's user attr REMEASURED (Optuna 5 refuses to change a finished trial's attrs);
those figures are used wherever they exist.

Hypervolume (of the metric-vs-FLOPs front): pruning.front_hypervolume, on log FLOPs, with the reference
point at the teacher's FLOPs and the majority-class level on the validation rows the trials score (the
study's user attr majority_val; HV_FALLBACK_METRIC for a study made before it was recorded). Units: metric
above the majority class x decades of FLOPs saved.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from fastbert_nas.config import ENV_ATTR, REF_SEQ_LEN, RunEnv, UserError, retention
from fastbert_nas.core.backends import Runtime
from fastbert_nas.core.metrics import others_text
from fastbert_nas.search.pruning import front_hypervolume
from fastbert_nas.search.storage import make_storage, sqlite_path
from fastbert_nas.search.trials import front_rows, hold_top_rung, rung_of, state_counts, top_rung_trials, trial_metric

HV_FALLBACK_METRIC = 0.0      # hypervolume reference metric of a study without majority_val: no accuracy, MCC of chance
MIN_IMPORTANCE_TRIALS = 4     # completed trials below which parameter importances are not computed
IMPORTANCE_SEED = 0           # fANOVA's random forest: the same study gives the same importances
REMEASURED = "latency_remeasured"  # study user attr: {"at", "device", "threads", "backend", "precision",
                                   # "teacher_ms", "trials": {n: ms}}
PLOTTED_COSTS = ("flops", "latency")  # the costs the metric is plotted against; a row's key is COST_ATTRS[cost]


# ---------------------------------------------------------------------------
# Finding the study

def find_study(name: str | None, storage: str | None, results: Path) -> optuna.Study:
    """The study to report on. No name and no storage: the newest RESULTS/*.db and the newest study in it;
    a name alone: RESULTS/<name>.db (search's default); a storage alone: its newest study."""
    if storage is None:
        if name is not None:
            path = Path(results) / f"{name}.db"
            if not path.exists():
                raise UserError(f"--study {name}: {path} not found (give --storage URL for a study kept elsewhere)")
        else:
            dbs = sorted(Path(results).glob("*.db"), key=lambda p: p.stat().st_mtime)
            if not dbs:
                raise UserError(f"no study database (*.db) under {results}/: run fastbert-nas search first, "
                                "or give --storage URL")
            path = dbs[-1]
        storage = f"sqlite:///{path}"
    elif sqlite_path(storage) is not None and not sqlite_path(storage).exists():
        raise UserError(f"--storage {storage}: {sqlite_path(storage)} not found")
    store = make_storage(storage)
    summaries = optuna.get_all_study_summaries(store, include_best_trial=False)
    names = [s.study_name for s in summaries]
    if not names:
        raise UserError(f"{storage} holds no study")
    if name is None:
        # the latest first trial; among studies without trials, the last created
        name = max(enumerate(summaries), key=lambda p: (p[1].datetime_start or datetime.min, p[0]))[1].study_name
    elif name not in names:
        raise UserError(f"no study {name!r} in {storage} (it has: {', '.join(names)})")
    return optuna.load_study(study_name=name, storage=store)


# ---------------------------------------------------------------------------
# Rows

@dataclass
class StudyData:
    """What the plots and the table need of one study, as plain rows."""

    name: str
    task: str
    metric: str                      # the metric's name (accuracy, mcc)
    objectives: tuple[str, ...]
    teacher: dict                    # a row like a trial's (metric on the validation split)
    rows: list[dict]                 # each student at its highest rung (trials.top_rung_trials): COMPLETE
                                     # trials, and PRUNED ones that reached a checkpoint
    counts: dict[str, int]           # trials per state
    hv_reference: tuple[float, float]  # (majority-class metric, teacher FLOPs)
    hv_history: list[dict]           # {"finished", "trial", "hypervolume"} after each finished trial
    examples: int | None             # training examples the trials distilled on (for the fastText reference)
    seq_len: int                     # tokens the FLOPs and latencies are measured at
    latency_note: str                # how the latency figures were measured
    env: RunEnv | None = None        # the run environment the study recorded (None: made before it did)
    majority: float | None = None    # the majority-class metric on the trials' validation rows (None: not recorded)
    fasttext: dict | None = None     # report.fasttext.fasttext_reference's result, when there is one
    notes: list[str] = field(default_factory=list)


def trial_row(t: FrozenTrial, remeasured: dict) -> dict:
    """One trial's figures. `remeasured` is the study's REMEASURED attr: a trial's `latency_ms` is its
    re-measured figure when it has one; a trial timed in another runtime than the re-measurement has none
    (figures of two runtimes are never compared)."""
    a, again = t.user_attrs, remeasured.get("trials", {}).get(str(t.number))
    own = a.get("latency_ms") if not remeasured or Runtime.of(remeasured, "") == Runtime.of(a) else None
    timed_in = Runtime.of(remeasured, "") if again is not None else Runtime.of(a)
    return {"trial": t.number, "state": t.state.name, "name": a.get("name"), "hints": a.get("hints"),
            "metric": trial_metric(t), "flops": a.get("flops"), "params": a.get("params"),
            "latency_ms": again if again is not None else own, "latency_ms_trial": a.get("latency_ms"),
            "latency_runtime": timed_in.label if again is not None or own is not None else None,
            "remeasured": again is not None, "baseline": a.get("baseline", ""), "rung": rung_of(t),
            "kd_steps": a.get("kd_steps"), "val": a.get("val")}


def teacher_row(attrs: dict, task: str, results: Path) -> dict:
    """The teacher as a row: its validation metric (recorded at study creation, else its manifest's)."""
    remeasured = attrs.get(REMEASURED, {})
    val, again = attrs.get("teacher_val"), remeasured.get("teacher_ms")
    manifest = Path(results) / "teachers" / task / "manifest.json"
    if val is None and manifest.exists():
        m = json.loads(manifest.read_text())
        val = m.get("val") if m.get("fingerprint") == attrs.get("teacher_fingerprint") else None
    own = (attrs.get("teacher_latency_ms")
           if not remeasured or Runtime.of(remeasured, "") == Runtime.of(attrs, "teacher_latency_") else None)
    return {"trial": None, "state": "teacher", "name": "teacher", "hints": None,
            "metric": val["metric"] if val else None, "flops": attrs.get("teacher_flops"),
            "params": attrs.get("teacher_params"), "latency_ms": again if again is not None else own,
            "latency_ms_trial": attrs.get("teacher_latency_ms"), "remeasured": again is not None,
            "baseline": "", "rung": None, "kd_steps": None, "detail": attrs.get("teacher_id"), "val": val}


def pareto_front(rows: list[dict], cost: str) -> list[dict]:
    """The COMPLETE rows on the (metric maximized, `cost` minimized) front, cheapest first.

    A row is on it when no row of no higher cost has a metric as high (ties: the cheaper, then
    the first, is kept).
    """
    done = sorted((r for r in rows if r["state"] == "COMPLETE" and r["metric"] is not None and r[cost] is not None),
                  key=lambda r: (r[cost], -r["metric"]))
    front, best = [], -math.inf
    for r in done:
        if r["metric"] > best:
            front.append(r)
            best = r["metric"]
    return front


def hv_reference(attrs: dict, teacher_flops: float | None = None) -> tuple[float, float]:
    """The hypervolume reference point (metric, FLOPs) of a study (its user attrs): the majority-class level
    and the teacher's FLOPs (`teacher_flops` where the attrs lack them)."""
    return attrs.get("majority_val", HV_FALLBACK_METRIC), attrs.get("teacher_flops") or teacher_flops


def hypervolume_history(trials: list[FrozenTrial], reference: tuple[float, float], min_rung: int = 0) -> list[dict]:
    """The normalized hypervolume of the metric-vs-FLOPs front after each finished trial, in the order
    they finished (see the module's docstring for the units), with the training steps and wall seconds spent
    so far: `steps` sums every finished trial's hint + KD steps (user attr train_steps: what a pruned trial
    ran, 0 for one rejected before training), promotions included; `wall_s` their wall_s. A student counts at
    the highest rung it has finished (trials.top_rung_trials): a promotion's result replaces its lower rung's;
    only students finished at `min_rung` or above are on the front (the others' steps still count)."""
    finished = sorted((t for t in trials if t.state.is_finished()),
                      key=lambda t: (t.datetime_complete or datetime.max, t.number))
    history, steps, wall = [], 0, 0.0
    top: dict[int, FrozenTrial] = {}  # student -> its trial at the highest rung finished so far
    for i, t in enumerate(finished, 1):
        hold_top_rung(top, t)
        points = [(s.values[0], s.user_attrs["flops"]) for s in top.values()
                  if s.state == TrialState.COMPLETE and s.values and s.user_attrs.get("flops") is not None
                  and rung_of(s) >= min_rung]
        steps += t.user_attrs.get("train_steps", 0)
        wall += t.user_attrs.get("wall_s", 0.0)
        history.append({"finished": i, "trial": t.number, "state": t.state.name, "rung": rung_of(t),
                        "steps": steps, "wall_s": wall,
                        "hypervolume": front_hypervolume(points, reference[1], reference[0])})
    return history


def gather(study: optuna.Study, results: Path = Path("results")) -> StudyData:
    """The study's rows; UserError when it has no completed trial (nothing to plot or show)."""
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(study)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        have = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no trials"
        raise UserError(f"study {study.study_name!r} has no completed trial ({have}): nothing to report yet")
    attrs = study.user_attrs
    task = attrs.get("task", "?")
    remeasured = attrs.get(REMEASURED, {})
    rows = [trial_row(t, remeasured) for t in top_rung_trials(trials)
            if trial_metric(t) is not None]
    teacher = teacher_row(attrs, task, results)
    notes = []
    if teacher["metric"] is None:
        notes.append("the study has no record of the teacher's validation metric: no teacher point")
    if teacher["latency_ms"] is None:
        notes.append("the study has no record of the teacher's latency: no teacher point on the latency plot "
                     "(plot --remeasure times it)")
    reference = hv_reference(attrs, max((r["flops"] for r in rows if r["flops"]), default=1.0))
    if "majority_val" not in attrs:
        notes.append(f"the study has no record of the majority-class level: the hypervolume is measured from "
                     f"{HV_FALLBACK_METRIC:g}")
    done = [r for r in rows if r["state"] == "COMPLETE"]
    threads = {t.user_attrs.get("latency_threads") for t in trials if "latency_threads" in t.user_attrs}
    devices = {t.user_attrs.get("latency_device") for t in trials if "latency_device" in t.user_attrs}
    where = f"{'/'.join(sorted(map(str, devices))) or '?'}, {'/'.join(sorted(map(str, threads))) or '?'} threads"
    n_re = sum(r["remeasured"] for r in done)
    seq_len = attrs.get("seq_len", REF_SEQ_LEN)
    latency_note = f"batch 1, {seq_len} tokens, {Runtime.of(attrs).label}, {where}; timed during the search"
    if n_re:
        latency_note = (f"batch 1, {seq_len} tokens; {n_re} students re-measured side by side with the teacher in "
                        f"{Runtime.of(remeasured, '').label} on {remeasured.get('device')}, "
                        f"{remeasured.get('threads')} threads ({remeasured.get('at')})")
    examples = next((t.user_attrs["config"].get("examples") for t in trials
                     if isinstance(t.user_attrs.get("config"), dict)), None)
    return StudyData(study.study_name, task, attrs.get("metric", "metric"),
                     tuple((attrs.get("objectives") or "metric,flops").split(",")), teacher, rows, counts,
                     reference, hypervolume_history(trials, reference), examples, seq_len, latency_note,
                     env=RunEnv.from_dict(attrs[ENV_ATTR]) if ENV_ATTR in attrs else None,
                     majority=attrs.get("majority_val"), notes=notes)


def param_importances(study: optuna.Study) -> tuple[dict[str, float], str | None]:
    """optuna.importance (fANOVA) of every parameter for the metric: ({name: share}, None), or ({}, why not)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return {}, f"too few completed trials for parameter importances ({len(done)} < {MIN_IMPORTANCE_TRIALS})"
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED),
            target=lambda t: t.values[0])
    except (ValueError, RuntimeError) as exc:  # e.g. no parameter common to all completed trials
        return {}, f"no parameter importances: {exc}"
    if not found:
        return {}, "no parameter importances: the completed trials share no varying parameter"
    return dict(found), None


# ---------------------------------------------------------------------------
# The front as a table (show)

FORMATS = ("table", "csv", "json")
FRONT_COLUMNS = ("trial", "student", "hints", "rung", "kd_steps", "metric", "others", "retention", "params_m",
                 "gflops", "latency_ms", "runtime", "speedup", "note")
FRONT_HEADERS = {"trial": "trial", "student": "student", "hints": "hints", "rung": "rung", "kd_steps": "KD steps",
                 "metric": "{metric}", "others": "also",
                 "retention": "retention", "params_m": "params M", "gflops": "GFLOPs", "latency_ms": "ms",
                 "speedup": "speed-up", "note": "note"}  # the title gives the units and the references


def front_table(study: optuna.Study, data: StudyData) -> list[dict]:
    """The study's front (study.best_trials, via study.front_rows) sorted by FLOPs, with retention and
    speed-up against the teacher; latencies re-measured when they were (and then the teacher's too)."""
    by_number = {r["trial"]: r for r in data.rows}
    t = data.teacher
    out = []
    for f in front_rows(study, ("metric", "flops")):
        r = by_number.get(f["trial"], {})
        latency = r.get("latency_ms", f["latency_ms"])
        teacher_latency = t["latency_ms"] if r.get("remeasured") else t["latency_ms_trial"]
        out.append({"trial": f["trial"], "student": f["name"], "hints": f["hints"],
                    "rung": f["rung"], "kd_steps": f["kd_steps"], "metric": f["metric"],
                    "others": others_text(r.get("val"), data.metric),
                    "retention": retention(f["metric"], t["metric"]),
                    "params_m": f["params"] / 1e6 if f["params"] is not None else None,
                    "gflops": f["flops"] / 1e9 if f["flops"] is not None else None,
                    "latency_ms": latency, "runtime": r.get("latency_runtime"),
                    "speedup": teacher_latency / latency if teacher_latency and latency else None,
                    "note": "; ".join(x for x in (f["baseline"], "re-measured" if r.get("remeasured") else "") if x)})
    return out


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("metric",):
        return f"{value:.4f}"
    if key == "retention":
        return f"{value:.1%}"
    if key in ("params_m", "latency_ms"):
        return f"{value:.2f}"
    if key == "gflops":
        return f"{value:.4g}"
    if key == "speedup":
        return f"{value:.2f}x"
    return str(value)


def format_front(rows: list[dict], fmt: str, metric: str, title: str):
    """csv or json: the text; table: a rich Table (the CLI prints either)."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FRONT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    from rich.table import Table

    table = Table(title=title)
    columns = [k for k in FRONT_COLUMNS if k not in ("kd_steps", "runtime")  # the title gives both
               and (k != "others" or any(r["others"] for r in rows))]       # a task with metrics beside its own
    for key in columns:
        table.add_column(FRONT_HEADERS[key].format(metric=metric),
                         justify="left" if key in ("student", "hints", "note") else "right")
    for r in rows:
        table.add_row(*(_cell(k, r[k]) for k in columns))
    return table


def rung_steps_note(rows: list[dict]) -> str:
    """'rung 0: 500 KD steps, rung 1: 1500' for the rungs of the front's rows."""
    steps = sorted({(r["rung"], r["kd_steps"]) for r in rows}, key=lambda p: p[0])
    return ", ".join(f"rung {rung}: {kd if kd is not None else '?'}" + (" KD steps" if i == 0 else "")
                     for i, (rung, kd) in enumerate(steps))


def check_remeasure(remeasure_front: bool, backend: str | None, precision: str | None) -> None:
    """--latency-backend and --precision say what --remeasure times in: refused without it."""
    if (backend or precision) and not remeasure_front:
        raise UserError("--latency-backend and --precision choose what --remeasure times in: add --remeasure")


def gather_remeasured(study: optuna.Study, results: Path, remeasure_front: bool, log: Callable[[str], None],
                      backend: str | None = None, precision: str | None = None) -> StudyData:
    """gather(study), after re-timing its teacher and front side by side (remeasure.py) when asked: in
    `backend` and `precision` when given, else in the study's runtime. Callers check_remeasure first, before
    they load the study."""
    if remeasure_front:
        from fastbert_nas.report.remeasure import remeasure  # torch: only when re-timing

        remeasure(study, gather(study, results), results, log, backend, precision)
    return gather(study, results)


def show_front(name: str | None, storage: str | None, results: Path, fmt: str, remeasure_front: bool = False,
               log: Callable[[str], None] = print, backend: str | None = None, precision: str | None = None):
    """The job behind `fastbert-nas show`: the study's front_table (re-timed first with `remeasure_front`),
    formatted."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_remeasure(remeasure_front, backend, precision)
    study = find_study(name, storage, results)
    data = gather_remeasured(study, results, remeasure_front, log, backend, precision)
    against = f"against {', '.join(data.objectives[1:])}" if len(data.objectives) > 1 else "within its cost limits"
    rows = front_table(study, data)
    majority = f"; majority class {data.majority:.4f}" if data.majority is not None else ""
    title = (f"Front of {data.name}: {data.metric} (validation split{majority}) {against}, each student at the highest "
             f"rung it finished ({rung_steps_note(rows)}). "
             f"Retention and speed-up against the teacher; GFLOPs 2 per multiply-add, batch 1, {data.seq_len} tokens; "
             "ms: latency, "
             f"{data.latency_note}")
    return format_front(rows, fmt, data.metric, title)
