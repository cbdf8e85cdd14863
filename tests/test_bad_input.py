"""Bad input never costs a study: through the real CLI each mistake is one `error:` line and exit code 2,
with nothing written; and the loaders, fed random search spaces and data files, raise nothing but UserError
and write nothing."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import TINY_TEACHER, assert_user_error, invoke, search_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbert_nas.config import BUDGETS, UserError
from fastbert_nas.core.tasks import load_task, resolve_task
from fastbert_nas.search.space import load_space, sample, space_budget

# 150 random files per property: enough to reach each check, in a few seconds; no example database in the repo
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def broken(tmp_path, tiny_teacher_dir) -> dict[str, Path]:
    """Broken inputs, outside the results folder: space files, custom task folders, a teacher."""
    tiny = Path(load_space("tiny").path).read_text()
    spaces = {"bad_yaml": "layers: {min: 1, max: 2\nhidden: [16", "no_student": tiny.replace("heads: [2, 4]",
                                                                                           "heads: [7]")}
    rows = "".join(f"row number {i}\t{i % 2}\n" for i in range(30))
    tasks = {"wrong_columns": ("review\tstars\n" + rows, "review\tstars\n" + rows),
             "unknown_label": ("sentence\tlabel\n" + rows, "sentence\tlabel\n" + rows + "one more\t7\n"),
             "bad_encoding": ("sentence\tlabel\n" + rows, "sentence\tlabel\nun caf\xe9 cr\xe8me\t1\n")}
    out = {}
    for name, text in spaces.items():
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(text)
    for name, (train, dev) in tasks.items():
        out[name] = tmp_path / name
        out[name].mkdir()
        (out[name] / "train.tsv").write_text(train)
        (out[name] / "dev.tsv").write_bytes(dev.encode("latin-1" if name == "bad_encoding" else "utf-8"))
    out["small_vocab_teacher"] = small_vocab_teacher(tiny_teacher_dir, tmp_path / "small_vocab_teacher")
    return out


def small_vocab_teacher(tiny_teacher_dir: Path, folder: Path) -> Path:
    """The tiny teacher's tokenizer (30522 tokens) on a BERT with 100 embedding rows."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    BertForSequenceClassification(BertConfig(vocab_size=100, **TINY_TEACHER)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_teacher_dir).save_pretrained(folder)
    return folder


# (name, command line over search_args or a whole command, words of the error line); `{x}` names a `broken` input
CASES = [
    ("unknown task", {"--task": "nosuchtask"}, ["--task 'nosuchtask'", "not a built-in task"]),
    ("unknown space", {"--space": "nosuchspace"}, ["--space 'nosuchspace'", "no such search space"]),
    ("unknown study (show)", ["show", "--study", "nosuch"], ["--study nosuch", "not found"]),
    ("unknown study (plot)", ["plot", "--study", "nosuch"], ["--study nosuch", "not found"]),
    ("malformed YAML", {"--space": "{bad_yaml}"}, ["bad_yaml.yaml: not valid YAML"]),
    ("space without a valid student", {"--space": "{no_student}"}, ["width 16 is divided by none of the heads"]),
    ("no student under --max-flops", {"--max-flops": 1000}, ["no student of space 'tiny' fits", "L1-H16-A4-I32"]),
    ("tokenizer larger than the embeddings", {"--teacher": "{small_vocab_teacher}"},
     ["30522 tokens, more than the 100 rows of its embeddings"]),
    ("data file with wrong columns", {"--task": "{wrong_columns}"}, ["no column 'sentence' in header"]),
    ("data file with an unknown label", {"--task": "{unknown_label}"}, ["dev.tsv line 32: unknown label '7'"]),
    ("data file not UTF-8", {"--task": "{bad_encoding}"}, ["dev.tsv: not UTF-8"]),
    ("storage URL of an unknown scheme", {"--storage": "nosuchdb://x"}, ["--storage nosuchdb://x"]),
    ("one objective without a constraint", {"--objectives": "metric"}, ["needs a cost constraint"]),
    ("--pruner in a multi-objective study", {"--pruner": "hyperband"},
     ["--pruner hyperband", "single-objective studies", "--objectives metric,flops"]),
    ("--workers > 1 on an in-memory study", {"--workers": 2, "--storage": "sqlite://"},
     ["--workers 2 --storage sqlite://", "in-memory"]),
    ("--text-column with a built-in task", {"--text-column": "review"}, ["custom tasks (--task PATH) only"]),
]


