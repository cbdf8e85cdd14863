"""`bench pruning`: the same study with Pareto pruning and without.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import optuna

from fastbert_nas.bench.common import (
    machine,
    run_studies,
    save_report,
    seed_stats,
    seed_text,
    study_figures,
    task_name,
    teacher_id,
)
from fastbert_nas.search.options import Search, SearchOptions
from fastbert_nas.search.pruning import PRUNE_WARMUP_TRIALS, replay_pruning
from fastbert_nas.search.run import run_search
from fastbert_nas.search.storage import existing_attrs, make_storage, storage_exists

# Goals, judged by `pruning_goals`: on the mean over seeds, pruning saves at least this share of the
# training steps while keeping at least this share of the unpruned study's hypervolume.
GOAL_STEPS_SAVED = 0.40
GOAL_HYPERVOLUME_KEPT = 0.98
# Pruning margins (metric units) the rule is replayed with over each unpruned study: the evidence, on
# validation, for search.pruning.PRUNE_MARGIN (0, chosen on the first seed's).
REPLAY_MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05)


def bench_pruning(opts: SearchOptions, seeds: int = 1, jobs: int = 1, log=print) -> dict:
    """Run (or resume) the study `opts` describes twice per seed (0 .. seeds-1), with Pareto pruning and with
    none; compare each pair, and judge the goals on the means over seeds.

    Study names: <prefix>-pareto and <prefix>-none for seed 0, <prefix>-<mode>-seed<N> for the others, where
    the prefix is <task>-<space> unless opts.study is set. Both studies of a seed share seed, budget, trials and
    teacher. Each study's figures are kept in the report as it finishes. A study whose file is gone (another
    machine, a fresh clone) is taken from the report when it was run with the same settings and its seed's
    pair still shares one teacher (`from_record`: machines round differently, so a teacher of the same recipe
    and data may differ in its last bits; the report names each study's); so the seeds of a long benchmark
    can be run on different days. With jobs N the studies still to run, over all seeds, run N at a time, each in a
    process of its own (give each one thread: env.threads), seed by seed and a seed's unpruned study (the
    longer) first, so that each seed's pair finishes as early as it can.
    """
    prefix = opts.study or f"{task_name(opts.env.task)}-{Path(opts.space).stem}"
    name = f"pruning-{task_name(opts.env.task)}"
    recorded = recorded_runs(Path(opts.env.results) / "benchmarks" / f"{name}.json")
    teacher = Search.from_options(opts).prepare().teacher  # fine-tunes the teacher if there is none
    made = teacher_id(teacher.manifest, teacher.fingerprint)
    per_seed, plan = [], []
    for seed in range(seeds):
        per_seed.append({"seed": seed, "runs": {}, "steps_saved": None, "hypervolume_kept": None})
        searches = {mode: Search.from_options(replace(opts, pruning=mode, seed=seed, study=f"{prefix}-{mode}"
                                                      + (f"-seed{seed}" if seed else "")))
                    for mode in ("pareto", "none")}
        old = {mode: recorded.get(s.study_name) for mode, s in searches.items()}
        here = {mode for mode, s in searches.items() if study_here(s)}
        taken = from_record(old, {mode: run_settings(opts, mode, seed, made) for mode in searches}, here,
                            teacher.fingerprint)
        for mode in taken:
            log(f"seed {seed}, pruning {mode}: recorded {old[mode]['measured']} on {old[mode]['machine']['cpu']} "
                f"(teacher {old[mode]['teacher_fingerprint']}); its study file is not here, so its figures are "
                "taken from the report")
            per_seed[-1]["runs"][mode] = old[mode]
        compare(per_seed[-1], opts)
        plan += [(seed, mode, searches[mode]) for mode in ("none", "pareto") if mode not in taken]
    workers = min(jobs, len(plan))

    def finished(seed: int, mode: str, search: Search) -> None:
        study = optuna.load_study(study_name=search.study_name, storage=make_storage(search.storage_url))
        per_seed[seed]["runs"][mode] = study_figures(study) | {
            "storage": search.storage_url, "settings": run_settings(opts, mode, seed, made),
            "teacher_fingerprint": teacher.fingerprint, "machine": machine(), "jobs": workers,
            "measured": last_finished(study)}
        compare(per_seed[seed], opts)
        # written after every study: a benchmark stopped later keeps what it finished
        save_report(pruning_report(opts, per_seed), opts.env.results, name, pruning_markdown)

    if workers > 1:
        by_study = {search.study_name: (seed, mode, search) for seed, mode, search in plan}
        run_studies([search.opts for _, _, search in plan], workers, done=lambda o: finished(*by_study[o.study]))
    else:
        for seed, mode, search in plan:
            run_search(search.opts, log)
            finished(seed, mode, search)
    return save_report(pruning_report(opts, per_seed), opts.env.results, name, pruning_markdown)


def compare(seed: dict, opts: SearchOptions) -> None:
    """A seed's figures from its pair of studies, once both are in: steps saved, hypervolume kept, the replay."""
    if set(seed["runs"]) != {"pareto", "none"}:
        return
    pruned, full = seed["runs"]["pareto"], seed["runs"]["none"]
    seed["runs"] = {"pareto": pruned, "none": full}
    seed |= {"steps_saved": 1 - pruned["train_steps"] / full["train_steps"] if full["train_steps"] else None,
             "hypervolume_kept": pruned["hypervolume"] / full["hypervolume"] if full["hypervolume"] else None,
             "replay": replayed(full, opts.pruning_warmup)}


