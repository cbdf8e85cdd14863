"""augment.py: TinyBERT-style word replacement with the teacher's word embeddings, and a
distillation on augmented examples (their hard label is the teacher's prediction)."""

import numpy as np
import torch

from fastbert_nas.config import DistillConfig, StudentArch, budget_config
from fastbert_nas.core.augment import (
    AUGMENT_MAX_COPIES,
    AUGMENT_MIN_TOKENS,
    AUGMENTED_LABEL,
    augment,
    concat,
    copies_for,
    neighbours,
    word_ids,
)
from fastbert_nas.core.distill import LiveTeacher, distill
from fastbert_nas.core.pipeline import augmented_examples
from fastbert_nas.core.student import build_student
from fastbert_nas.core.tasks import Encoded, collate, encode

# A toy vocabulary: specials, words, a word piece, punctuation. Embeddings put the words in two
# clusters (good-great-fine, bad-awful-poor) so that each one's nearest neighbours are known.
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "good", "great", "fine", "bad", "awful", "poor", "play", "##ing", ".", "[unused0]"]
ID = {tok: i for i, tok in enumerate(VOCAB)}


def toy_embeddings() -> np.ndarray:
    e = np.zeros((len(VOCAB), 4), dtype=np.float32)
    for tok, v in {"good": [1, 0.1, 0, 0], "great": [1, 0.2, 0, 0], "fine": [1, 0.4, 0, 0],
                   "bad": [0, 0, 1, 0.1], "awful": [0, 0, 1, 0.2], "poor": [0, 0, 1, 0.4],
                   "play": [0, 1, 0, 1]}.items():
        e[ID[tok]] = v
    e[ID["##ing"]] = e[ID["good"]]  # identical to "good", but a word piece: never a neighbour
    e[ID["."]] = e[ID["bad"]]       # identical to "bad", but punctuation: never a neighbour
    return e


def ids(*toks) -> np.ndarray:
    return np.array([ID[t] for t in toks], dtype=np.int64)


def test_word_ids_are_whole_lowercase_words_only():
    assert [VOCAB[i] for i in word_ids(VOCAB)] == ["good", "great", "fine", "bad", "awful", "poor", "play"]


def test_neighbours_are_the_nearest_other_words():
    nb = neighbours(toy_embeddings(), word_ids(VOCAB), ids("good", "bad"), k=2)
    assert sorted(VOCAB[i] for i in nb[ID["good"]]) == ["fine", "great"]
    assert sorted(VOCAB[i] for i in nb[ID["bad"]]) == ["awful", "poor"]


def test_augment_replaces_whole_words_by_neighbours_in_long_examples_only():
    long = ids("[CLS]", "good", "bad", "play", "##ing", ".", "good", "[SEP]")
    short = ids("[CLS]", "bad", "[SEP]")
    enc = Encoded([long, short], np.array([1, 0]))

    out = augment(enc, VOCAB, toy_embeddings(), copies=30, min_tokens=5, p=0.5, k=2)

    assert len(out) == 30 and (out.labels == AUGMENTED_LABEL).all()  # only the long example is copied
    near = {ID["good"]: {ID["great"], ID["fine"]}, ID["bad"]: {ID["awful"], ID["poor"]}}
    changed = np.zeros(len(long), dtype=bool)
    for new in out.ids:
        assert len(new) == len(long)
        for pos in (0, 3, 4, 5, 7):  # [CLS], "play" (followed by ##ing), "##ing", ".", [SEP]: never touched
            assert new[pos] == long[pos]
        for pos in (1, 2, 6):        # a whole word: kept, or one of its 2 nearest neighbours
            assert new[pos] == long[pos] or new[pos] in near[long[pos]]
        changed |= new != long
    assert changed[[1, 2, 6]].all()  # with p 0.5 over 30 copies, every whole word was replaced sometimes
    again = augment(enc, VOCAB, toy_embeddings(), copies=30, min_tokens=5, p=0.5, k=2)
    assert all((a == b).all() for a, b in zip(out.ids, again.ids))  # fixed seed: the same set every run
    assert len(augment(enc, VOCAB, toy_embeddings(), copies=0)) == 0
    both = concat(enc, out)
    assert len(both) == 32 and both.labels[:2].tolist() == [1, 0]