@pytest.mark.parametrize("name, command, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(data_dir, tiny_teacher_dir, tmp_path, broken, restore_threads,
                                                  name, command, words):
    results = tmp_path / "results"
    if isinstance(command, dict):
        over = {k: str(v).format(**broken) for k, v in command.items()}
        args = search_args(data_dir, tiny_teacher_dir, results, **over)
    else:
        args = [*command, "--results", results]
    assert_user_error(invoke(*args), *words)
    assert not results.exists() or not any(results.iterdir())  # no <study>.db, no folder


# ---------------------------------------------------------------------------
# Random search spaces and data files: a result or a UserError, and nothing written

TINY_SPACE = yaml.safe_load(Path(load_space("tiny").path).read_text())
ODD_VALUES = st.sampled_from([0, -1, 1, 2.5, 10**400, 1e308, math.inf, math.nan, "1e-4", "x", "", [], {}, [0], True,
                              None, {"min": 2, "max": 1}, {"min": 1}, [16, 16], ["teacher", "pretrained"]])
YAML_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


@st.composite
def mutated_spaces(draw) -> str:
    """The `tiny` space file with one to four keys (top level or budget.smoke) dropped or given odd values."""
    space = copy.deepcopy(TINY_SPACE)
    for _ in range(draw(st.integers(1, 4))):
        smoke = (space.get("budget") or {}).get("smoke") if isinstance(space.get("budget"), dict) else None
        section = smoke if isinstance(smoke, dict) and draw(st.booleans()) else space
        key = draw(st.sampled_from(sorted(map(str, section)) + ["unknown_key"]))
        if draw(st.integers(0, 4)) == 0:
            section.pop(key, None)
        else:
            section[key] = draw(ODD_VALUES | YAML_VALUES)
    return yaml.safe_dump(space)


SPACE_FILES = st.one_of(mutated_spaces(), YAML_VALUES.map(yaml.safe_dump), st.text(max_size=200),
                        st.binary(max_size=200))


def write(path: Path, content: str | bytes) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


@FUZZ
@given(content=SPACE_FILES)
def test_a_random_space_file_loads_or_is_a_user_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "space.yaml")
        write(path, content)
        try:
            space = load_space(path)
            for preset in BUDGETS:
                space_budget(space, preset)
        except UserError:
            pass
        else:  # a space that loads samples valid students
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            arch, _ = sample(space, study.ask(), teacher_layers=3)
            assert arch.hidden % arch.heads == 0 and 1 <= len(arch.hints) <= arch.layers
        assert os.listdir(folder) == ["space.yaml"]


LABELS = st.sampled_from(["0", "1", "pos", "neg", "", "-1", "--5", "\u00b2", "1.5", " 1"]) | st.text(max_size=3)
TEXTS = st.text(max_size=30)
HEADERS = st.sampled_from(["sentence\tlabel", "label\tsentence", "sentence,label", "text\tlabel", "sentence", ""])


@st.composite
def data_files(draw) -> bytes:
    """A TSV/CSV-like file: a header, then rows of a text and a label (or random fields), or random bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=300))
    sep = draw(st.sampled_from(["\t", ","]))
    row = st.tuples(TEXTS, LABELS).map(list) | st.lists(TEXTS | LABELS, max_size=3)
    lines = [draw(HEADERS | st.text(max_size=20))] + [sep.join(r) for r in draw(st.lists(row, max_size=30))]
    return "\n".join(lines).encode()


@FUZZ
@given(train=data_files(), dev=st.none() | data_files(), suffix=st.sampled_from(["tsv", "csv"]))
def test_random_data_files_load_or_are_a_user_error(train, dev, suffix):
    with tempfile.TemporaryDirectory() as folder:
        task = Path(folder, "task")
        task.mkdir()
        write(task / f"train.{suffix}", train)
        write(task / f"dev.{suffix}", train if dev is None else dev)
        try:
            data = load_task(resolve_task(str(task)))
        except UserError:
            pass
        else:
            labels = len(data.spec.labels)
            assert labels >= 2 and len(data.train) >= 1 and len(data.val) >= 1 and len(data.dev) >= 1
            assert all(0 <= y < labels for split in (data.train, data.val, data.dev) for y in split.labels)
        assert sorted(os.listdir(task)) == sorted([f"train.{suffix}", f"dev.{suffix}"])
        assert os.listdir(folder) == ["task"]
