"""The package layout: imports point one way, the light modules load no torch, no module grows too long."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastbert_nas"
ORDER = ["config", "core", "search", "report", "export", "bench", "cli"]  # data flows down this list
MAX_LINES = 420  # a module longer than this holds more than one concern
# What `show`, `plot` without --remeasure and `--help` import: none of it may load torch.
LIGHT = ["fastbert_nas.config", "fastbert_nas.search.space", "fastbert_nas.search.pruning",
         "fastbert_nas.search.trials", "fastbert_nas.search.storage", "fastbert_nas.report.rows",
         "fastbert_nas.report.plots", "fastbert_nas.cli"]


def layer(module: str) -> str:
    """'fastbert_nas.search.run' -> 'search'; 'fastbert_nas.config' -> 'config'."""
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastbert_nas."):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("fastbert_nas.")}
    return out


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_points_down_the_layers():
    wrong = []
    for path in modules():
        own = "config" if path.name == "config.py" else path.parent.name
        assert own in ORDER, path
        for module in imported_modules(path):
            if ORDER.index(layer(module)) > ORDER.index(own):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, wrong
    assert {p.parent.name for p in modules() if p.parent != PACKAGE} == set(ORDER[1:])


def test_no_relative_imports_and_no_long_modules():
    for path in modules():
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], path
        assert len(path.read_text().splitlines()) <= MAX_LINES, path


def test_the_light_modules_and_help_load_no_torch():
    code = (f"import sys\nfor m in {LIGHT!r}: __import__(m)\n"
            "from typer.testing import CliRunner\nfrom fastbert_nas.cli import app\n"
            "r = CliRunner().invoke(app, ['search', '--help'])\nassert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    # the check itself can fail: the pipeline does load torch
    heavy = subprocess.run([sys.executable, "-c", "import sys, fastbert_nas.core.pipeline; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True).stdout
    assert heavy.strip() == "True"
