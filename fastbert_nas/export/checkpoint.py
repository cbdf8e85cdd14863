"""The out folder and its checkpoint: DIR/.checkpoint/ holds plan.json (which export this is) and state.pt
(distill's whole state), each written to a temporary file and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from fastbert_nas.config import DistillConfig, UserError

CHECKPOINT_DIR = ".checkpoint"
PLAN_FILE = "plan.json"
STATE_FILE = "state.pt"
REPORT_FILE = "export.json"


def check_out_dir(out: Path) -> None:
    """The folder must be new or empty, or hold an unfinished export (its checkpoint): nothing else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a new or empty folder")
    names = sorted(p.name for p in out.iterdir())
    if not names or (out / CHECKPOINT_DIR / PLAN_FILE).exists():
        return
    if (out / REPORT_FILE).exists():
        raise UserError(f"--out {out}: already holds a finished export; remove it or give another folder")
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise UserError(f"--out {out}: holds something else ({shown}); give a new or empty folder")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(a temporary file beside `path`), then rename it to `path`: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every key of `new` whose value differs (nested dicts key by key)."""
    out = []
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            out += differences(before, value, f"{prefix}{key}.")
        elif before != value:
            out.append(f"{prefix}{key}: {before} -> {value}")
    return out


@dataclass
class FileCheckpoint:
    """distill.Checkpointer in a folder: plan.json (which export) and state.pt (distill's state)."""

    folder: Path
    every: int                               # optimizer steps between saves
    log: Callable[[str], None] = print
    resumed_from: int | None = field(default=None, init=False)  # the step a resumed run started after

    def check(self, plan: dict) -> None:
        """UserError when the folder holds the checkpoint of another export (some key of `plan` differs)."""
        path = self.folder / PLAN_FILE
        if not path.exists():
            return
        recorded = json.loads(path.read_text())
        if isinstance(recorded.get("config"), dict):  # a checkpoint made before a config field existed ran its default
            recorded["config"] = {**DistillConfig.added_fields(recorded["config"]), **recorded["config"]}
        changed = differences(recorded, json.loads(json.dumps(plan)))
        if changed:
            raise UserError(f"{self.folder} is the checkpoint of another export ({'; '.join(changed[:4])}): "
                            f"run that export's command to finish it, or remove {self.folder} to start this one")

    def claim(self, plan: dict) -> None:
        """check, then record `plan` as this checkpoint's."""
        self.check(plan)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / PLAN_FILE, lambda p: p.write_text(json.dumps(plan, indent=2)))

    def load(self) -> dict | None:
        path = self.folder / STATE_FILE
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        done = state["result"]
        self.resumed_from = done["hint_steps"] + done["kd_steps"]
        self.log(f"resuming from the checkpoint after step {self.resumed_from} "
                 f"({done['hint_steps']} hint + {done['kd_steps']} KD steps) in {self.folder}")
        return state

    def save(self, state: dict) -> None:
        write_atomically(self.folder / STATE_FILE, lambda p: torch.save(state, p))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
