"""Soak: two search workers share one PostgreSQL study of 2 x 50 smoke trials while one of them is killed
(SIGKILL) at random moments, 5 times, and restarted each time. In the end every trial is COMPLETE, PRUNED or
FAIL-and-retried, no student ran twice (but as a recorded retry), none is left RUNNING or WAITING.

Out of the default suite (marker `soak`, pyproject's addopts): `python -m pytest -q -m soak`. The figures
(trials, kills, retries, lost, wall time) are written as JSON to $FASTBERT_NAS_SOAK_OUT, else to pytest's
temporary folder.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import assert_each_student_run_once, cli_command, search_args
from optuna.trial import TrialState

from fastbert_nas.search.storage import HEARTBEAT_ENV
from fastbert_nas.search.trials import trials_used

WORKERS = 2
TRIALS = 2 * 50            # the study's --trials, shared by the workers
KILLS = 5
SEED = 0                   # the kill moments and the victims
HEARTBEAT = "2,20"         # INTERVAL,GRACE in s: a killed worker's trial is failed 20 s after its last beat;
                           # a worker starved for CPU on a busy machine must not be taken for dead
KILL_DELAY_S = (0.0, 2.0)  # a kill comes this long (uniform) after the victim is seen running a trial
POLL_S = 0.2               # seconds between looks at the study
LIMIT_S = 3 * 3600         # seconds the whole soak may take (a few minutes on an idle 2-core machine)
SOAK_OUT_ENV = "FASTBERT_NAS_SOAK_OUT"
STUDY = "sst2-tiny-soak"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def running_first_run(study: optuna.Study, pid: int) -> int | None:
    """The number of the trial worker `pid` is running now, unless it is a retry: a trial is retried once,
    so a retry is never killed."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker", "").endswith(f":{pid}") and "failed_trial" not in t.system_attrs:
            return t.number
    return None


@pytest.mark.soak
@pytest.mark.slow
def test_killed_workers_lose_no_trial(data_dir, tiny_teacher_dir, tmp_path, postgres_url):
    env = {**os.environ, HEARTBEAT_ENV: HEARTBEAT, "OMP_NUM_THREADS": "1"}
    args = search_args(data_dir, tiny_teacher_dir, tmp_path, "--no-baselines",
                       **{"--trials": TRIALS, "--storage": postgres_url, "--study": STUDY})
    storage = optuna.storages.RDBStorage(postgres_url)
    logs: list[Path] = []
    rng = random.Random(SEED)

    def start_worker() -> subprocess.Popen:
        logs.append(tmp_path / f"worker-{len(logs)}.log")
        with open(logs[-1], "w") as log:
            return subprocess.Popen(cli_command(args), env=env, stdout=log, stderr=subprocess.STDOUT)

    def log_tails() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs)

    def moment_to_kill(pid: int, after: int) -> int:
        """Once `after` trials are finished and worker `pid` runs a first run, a random KILL_DELAY_S later:
        the number of the first run it runs then (else wait on)."""
        while True:
            assert all(p.poll() is None for p in workers), f"a worker ended before the kills:\n{log_tails()}"
            assert time.monotonic() < start + LIMIT_S, f"no moment to kill in time:\n{log_tails()}"
            time.sleep(POLL_S)
            if STUDY not in optuna.study.get_all_study_names(storage):
                continue
            study = optuna.load_study(study_name=STUDY, storage=storage)
            if len(study.get_trials(deepcopy=False, states=FINISHED)) < after or running_first_run(study, pid) is None:
                continue
            time.sleep(rng.uniform(*KILL_DELAY_S))
            number = running_first_run(study, pid)
            if number is not None:
                return number

    kill_after = sorted(rng.sample(range(5, TRIALS - 5), KILLS))  # trials finished before each kill
    start = time.monotonic()
    workers = [start_worker(), start_worker()]
    killed = []  # (trial number running when killed, seconds into the soak)
    try:
        for after in kill_after:
            victim = rng.randrange(WORKERS)
            number = moment_to_kill(workers[victim].pid, after)
            workers[victim].kill()
            workers[victim].wait()
            killed.append((number, round(time.monotonic() - start, 1)))
            workers[victim] = start_worker()
        for p in workers:
            p.wait(timeout=max(1.0, start + LIMIT_S - time.monotonic()))
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
    wall_s = time.monotonic() - start
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
    retried = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    lost = [t.number for t in failed if t.number not in retried]
    figures = {"storage": "postgresql", "workers": WORKERS, "trials": TRIALS, "trials_in_study": len(trials),
               "kills": len(killed), "killed": killed, "retries": len(retried), "lost": len(lost),
               "states": states, "trials_used": trials_used(trials), "heartbeat_interval_grace_s": HEARTBEAT,
               "wall_s": round(wall_s, 1), "exit_codes": [p.returncode for p in workers]}
    out = Path(os.environ.get(SOAK_OUT_ENV) or tmp_path / "soak.json")
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))

    assert len(killed) == KILLS and all(p.returncode == 0 for p in workers), f"{figures}\n{log_tails()}"
    assert not lost, figures
    assert all(t.state in FINISHED for t in trials), figures
    assert all(retried[t.number].state in (TrialState.COMPLETE, TrialState.PRUNED) for t in failed), figures
    # --trials may be overrun by a trial or so when both workers find the last one left at once
    assert trials_used(trials) >= TRIALS and len(trials) == trials_used(trials) + len(retried), figures
    assert_each_student_run_once(trials)
