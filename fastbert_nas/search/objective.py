"""One trial, the only code touching `optuna.Trial`:

    sample -> build -> cost (reject if over a constraint) -> distill (prune at checkpoints) -> record -> return

- Optuna cannot prune multi-objective trials (`trial.report` raises), so the Pareto-aware rule of
  search/pruning.py runs at each checkpoint through distill's `on_eval` callback, and a trial it
  stops raises `optuna.TrialPruned` by hand. Single-objective studies (`--objectives metric`) use
  Optuna's own pruners.
- A trial that ends at the majority-class level learned nothing: it is recorded as PRUNED with
  reason "collapsed" (pruning.collapse_reason), so that it is never a point on the front.
- Costs are measured at the task's length (its max_len, what a deployed student runs at) and FLOPs also at
  cost.REF_SEQ_LEN tokens (user attr flops_ref_len), for comparison with published figures.
- A trial at a higher rung (search/promotion.py) trains a student of a lower one again, for longer
  (Search.rung_config); the Pareto rule does not stop it (successive halving chose it), the collapse check
  does. A promotion two workers queued at once runs once: the later start is PRUNED as a duplicate.
- Costs are known before training: a student over --max-flops/--max-params/--max-latency-ms is
  rejected before its first step (PRUNED, reason "constraint"), and the excess is given to Optuna as
  a constraint value so that TPE learns to avoid the region.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from fastbert_nas.core import pipeline
from fastbert_nas.core.backends import Runtime
from fastbert_nas.core.cost import count_flops, count_params
from fastbert_nas.core.metrics import majority_score
from fastbert_nas.core.runtime import latency
from fastbert_nas.core.training import evaluate
from fastbert_nas.search.options import TOP_RUNG_CACHE, Search
from fastbert_nas.search.pruning import PRUNE_MARGIN, collapse_reason, should_prune
from fastbert_nas.search.space import sample
from fastbert_nas.search.storage import MAX_RETRY, worker_id
from fastbert_nas.search.trials import COST_ATTRS, DUPLICATE, is_duplicate, rung_of, student_of

LATENCY_KEYS = ("device", "threads", "backend", "precision")  # recorded with every latency figure
TRIAL_LATENCY_RUN_S = 0.5  # seconds of timed batch-1 runs per trial (re-measure the front side by side)


def teacher_reference(ctx: pipeline.Context, eval_examples: int, runtime: Runtime) -> dict:
    """The teacher's validation metrics on the rows a trial scores (the first `eval_examples`), and its
    batch-1 latency in `runtime` (timed like a trial's): its point on the plots, compared like with like; and
    the majority-class level on those rows."""
    val = evaluate(ctx.teacher.model, ctx.spec, ctx.val, ctx.device, eval_examples)
    timed = latency(ctx.teacher.model, runtime, 1, ctx.spec.max_len, threads=ctx.threads,
                    min_run_time=TRIAL_LATENCY_RUN_S)
    return {"teacher_val": val, "teacher_val_rows": min(eval_examples, len(ctx.val)),
            "majority_val": majority_metric(ctx, eval_examples),
            **latency_attrs(timed, "teacher_latency_")}


def latency_attrs(timed: dict, prefix: str) -> dict:
    """runtime.latency's record as user attrs: <prefix>ms, and <prefix><key> for each of LATENCY_KEYS."""
    return {f"{prefix}ms": timed["median_ms"], **{f"{prefix}{k}": timed[k] for k in LATENCY_KEYS}}


def majority_metric(ctx: pipeline.Context, eval_examples: int) -> float:
    """The metric of always predicting the most frequent class on the validation rows a trial scores."""
    return majority_score(ctx.spec, ctx.val.labels[:eval_examples])["metric"]


def skill_levels(ctx: pipeline.Context, eval_examples: int, attrs: dict) -> tuple[float, float]:
    """(majority-class metric, teacher's metric) on the validation rows a trial scores: what the
    collapse check compares a finished trial with. Read from the study's attrs (teacher_reference's)
    when they were measured with this teacher on as many rows, else measured."""
    rows = min(eval_examples, len(ctx.val))
    if (attrs.get("teacher_fingerprint") == ctx.teacher.fingerprint and attrs.get("teacher_val_rows") == rows
            and {"majority_val", "teacher_val"} <= attrs.keys()):
        return attrs["majority_val"], attrs["teacher_val"]["metric"]
    teacher = evaluate(ctx.teacher.model, ctx.spec, ctx.val, ctx.device, eval_examples)["metric"]
    return majority_metric(ctx, eval_examples), teacher


def student_costs(student, threads: int, seq_len: int, runtime: Runtime) -> dict:
    """Params, FLOPs and batch-1 latency in `runtime` at `seq_len` tokens of an (untrained) student: its shape
    decides them; and its FLOPs at cost.REF_SEQ_LEN (count_flops's default)."""
    params = count_params(student)
    timed = latency(student, runtime, 1, seq_len, threads=threads, min_run_time=TRIAL_LATENCY_RUN_S)
    return {"params": params["total"], "params_parts": params, "flops": count_flops(student, seq_len),
            "flops_ref_len": count_flops(student), "latency": timed["median_ms"], **latency_attrs(timed, "latency_")}


def finished_costs(trials: list[FrozenTrial]) -> list[tuple[dict, dict]]:
    """(costs, curve) of each COMPLETE rung-0 trial that recorded both: what the Pareto rule compares with
    (the curves of longer rungs follow other learning-rate schedules)."""
    out = []
    for t in trials:
        a = t.user_attrs
        if (t.state == TrialState.COMPLETE and rung_of(t) == 0 and "curve" in a
                and all(v in a for v in COST_ATTRS.values())):
            out.append(({k: a[v] for k, v in COST_ATTRS.items()}, a["curve"]))
    return out


def pareto_reason(step: int, metric: float, costs: dict, cost_keys: tuple[str, ...],
                  finished: list[tuple[dict, dict]], warmup: int, margin: float = PRUNE_MARGIN) -> str | None:
    """pruning.should_prune on the first cost objective, among finished trials no costlier in the others."""
    primary, *others = cost_keys
    comparable = [(c[primary], curve) for c, curve in finished if all(c[k] <= costs[k] for k in others)]
    return should_prune(step, metric, costs[primary], comparable, warmup_trials=warmup, margin=margin)


@dataclass
class Checkpoints:
    """distill's on_eval callback: keeps the curve in the trial's user attrs and decides whether to stop.

    mode: "pareto" (pruning.py's rule against `finished()`), "median"/"hyperband" (Optuna's
    pruner: trial.report + should_prune; single objective only) or "none".
    """

    trial: object                                   # optuna.Trial (or a stand-in in tests)
    mode: str
    costs: dict
    cost_keys: tuple[str, ...]
    warmup: int
    finished: Callable[[], list[tuple[dict, dict]]]  # (costs, curve) of the finished trials, fetched per call
    curve: dict = field(default_factory=dict)        # {str(step): metric}: JSON keys are strings
    reason: str | None = None                       # why the trial was stopped
    margin: float = PRUNE_MARGIN                    # metric units below the bar that stop a trial (pareto)

    def __call__(self, step: int, metrics: dict) -> bool:
        metric = metrics["metric"]
        self.curve[str(step)] = metric
        self.trial.set_user_attr("curve", dict(self.curve))
        if self.mode == "pareto":
            self.reason = pareto_reason(step, metric, self.costs, self.cost_keys, self.finished(), self.warmup,
                                        self.margin)
        elif self.mode in ("median", "hyperband"):
            self.trial.report(metric, step)
            if self.trial.should_prune():
                self.reason = f"pruned at step {step} by Optuna's pruner: metric {metric:.4f}"
        return self.reason is not None


class Objective:
    """sample -> build -> cost (reject if over a constraint) -> distill (prune at checkpoints) -> record -> return."""

    def __init__(self, search: Search, ctx: pipeline.Context, show_progress: bool = False):
        self.search, self.show_progress = search, show_progress
        self.contexts = {search.cfg.augment: ctx}  # augment copies -> Context
        self.levels: tuple[float, float] | None = None  # skill_levels, once per process

    def context(self, augment: int) -> pipeline.Context:
        """The Context of trials with `augment` copies: the search's, or (the top rung's augmented examples)
        prepared once per process, its teacher cache named apart from the exports' (options.TOP_RUNG_CACHE)."""
        if augment not in self.contexts:
            self.contexts[augment] = pipeline.prepare(self.search.opts.env, replace(self.search.cfg, augment=augment),
                                                      cache_split=TOP_RUNG_CACHE)
        return self.contexts[augment]

    def __call__(self, trial: optuna.Trial):
        s = self.search
        with recorded(trial):
            rung = self.rung(trial)
            cfg = s.rung_config(rung)
            ctx = self.context(cfg.augment)
            arch, settings = sample(s.space, trial, ctx.teacher.layers, s.hint_scheme)            # sample
            cfg = replace(cfg, **settings)
            record(trial, arch=arch.to_dict(), name=arch.name, hints=arch.hints_str, config=cfg.to_dict(),
                   budget=s.opts.budget, seed=s.opts.seed, teacher_id=ctx.teacher_id,
                   teacher_fingerprint=ctx.teacher.fingerprint, device=str(ctx.device), curve={}, train_steps=0,
                   worker=worker_id())
            student = pipeline.init_student(ctx, arch, cfg)                                       # build
            costs = student_costs(student, ctx.threads, ctx.spec.max_len, s.runtime)             # cost
            record(trial, params=costs["params"], params_parts=costs["params_parts"], flops=costs["flops"],
                   flops_ref_len=costs["flops_ref_len"], seq_len=ctx.spec.max_len,
                   **{k: v for k, v in costs.items() if k.startswith("latency_")})
            self.reject_if_over(trial, costs)
            checkpoints = Checkpoints(trial, "none" if rung else s.pruning_mode, costs, s.objectives[1:],
                                      s.opts.pruning_warmup,
                                      lambda: finished_costs(trial.study.get_trials(deepcopy=False)),
                                      margin=s.opts.pruning_margin)
            result = pipeline.distill_student(ctx, student, arch, cfg, on_eval=checkpoints,     # distill
                                              show_progress=self.show_progress)
            record(trial, train_steps=result.hint_steps + result.kd_steps, hint_steps=result.hint_steps,  # record
                   kd_steps=result.kd_steps, val=result.metrics, examples_per_s=result.examples_per_s)
            if checkpoints.reason:
                record(trial, prune_reason=s.pruning_mode, prune_detail=checkpoints.reason)
                raise optuna.TrialPruned(checkpoints.reason)
            if self.levels is None:
                self.levels = skill_levels(ctx, cfg.eval_examples, trial.study.user_attrs)
            collapsed = collapse_reason(result.metrics["metric"], *self.levels, s.opts.collapse_margin)
            if collapsed:
                record(trial, prune_reason="collapsed", prune_detail=collapsed)
                raise optuna.TrialPruned(collapsed)
            values = [result.metrics["metric"]] + [float(costs[k]) for k in s.objectives[1:]]     # return
            return values[0] if len(values) == 1 else values

    @staticmethod
    def rung(trial: optuna.Trial) -> int:
        """The trial's rung (trials.rung_of); a promotion another worker already started is PRUNED here as
        a duplicate, before any work."""
        trials = trial.study.get_trials(deepcopy=False)
        me = next(t for t in trials if t.number == trial.number)
        if is_duplicate(me, trials):
            detail = f"trial {student_of(me)}'s student is already at rung {rung_of(me)}"
            record(trial, prune_reason=DUPLICATE, prune_detail=detail)
            raise optuna.TrialPruned(detail)
        return rung_of(me)

    def reject_if_over(self, trial: optuna.Trial, costs: dict) -> None:
        """Give Optuna the constraint values (TPE learns the infeasible region); prune if over."""
        limits = self.search.limits
        for key, value in limits.excess(costs).items():
            if key not in trial.constraints:  # a retried trial inherits them
                trial.set_constraint(key, value)
        over = limits.violated(costs)
        if over:
            record(trial, prune_reason="constraint", prune_detail=over)
            raise optuna.TrialPruned(f"constraint: {over}")


def record(trial: optuna.Trial, **attrs) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


@contextmanager
def recorded(trial: optuna.Trial):
    """Record the trial's wall time always, and why it failed when it did.

    An interrupted trial (Ctrl-C) is queued again with the same parameters, like a
    killed one, so that running the command again picks it up.
    """
    start = time.perf_counter()
    try:
        yield
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt:
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(trial.study, frozen)  # before the reason
        trial.set_user_attr("fail_reason", "interrupted")
        raise
    except Exception as exc:
        trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        trial.set_user_attr("wall_s", time.perf_counter() - start)