def replayed(full: dict, warmup: int = PRUNE_WARMUP_TRIALS, margins=REPLAY_MARGINS) -> list[dict]:
    """The pruning rule replayed at each margin over an unpruned study's trial rows
    (search.pruning.replay_pruning: the same students, the sampler not replayed): steps saved and
    hypervolume kept, as the benchmark measures them; [] for a record without checkpoint curves."""
    rows = full.get("trial_rows") or []
    if not rows or any("curve" not in r for r in rows) or not full["train_steps"]:
        return []
    trials = [{"state": r["state"], "cost": r["flops"], "curve": r["curve"], "metric": r["metric"],
               "train_steps": r["train_steps"], "hint_steps": r["hint_steps"]} for r in rows]
    out = []
    for margin in margins:
        r = replay_pruning(trials, full["teacher_flops"], full["hv_ref"][0], margin=margin, warmup_trials=warmup)
        out.append({"margin": margin, "pruned": r["pruned"],
                    "steps_saved": 1 - r["train_steps"] / full["train_steps"],
                    "hypervolume_kept": r["hypervolume"] / full["hypervolume"] if full["hypervolume"] else None})
    return out


def from_record(old: dict[str, dict | None], settings: dict[str, dict], here: set[str], fingerprint: str
                ) -> list[str]:
    """The modes of a seed whose recorded study (`old`, by mode) stands for it: its study file not `here`, its
    settings these, and the seed's pair sharing one teacher: either both taken, recorded with one teacher (of
    this recipe and data: teacher_id is in the settings), or each taken recorded with this very teacher
    (`fingerprint`), beside a study run now."""
    candidates = [m for m in settings if m not in here and old[m] is not None and old[m].get("settings") == settings[m]]
    if len(candidates) == len(settings) and len({old[m].get("teacher_fingerprint") for m in candidates}) == 1:
        return candidates
    return [m for m in candidates if old[m].get("teacher_fingerprint") == fingerprint]


def study_here(search: Search) -> bool:
    """Whether the search's study is in its storage (a SQLite file not made yet holds none)."""
    url = search.storage_url
    return storage_exists(url) and existing_attrs(make_storage(url), search.study_name, wait_s=0) is not None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def last_finished(study: optuna.Study) -> str:
    """When the study's last trial finished (a study resumed with nothing left to run was measured then); now
    for one without a finished trial. Optuna keeps naive local times."""
    done = [t.datetime_complete for t in study.trials if t.datetime_complete]
    return max(done).astimezone(timezone.utc).isoformat(timespec="seconds") if done else now()


def run_settings(opts: SearchOptions, mode: str, seed: int, teacher: str) -> dict:
    """What makes a study of this benchmark this study (`teacher`: bench.common.teacher_id): a recorded one is
    reused only when all of it matches."""
    return {"task": task_name(opts.env.task), "space": Path(opts.space).stem, "budget": opts.budget,
            "trials": opts.trials, "rungs": opts.rungs, "pruning": mode, "seed": seed, "teacher": teacher,
            "margin": opts.pruning_margin if mode == "pareto" else None}


def recorded_runs(path: Path) -> dict[str, dict]:
    """The studies of an earlier report at `path`, by study name ({} when there is none)."""
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    return {f["study"]: f for s in report.get("seeds", []) for f in s["runs"].values()}


