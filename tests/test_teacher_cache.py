"""teacher.teacher_outputs: the on-disk cache of the teacher's logits and hidden states."""

import copy
import errno

import numpy as np
import pytest
import torch

from fastbert_nas.config import UserError
from fastbert_nas.core import teacher as teacher_mod
from fastbert_nas.core.tasks import encode
from fastbert_nas.core.teacher import Teacher, teacher_outputs, weights_fingerprint

CPU = torch.device("cpu")
MAX_LEN = 64


@pytest.fixture
def enc(sst2_data, tiny_teacher):
    return encode(sst2_data.train.subset(np.arange(40)), tiny_teacher.tokenizer, MAX_LEN)


def cache(t, e, results, split="distill"):
    return teacher_outputs(t, e, "sst2", split, MAX_LEN, results, CPU)


def cache_dirs(results):
    return sorted(p.name for p in (results / "cache").iterdir())


def test_cache_round_trips_live_outputs_without_padding(tiny_teacher, enc, tmp_path):
    out = cache(tiny_teacher, enc, tmp_path)
    lengths = enc.lengths()
    assert len(set(lengths.tolist())) > 1                              # the batch really needed padding
    assert out.hidden.shape == (lengths.sum(), tiny_teacher.layers + 1, 48)  # real tokens only
    assert out.logits.shape == (len(enc), 2)
    assert out.hidden.dtype == out.logits.dtype == np.float16
    np.testing.assert_array_equal(out.offsets, np.concatenate([[0], np.cumsum(lengths)]))

    model = tiny_teacher.model.eval()
    with torch.inference_mode():
        for i in range(len(enc)):
            ids = torch.from_numpy(enc.ids[i])[None]                   # (1, t): unpadded
            live = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
            states = torch.stack(live.hidden_states, dim=2)[0]         # (t, L+1, H)
            stored = torch.from_numpy(out.hidden[out.offsets[i] : out.offsets[i + 1]].astype(np.float32))
            torch.testing.assert_close(stored, states, rtol=1e-2, atol=1e-2)
            torch.testing.assert_close(torch.from_numpy(out.logits[i].astype(np.float32)), live.logits[0],
                                       rtol=1e-2, atol=1e-3)


def test_batch_reads_back_zero_padded_layers(tiny_teacher, enc, tmp_path):
    out = cache(tiny_teacher, enc, tmp_path)
    idx = np.array([3, 1])
    logits, hid = out.batch(idx, [0, 2], MAX_LEN)
    assert logits.shape == (2, 2) and hid.shape == (2, 2, MAX_LEN, 48)
    for row, i in enumerate(idx):
        n = enc.lengths()[i]
        block = out.hidden[out.offsets[i] : out.offsets[i + 1]]        # (t, L+1, H)
        np.testing.assert_array_equal(hid[row, 1, :n].numpy(), block[:, 2].astype(np.float32))
        assert (hid[row, :, n:] == 0).all()
    assert out.batch(idx, [], MAX_LEN)[1] is None


def test_cache_is_reused_then_rebuilt_when_teacher_or_data_change(tiny_teacher, enc, sst2_data, tmp_path,
                                                                  monkeypatch):
    first = cache(tiny_teacher, enc, tmp_path)
    mtime = (first.folder / "hidden.npy").stat().st_mtime_ns

    real_fill = teacher_mod._fill_cache
    fills = []
    monkeypatch.setattr(teacher_mod, "_fill_cache", lambda *a, **k: (fills.append(1), real_fill(*a, **k)))

    again = cache(tiny_teacher, enc, tmp_path)
    assert again.folder == first.folder and not fills
    assert (again.folder / "hidden.npy").stat().st_mtime_ns == mtime

    # one weight changes -> a new fingerprint -> a new folder; the stale one is gone
    model = copy.deepcopy(tiny_teacher.model)
    with torch.no_grad():
        model.classifier.weight[0, 0] += 1.0
    changed = Teacher(model, tiny_teacher.tokenizer, {}, weights_fingerprint(model))
    assert changed.fingerprint != tiny_teacher.fingerprint
    rebuilt = cache(changed, enc, tmp_path)
    assert fills == [1]
    assert rebuilt.folder != first.folder and not first.folder.exists()
    assert cache_dirs(tmp_path) == [rebuilt.folder.name]
    assert not np.array_equal(np.asarray(rebuilt.logits), np.asarray(first.logits))

    # another split of the same task is a different cache and leaves this one alone
    other_split = cache(changed, enc, tmp_path, split="val")
    assert rebuilt.folder.exists() and other_split.folder != rebuilt.folder

    # different examples -> rebuilt as well
    other_rows = encode(sst2_data.train.subset(np.arange(40, 70)), tiny_teacher.tokenizer, MAX_LEN)
    third = cache(changed, other_rows, tmp_path)
    assert fills == [1, 1, 1]
    assert third.folder not in (rebuilt.folder, other_split.folder) and not rebuilt.folder.exists()
    assert cache_dirs(tmp_path) == sorted([third.folder.name, other_split.folder.name])
    assert len(third) == 30


def test_a_stale_cache_is_removed_but_not_a_split_whose_name_extends_its_own(tiny_teacher, enc, sst2_data,
                                                                             tmp_path):
    """"augmented" rebuilt for other examples removes its stale folder, not "augmented-min3"'s."""
    first = cache(tiny_teacher, enc, tmp_path, split="augmented")
    longer = cache(tiny_teacher, enc, tmp_path, split="augmented-min3")
    other = encode(sst2_data.train.subset(np.arange(40, 60)), tiny_teacher.tokenizer, MAX_LEN)
    rebuilt = cache(tiny_teacher, other, tmp_path, split="augmented")
    assert not first.folder.exists() and longer.folder.exists() and rebuilt.folder.exists()
    assert cache_dirs(tmp_path) == sorted([longer.folder.name, rebuilt.folder.name])


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_no_half_written_cache(tiny_teacher, enc, tmp_path, monkeypatch, exc):
    real_fill = teacher_mod._fill_cache

    def fail_midway(t, e, folder, device):
        real_fill(t, e, folder, device)          # every file written...
        (folder / "offsets.npy").unlink()        # ...but the last one, then
        raise exc("interrupted")

    monkeypatch.setattr(teacher_mod, "_fill_cache", fail_midway)
    with pytest.raises(exc):
        cache(tiny_teacher, enc, tmp_path)
    assert cache_dirs(tmp_path) == []            # neither the cache folder nor a .tmp folder

    monkeypatch.setattr(teacher_mod, "_fill_cache", real_fill)
    out = cache(tiny_teacher, enc, tmp_path)     # and the next call builds it whole
    assert cache_dirs(tmp_path) == [out.folder.name] and len(out) == len(enc)


def test_a_full_disk_leaves_no_cache(tiny_teacher, enc, tmp_path, monkeypatch):
    """No space left for the last file (the big ones written): one UserError, no cache and no .tmp folder left."""
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(teacher_mod.np, "save", no_space)
    with pytest.raises(UserError, match=r"no space left on the device .* --no-cache"):
        cache(tiny_teacher, enc, tmp_path)
    assert cache_dirs(tmp_path) == []
