"""`bench families` (bench/families.py) at toy settings on real SST-2 rows: a random base of each family is
fine-tuned into its teacher through --base, a student of the family is distilled from it, and the row is kept;
a second run reads the rows back; the pre-trained BERT rows come from bench export's report."""

from __future__ import annotations

import json

import pytest
from conftest import invoke, quick_timings

import fastbert_nas.bench.families as bf
from fastbert_nas.bench import settings


@pytest.fixture
def toy_settings(monkeypatch):
    quick_timings(monkeypatch)
    for name, value in {"FAMILY_SHAPE": (2, 32, 2, 64), "FAMILY_TEACHER_EPOCHS": 0.005, "FAMILY_TEACHER_LR": 1e-3,
                        "FAMILY_STUDENT": "L1-H16-A2-I32", "FAMILY_HINTS": "1:2", "FAMILY_BUDGET": "smoke",
                        "FAMILY_KD_STEPS": 8, "FAMILY_HINT_STEPS": 4}.items():
        monkeypatch.setattr(settings, name, value)


def test_each_family_is_fine_tuned_and_distilled_and_its_row_kept(toy_settings, data_dir, tmp_path, restore_threads):
    results = tmp_path / "results"
    r = bf.bench_families(list(settings.FAMILIES), results, str(data_dir), threads=1, log=lambda _: None)
    assert [x["family"] for x in r["rows"]] == list(settings.FAMILIES)
    for x in r["rows"]:
        config = json.loads((results / "families" / x["family"] / "base" / "config.json").read_text())
        assert x["model_type"] == config["model_type"] == x["family"]  # the student's family is the teacher's
        manifest = json.loads((results / "families" / x["family"] / "teachers" / "sst2" / "manifest.json").read_text())
        assert manifest["base"] == str(results / "families" / x["family"] / "base")  # fine-tuned from that base
        assert x["teacher"]["val"] == manifest["val"]["metric"] and x["teacher"]["params"] > x["student"]["params"]
        assert 0 <= x["student"]["dev"] <= 1 and 0 < x["flops_share"] < 1
        assert x["retention"] == pytest.approx(x["student"]["dev"] / x["teacher"]["dev"])
    assert r["pretrained_bert"] is None
    md = (results / "benchmarks" / "families.md").read_text()
    assert md.count("random init) |") == len(settings.FAMILIES) and "has not run here" in md

    # a second run reads the rows back; bench export's SST-2 rows stand for the pre-trained BERT
    over = {"task": "sst2", "share_limit": 0.25, "student": "L2-H384-A8-I576", "flops_share": 0.2,
            "dev_metric": {"mean": 0.857, "sd": 0.005, "n": 3}, "retention": {"mean": 0.952, "sd": 0.006, "n": 3}}
    (results / "benchmarks" / "export.json").write_text(json.dumps({"over_seeds": [over]}))
    said = []
    again = bf.bench_families(["bert", "distilbert"], results, str(data_dir), threads=1, log=said.append)
    assert said == [f"bert: on record ({results / 'families' / 'bert' / 'row.json'})",
                    f"distilbert: on record ({results / 'families' / 'distilbert' / 'row.json'})"]
    assert again["rows"] == r["rows"][:1] + r["rows"][3:]
    assert "dev 0.8570 ± 0.0050, retention 95.2% ± 0.6% (n=3)" in bf.families_markdown(again)


def test_an_unknown_family_is_refused_in_one_line(tmp_path):
    r = invoke("bench", "families", "--families", "bert,albert", "--results", tmp_path)
    assert r.exit_code == 2 and "choose among bert, roberta, electra, distilbert" in r.output
    assert "Traceback" not in r.output
