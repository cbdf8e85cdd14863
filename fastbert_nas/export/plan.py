"""Which export: the trial (--trial or --pick's rule), its student and settings on the chosen budget, and
the run environment it is distilled in.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from fastbert_nas.config import (
    BUDGETS,
    CACHED_TEACHER_ID,
    CHECKPOINT_EVERY,
    ENV_ATTR,
    DistillConfig,
    RunEnv,
    StudentArch,
    TeacherRef,
    UserError,
    at_least,
    budget_config,
    run_env,
    trial_recipe,
)
from fastbert_nas.core.tasks import TASKS, resolve_task
from fastbert_nas.report.rows import gather
from fastbert_nas.search.baselines import parse_student
from fastbert_nas.search.trials import COST_ATTRS

NUMBER = r"(\d*\.?\d+(?:[eE][-+]?\d+)?)"
PICK_PATTERN = re.compile(rf"^\s*(?:{NUMBER}\s*<\s*)?(flops|latency)\s*<=\s*{NUMBER}\s*$")  # [LOW<]COST<=SHARE
PICK_COSTS = {"flops": "FLOPs", "latency": "batch-1 latency"}
GIVEN_STATE = "GIVEN"  # a Plan's state for a student given by --student (no trial)


@dataclass(frozen=True)
class ExportOptions:
    """Everything `fastbert-nas export` takes; field names are its option names."""

    out: Path
    trial: int | None = None
    pick: str | None = None
    again: Path | None = None        # an earlier export's folder: its student and trial recipe, the study not needed
    student: str | None = None       # ARCH[@HINTS]: a student given by its shape, trained with the trials' recipe
    study: str | None = None
    storage: str | None = None
    results: Path = Path("results")
    budget: str = "full"
    hint_steps: int | None = None
    kd_steps: int | None = None
    examples: int | None = None
    seed: int | None = None          # of init order, data order and dropout; default: the trial's
    onnx: bool = False
    quantize: str | None = None      # "int8": also model-int8.onnx, scored and timed (export/quantized.py)
    checkpoint_every: int = CHECKPOINT_EVERY
    task: str | None = None          # default: the study's
    data_dir: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    max_len: int | None = None
    teacher: str | None = None       # default: the study's for the study's task, else the task's cached one
    base: str | None = None          # what a cached teacher is fine-tuned from; default: the study's
    no_cache: bool = False
    device: str = "auto"
    threads: int | None = None

    def check(self) -> "ExportOptions":
        """Refuse bad options before anything is loaded."""
        if sum(x is not None for x in (self.trial, self.pick, self.again, self.student)) != 1:
            raise UserError("give exactly one of --trial N, --pick RULE (e.g. --pick 'flops<=0.25'), "
                            "--again EXPORT_DIR and --student ARCH[@HINTS]")
        if self.student is not None:
            parse_student(self.student, "--student")
            if self.task is None:
                raise UserError("--student needs --task: a student given by its shape has no study to take it from")
        if self.again is not None and not (Path(self.again) / "export.json").exists():
            raise UserError(f"--again {self.again}: no export.json there (give the folder of a finished export)")
        if self.pick is not None:
            parse_pick(self.pick)
        at_least(1, checkpoint_every=self.checkpoint_every, kd_steps=self.kd_steps, examples=self.examples)
        at_least(0, hint_steps=self.hint_steps, seed=self.seed)
        if self.quantize is not None and self.quantize != "int8":
            raise UserError(f"--quantize {self.quantize!r}: only int8 (ONNX Runtime's dynamic quantization)")
        if self.onnx or self.quantize:
            from fastbert_nas.export.onnx import check_installed

            check_installed()
        return self


def command_line(opts: ExportOptions) -> str:
    """The command that makes this export: `fastbert-nas export` and every option not at its default."""
    parts = ["fastbert-nas", "export"]
    for f in fields(opts):
        value = getattr(opts, f.name)
        if f.default is not MISSING and value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def parse_pick(text: str) -> tuple[str, float, float]:
    """'flops<=0.25' -> ('flops', 0.25, 0.0); '0.1<flops<=0.25' -> ('flops', 0.25, 0.1): a cost, the largest
    share of the teacher's allowed, and the share a student must exceed."""
    m = PICK_PATTERN.match(text)
    low, share = (float(m[1] or 0), float(m[3])) if m else (0.0, 0.0)
    if not m or share <= 0 or low >= share:
        raise UserError(f"--pick {text!r}: expected [LOW<]COST<=SHARE, COST flops or latency and SHARE a positive "
                        "share of the teacher's above LOW, e.g. 'flops<=0.25' or '0.1<flops<=0.25'")
    return m[2], share, low