def pruning_report(opts: SearchOptions, per_seed: list[dict]) -> dict:
    """The benchmark's record over the seeds run so far, with the goals judged on their means."""
    report = {"task": opts.env.task, "space": opts.space, "budget": opts.budget, "trials": opts.trials,
              "seeds": per_seed} | seed_summary(per_seed) | {"machine": machine(), "time": now()}
    report["goals"] = pruning_goals(report["steps_saved"], report["hypervolume_kept"])
    return report


def capped_mean(kept: list[float]) -> float:
    """The mean of per-seed shares of hypervolume kept, each counted at most 100%."""
    return statistics.mean(min(1.0, k) for k in kept)


def seed_summary(per_seed: list[dict]) -> dict:
    """The per-seed figures over the seeds: the goals' means of steps saved and of hypervolume kept, each seed's
    hypervolume kept counted at most 100% (a seed whose pruned study's sampler found a better front cannot hide
    one that lost part of it); their spread (bench.common.seed_stats, uncapped); each replayed margin's mean.
    A figure some seed lacks is None (its spread and the replay's mean left out)."""
    def values(key: str, runs: list[dict]) -> list[float] | None:
        got = [x.get(key) for x in runs]
        return got if got and None not in got else None

    saved, kept = values("steps_saved", per_seed), values("hypervolume_kept", per_seed)
    replays = [s.get("replay") or [] for s in per_seed]
    replay_mean = []
    if replays and all(len(r) == len(replays[0]) for r in replays):
        for i, first in enumerate(replays[0]):
            at = [r[i] for r in replays]
            at_saved, at_kept = values("steps_saved", at), values("hypervolume_kept", at)
            if at_saved and at_kept and all(x["margin"] == first["margin"] for x in at):
                replay_mean.append({"margin": first["margin"], "steps_saved": statistics.mean(at_saved),
                                    "hypervolume_kept": capped_mean(at_kept)})
    return {"steps_saved": statistics.mean(saved) if saved else None,
            "hypervolume_kept": capped_mean(kept) if kept else None,
            "spread": {key: seed_stats(v) for key, v in (("steps_saved", saved), ("hypervolume_kept", kept)) if v},
            "replay_mean": replay_mean}


def pruning_goals(steps_saved: float | None, hypervolume_kept: float | None) -> dict:
    """Whether the means over seeds meet GOAL_STEPS_SAVED and GOAL_HYPERVOLUME_KEPT."""
    saved = steps_saved is not None and steps_saved >= GOAL_STEPS_SAVED
    kept = hypervolume_kept is not None and hypervolume_kept >= GOAL_HYPERVOLUME_KEPT
    return {"steps_saved_at_least": GOAL_STEPS_SAVED, "steps_saved_met": saved,
            "hypervolume_kept_at_least": GOAL_HYPERVOLUME_KEPT, "hypervolume_kept_met": kept, "met": saved and kept}


def measured(f: dict) -> str:
    """When and on what one study was run ('-' for a record older than these fields)."""
    if "measured" not in f:
        return "-"
    return f"{f['measured']}, {f['machine']['cpu']}, teacher {f['teacher_fingerprint']}"


def pair_text(s: dict) -> str:
    """A seed's 'steps saved | hypervolume kept' cells."""
    return f"{_share(s['steps_saved'])} | {_share(s['hypervolume_kept'])}"


def spread_lines(r: dict) -> list[str]:
    """The per-seed figures' spread, and the replay's mean at each margin (nothing before every seed is in)."""
    if set(r.get("spread") or {}) != {"steps_saved", "hypervolume_kept"}:
        return []
    spread = r["spread"]
    saved, kept = (seed_text(spread[key], ".1%") for key in ("steps_saved", "hypervolume_kept"))
    lines = [f"Over {spread['steps_saved']['n']} seeds, mean ± sd (min-max): steps saved {saved}; "
             f"hypervolume kept, uncapped, {kept}. "
             "A seed above 100% is one whose pruned study's sampler, steered by the pruned trials, drew a better "
             "front than the unpruned one: the replay below (the same students) separates the rule from the path."]
    if r.get("replay_mean"):
        lines.append("")
        lines.append("Replay, mean over seeds (hypervolume kept counted at most 100%): " + "; ".join(
            f"margin {x['margin']:g}: {_share(x['steps_saved'])} saved, {_share(x['hypervolume_kept'])} kept"
            for x in r["replay_mean"]) + ".")
    return lines


