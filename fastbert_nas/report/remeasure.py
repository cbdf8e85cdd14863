"""Re-time the front side by side: the students on it, beside the teacher, in one process.

Each trial timed its student while other work shared the machine, so per-trial latencies are noisy.
Latency does not depend on the weights: every student on the metric-vs-FLOPs
or metric-vs-latency front (and every completed baseline) is rebuilt from its recorded architecture
with random weights, the teacher from its config, and each is timed with runtime.latency at the
thread count the trials were timed with, in the runtime the study times latency in or another one asked for
(PyTorch or ONNX Runtime, fp32 or int8). The figures go back into the study, as its user attr
rows.REMEASURED (Optuna 5 refuses to change a finished trial's user attrs), where report/rows.py
reads them.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import optuna
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from fastbert_nas.config import CACHED_TEACHER_ID, StudentArch, UserError
from fastbert_nas.core.backends import Runtime, asked_runtime
from fastbert_nas.core.cost import REF_SEQ_LEN
from fastbert_nas.core.runtime import latency
from fastbert_nas.core.student import student_config
from fastbert_nas.report.rows import PLOTTED_COSTS, REMEASURED, StudyData, pareto_front
from fastbert_nas.search.trials import COST_ATTRS


def teacher_sources(teacher_id: str | None, task: str, results: Path) -> list:
    """Where a recorded teacher id may be: the cached teacher (recorded as results/teachers/<task> whatever
    --results was) under RESULTS/teachers/<task>, then the id itself (--teacher's folder or hub id)."""
    cached = Path(results) / "teachers" / task if teacher_id == CACHED_TEACHER_ID.format(task=task) else None
    return [c for c in (cached, teacher_id) if c]


def load_recorded_teacher(teacher_id: str | None, task: str, results: Path, load: Callable, what: str):
    """load(place) at the first of teacher_sources that loads (a model, or only its config); UserError
    saying `what` could not be found, and where it looked."""
    tried = teacher_sources(teacher_id, task, results)
    for source in tried:
        try:
            return load(str(source))
        except OSError:
            continue
    raise UserError(f"{what} (tried {', '.join(map(str, tried))})")


def teacher_config(study: optuna.Study, results: Path):
    """The teacher's transformers config: its folder (the cached teacher, or --teacher's), or hub id."""
    attrs = study.user_attrs
    return load_recorded_teacher(attrs.get("teacher_id"), attrs.get("task", "?"), results, AutoConfig.from_pretrained,
                                 f"--remeasure: cannot find the teacher of study {study.study_name!r}, whose config "
                                 "gives the students' vocabulary and positions")


def to_remeasure(data: StudyData) -> list[dict]:
    """Rows on either plotted front by the trials' own figures (not an earlier re-measurement's, which may be
    of another runtime), and the completed baselines, in trial order."""
    own = [{**r, "latency_ms": r["latency_ms_trial"]} for r in data.rows]
    picked = {r["trial"]: r for cost in PLOTTED_COSTS for r in pareto_front(own, COST_ATTRS[cost])}
    picked.update({r["trial"]: r for r in data.rows if r["baseline"] and r["state"] == "COMPLETE"})
    return [picked[n] for n in sorted(picked)]


def timing_setup(trials: list) -> tuple[torch.device, int]:
    """The device and thread count most of the trials were timed with."""
    devices = Counter(t.user_attrs["latency_device"] for t in trials if "latency_device" in t.user_attrs)
    threads = Counter(t.user_attrs["latency_threads"] for t in trials if "latency_threads" in t.user_attrs)
    device = devices.most_common(1)[0][0] if devices else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--remeasure: the trials were timed on {device}; re-measure on a machine with a CUDA GPU")
    return torch.device(device), threads.most_common(1)[0][0] if threads else torch.get_num_threads()


def remeasure(study: optuna.Study, data: StudyData, results: Path, log: Callable[[str], None] = print,
              backend: str | None = None, precision: str | None = None) -> int:
    """Time the teacher and the front's students now, one after the other, in `backend` and `precision`
    (None: the study's), and keep the figures in the study's user attr report.REMEASURED (replacing an earlier
    re-measurement). Returns how many students."""
    runtime = asked_runtime(Runtime.of(study.user_attrs), backend, precision).check()
    rows = to_remeasure(data)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    device, threads = timing_setup([by_number[r["trial"]] for r in rows])
    config = teacher_config(study, results)
    seq_len = study.user_attrs.get("seq_len", REF_SEQ_LEN)  # the length the trials were timed at
    log(f"re-measuring the teacher and {len(rows)} students in {runtime.label} on {device}, {threads} threads, "
        f"{seq_len} tokens ...")
    timings = []

    def timed(cfg) -> float:
        timings.append(latency(AutoModelForSequenceClassification.from_config(cfg).to(device), runtime, 1, seq_len, threads=threads))
        return timings[-1]["median_ms"]

    teacher_ms = timed(config)
    log(f"teacher: {teacher_ms:.2f} ms (was {data.teacher['latency_ms_trial'] or float('nan'):.2f})")
    trials = {}
    for r in rows:
        arch = StudentArch.from_dict(by_number[r["trial"]].user_attrs["arch"])
        trials[str(r["trial"])] = ms = timed(student_config(arch, config))
        log(f"trial {r['trial']} {r['name']}: {ms:.2f} ms (was {r['latency_ms_trial'] or float('nan'):.2f})")
    study.set_user_attr(REMEASURED, {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "device": timings[0]["device"], "threads": threads, "batch": 1,
                                     "seq_len": seq_len, **runtime.to_dict(), "teacher_ms": teacher_ms,
                                     "trials": trials})
    return len(rows)