def pick_text(cost: str, share: float, low: float = 0.0) -> str:
    """The --pick rule of `parse_pick`'s figures, written one way."""
    return f"{f'{low:g}<' if low else ''}{cost}<={share:g}"


def pick_row(rows: list[dict], teacher: dict, cost: str, share: float, low: float = 0.0) -> dict:
    """The COMPLETE row with the best metric among those costing more than `low` and at most `share` of the
    teacher (ties: the cheaper, then the earlier). Rows and teacher as report.gather makes them: a
    re-measured latency is compared with the teacher's re-measured one."""
    key = COST_ATTRS[cost]
    rule = pick_text(cost, share, low)

    def teacher_cost(row: dict) -> float | None:
        if cost == "flops":
            return teacher["flops"]
        return teacher["latency_ms"] if row["remeasured"] else teacher["latency_ms_trial"]

    done = [r for r in rows if r["state"] == "COMPLETE" and r["metric"] is not None and r[key] is not None
            and teacher_cost(r)]
    if not done:
        raise UserError(f"--pick {rule}: the study has no record of the teacher's {PICK_COSTS[cost]} "
                        "or no completed student with one")
    shares = {r["trial"]: r[key] / teacher_cost(r) for r in done}
    fits = [r for r in done if low < shares[r["trial"]] <= share]
    if not fits:
        between = f"more than {low:.1%} and " if low else ""
        raise UserError(f"--pick {rule}: no completed student has {between}at most {share:.1%} of the "
                        f"teacher's {PICK_COSTS[cost]}; the cheapest has {min(shares.values()):.1%}")
    return max(fits, key=lambda r: (r["metric"], -shares[r["trial"]], -r["trial"]))


def chosen_trial(study: optuna.Study, opts: ExportOptions) -> FrozenTrial:
    """--trial N, or the trial --pick's rule picks; UserError when there is none with a student."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if opts.pick is not None:
        data = gather(study, opts.results)
        number = pick_row(data.rows, data.teacher, *parse_pick(opts.pick))["trial"]
    elif opts.trial not in trials:
        have = f"trials 0-{max(trials)}" if trials else "no trials"
        raise UserError(f"--trial {opts.trial}: study {study.study_name!r} has no such trial ({have})")
    else:
        number = opts.trial
    t = trials[number]
    if not {"arch", "config"} <= set(t.user_attrs):
        raise UserError(f"trial {number} of study {study.study_name!r} ({t.state.name}) recorded no student: "
                        "nothing to export")
    return t


@dataclass(frozen=True)
class Plan:
    """One export: the trial's student and settings on the chosen budget, and where its teacher is."""

    study: str | None              # None: a student given by --student, not taken from a study
    trial: int | None
    state: str                     # the trial's state (an export of a PRUNED trial is allowed); GIVEN for --student
    env: RunEnv                    # the study's for the study's task (options may not contradict it)
    teacher_id: str                # --teacher, else the study's for the study's task, else the task's cached one
    arch: StudentArch
    cfg: DistillConfig
    metric: float | None           # the trial's validation metric in the search

    def source(self) -> str:
        """Where the student comes from, for the log."""
        if self.study is None:
            return "the student given by --student"
        return f"trial {self.trial} ({self.state}) of study {self.study}"

    def identity(self) -> dict:
        """What a checkpoint must match to be resumed (no paths, nothing about the machine)."""
        return {"study": self.study, "trial": self.trial, "task": self.env.task, "teacher": self.teacher_id,
                "arch": self.arch.to_dict(), "config": self.cfg.to_dict()}


def budgeted(recorded: dict, opts: ExportOptions) -> DistillConfig:
    """A recorded trial config with the export's budget (its steps, examples, augmentation) and --seed."""
    budget = budget_config(opts.budget, hint_steps=opts.hint_steps, kd_steps=opts.kd_steps, examples=opts.examples)
    cfg = replace(DistillConfig.from_dict(recorded), **{k: getattr(budget, k) for k in BUDGETS[opts.budget]})
    return cfg if opts.seed is None else replace(cfg, seed=opts.seed)


