"""The study's storage: Optuna's RDB storage with a heartbeat, and calls made again while the database
does not answer. (No torch: `show` and `plot` open studies through it.)

A killed worker's trial would stay RUNNING forever: the storage keeps a heartbeat, marks a trial FAIL
once it has been silent for the grace period, and queues it again once with the same parameters
(RetryHeartbeatStaleTrialCallback). The heartbeat works with `study.optimize` (not ask/tell).
"""

from __future__ import annotations

import functools
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from fastbert_nas.config import UserError

# Crash safety. A running trial writes a heartbeat every HEARTBEAT_S seconds; one silent for
# GRACE_S seconds is dead (its process was killed): the next trial start marks it FAIL and
# queues it again, at most MAX_RETRY times. Tests shorten both through HEARTBEAT_ENV ("1,3").
HEARTBEAT_S = 10
GRACE_S = 30
MAX_RETRY = 1
HEARTBEAT_ENV = "FASTBERT_NAS_HEARTBEAT"   # "INTERVAL,GRACE" in whole seconds
SQLITE_TIMEOUT_S = 60                      # seconds a worker waits on a locked SQLite file
LAST_ATTR = "seed"                         # the study attr written last when a study is created
ATTRS_WAIT_S = 30                          # seconds to wait for the attrs of a study another worker is creating
ATTRS_POLL_S = 0.5                         # seconds between looks at them
IN_MEMORY_URLS = ("sqlite://", "sqlite:///:memory:")  # storages no second process can share

# Storage faults. A database call that fails for want of the database (a locked or read-only SQLite
# file, a PostgreSQL server restarting or out of reach) is made again after each of these pauses; then
# the search stops with one error line, the study as its last write left it, and the same command
# resumes it. A missed heartbeat is not retried: the next beat, HEARTBEAT_S later, is the retry.
STORAGE_RETRY_DELAYS_S = (1, 2, 4, 8)      # seconds between attempts: 5 attempts over 15 s, a server restart
PG_CONNECT_TIMEOUT_S = 10                  # seconds an attempt waits for a PostgreSQL connection


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace) in seconds: the defaults, or $FASTBERT_NAS_HEARTBEAT='INTERVAL,GRACE'."""
    text = os.environ.get(HEARTBEAT_ENV)
    if not text:
        return HEARTBEAT_S, GRACE_S
    try:
        interval, grace = (int(x) for x in text.split(","))
    except ValueError:
        interval = grace = 0
    if not 1 <= interval < grace:
        raise UserError(f"${HEARTBEAT_ENV}={text!r}: expected INTERVAL,GRACE in whole seconds, 1 <= INTERVAL < GRACE")
    return interval, grace


def transient(exc: BaseException | None) -> bool:
    """Whether a storage error is the database's absence, worth asking again: SQLAlchemy's OperationalError
    or InterfaceError (locked, read-only, connection refused or lost), bare or wrapped by Optuna."""
    for _ in range(5):  # Optuna's StorageInternalError is raised `from` the SQLAlchemy error
        if exc is None:
            return False
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def with_retries(call: Callable, url: str, storage: "RetryingStorage | None" = None):
    """call(), made again after each STORAGE_RETRY_DELAYS_S pause while it fails transiently; then a UserError.

    Once a call of `storage` has used every retry, its later calls try once until one succeeds: a search
    on its way out (recording why its trial failed) stops promptly instead of waiting again at each step.
    """
    delays = STORAGE_RETRY_DELAYS_S if storage is None or storage.answering else ()
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            result = call()
        except Exception as exc:
            if not transient(exc):
                raise
            if delay is None:
                if storage is not None:
                    storage.answering = False
                cause = (str(exc.__cause__ or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
                raise UserError(f"--storage {shown}: {attempt} attempts over {sum(delays):g} s failed: {cause}; "
                                "what was written is kept: run the same command again once the database is back "
                                "(reachable, writable)") from None
            time.sleep(delay)
        else:
            if storage is not None:
                storage.answering = True
            return result


class RetryingStorage(RDBStorage):
    """Optuna's RDB storage whose calls (those Optuna's study, trials and heartbeat make) are made again
    while the database does not answer: see STORAGE_RETRY_DELAYS_S."""

    answering = True  # False once a call has used every retry

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:  # the next beat is the retry; a dead heartbeat thread would get the trial failed
            if not transient(exc):
                raise


RETRIED_CALLS = (  # the RDBStorage methods Optuna's cached storage, study, trials and fail_stale_trials call
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "_create_new_trial", "_set_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "_get_trials", "_get_best_trial_id",
    "_get_stale_trial_ids")


def _retried(name: str) -> Callable:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return with_retries(lambda: method(self, *args, **kwargs), self.url, self)
    return call


for _name in RETRIED_CALLS:
    setattr(RetryingStorage, _name, _retried(_name))


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:///PATH URL; None for other storages, in-memory ones and URIs (file:...?mode=ro)."""
    if not url.startswith("sqlite:///") or url in IN_MEMORY_URLS or url.startswith("sqlite:///file:"):
        return None
    return Path(url[len("sqlite:///"):])


def storage_exists(url: str) -> bool:
    """False for a SQLite file not made yet (opening one makes it); True for a file there and for a server."""
    return sqlite_path(url) is None or sqlite_path(url).exists()


def make_storage(url: str) -> RDBStorage:
    """The RDB storage with a heartbeat, retrying calls while the database does not answer: SQLite for one
    machine, PostgreSQL/MySQL for many."""
    interval, grace = heartbeat_settings()
    if sqlite_path(url) is not None:
        sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    else:  # a server: check a pooled connection before use (it may have restarted), and give up on one in time
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        try:
            return with_retries(lambda: RetryingStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)), url)
        except UserError:
            raise
        except ImportError:  # SQLAlchemy imports the URL's database driver when it opens it
            if url.startswith("postgresql"):
                raise UserError(f"--storage {url}: the PostgreSQL driver is not installed: "
                                "pip install 'fastbert-nas[postgres]'") from None
            raise UserError(f"--storage {url}: cannot open it: its database driver is not installed") from None
        except Exception as exc:  # a bad URL, an unreachable server
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"--storage {url}: cannot open it: {first[:200]}") from None


def worker_id() -> str:
    """This process, as the trials it runs record it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def existing_attrs(storage: RDBStorage, name: str, wait_s: float = ATTRS_WAIT_S) -> dict | None:
    """The user attrs of study `name`, or None when there is no such study. A study another process has
    just created gets its attrs a moment later (the last one written is LAST_ATTR): wait up to wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        if name not in optuna.study.get_all_study_names(storage):
            return None
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
        if LAST_ATTR in attrs or time.monotonic() > deadline:
            return attrs
        time.sleep(ATTRS_POLL_S)


def fail_stale_trials(study: optuna.Study) -> list[str]:
    """Mark trials whose worker died FAIL now (and queue their retries), as a trial start would; a note each."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    requeued = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    _, grace = heartbeat_settings()
    return [f"trial {t.number} FAIL: its worker sent no heartbeat for {grace} s (killed?); "
            + ("queued again with the same student" if t.number in requeued else "retried once already")
            for t in trials if t.number in running and t.state == TrialState.FAIL]
