"""`bench speed`'s report as Markdown: throughput per student, stage and cache mode, a trial's estimated
time, the goals, and the profiler's top ops.
"""

from __future__ import annotations

from fastbert_nas.bench.common import mmm

NA = "n/a"  # a figure the run did not measure


def _mmm(s: dict | None, fmt: str = "{:.0f}") -> str:
    return mmm(s, fmt.format, NA)


def speed_markdown(r: dict) -> str:
    m, p, t, meth = r["machine"], r["matmul_peak_gflops"], r["trial_budget"], r["method"]
    lines = [
        f"# Distillation speed: {r['task']}", "",
        f"Measured {r['time']} on {m['cpu']} ({m['device']}, {m['threads']} threads, torch {m['torch']}"
        + (f", {m['cuda']}" if m.get("cuda") else "") + "). "
        f"fp32 matmul peak: best of {p['n']} torch.mm products of {p['size']}x{p['size']}: **{p['best']:.1f} GFLOP/s** "
        f"(min / median / max {_mmm(p, '{:.1f}')}).", "",
        f"Each figure is min / median / max over {meth['repeats']} runs (cache and no cache interleaved); a run "
        f"times {meth['timed_steps']} steps of each stage after {meth['warmup_steps']} warm-up steps, batch "
        f"{t['batch_size']}, teacher init, hint weight {t['hint_weight']:g} in stage 2. Stage 1 (hints) reads the "
        "hinted teacher layers; stage 2 (KD) the teacher's logits only.", "",
        "FLOPs: 2 per multiply-add, analytic (per layer 2·S·(4H² + 2H·I) + 4·S²·H, FlopCounterMode misses SDPA), at "
        f"each step's padded batch shape: {r['method']['train_flops_factor']}x the student's forward (forward + "
        "backward; in stage 1 only up to its last hinted layer, plus the hint regressors), plus one teacher forward "
        "when the teacher runs live (no cache). Tokens/s counts real (unpadded) tokens.", "",
        "| student | FLOPs vs teacher | teacher | stage | padded length (padding) | examples/s | tokens/s "
        "| GFLOP/s | share of peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["students"]:
        for mode in ("cache", "no_cache"):
            for stage, label in (("stage1", "1 hints"), ("stage2", "2 KD")):
                f = s[mode][stage]
                lines.append(f"| {s['name']} {s['hints']} | {s['flops_share']:.1%} | "
                             f"{'cache' if mode == 'cache' else 'live'} | {label} | "
                             f"{f['mean_padded_len']:.1f} ({f['padding_share']:.0%}) | {_mmm(f['examples_per_s'])} | "
                             f"{_mmm(f['tokens_per_s'])} | {_mmm(f['gflops'], '{:.1f}')} | "
                             f"{_mmm(f['peak_share'], '{:.1%}')} |")
    checkpoints = -(-t["kd_steps"] // t["eval_every"])
    lines += ["", f"A trial of space {t['space']}, budget {t['budget']} ({t['hint_steps']} hint + {t['kd_steps']} KD "
              f"steps, {checkpoints} evaluations of {t['eval_examples']} validation examples, student built with "
              "teacher init; its latency timing left out), estimated from the runs, in seconds. Teacher init scores "
              f"the teacher once per process, with its first student ({meth['first_build_s']:.1f} s here, that "
              "student's build included); the build times below are those of the students after it.", "",
              "| student | with cache | live teacher | speed-up | KD steps speed-up | evaluation s | build s |",
              "|---|---|---|---|---|---|---|"]
    for s in r["students"]:
        lines.append(f"| {s['name']} | {_mmm(s['cache']['trial_s'], '{:.1f}')} | "
                     f"{_mmm(s['no_cache']['trial_s'], '{:.1f}')} | {_mmm(s['cache_speedup']['trial'], '{:.2f}x')} | "
                     f"{_mmm(s['cache_speedup']['kd_steps'], '{:.2f}x')} | {_mmm(s['eval_s'], '{:.2f}')} | "
                     f"{_mmm(s['cache']['build_s'], '{:.2f}')} |")
    g = r["goals"]
    c, k = g["cache_speedup"], g["peak_share"]
    lines += ["", "## Goals", "",
              f"- The cache makes the smallest student's ({c['student']}) trials >= {c['goal']:g}x faster: "
              f"median **{c['median']:.2f}x**, {'met' if c['met'] else 'not met'}.",
              f"- The largest student ({k['student']}) reaches >= {k['goal']:.0%} of the matmul peak (KD steps, cache "
              f"on): median **{k['median']:.1%}**, {'met' if k['met'] else 'not met'}.", ""]
    for name, stages in r["profiles"].items():
        lines += [f"## Profile: {name}, cache on", ""]
        for stage, table in stages.items():
            lines += [f"{'Stage 1 (hints)' if stage == 'stage1' else 'Stage 2 (KD)'}: {table['ms_per_step']:.1f} ms "
                      f"of {table['time'].replace('_', ' ')} per step.", "",
                      "| op | share | ms per step | calls per step |", "|---|---|---|---|"]
            lines += [f"| {o['op']} | {o['share']:.1%} | {o['ms_per_step']:.2f} | {o['calls_per_step']:.0f} |"
                      for o in table["top"]]
            lines.append("")
    return "\n".join(lines)