def again_plan(report: dict, opts: ExportOptions) -> Plan:
    """The plan of --again: the student and trial recipe an earlier export's export.json records, with this
    export's budget, seed and task, in the earlier export's environment for its task (as export_plan does
    for the study's). The study's database need not be here."""
    recorded = RunEnv.from_dict(report["env"])
    task = opts.task or recorded.task
    env = run_env(task, opts.data_dir, opts.text_column, opts.label_column, opts.max_len, opts.teacher, opts.base,
                  opts.device, opts.threads, opts.results, opts.no_cache)
    if same_task(task, recorded.task):
        env = env.adopt(recorded, f"export {opts.again}")
    spec = resolve_task(env.task, env.text_column, env.label_column, env.max_len)
    cfg = budgeted(report["config"], opts)
    return Plan(report["study"], report["trial"], report["trial_state"], env, env.teacher.id(spec.name),
                StudentArch.from_dict(report["arch"]), cfg, report["trial_val_metric"])


def student_plan(opts: ExportOptions) -> Plan:
    """The plan of --student: a student given by its shape and hints (one that `distill` or `bench depth`
    measured on validation, say), trained with the recipe a search trial of that shape gets
    (config.trial_recipe: teacher init, a learning rate tied to its width and depth) on the export's budget,
    in the environment of --task and the data options. No study is read."""
    arch = parse_student(opts.student, "--student")
    env = run_env(opts.task, opts.data_dir, opts.text_column, opts.label_column, opts.max_len, opts.teacher,
                  opts.base, opts.device, opts.threads, opts.results, opts.no_cache)
    spec = resolve_task(env.task, env.text_column, env.label_column, env.max_len)
    cfg = budgeted(trial_recipe(arch), opts)
    return Plan(None, None, GIVEN_STATE, env, env.teacher.id(spec.name), arch, cfg, None)


def same_task(a: str, b: str | None) -> bool:
    """Whether two --task values name one task: the same built-in name, or the same folder however spelled."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    if a in TASKS or b in TASKS:  # a built-in name wins over a folder of that name, as in resolve_task
        return False
    return os.path.isdir(a) and os.path.isdir(b) and Path(a).resolve() == Path(b).resolve()


def export_plan(study: optuna.Study, trial: FrozenTrial, opts: ExportOptions) -> Plan:
    """The trial's architecture, hints and settings, with the budget's steps and examples."""
    attrs = study.user_attrs
    recorded = RunEnv.from_dict(attrs[ENV_ATTR]) if ENV_ATTR in attrs else None
    task = opts.task or (recorded.task if recorded else attrs.get("task"))
    if task is None:
        raise UserError(f"study {study.study_name!r} records no task (not made by fastbert-nas search?): "
                        "give --task")
    env = run_env(task, opts.data_dir, opts.text_column, opts.label_column, opts.max_len, opts.teacher, opts.base,
                  opts.device, opts.threads, opts.results, opts.no_cache)
    # the study's environment (teacher included) only for the study's task: an architecture found on
    # SST-2 exported for CoLA (--task cola) is distilled from the CoLA teacher
    if same_task(task, recorded.task if recorded else attrs.get("task")):
        if recorded:
            env = env.adopt(recorded, f"study {study.study_name!r}")
        else:  # a study that recorded only its teacher's name
            studied = attrs.get("teacher_id") or trial.user_attrs.get("teacher_id")
            cached = CACHED_TEACHER_ID.format(task=attrs.get("task"))
            if opts.teacher is None and studied not in (None, cached):
                env = replace(env, teacher=TeacherRef(studied, opts.base))
    try:
        spec = resolve_task(env.task, env.text_column, env.label_column, env.max_len)
    except UserError as exc:
        if os.path.isdir(env.task) or env.task in TASKS:
            raise
        raise UserError(f"study {study.study_name!r} is for task {task!r}, neither built in nor a folder here: "
                        "give its folder with --task PATH") from exc
    cfg = budgeted(trial.user_attrs["config"], opts)
    metric = trial.values[0] if trial.state == TrialState.COMPLETE and trial.values else None
    return Plan(study.study_name, trial.number, trial.state.name, env, env.teacher.id(spec.name),
                StudentArch.from_dict(trial.user_attrs["arch"]), cfg, metric)
