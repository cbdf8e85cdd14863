"""Shared fixtures. Keep additive: one fixture per concern."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

# The repo is cloned at X/main with the real data at X/shared/data beside it.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real GLUE-layout data folder ($FASTBERT_NAS_DATA, else ../shared/data)."""
    path = Path(os.environ.get("FASTBERT_NAS_DATA") or DEFAULT_DATA_DIR)
    if not path.is_dir():
        pytest.fail(f"real data folder not found: {path} (set FASTBERT_NAS_DATA to the GLUE-layout "
                    "data folder, or clone the repo beside ../shared/data)", pytrace=False)
    return path


# Tiny random teacher: the real tokenizer (so real SST-2 rows encode as they would for the
# packaged base) on a 3-layer, 48-wide BERT, small enough for tests of a few seconds.
TINY_TEACHER = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
                    num_labels=2, max_position_embeddings=128)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A saved random BertForSequenceClassification (L3-H48-A4-I96, 2 labels) with the base's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from fastbert_nas.core.teacher import DEFAULT_BASE, base_path

    tokenizer = AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), **TINY_TEACHER))
    folder = tmp_path_factory.mktemp("tiny_teacher")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def cache_tiny_teacher(results: Path, task: str, data_dir: Path, seed: int) -> str:
    """A random tiny teacher (TINY_TEACHER, weights from `seed`) saved as RESULTS/teachers/<task>/, the
    fine-tuned teacher of a built-in task as `fastbert-nas teacher` caches it (no fine-tuning: the test
    needs only a teacher of its own). Returns its weights' fingerprint."""
    import json

    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from fastbert_nas.core.tasks import TASKS, load_task
    from fastbert_nas.core.teacher import DEFAULT_BASE, base_path, weights_fingerprint

    spec = TASKS[task]
    tokenizer = AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), **TINY_TEACHER))
    folder = Path(results) / "teachers" / task
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    fingerprint = weights_fingerprint(model)
    manifest = {"task": task, "base": DEFAULT_BASE, "max_len": spec.max_len, "fingerprint": fingerprint,
                "data_fingerprint": load_task(spec, str(data_dir)).fingerprint()}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return fingerprint


@pytest.fixture
def tiny_teacher(tiny_teacher_dir):
    """The tiny teacher loaded the way --teacher loads one: a fastbert_nas.core.teacher.Teacher on CPU."""
    import numpy as np
    import torch

    from fastbert_nas.config import TeacherRef
    from fastbert_nas.core.tasks import TASKS, Split, TaskData
    from fastbert_nas.core.teacher import get_teacher

    empty = Split([], np.zeros(0, dtype=np.int64))
    data = TaskData(TASKS["sst2"], empty, empty, empty, source="test")  # only its label count is read
    return get_teacher(data, tiny_teacher_dir.parent, torch.device("cpu"), TeacherRef(str(tiny_teacher_dir)))


@pytest.fixture(scope="session")
def sst2_data(data_dir):
    """The real SST-2 rows (train/val/dev) from the local data folder."""
    from fastbert_nas.core.tasks import TASKS, load_task

    return load_task(TASKS["sst2"], str(data_dir))


# ---------------------------------------------------------------------------
# The command line, as the tests run it

def invoke(*args):
    """Run the CLI in this process (typer's CliRunner); stdout and stderr together in `.output`."""
    from typer.testing import CliRunner

    from fastbert_nas.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def cli_command(args) -> list[str]:
    """The CLI as a subprocess command line (through the Typer app, as the console script runs it)."""
    return [sys.executable, "-c", "from fastbert_nas.cli import app; app()", *map(str, args)]


def search_args(data_dir, teacher, results, *extra, **over) -> list[str]:
    """`search` with the tiny teacher, the `tiny` space, the `smoke` budget, one thread, 3 trials; `over`
    replaces or adds options (a None value drops one), `extra` adds flags."""
    opts = {"--task": "sst2", "--space": "tiny", "--budget": "smoke", "--data-dir": data_dir, "--teacher": teacher,
            "--results": results, "--threads": 1, "--trials": 3, **over}
    return ["search", *[str(x) for k, v in opts.items() if v is not None for x in (k, v)], *extra]


def assert_user_error(result, *fragments):
    """Exit code 2, exactly one 'error:' line (the last one), the expected words, no traceback."""
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], out
    for f in fragments:
        assert f in errors[0], errors[0]


def assert_each_student_run_once(trials) -> None:
    """No student (set of params) was run twice, but as the recorded retry of a failed run."""
    by_params: dict[tuple, list] = {}
    for t in trials:
        by_params.setdefault(tuple(sorted(t.params.items())), []).append(t)
    for same in by_params.values():
        assert all(t.system_attrs.get("failed_trial") in {u.number for u in same} for t in same[1:]), same