def _share(x: float | None) -> str:
    return f"{x:.1%}" if x is not None else "n/a"


def pruning_markdown(r: dict) -> str:
    """The pruning benchmark as Markdown: the goals, a summary table per seed, then each front."""
    ref = next(f for s in r["seeds"] for f in s["runs"].values())["hv_ref"]
    g = r["goals"]
    lines = [f"# Pareto pruning against none: {r['task']}, space {r['space']}, budget {r['budget']}, "
             f"{r['trials']} trials, seeds {', '.join(str(s['seed']) for s in r['seeds'])}", "",
             f"Written {r['time']} on {r['machine']['cpu']}, {r['machine']['threads']} threads, "
             f"torch {r['machine']['torch']}; each study's row says when, on what and with which teacher it ran. "
             "Trials are scored on the validation split (which also prunes); "
             "the official dev set plays no part. Hypervolume of the (validation metric, FLOPs) front on log "
             f"FLOPs, from the reference point at the majority-class level ({ref[0]:.4f}) and the teacher's FLOPs "
             f"({ref[1] / 1e9:.3f} G): metric above the majority class x decades of FLOPs saved.", "",
             f"Mean over seeds: training steps saved **{_share(r['steps_saved'])}** (goal >= "
             f"{g['steps_saved_at_least']:.0%}: {'met' if g['steps_saved_met'] else 'not met'}); hypervolume kept "
             f"**{_share(r['hypervolume_kept'])}**, each seed counted at most 100% (goal >= "
             f"{g['hypervolume_kept_at_least']:.0%}: {'met' if g['hypervolume_kept_met'] else 'not met'}). "
             f"Both goals: **{'met' if g['met'] else 'not met'}**.", "", *spread_lines(r), "",
             "| seed | pruning | trials | states | training steps | wall min | per trial s (min / median / max) "
             "| hypervolume | steps saved | hypervolume kept | measured |", "|---" * 11 + "|"]
    for s in r["seeds"]:
        for mode, f in s["runs"].items():
            w = f["wall_s_per_trial"] or {"min": 0, "median": 0, "max": 0}
            states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(f["states"].items()))
            lines.append(f"| {s['seed']} | {mode} | {f['trials']} | {states} | {f['train_steps']:,} | "
                         f"{f['wall_minutes']:.1f} | {w['min']:.0f} / {w['median']:.0f} / {w['max']:.0f} | "
                         f"{f['hypervolume']:.4f} | {pair_text(s) if mode == 'pareto' else ' | '} | {measured(f)} |")
    lines.append("")
    lines += replay_markdown(r["seeds"])
    for s in r["seeds"]:
        for mode, f in s["runs"].items():
            lines += [f"## Front, seed {s['seed']}, pruning {mode}", "", "| trial | student | hints | val metric | "
                      "GFLOPs | FLOPs share | params | latency ms | baseline |", "|---|---|---|---|---|---|---|---|---|"]
            for row in f["front"]:
                lines.append(f"| {row['trial']} | {row['name']} | {row['hints']} | {row['metric']:.4f} | "
                             f"{row['flops'] / 1e9:.3f} | {row['flops'] / f['teacher_flops']:.1%} | "
                             f"{row['params']:,} | {row['latency_ms']:.2f} | {row['baseline']} |")
            lines.append("")
    return "\n".join(lines)


def replay_markdown(seeds: list[dict]) -> list[str]:
    """The replayed margins of each seed's unpruned study as a table (nothing when no seed has them)."""
    rows = [(s["seed"], x) for s in seeds for x in s.get("replay") or []]
    if not rows:
        return []
    lines = ["## The rule replayed over the unpruned studies", "",
             "Each unpruned study's trials, in the order they finished, checked at their checkpoints against the "
             "trials finished before them, at several margins (validation metric units): the same students, "
             "the sampler's answer to pruning not replayed. The evidence, on validation, for the margin.", "",
             "| seed | margin | trials stopped | steps saved | hypervolume kept |", "|---|---|---|---|---|"]
    lines += [f"| {seed} | {x['margin']:g} | {x['pruned']} | {_share(x['steps_saved'])} | "
              f"{_share(x['hypervolume_kept'])} |" for seed, x in rows]
    return lines + [""]
