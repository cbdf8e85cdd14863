"""report/rows.py's rows -> plotly figures, written as interactive HTML and as PNG; and `plot`, the job
behind `fastbert-nas plot`.

Figures, into RESULTS/<study>/ (RESULTS/compare-<A>-vs-<B>/ for several studies overlaid):

    pareto_flops     the metric against FLOPs (log scale): the front as a step line, dominated
                     trials faint, pruned ones (--all) as faint crosses, the baselines, the teacher,
                     the fastText reference (a dotted line: it has no FLOPs figure)
    pareto_latency   the same against batch-1 latency, fastText as a point
    hypervolume      report.hypervolume_history: the metric-vs-FLOPs front's hypervolume per trial
    importances      optuna.importance (fANOVA) of each parameter for the metric (one study only)

Hovering a point shows the student, its hint mapping, params, FLOPs, latency and metric. PNGs are
drawn by kaleido (v1), which drives a Chromium-family browser: we point it at the one we find
(BROWSER_PATH, else chromium on PATH: Debian's package `chromium`); without one the PNGs are skipped
with a note and the HTML is still written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative

from fastbert_nas.config import RunEnv, UserError
from fastbert_nas.core.metrics import others_text
from fastbert_nas.report.rows import (
    PLOTTED_COSTS,
    StudyData,
    check_remeasure,
    find_study,
    gather_remeasured,
    param_importances,
    pareto_front,
)
from fastbert_nas.search.trials import COST_ATTRS

PNG_WIDTH = 1100     # px
PNG_HEIGHT = 700     # px
FAINT = 0.3          # opacity of dominated and pruned trials
LOG_DTICK = "D2"  # log-axis labels at 1, 2 and 5 per decade: readable, not crowded

COLOURS = qualitative.Plotly  # one per study
TEACHER_COLOUR = "black"      # the teacher and fastText when a single study is drawn
BROWSER_ENV = "BROWSER_PATH"  # kaleido v1 (choreographer) launches the browser this names
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
COST_NAMES = {"flops": "FLOPs", "latency": "latency"}
COST_TITLES = {"flops": "FLOPs (2 per multiply-add, batch 1, {seq_len} tokens)", "latency": "latency, ms"}  # x axes


# ---------------------------------------------------------------------------
# Figures

def hover(r: dict, metric: str) -> str:
    """A point's hover text: who it is, then its figures."""
    if r["trial"] is None:
        head = f"<b>{r['name']}</b>"
    else:
        head = f"<b>trial {r['trial']}</b> ({r['state']})" + (f" [{r['baseline']}]" if r.get("baseline") else "")
    lines = [head]
    if r["trial"] is not None:
        lines.append(f"{r['name'] or '?'}  hints {r.get('hints') or '?'}")
    if r.get("detail"):
        lines.append(r["detail"])
    lines.append(f"{metric} {r['metric']:.4f}" + (f" at rung {r['rung']} ({r['kd_steps']} KD steps)"
                                                  if r.get("rung") is not None else ""))
    beside = others_text(r.get("val"), metric)
    if beside:
        lines.append(beside)
    if r.get("params") is not None:
        lines.append(f"params {r['params'] / 1e6:.2f} M")
    if r.get("flops") is not None:
        lines.append(f"FLOPs {r['flops'] / 1e9:.4g} G")
    if r.get("latency_ms") is not None:
        was = r.get("latency_ms_trial") if r.get("remeasured") else None
        lines.append(f"latency {r['latency_ms']:.3g} ms" + (f" (re-measured; {was:.3g} in its trial)" if was else ""))
    return "<br>".join(lines)


def points(rows: list[dict], key: str, metric: str, name: str, **style) -> go.Scatter:
    return go.Scatter(x=[r[key] for r in rows], y=[r["metric"] for r in rows], name=name,
                      hovertext=[hover(r, metric) for r in rows], hovertemplate="%{hovertext}<extra></extra>",
                      **style)


def fasttext_row(d: StudyData) -> dict | None:
    if not d.fasttext:
        return None
    f = d.fasttext
    return {"trial": None, "state": "reference", "name": "fastText", "metric": f["val"]["metric"],
            "latency_ms": f["latency_ms"], "flops": None, "params": None,
            "detail": f"word bigrams, {f['examples']:,} training examples; latency per example at its real length, "
                      "1 thread"}


