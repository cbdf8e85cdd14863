"""bench.write_summary: RESULTS/BENCHMARKS.md from the reports under RESULTS/benchmarks/."""

import json

from fastbert_nas.bench.common import SUMMARY_FILE, write_summary


def test_the_summary_lists_every_report_with_its_machine_and_includes_it(tmp_path):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    machine = {"cpu": "AMD EPYC", "threads": 2, "torch": "2.13.0+cpu", "cuda": None}
    (folder / "speed-sst2.json").write_text(json.dumps({"machine": machine, "time": "2026-11-22T03:00:00+00:00"}))
    (folder / "speed-sst2.md").write_text("# Speed\n\nfigures\n\n## Profile\n")
    (folder / "notes.md").write_text("# Notes without a record\n")
    (folder / "soak.json").write_text("{}")  # a record without a report: not listed
    out = write_summary(tmp_path)
    assert out == tmp_path / SUMMARY_FILE
    lines = out.read_text().splitlines()
    assert "| [speed-sst2](benchmarks/speed-sst2.md) | 2026-11-22T03:00:00+00:00 | AMD EPYC, 2 threads, torch 2.13.0+cpu |" in lines
    assert "| [notes](benchmarks/notes.md) | - | - |" in lines
    assert "soak" not in out.read_text()
    assert lines.index("## Notes without a record") < lines.index("## Speed") < lines.index("### Profile")
    assert lines.count("# Benchmarks") == 1
