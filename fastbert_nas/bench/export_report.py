"""The export benchmark's figures over seeds, its goals and its Markdown (bench/export.py measures them).

    rows (one per task, share and seed) -> over_seeds: mean, spread per (task, share) -> check_goals -> Markdown
"""

from __future__ import annotations

from fastbert_nas.bench.common import seed_stats, seed_text

# The goals, as (task, largest FLOPs share of the teacher, least dev retention); other tasks: as measured.
GOALS = (("sst2", 0.25, 0.98), ("sst2", 0.10, 0.95))
GOAL_TASKS = {task for task, _, _ in GOALS}
TASK_TITLES = {"sst2": "SST-2", "cola": "CoLA", "amazon": "Amazon"}


def over_seeds(figures: list[dict]) -> list[dict]:
    """Each (task, share) row over its seeds: dev metric, retention and validation metric as seed_stats."""
    groups: dict[tuple, list[dict]] = {}
    for f in figures:
        groups.setdefault((f["task"], f["share_limit"]), []).append(f)
    out = []
    for (task, share), fs in groups.items():
        kept = [f["retention"] for f in fs]
        out.append({"task": task, "share_limit": share, "trial": fs[0]["trial"], "student": fs[0]["student"],
                    "metric": fs[0]["metric"], "flops_share": fs[0]["flops_share"], "seeds": [f["seed"] for f in fs],
                    "dev_metric": seed_stats([f["dev"]["metric"] for f in fs]),
                    "retention": seed_stats(kept) if None not in kept else None,
                    "val_metric": seed_stats([f["val"]["metric"] for f in fs])})
    return out


def check_goals(means: list[dict]) -> list[dict]:
    """Each goal of a task in the benchmark: the row (over_seeds) with the best mean retention within its
    FLOPs share; met when that mean reaches the goal; None (not measured) when no row fits and none was
    aimed at the goal's share (a variant report of other --shares)."""
    out = []
    for task, share, least in GOALS:
        if not any(m["task"] == task for m in means):
            continue
        fits = [m for m in means if m["task"] == task and m["flops_share"] <= share and m["retention"] is not None]
        best = max(fits, key=lambda m: m["retention"]["mean"], default=None)
        aimed = any(m["task"] == task and m["share_limit"] <= share for m in means)
        out.append({"task": task, "flops_share_at_most": share, "retention_at_least": least,
                    "met": best["retention"]["mean"] >= least if best else (False if aimed else None),
                    "trial": best and best["trial"], "student": best and best["student"],
                    "retention": best and best["retention"]["mean"], "retention_over_seeds": best and best["retention"],
                    "flops_share": best and best["flops_share"]})
    return out


# ---------------------------------------------------------------------------
# Markdown

def _limit(share: float) -> str:
    return f"{share * 100:g}%"


def _trial(trial: int | None) -> str:
    return "given" if trial is None else str(trial)