def pareto_figure(studies: list[StudyData], cost: str, show_pruned: bool = False) -> go.Figure:
    """The metric against `cost` ("flops" or "latency") for one or more studies (one colour each)."""
    key, many = COST_ATTRS[cost], len(studies) > 1
    fig = go.Figure()
    spans = []
    for i, d in enumerate(studies):
        colour, tag = COLOURS[i % len(COLOURS)], f"{d.name}: " if many else ""
        ref_colour = colour if many else TEACHER_COLOUR
        front = pareto_front(d.rows, key)
        on_front = {r["trial"] for r in front}
        costed = [r for r in d.rows if r[key] is not None]
        dominated = [r for r in costed if r["state"] == "COMPLETE" and r["trial"] not in on_front]
        group = dict(legendgroup=d.name)
        fig.add_trace(points(front, key, d.metric, f"{tag}front", mode="lines+markers", **group,
                             line=dict(shape="hv", color=colour, width=2), marker=dict(color=colour, size=9)))
        fig.add_trace(points(dominated, key, d.metric, f"{tag}dominated", mode="markers", opacity=FAINT, **group,
                             marker=dict(color=colour, size=7)))
        if show_pruned:
            pruned = [r for r in costed if r["state"] == "PRUNED"]
            fig.add_trace(points(pruned, key, d.metric, f"{tag}pruned (last checkpoint)", mode="markers",
                                 opacity=FAINT, **group, marker=dict(color=colour, size=7, symbol="x")))
        baselines = [r for r in costed if r["baseline"] and r["state"] == "COMPLETE"]
        if baselines:
            fig.add_trace(points(baselines, key, d.metric, f"{tag}baselines", mode="markers+text", **group,
                                 text=[r["baseline"] for r in baselines], textposition="top center",
                                 textfont=dict(size=10, color=colour),
                                 marker=dict(color=colour, size=15, symbol="diamond-open", line=dict(width=2))))
        teacher = d.teacher
        if teacher["metric"] is not None and teacher[key] is not None:
            fig.add_trace(points([teacher], key, d.metric, f"{tag}teacher", mode="markers+text", **group,
                                 text=["teacher"], textposition="bottom center",
                                 marker=dict(color=ref_colour, size=16, symbol="star")))
        spans += [r[key] for r in costed] + ([teacher[key]] if teacher[key] is not None else [])
        ft = fasttext_row(d)
        if ft is not None and cost == "latency":
            fig.add_trace(points([ft], key, d.metric, f"{tag}fastText", mode="markers+text", **group,
                                 text=["fastText"], textposition="top center",
                                 marker=dict(color=ref_colour, size=12, symbol="square-open", line=dict(width=2))))
            spans.append(ft[key])
    for i, d in enumerate(studies):  # the level of a student that learned nothing, where it was recorded
        if spans and d.majority is not None:
            fig.add_trace(go.Scatter(x=[min(spans), max(spans)], y=[d.majority] * 2, mode="lines",
                                     name=f"{d.name + ': ' if many else ''}majority class (learned nothing)",
                                     hovertext=[f"always the most frequent class: {d.metric} {d.majority:.4f}"] * 2,
                                     hovertemplate="%{hovertext}<extra></extra>", legendgroup=d.name,
                                     line=dict(color=COLOURS[i % len(COLOURS)] if many else TEACHER_COLOUR,
                                               dash="dash", width=1)))
    for i, d in enumerate(studies):  # fastText has no FLOPs figure: a dotted line at its metric
        ft = fasttext_row(d)
        if ft is not None and cost == "flops" and spans:
            colour = COLOURS[i % len(COLOURS)] if many else TEACHER_COLOUR
            fig.add_trace(go.Scatter(x=[min(spans), max(spans)], y=[ft["metric"]] * 2, mode="lines",
                                     name=f"{d.name + ': ' if many else ''}fastText (no FLOPs figure)",
                                     hovertext=[hover(ft, d.metric)] * 2, hovertemplate="%{hovertext}<extra></extra>",
                                     legendgroup=d.name, line=dict(color=colour, dash="dot")))
    metric = "/".join(sorted({d.metric for d in studies}))
    unit = COST_TITLES[cost].format(seq_len="/".join(sorted({str(d.seq_len) for d in studies})))
    unit += f" ({studies[0].latency_note})" if cost == "latency" and not many else ""
    fig.update_layout(title=f"{', '.join(d.name for d in studies)}: {metric} against {COST_NAMES[cost]}<br>"
                            "<sup>validation split, each student at its highest rung; the front is the step "
                            "line</sup>",
                      xaxis=dict(title=unit + ", log scale", type="log", dtick=LOG_DTICK,
                                 tickformat="~s" if cost == "flops" else None),
                      yaxis=dict(title=f"{metric} (validation split)"), hovermode="closest",
                      legend=dict(groupclick="toggleitem"), template="plotly_white")
    return fig


def hypervolume_figure(studies: list[StudyData]) -> go.Figure:
    """report.hypervolume_history per study: how the metric-vs-FLOPs front grew, trial by trial."""
    fig = go.Figure()
    for i, d in enumerate(studies):
        h = d.hv_history
        fig.add_trace(go.Scatter(
            x=[p["finished"] for p in h], y=[p["hypervolume"] for p in h], name=d.name, mode="lines+markers",
            line=dict(shape="hv", color=COLOURS[i % len(COLOURS)]),
            hovertext=[f"after trial {p['trial']} ({p['state']}), {p['finished']} finished<br>"
                       f"hypervolume {p['hypervolume']:.4f}" for p in h],
            hovertemplate="%{hovertext}<extra></extra>"))
    ref = ", ".join(f"{d.name} {d.metric} {d.hv_reference[0]:.4f}, {d.hv_reference[1] / 1e9:.4g} GFLOPs"
                    for d in studies)
    fig.update_layout(
        title=f"Hypervolume of the {'/'.join(sorted({d.metric for d in studies}))}-vs-FLOPs front after each "
              f"finished trial, on log FLOPs<br><sup>reference point: the majority-class level and the teacher's "
              f"FLOPs ({ref})</sup>",
        xaxis=dict(title="finished trials"),
        yaxis=dict(title="hypervolume (metric above the majority class x decades of FLOPs saved)"),
        template="plotly_white", showlegend=len(studies) > 1)
    return fig


