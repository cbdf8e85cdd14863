"""bench.common: RESULTS/BENCHMARKS.md from the reports under RESULTS/benchmarks/ (write_summary), and the
rank correlation the benchmarks report."""

import json

import pytest

from fastbert_nas.bench.common import SUMMARY_FILE, kendall_tau, rank_correlation, seed_stats, seed_text, write_summary


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


def test_rank_correlation_on_plain_numbers():
    assert rank_correlation([0.1, 0.5, 0.3], [10, 30, 20]) == pytest.approx(1.0)     # any monotone map
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their average rank: ranks (1, 2.5, 2.5, 4) against (1, 3, 2, 4)
    assert rank_correlation([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / 22.5 ** 0.5)
    assert rank_correlation([0.5, 0.5, 0.5], [1, 2, 3]) is None                       # nothing to rank
    # Kendall: of the 6 pairs, 5 in the same order and 1 swapped
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx((5 - 1) / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0) and kendall_tau([1, 1], [1, 2]) is None


def test_seed_text_gives_mean_sd_and_range_over_seeds_and_one_seed_alone():
    assert seed_text(seed_stats([0.5]), ".1%") == "50.0%"
    assert seed_text(seed_stats([0.94, 0.95, 0.96]), ".2f") == "0.95 ± 0.01 (0.94-0.96)"
