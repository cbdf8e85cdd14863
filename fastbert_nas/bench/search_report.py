"""The search benchmark's figure and Markdown, from its report (bench.search.bench_search).
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from fastbert_nas.bench.common import mmm
from fastbert_nas.bench.search_curves import final, median_curve, steps_to_reach
from fastbert_nas.report.plots import COLOURS

AXES = {"steps": "training steps so far (hint + KD steps of every finished trial, in finishing order)",
        "wall_s": "wall seconds so far (every finished trial's, in finishing order)"}


def curves_figure(r: dict, key: str = "steps") -> go.Figure:
    """Hypervolume against cumulative training steps (or wall seconds, key="wall_s"): a thin line per seed, the
    median bold, one colour per arm; on the steps axis the reach goal's target (dashed) and allowance (dotted)."""
    fig = go.Figure()
    for i, (arm, runs) in enumerate(r["runs"].items()):
        colour, label = COLOURS[i % len(COLOURS)], r["arms"][arm]["label"]
        for run in runs:
            c = run["curve"]
            fig.add_trace(go.Scatter(
                x=[0] + [p[key] for p in c], y=[0] + [p["hypervolume"] for p in c], mode="lines",
                name=f"{label}, seed {run['seed']}", legendgroup=arm, opacity=0.45,
                line=dict(shape="hv", color=colour, width=1.5),
                hovertext=["start"] + [f"{arm} seed {run['seed']}: after trial {p['trial']} (rung {p['rung']}, "
                                       f"{p['state']})<br>{p['steps']:,} steps, {p['wall_s'] / 60:.1f} min, "
                                       f"hypervolume {p['hypervolume']:.4f}" for p in c],
                hovertemplate="%{hovertext}<extra></extra>"))
        med = median_curve([run["curve"] for run in runs], key)
        if len(runs) > 1 and med:
            fig.add_trace(go.Scatter(x=[s for s, _ in med], y=[h for _, h in med], mode="lines",
                                     name=f"{label}: median over seeds", legendgroup=arm,
                                     line=dict(shape="hv", color=colour, width=4)))
    g = r["goals"].get("reach")
    if g:
        fig.add_hline(y=g["target_hypervolume"], line=dict(dash="dash", color="grey"),
                      annotation_position="top left",
                      annotation_text=f"target: random's median final hypervolume {g['target_hypervolume']:.4f}")
        if key == "steps":
            fig.add_vline(x=g["allowed_steps"], line=dict(dash="dot", color="grey"),
                          annotation_position="bottom right", annotation_text=f"{g['step_share']:.0%} of random's "
                          "median steps")
    fig.update_layout(
        title=f"{r['task']}: hypervolume of the metric-vs-FLOPs front, each student at the top rung's budget, "
              f"{r['seeds']} seeds per arm, no baselines<br><sup>setting {r['setting']}: {r['setting_about']}"
              "<br>log FLOPs; reference point: the majority-class level at the teacher's FLOPs</sup>",
        xaxis=dict(title=AXES[key]), yaxis=dict(title="hypervolume (metric above majority x decades of FLOPs)"),
        template="plotly_white", margin=dict(t=110))
    return fig


def _steps(x: float | None) -> str:
    return "not reached" if x is None else f"{x:,.0f}"


def budget_text(b: dict) -> str:
    return (f"{b['hint_steps']} hint + {b['kd_steps']} KD steps of batch {b['batch_size']} over {b['examples']:,} "
            f"training examples" + (f" and {b['augment']} augmented copies of each sentence-like one"
                                    if b.get("augment") else "") +
            f", a checkpoint every {b['eval_every']} KD steps on {b['eval_examples']} validation examples")


