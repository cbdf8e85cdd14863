"""Shared fixtures. Keep additive: one fixture per concern."""

from __future__ import annotations

import os
from pathlib import Path

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

    from fastbert_nas.teacher import DEFAULT_BASE, base_path

    tokenizer = AutoTokenizer.from_pretrained(base_path(DEFAULT_BASE))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), **TINY_TEACHER))
    folder = tmp_path_factory.mktemp("tiny_teacher")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_teacher(tiny_teacher_dir):
    """The tiny teacher loaded the way --teacher loads one: a fastbert_nas.teacher.Teacher on CPU."""
    import numpy as np
    import torch

    from fastbert_nas.tasks import TASKS, Split, TaskData
    from fastbert_nas.teacher import get_teacher

    empty = Split([], np.zeros(0, dtype=np.int64))
    data = TaskData(TASKS["sst2"], empty, empty, empty, source="test")  # only its label count is read
    return get_teacher(data, tiny_teacher_dir.parent, torch.device("cpu"), teacher=str(tiny_teacher_dir))


@pytest.fixture(scope="session")
def sst2_data(data_dir):
    """The real SST-2 rows (train/val/dev) from the local data folder."""
    from fastbert_nas.tasks import TASKS, load_task

    return load_task(TASKS["sst2"], str(data_dir))


@pytest.fixture
def restore_threads():
    """Put torch's intra-op thread count back after a test that sets it (e.g. --threads 1)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