# ---------------------------------------------------------------------------
# A real smoke study, and quick latency timings

SMOKE_STUDY = "sst2-tiny"   # the study search_args makes: <task>-<space>
SHORT_TIMING_S = 0.05       # seconds of timed runs per latency figure (1 s by default)


def quick_timings(mp: pytest.MonkeyPatch) -> None:
    """Latency still measured, with short timed runs; the search's per-trial timing too."""
    import functools

    import fastbert_nas.core.cost as cost
    import fastbert_nas.core.runtime as runtime
    import fastbert_nas.export.onnx as onnx_mod
    import fastbert_nas.search.objective as objective_mod

    mp.setattr(cost, "measure_latency", functools.partial(cost.measure_latency, min_run_time=SHORT_TIMING_S))
    mp.setattr(onnx_mod, "measure_latency", functools.partial(onnx_mod.measure_latency, min_run_time=SHORT_TIMING_S))
    mp.setattr(runtime, "LATENCY_MIN_RUN_S", SHORT_TIMING_S)
    mp.setattr(objective_mod, "TRIAL_LATENCY_RUN_S", SHORT_TIMING_S)
    mp.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def smoke_study_dir(tmp_path_factory, data_dir, tiny_teacher_dir) -> Path:
    """RESULTS of a real 3-trial smoke study SMOKE_STUDY (the tiny teacher, the `tiny` space, the `smoke`
    budget), made by the search command. Tests that write into a RESULTS folder copy it first."""
    import torch

    results = tmp_path_factory.mktemp("smoke_study")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        quick_timings(mp)
        r = invoke(*search_args(data_dir, tiny_teacher_dir, results))
    torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return results


@pytest.fixture
def restore_threads():
    """Put torch's intra-op thread count back after a test that sets it (e.g. --threads 1)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------
# A throwaway PostgreSQL server (Debian's package postgresql; .ci/run installs it)

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def postgres_bin() -> Path:
    """The folder with initdb and pg_ctl: Debian's newest /usr/lib/postgresql/<version>/bin, else PATH's."""
    found = sorted((Path(d) for d in glob.glob(PG_BIN_GLOB) if (Path(d) / "initdb").exists()),
                   key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent  # a link on PATH: the folder with pg_ctl and createdb too
    pytest.fail(f"PostgreSQL server binaries not found (no initdb under {PG_BIN_GLOB} or on PATH): install "
                "the Debian package postgresql (apt-get install -y --no-install-recommends postgresql; "
                ".ci/run does)", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running throwaway server: its SQLAlchemy URL, and stop()/start() for tests of a server that goes away
    (each test that stops it starts it again)."""

    url: str
    stop: Callable[[], None]
    start: Callable[[], None]


@pytest.fixture(scope="session")
def postgres_server():
    """A fresh PostgreSQL server on 127.0.0.1 (a free port, unix sockets in its own folder) with an empty
    database; stopped at the end. As root, the server runs as the `postgres` user (PostgreSQL refuses root)
    from a folder under /tmp it owns."""
    bindir = postgres_bin()
    # runuser lives in /usr/sbin, which a root shell's PATH can leave out (CI's environment, say)
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin") or "runuser"
    as_postgres = [runuser, "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under pytest's tmp_path: that is private to this user, and the postgres user must reach it.
    root = Path(tempfile.mkdtemp(prefix="fastbert-nas-postgres-"))
    user, password, database, port = "fastbert", secrets.token_hex(8), "fastbert_nas", free_port()
    (root / "pwfile").write_text(password + "\n")
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "pwfile", "postgres", "postgres")
    data, log = root / "data", root / "server.log"

    def run(*cmd, server=True):
        proc = subprocess.run([*(as_postgres if server else []), *map(str, cmd)], cwd=root, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PGPASSWORD": password})
        if proc.returncode:
            server_log = log.read_text()[-3000:] if log.exists() else ""
            pytest.fail(f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
                        f"{server_log}", pytrace=False)

    def start():
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")

    def stop():
        run(bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")

    started = False
    try:
        run(bindir / "initdb", "-D", data, "-U", user, f"--pwfile={root / 'pwfile'}", "--auth=scram-sha-256",
            "-E", "UTF8", "--no-sync")
        start()
        started = True
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", user, database, server=False)
        yield PostgresServer(f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}", stop, start)
    finally:
        if started:
            subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           cwd=root, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """The SQLAlchemy URL of the throwaway PostgreSQL server's empty database."""
    return postgres_server.url