def _ms(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def export_markdown(r: dict) -> str:
    """The export benchmark as Markdown: the table, the goals, Amazon's (and custom tasks') extra metrics."""
    m, t = r["machine"], r["timing"]
    title = lambda task: TASK_TITLES.get(task, task)  # noqa: E731
    steps = sorted({(f["budget"], f["hint_steps"], f["kd_steps"], f["batch_size"]) for f in r["rows"]})
    budgets = "; ".join(f"`{b}` budget, {h:,} hint + {k:,} KD steps of {bs} examples" for b, h, k, bs in steps)
    given = r.get("students") or {}
    variant = f" (`{r['report']}`)" if r.get("report", "export") != "export" else ""
    if given:
        picked = [share for share in r["shares"] if f"{share:g}" not in given]
        whose = f"students of `{r['study']}` and given by shape" if picked else "students given by shape"
        students = (f"Each row's student is distilled again from each task's own fine-tuned teacher ({budgets}). "
                    + (f"Students of the {', '.join(map(_limit, picked))} rows: the trial of `{r['study']}` picked "
                       "by `--pick`, chosen on the validation split. " if picked else "")
                    + "Students given by `--student` (trained with the recipe a search trial of that shape gets): "
                    + "; ".join(f"{_limit(float(share))} `{text}`" for share, text in given.items())
                    + f". How they were chosen: {r['chosen_by'].rstrip('.')}. Reported")
    else:
        whose = f"students of `{r['study']}`"
        students = ("Students: the architecture, hints and settings of the study's trial picked by `--pick` (the "
                    "best validation metric in the study within that band of the teacher's FLOPs: above the next "
                    f"smaller share of the benchmark, so that each row is its own student), distilled again from "
                    f"each task's own fine-tuned teacher ({budgets}). Dev metrics are on each task's official dev "
                    "set (export.json); retention = student dev metric / teacher dev metric. Chosen on the "
                    "validation split (the study's trials and `--pick`); reported")
    lines = [
        f"# Export benchmark{variant}: {whose} distilled for {', '.join(map(title, r['tasks']))}", "",
        f"Measured {r['time']} on {m['cpu']}{', ' + m['cuda'] if m['cuda'] else ''}, torch {m['torch']}. "
        f"{students} on the official dev set, which chose nothing."
        + (" Dev metrics are on each task's official dev set (export.json); retention = student dev metric / "
           "teacher dev metric." if given else ""), "",
        "FLOPs count 2 per multiply-add, batch 1, at the task's length (its --max-len: what the study's `--pick` "
        f"and the goals use) and at {t['seq_len']} tokens in the column beside. "
        f"Latency: batch 1, {t['seq_len']} tokens, "
        f"{t['device']}, threads {t['threads']}, the median of torch.utils.benchmark; every student (loaded back "
        f"from its folder with from_pretrained) and its teacher timed in one process, in {t['rounds']} rounds of "
        "each task's teacher then its students: median (min-max) over the rounds. Speed-up = teacher median / "
        "student median.", "",
        "| task | FLOPs limit | trial | student | hints | seed | val metric | dev metric | teacher | retention | "
        "params (M) | GFLOPs "
        f"at the task's length (% of teacher) | GFLOPs at {t['seq_len']} tokens | latency b1 ms, student | teacher "
        "| speed-up b1 | budget (hint + KD steps) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in r["rows"]:
        ret = f"{f['retention']:.1%}" if f["retention"] is not None else "-"
        val = f"{f['val']['metric']:.4f}" if "val" in f else "-"
        lines.append(
            f"| {title(f['task'])} | {_limit(f['share_limit'])} | {_trial(f['trial'])} | {f['student']} | "
            f"{f['hints']} | "
            f"{f.get('seed', 0)} | {val} | "
            f"{f['metric']} {f['dev']['metric']:.4f} | {f['teacher_dev']['metric']:.4f} | {ret} | "
            f"{f['params'] / 1e6:.2f} | {f['flops'] / 1e9:.3f} at {f.get('task_len', 128)} ({f['flops_share']:.1%}) | "
            + (f"{f['flops_ref_len'] / 1e9:.3f} ({f['flops_share_ref_len']:.1%}) | "
               if "flops_ref_len" in f else "- | ")
            + f"{_ms(f['latency_ms'])} | "
            f"{_ms(f['teacher_latency_ms'])} | {f['speedup_b1']:.2f}x | {f['budget']} "
            f"({f['hint_steps']:,} + {f['kd_steps']:,}) |")
    teachers = {f["task"]: f for f in r["rows"]}
    weights = {task: ", ".join(dict.fromkeys(f["teacher_fingerprint"] for f in r["rows"] if f["task"] == task))
               for task in teachers}  # more than one: the task's exports were distilled from different teachers
    lines += ["", "Teachers: " + "; ".join(
        f"{title(task)} `{f['teacher_id']}` (weights {weights[task]}), {f['teacher_params'] / 1e6:.2f} M params, "
        f"{f['teacher_flops'] / 1e9:.3f} GFLOPs at {f.get('task_len', 128)} tokens"
        for task, f in teachers.items()) + ".", ""]
    if r.get("over_seeds"):
        lines += ["## Mean over seeds", "",
                  "Each row's student distilled with seeds 0 to N-1 (init order, data order, dropout): mean ± "
                  "sample standard deviation (min-max). The goals below are judged on the mean retention.", "",
                  "| task | FLOPs limit | trial | student | seeds | val metric | dev metric | retention |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in r["over_seeds"]:
            lines.append(f"| {title(m['task'])} | {_limit(m['share_limit'])} | {_trial(m['trial'])} | {m['student']} | "
                         f"{len(m['seeds'])} | {seed_text(m['val_metric'], '.4f')} | {m['metric']} "
                         f"{seed_text(m['dev_metric'], '.4f')} | "
                         f"{seed_text(m['retention'], '.1%') if m['retention'] else '-'} |")
        lines.append("")
    if r["goals"]:
        lines += ["## Goals", ""]
        for g in r["goals"]:
            head = (f"{title(g['task'])}, at least {g['retention_at_least']:.0%} retention with at most "
                    f"{g['flops_share_at_most']:.0%} of the teacher's FLOPs: ")
            if g["met"] is None:
                lines.append(f"- {head}not measured here: no row of this report is of that share.")
            elif g["student"] is None:
                lines.append(f"- {head}**not met**: no student in the benchmark is within that share.")
            else:
                seeds = g.get("retention_over_seeds") or {"n": 1}
                trial = f"trial {g['trial']} " if g["trial"] is not None else ""
                lines.append(f"- {head}**{'met' if g['met'] else 'not met'}**: the best within it, {trial}"
                             f"{g['student']} ({g['flops_share']:.1%} of the FLOPs), retains "
                             f"{g['retention']:.2%}" + (f" on the mean of {seeds['n']} seeds "
                                                       f"({seed_text(seeds, '.1%')})" if seeds["n"] > 1 else "") + ".")
        others = [task for task in r["tasks"] if task not in {g["task"] for g in r["goals"]}]
        if others:
            lines.append(f"- {', '.join(map(title, others))}: no goal; as measured above.")
        lines.append("")
    extra = [f for f in r["rows"] if {"macro_f1", "majority"} <= f["dev"].keys()]
    if extra:
        lines += ["## Macro-F1 and the majority-class baseline", "",
                  "The dev sets below are unbalanced: accuracy is shown beside macro-F1 and the accuracy of always "
                  "predicting the most frequent class.", "",
                  "| task | FLOPs limit | trial | student | accuracy | macro-F1 | teacher accuracy | teacher "
                  "macro-F1 | majority baseline |", "|---|---|---|---|---|---|---|---|---|"]
        for f in extra:
            d, td = f["dev"], f["teacher_dev"]
            lines.append(f"| {title(f['task'])} | {_limit(f['share_limit'])} | {_trial(f['trial'])} | {f['student']} | "
                         f"{d.get('accuracy', d['metric']):.4f} | {d['macro_f1']:.4f} | "
                         f"{td.get('accuracy', td['metric']):.4f} | {td.get('macro_f1', float('nan')):.4f} | "
                         f"{d['majority']:.4f} |")
        lines.append("")
    folders = dict.fromkeys(f["export_dir"] for f in r["rows"])
    lines += ["Exports: " + ", ".join(f"`{d}`" for d in folders) + " (export.json and README.md in each).", ""]
    return "\n".join(lines)