def importance_figure(d: StudyData, importances: dict[str, float], note: str | None) -> go.Figure:
    """Horizontal bars, the most important parameter on top; a figure with the reason when there are none."""
    fig = go.Figure()
    names = sorted(importances, key=importances.get)
    if names:
        fig.add_trace(go.Bar(x=[importances[n] for n in names], y=names, orientation="h",
                             hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    else:
        fig.add_annotation(text=note or "no parameter importances", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper", font=dict(size=16))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    fig.update_layout(title=f"{d.name}: parameter importances for {d.metric} (fANOVA, completed trials)",
                      xaxis_title="share of the metric's variance", template="plotly_white")
    return fig


# ---------------------------------------------------------------------------
# Writing

def find_browser() -> str | None:
    """The browser kaleido should drive: $BROWSER_PATH, else the first Chromium-family one on PATH."""
    path = os.environ.get(BROWSER_ENV) or next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    return path if path and os.access(path, os.X_OK) else None


def write_figures(figs: dict[str, go.Figure], folder: Path) -> tuple[list[Path], list[str]]:
    """Each figure as <folder>/<stem>.html (plotly.js once beside them, so they open offline) and
    <stem>.png (PNG_WIDTH x PNG_HEIGHT px). Returns (paths written, notes)."""
    folder.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for stem, fig in figs.items():
        fig.write_html(folder / f"{stem}.html", include_plotlyjs="directory")
        written.append(folder / f"{stem}.html")
    browser = find_browser()
    if browser is None:
        notes.append(f"PNGs not written: no Chromium found (apt-get install -y chromium, or set {BROWSER_ENV})")
        return written, notes
    os.environ.setdefault(BROWSER_ENV, browser)
    pngs = [folder / f"{stem}.png" for stem in figs]
    pio.write_images(list(figs.values()), pngs, width=PNG_WIDTH, height=PNG_HEIGHT, scale=1)
    return written + pngs, notes


# ---------------------------------------------------------------------------
# The job behind `fastbert-nas plot`

def plot(studies: list[str] | None, storage: str | None, results: Path, show_pruned: bool = False,
         remeasure_front: bool = False, data_dir: str | None = None, fasttext: bool = True,
         log: Callable[[str], None] = print, latency_backend: str | None = None,
         precision: str | None = None) -> list[Path]:
    """Gather each study (re-timing its front first with `remeasure_front`, in `latency_backend` and
    `precision` when given, else the study's runtime), add the fastText reference, draw, write; returns the
    files written."""
    check_remeasure(remeasure_front, latency_backend, precision)
    names = list(dict.fromkeys(studies or [None]))
    datas, found = [], []
    for name in names:
        study = find_study(name, storage, results)
        data = gather_remeasured(study, results, remeasure_front, log, latency_backend, precision)
        if fasttext:
            data.fasttext = fasttext_or_note(data, results, data_dir)
        datas.append(data)
        found.append(study)
    figs = {f"pareto_{cost}": pareto_figure(datas, cost, show_pruned) for cost in PLOTTED_COSTS}
    figs["hypervolume"] = hypervolume_figure(datas)
    if len(datas) == 1:
        importances, note = param_importances(found[0])
        figs["importances"] = importance_figure(datas[0], importances, note)
        datas[0].notes += [note] if note else []
        folder = Path(results) / datas[0].name
    else:
        folder = Path(results) / ("compare-" + "-vs-".join(d.name for d in datas))
    written, notes = write_figures(figs, folder)
    for d in datas:
        for note in d.notes:
            log(f"note: {d.name}: {note}")
    for note in notes:
        log(f"note: {note}")
    return written


def fasttext_or_note(data: StudyData, results: Path, data_dir: str | None) -> dict | None:
    """report.fasttext.fasttext_reference for the study's task split, or None with a note why not."""
    if data.examples is None:
        data.notes.append("fastText reference skipped: the trials record no training-example count")
        return None
    try:
        from fastbert_nas.report.fasttext import fasttext_reference  # the task's data (and torch)

        env = data.env or RunEnv(data.task)  # the study's task (a custom one by its folder), columns, data folder
        return fasttext_reference(env.task, data.examples, results, data_dir or env.data_dir, env.text_column,
                                  env.label_column)
    except UserError as exc:
        data.notes.append(f"fastText reference skipped: {exc}")
        return None