def test_distill_on_augmented_real_rows_uses_the_teachers_predictions(tiny_teacher, sst2_data):
    """Augmented SST-2 rows (with the tiny teacher's real vocabulary) train without error, and their
    hard label is the teacher's prediction: a batch of augmented rows only gives the same loss as the
    same rows labelled with the teacher's argmax."""
    train = encode(sst2_data.train.subset(np.arange(200)), tiny_teacher.tokenizer, 64)
    both = augmented_examples(train, tiny_teacher, DistillConfig(augment=2))
    added = both.ids[len(train):]
    long = [ids for ids in train.ids if len(ids) >= AUGMENT_MIN_TOKENS]  # the sentence-like rows: copied twice
    assert len(long) > 0 and len(added) == 2 * len(long) and len(both) == len(train) + len(added)
    assert [len(a) for a in added[::2]] == [len(b) for b in added[1::2]] == [len(ids) for ids in long]
    assert all((a[0], a[-1]) == (ids[0], ids[-1]) for a, ids in zip(added[::2], long))  # [CLS] ... [SEP] kept
    assert (both.labels[len(train):] == AUGMENTED_LABEL).all()
    assert sum((a != b).any() for a, b in zip(added[::2], added[1::2])) > 0  # the copies differ
    text = tiny_teacher.tokenizer.decode(added[0][1:-1])
    assert text.strip() and "[UNK]" not in text

    arch = StudentArch.parse("L2-H32-A4-I64", "1:1,2:3").validate(tiny_teacher.layers)
    val = encode(sst2_data.val.subset(np.arange(32)), tiny_teacher.tokenizer, 64)
    aug_only = Encoded(added[:64], both.labels[len(train):][:64])
    batch = collate(aug_only, np.arange(64))
    with torch.no_grad():
        t_logits = tiny_teacher.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    as_teacher = Encoded(aug_only.ids, t_logits.argmax(-1).numpy())
    as_flipped = Encoded(aug_only.ids, 1 - t_logits.argmax(-1).numpy())
    weights = []
    for enc in (aug_only, as_teacher, as_flipped):
        s = build_student(arch, tiny_teacher.model, "teacher", collate(train, np.arange(16)))
        cfg = budget_config("smoke", kd_alpha=0.0)  # hard labels only: the label is all that differs
        r = distill(s, arch, LiveTeacher(tiny_teacher.model, [1, 3]), 48, enc, val, sst2_data.spec,
                    cfg, torch.device("cpu"), show_progress=False)
        assert r.kd_steps == cfg.kd_steps
        weights.append(torch.cat([p.detach().flatten() for p in s.parameters()]))
    assert torch.equal(weights[0], weights[1])       # trained exactly as on the teacher's labels
    assert not torch.equal(weights[0], weights[2])   # (and the labels do matter)


def test_copies_scale_with_the_training_set_within_their_bounds():
    """With a target, a small set gets more copies (at most AUGMENT_MAX_COPIES), a large one at least
    `copies`; examples too short to augment do not count; without a target, `copies` as given."""
    short, long = ids("[CLS]", "bad", "[SEP]"), ids("[CLS]", "good", "bad", "play", "##ing", ".", "good", "[SEP]")
    enc = Encoded([long] * 100 + [short] * 900, np.zeros(1000, dtype=np.int64))
    assert copies_for(enc, 2) == 2 and copies_for(enc, 2, min_tokens=5, target=0) == 2
    assert copies_for(enc, 0, min_tokens=5, target=1000) == 10            # 100 long examples x 10
    assert copies_for(enc, 0, min_tokens=3, target=1000) == 1             # every example counts
    assert copies_for(enc, 0, min_tokens=5, target=10**6) == AUGMENT_MAX_COPIES
    assert copies_for(enc, 4, min_tokens=3, target=1000) == 4             # never below `copies`
    assert copies_for(enc, 30, min_tokens=5, target=1000) == 30           # even above the cap
    assert copies_for(Encoded([short], np.zeros(1, dtype=np.int64)), 2, min_tokens=5, target=100) == 0


def test_short_rows_are_augmented_when_the_config_says_so(tiny_teacher, sst2_data):
    """augment_min_tokens 3: every real row with a whole word is copied, short ones included; with
    augment_examples the copies make about that many new rows."""
    train = encode(sst2_data.train.subset(np.arange(200)), tiny_teacher.tokenizer, 64)
    default = augmented_examples(train, tiny_teacher, DistillConfig(augment=1))
    every = augmented_examples(train, tiny_teacher, DistillConfig(augment=1, augment_min_tokens=3))
    short = sum(1 for x in train.ids if len(x) < AUGMENT_MIN_TOKENS)
    assert short > 0 and len(every) - len(train) == len(train) > len(default) - len(train)
    assert len(default) - len(train) == len(train) - short
    scaled = augmented_examples(train, tiny_teacher, DistillConfig(augment_examples=1000, augment_min_tokens=3))
    assert len(scaled) - len(train) == 5 * len(train)  # 1000 / 200 rows
    assert augmented_examples(train, tiny_teacher, DistillConfig()) is train