def search_markdown(r: dict) -> str:
    """The search benchmark as Markdown: setting, definitions, per-arm figures, the goals, per-seed rows."""
    m, goals = r["machine"], r["goals"]
    hv = lambda x: f"{x:.4f}"  # noqa: E731
    ladder = [a for a, spec in r["arms"].items() if spec["ladder"]]
    lines = [
        f"# Search benchmark: the default search against random search and TPE without rungs, {r['task']}", "",
        f"Measured {r['time']} on {m['cpu']}, {m['threads']} thread{'s' if m['threads'] > 1 else ''}, "
        f"torch {m['torch']}"
        + (f", {m['cuda']}" if m.get("cuda") else "") + f" (--device {r['device']}); "
        f"the command took {r['command_minutes']:.1f} min with {r.get('jobs', 1)} "
        f"{'study' if r.get('jobs', 1) == 1 else 'studies'} at a time"
        + (f", {r['threads']} thread{'s' if r['threads'] > 1 else ''} each" if r.get("threads") else "")
        + " (studies resumed from an earlier run count only what this run computed). Trials are scored on the "
        "validation split; the official dev set plays no part.", "",
        f"Setting `{r['setting']}`: {r['setting_about']}. Space `{r['space']}`. First rung: "
        f"{budget_text(r['first_rung'])}. Top rung ({r['rungs']} rungs): {budget_text(r['top_rung'])}.", "",
        *[f"- **{arm}**: {spec['label']}" + (f", {r['ladder_trials']} first-rung trials a study (about the steps "
                                              f"of {r['trials']} at the top budget)" if spec["ladder"] else
                                              f", {r['trials']} trials a study at the top rung's budget") + "."
          for arm, spec in r["arms"].items()],
        f"- Every arm with `--no-baselines`; TPE and the GP sample their first {r['tpe_startup']} trials at random, "
        "seeded alike per seed, so those are the students random search samples first. Pareto pruning starts after "
        f"{r['pruning_warmup']} finished trials.", "",
        "Hypervolume: of the (validation metric, FLOPs) front, on log FLOPs from the reference point at the "
        "majority-class level and the teacher's FLOPs (as `plot` and `bench pruning`), of the students finished at "
        "the top rung's budget only" + (f" (the {', '.join(ladder)} arm's front holds the students it promoted "
                                        "to the top rung)" if ladder else "") + ". Training steps: hint + KD "
        "optimizer steps of every finished trial, promotions included, summed in the order trials finished (a "
        "pruned trial counts the steps it ran).", "",
        "| arm | final hypervolume | training steps | wall min | promotions | pruned trials |",
        "|---|---|---|---|---|---|"]
    for arm, s in r["summary"].items():
        lines.append(f"| {arm} | {mmm(s['final_hypervolume'], hv)} | {mmm(s['train_steps'], _steps)} | "
                     f"{mmm(s['wall_minutes'], lambda x: f'{x:.1f}')} | {mmm(s['promotions'], lambda x: f'{x:g}')} | "
                     f"{mmm(s['pruned'], lambda x: f'{x:g}')} |")
    lines += ["", "Figures are min / median / max over seeds.", "", "## Goals", ""]
    if "reach" in goals:
        g = goals["reach"]
        needed = g["steps_to_target_spread"]
        lines += [
            f"**Reach**: the default search reaches random's final hypervolume with at most {g['step_share']:.0%} "
            "of random's training steps (target: the median over random's seeds of its final hypervolume; met "
            "when the median over the default's seeds of the steps to first reach it, not reached counting as "
            f"infinitely many, is at most {g['step_share']:.0%} of the median of random's total steps).", "",
            f"- Target hypervolume {g['target_hypervolume']:.4f}; random's median total {g['random_total_steps']:,.0f}"
            f" steps; allowed {g['allowed_steps']:,.0f} steps.",
            f"- Default's steps to the target: {mmm(needed, _steps)} (reached by {needed['reached']} of "
            f"{needed['n']} seeds; per seed: {', '.join(_steps(x) for x in g['steps_to_target'])}); as a share of "
            "random's: " + mmm(g["share_of_random_steps"], lambda x: "not reached" if x is None else f"{x:.0%}")
            + "; wall minutes: " + mmm(g["wall_minutes_to_target"],
                                       lambda x: "not reached" if x is None else f"{x:.1f}") + ".",
            f"- Hypervolume within the allowed steps: default {mmm(g['hypervolume_at_allowed'], hv)}, random "
            f"{mmm(g['random_hypervolume_at_allowed'], hv)}.", "", f"**{'Met' if g['met'] else 'Not met'}.**", ""]
    for key, text in (("beat_tpe", "**Beat TPE without rungs** at equal steps: the default's median hypervolume "
                                   "above TPE-without-rungs' at the fewer of the two arms' median total steps"),
                      ("gp_vs_default", "**GP against TPE** (the sampler comparison, not a goal): the gp arm's "
                                        "median hypervolume against the default's at equal steps")):
        if key in goals:
            g = goals[key]
            lines += [f"{text}: at {g['steps']:,.0f} steps, {mmm(g['hypervolume'], hv)} against "
                      f"{mmm(g['other_hypervolume'], hv)}: **{'yes' if g['met'] else 'no'}**.", ""]
    lines += [f"Both goals: **{'met' if goals['met'] else 'not met'}**" + ("" if {"reach", "beat_tpe"} <= goals.keys()
                                                                          else " (not every arm was run)") + ".",
              "", "## Studies", "",
              f"In `{r['storage']}`. Plots: " + ", ".join(f"`{Path(x).name}`" for x in r["plots"]) + ".", "",
              "| arm | seed | study | states | promotions | training steps | final hypervolume | steps to target "
              "| wall min |", "|---|---|---|---|---|---|---|---|---|"]
    target = goals["reach"]["target_hypervolume"] if "reach" in goals else None
    for arm, runs in r["runs"].items():
        for run in runs:
            states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(run["states"].items()))
            reach = _steps(steps_to_reach(run["curve"], target)) if target is not None else "-"
            lines.append(f"| {arm} | {run['seed']} | {run['study']} | {states} | {run['promotions']} | "
                         f"{run['train_steps']:,} | {final(run['curve'], 'hypervolume'):.4f} | {reach} | "
                         f"{run['wall_minutes']:.1f} |")
    return "\n".join(lines) + "\n"
