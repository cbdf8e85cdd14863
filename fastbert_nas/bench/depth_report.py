"""`bench depth`'s report: the Markdown table and the plot of metric against depth at equal FLOPs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fastbert_nas.bench.settings import DEPTH_REPORT
from fastbert_nas.report.plots import write_figures

PLOT_STEM = "metric_vs_depth"
METHOD_LABELS = {"fitnets": "FitNets (teacher init, hints, KD)", "kd": "KD only (teacher init)",
                 "random-hints": "random init, hints, KD"}
# One colour per method in every panel (plotly's default cycle would give each panel's traces new ones).
METHOD_COLORS = {"fitnets": "#1f77b4", "kd": "#ff7f0e", "random-hints": "#2ca02c"}


def _stat(s: dict, digits: int = 4) -> str:
    return f"{s['mean']:.{digits}f}" + (f" ± {s['sd']:.{digits}f}" if s["sd"] is not None else "") + f" (n={s['n']})"


def depth_figure(report: dict) -> go.Figure:
    """One panel per (task, share): the dev metric's mean over seeds (bars: its standard deviation) against
    the student's depth, one line per method; the teacher's dev metric dashed."""
    panels = [(t, share) for t in report["tasks"] for share in t["ladders"]]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[
        f"{t['task']}, {float(share):.0%} of the teacher's FLOPs" for t, share in panels])
    for col, (t, share) in enumerate(panels, start=1):
        rows = [r for r in report["rows"] if r["task"] == t["task"] and r["share"] == float(share)]
        for method in report["settings"]["methods"]:
            got = sorted((r for r in rows if r["method"] == method), key=lambda r: r["depth"])
            if not got:
                continue
            fig.add_trace(go.Scatter(
                x=[r["depth"] for r in got], y=[r["dev"]["mean"] for r in got], mode="lines+markers",
                name=METHOD_LABELS.get(method, method), legendgroup=method, showlegend=col == 1,
                line=dict(color=METHOD_COLORS.get(method)),
                error_y=dict(array=[r["dev"]["sd"] or 0 for r in got]),
                text=[f"{r['student']} hints {r['hints']}" for r in got]), row=1, col=col)
        fig.add_hline(y=t["teacher_dev"], line_dash="dash", annotation_text="teacher", row=1, col=col)
        fig.update_xaxes(title_text="student layers (equal FLOPs)", type="log",
                         tickvals=report["settings"]["depths"], row=1, col=col)
        fig.update_yaxes(title_text=f"dev {t['metric']}", row=1, col=col)
    fig.update_layout(title="Depth against width at equal FLOPs (mean over seeds, bars: sd)")
    return fig


def write_plot(report: dict, folder: Path, log: Callable[[str], None]) -> str | None:
    """The figure as folder/metric_vs_depth.{html,png}; the PNG's path (None when no browser drew it)."""
    if not report["rows"]:
        return None
    written, notes = write_figures({PLOT_STEM: depth_figure(report)}, folder)
    for note in notes:
        log(note)
    png = [p for p in written if p.suffix == ".png"]
    return str(png[0]) if png else None


def depth_markdown(r: dict) -> str:
    """The benchmark's tables: each task's ladders, then one row per (share, depth, method)."""
    s, m = r["settings"], r["machine"]
    variant = f" (`{s['report']}`)" if s.get("report", DEPTH_REPORT) != DEPTH_REPORT else ""
    lines = [f"# Depth at equal FLOPs: thinner-deeper with hints, or shallower-wider{variant}", "",
             f"Measured {r['time']} on {m['cpu']}, {m['threads']} threads, torch {m['torch']}. Budget "
             f"`{s['budget']}`: {s['hint_steps']} hint steps (FitNets and random-hints; none for KD only), "
             f"{s['kd_steps']} KD steps, up to {s['seeds']} seeds"
             + (f", at most {s['max_hints']} hints a student" if s.get("max_hints") else "")
             + (f", hint-stage peak learning rate {s['hint_lr']:g}" if s.get("hint_lr") else "")
             + f". Ladder: depths {s['depths']}, widths holding the "
             f"encoder's FLOPs within {s['ladder_tolerance']:.0%} of each share at the task's length. Nothing is "
             "chosen: the ladder and the methods are fixed. Validation is scored on the split's first rows "
             "trials use; dev reports. Flat step: where the hint loss's moving average stopped falling by more than "
             f"{s['flat_tolerance']:.0%} (none: still falling at the stage's end).", ""]
    for t in r["tasks"]:
        lines += [f"## {t['task']} (teacher dev {t['metric']} {t['teacher_dev']:.4f}, {t['seq_len']} tokens)", "",
                  f"Runs on record: {t['on_record']} of the {t['planned']} planned"
                  + (" (the rest not run yet: rows with fewer seeds, or missing)." if t["on_record"] < t["planned"]
                     else "."), "",
                  "| share | depth | student | hints | FLOPs share | method | val | dev | retention | flat steps "
                  "| minutes |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in (x for x in r["rows"] if x["task"] == t["task"]):
            lines.append(f"| {row['share']:.0%} | {row['depth']} | {row['student']} | {row['hints']} | "
                         f"{row['flops_share']:.1%} | {row['method']} | {_stat(row['val'])} | {_stat(row['dev'])} | "
                         f"{row['retention']['mean']:.1%} | {', '.join(map(str, row['flat_steps']))} | "
                         f"{row['minutes']:.0f} |")
        lines.append("")
    if r.get("plot"):
        lines += [f"Plot: `{Path(r['plot']).name}` (dev metric against depth, one line per method).", ""]
    return "\n".join(lines)
