"""`fastbert-nas bench ...`: the benchmark commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fastbert_nas.bench.settings import (
    BENCH_EXPORT_BUDGET,
    BENCH_EXPORT_KD_STEPS,
    BENCH_EXPORT_OTHER_SEEDS,
    BENCH_EXPORT_ROUNDS,
    BENCH_EXPORT_SEEDS,
    BENCH_EXPORT_SHARES,
    BENCH_EXPORT_STUDY,
    BENCH_EXPORT_TASKS,
    BENCH_FIDELITY_STUDENTS,
    DEPTH_HINT_STEPS,
    DEPTH_LADDER,
    DEPTH_METHODS,
    DEPTH_REPORT,
    DEPTH_SEEDS,
    DEPTH_SHARES,
    DEPTH_TASKS,
    FAMILIES,
)
from fastbert_nas.cli.app import INTERRUPTED_BENCH, app, handled
from fastbert_nas.cli.options import (
    DataDir,
    DeployExports,
    DeployTrialOverhead,
    Device,
    ExportBenchChosenBy,
    ExportBenchHintSteps,
    ExportBenchReport,
    ExportBenchStudent,
    Results,
    Task,
    TeacherOpt,
    Threads,
)
from fastbert_nas.config import DEFAULT_TRIAL_BUDGET, at_least, run_env
from fastbert_nas.search.space import DEFAULT_SPACE


def bench_written(path, results: Path) -> None:
    """Say where a benchmark wrote its report (JSON and Markdown), and rebuild RESULTS/BENCHMARKS.md."""
    from fastbert_nas.bench.common import write_summary

    typer.echo(f"written to {path} and {Path(path).with_suffix('.md')}; summary: {write_summary(results)}")


def finish(report: dict, markdown, results: Path) -> None:
    """Print a benchmark's report as Markdown and say where it was written."""
    typer.echo(markdown(report))
    bench_written(report["path"], results)


bench_app = typer.Typer(no_args_is_help=True,
                        help="Benchmarks: measured figures written to RESULTS/benchmarks/ (JSON and Markdown).")


app.add_typer(bench_app, name="bench")


@bench_app.command("distill")
@handled()
def bench_distill(task: Task = "sst2",
                  arch: Annotated[str, typer.Option("--arch", help="Student shape.")] = "L3-H320-A10-I640",
                  hints: Annotated[Optional[str], typer.Option("--hints", help="Hint mapping.")] = "1:2,2:4,3:6",
                  budget: Annotated[str, typer.Option(
                      "--budget", help="Step budget, as distill's: smoke, small (CPU), standard (GPU).")] = "small",
                  data_dir: DataDir = None, teacher: TeacherOpt = None, device: Device = "auto",
                  threads: Threads = None, results: Results = Path("results")):
    """One student with teacher init and with random init at the same budget, plus distillation
    throughput with and without the teacher cache."""
    import fastbert_nas.bench.distill as bench_distill_mod

    env = run_env(task, data_dir, teacher=teacher, device=device, threads=threads, results=results)
    r = bench_distill_mod.bench_distill(env, arch=arch, hints=hints, budget=budget)
    finish(r, bench_distill_mod.distill_markdown, results)


@bench_app.command("pruning")
@handled(INTERRUPTED_BENCH)
def bench_pruning(task: Task = "sst2",
                  trials: Annotated[int, typer.Option("--trials", help="Trials in each of the two studies.")] = 30,
                  study: Annotated[Optional[str], typer.Option(
                      "--study", help="Name prefix of the two studies \\[default: <task>-<space>]; they are "
                      "<prefix>-pareto and <prefix>-none, and are resumed when they exist.")] = None,
                  space: Annotated[str, typer.Option("--space", help="Search space name or .yaml path.")] = DEFAULT_SPACE,
                  budget: Annotated[str, typer.Option(
                      "--budget", help="Trial budget: smoke, cpu or gpu (as search's).")] = DEFAULT_TRIAL_BUDGET,
                  seeds: Annotated[int, typer.Option(
                      "--seeds", help="Pairs of studies, with seeds 0 to SEEDS-1; the goals are judged on the "
                      "means over them.")] = 3,
                  jobs: Annotated[int, typer.Option(
                      "--jobs", help="Studies run side by side, each in its own process, from one queue over all "
                      "seeds (a seed's unpruned study first); give each --threads 1 on a CPU: a small student's "
                      "trial gains little from a second thread.")] = 1,
                  data_dir: DataDir = None, teacher: TeacherOpt = None, device: Device = "auto",
                  threads: Threads = None, results: Results = Path("results")):
    """The same study with Pareto pruning and without: training steps saved, hypervolume kept, both fronts.

    Runs (or resumes) two searches per seed, one after the other (or --jobs at a time), and compares each
    seed's pair as soon as both are done.
    """
    import fastbert_nas.bench.pruning as bench_pruning_mod
    import fastbert_nas.search.options as options_mod

    env = run_env(task, data_dir, teacher=teacher, device=device, threads=threads, results=results)
    at_least(1, seeds=seeds, jobs=jobs)
    # one rung: what pruning alone saves (promotions would add trials of their own to both studies)
    opts = options_mod.SearchOptions(env=env, trials=trials, study=study, space=space, budget=budget, rungs=1)
    r = bench_pruning_mod.bench_pruning(opts, seeds=seeds, jobs=jobs, log=typer.echo)
    finish(r, bench_pruning_mod.pruning_markdown, results)


@bench_app.command("export")
@handled("interrupted: run the same command to resume; finished exports are kept, an unfinished one resumes from its checkpoint")
def bench_export(study: Annotated[str, typer.Option(
                     "--study", help="Study whose students are exported (RESULTS/<study>.db); its architectures "
                     "serve every task.")] = BENCH_EXPORT_STUDY,
                 tasks: Annotated[str, typer.Option(
                     "--tasks", help="Comma-separated tasks; each student is distilled from that task's own "
                     "teacher.")] = ",".join(BENCH_EXPORT_TASKS),
                 shares: Annotated[str, typer.Option(
                     "--shares", help="Comma-separated FLOPs shares of the teacher: one export per task and share, "
                     "--pick 'flops<=SHARE', in RESULTS/exports/<task>-<share in %>/.")
                 ] = ",".join(f"{x:.2f}" for x in BENCH_EXPORT_SHARES),
                 budget: Annotated[str, typer.Option("--budget", help="Step budget of the exports made here (and "
                                                     "required of those found).")] = BENCH_EXPORT_BUDGET,
                 kd_steps: Annotated[Optional[int], typer.Option(
                     "--kd-steps", help="KD steps of each export (SST-2's goals need more than the small "
                     "budget's 8,000).")
                 ] = BENCH_EXPORT_KD_STEPS,
                 seeds: Annotated[int, typer.Option(
                     "--seeds", help="Seeds of each row of a task with goals (SST-2): its student is exported with "
                     "seeds 0 to SEEDS-1, into <task>-<NN>-seed<K>/ beyond seed 0, and the goals are judged on the "
                     "mean retention.")] = BENCH_EXPORT_SEEDS,
                 other_seeds: Annotated[int, typer.Option(
                     "--other-seeds", help="Seeds of each row of the other tasks.")] = BENCH_EXPORT_OTHER_SEEDS,
                 rounds: Annotated[int, typer.Option(
                     "--rounds", help="Timing rounds: each times every teacher and student once.")
                 ] = BENCH_EXPORT_ROUNDS,
                 hint_steps: ExportBenchHintSteps = None, student: ExportBenchStudent = None,
                 chosen_by: ExportBenchChosenBy = None, report: ExportBenchReport = "export",
                 data_dir: DataDir = None, device: Device = "auto", threads: Threads = None,
                 results: Results = Path("results")):
    """Exported students beside their teachers: dev metric, retention, params, FLOPs and batch-1 speed-up.

    Uses each finished export folder RESULTS/exports/<task>-<NN>[-seed<K>]/ and exports (or resumes) the missing
    ones, then times every student, loaded from its folder, and its task's teacher side by side in this
    process. Writes RESULTS/benchmarks/export.json and export.md (or under the name --report gives).
    """
    from fastbert_nas.bench import export as bx

    opts = bx.ExportBenchOptions(study=study, tasks=bx.parse_tasks(tasks), shares=bx.parse_shares(shares),
                                 budget=budget, kd_steps=kd_steps, data_dir=data_dir, results=results,
                                 threads=threads, device=device, rounds=rounds, seeds=seeds,
                                 other_seeds=other_seeds, hint_steps=hint_steps, students=bx.parse_given(student),
                                 chosen_by=chosen_by, report=report)
    r = bx.bench_export(opts, log=typer.echo)
    finish(r, bx.export_markdown, results)


@bench_app.command("deploy")
@handled()
def bench_deploy(tasks: Annotated[str, typer.Option(
                     "--tasks", help="Comma-separated tasks whose exports (seed 0, as bench export leaves them) "
                     "are measured.")] = ",".join(BENCH_EXPORT_TASKS),
                 shares: Annotated[str, typer.Option(
                     "--shares", help="Comma-separated FLOPs shares of the teacher, as bench export's.")
                 ] = ",".join(f"{x:.2f}" for x in BENCH_EXPORT_SHARES),
                 study: Annotated[str, typer.Option(
                     "--study", help="Study whose trials' median wall time the cost of timing a trial in ONNX "
                     "Runtime is compared with.")] = BENCH_EXPORT_STUDY,
                 rounds: Annotated[int, typer.Option(
                     "--rounds", help="Timing rounds: each times every model in every runtime once.")
                 ] = BENCH_EXPORT_ROUNDS, exports: DeployExports = "export",
                 trial_overhead: DeployTrialOverhead = True,
                 data_dir: DataDir = None, threads: Threads = None, results: Results = Path("results")):
    """The export benchmark's students and their teachers in PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime
    int8 (dynamic quantization): size on disk, validation and dev metrics in each runtime (int8's change is
    measured), batch-1 latency at the task's length side by side, speed-ups against the PyTorch fp32 teacher and
    the teacher in the same runtime, the CPU's flags, and what timing in ONNX Runtime costs a search trial.
    Writes RESULTS/benchmarks/deploy.json and .md (deploy-given.* for --exports export-given); a missing export
    is listed, not made.
    """
    from fastbert_nas.bench import deploy as bd
    from fastbert_nas.bench.export import parse_shares, parse_tasks

    opts = bd.DeployBenchOptions(tasks=parse_tasks(tasks), shares=parse_shares(shares), study=study,
                                 trial_overhead=trial_overhead, exports=exports, data_dir=data_dir,
                                 results=results, threads=threads, rounds=rounds)
    r = bd.bench_deploy(opts, log=typer.echo)
    finish(r, bd.deploy_markdown, results)


@bench_app.command("fidelity")
@handled("interrupted: run the same command to resume; finished runs are kept, an unfinished export resumes "
         "from its checkpoint")
def bench_fidelity(study: Annotated[str, typer.Option(
                       "--study", help="Study whose students are measured (RESULTS/<study>.db).")] = BENCH_EXPORT_STUDY,
                   students: Annotated[int, typer.Option(
                       "--students", help="Students: those --pick 'flops<=0.25' and 'flops<=0.1' choose, then the "
                       "front and its neighbours by Pareto rank and hypervolume share.")] = BENCH_FIDELITY_STUDENTS,
                   rungs: Annotated[Optional[int], typer.Option(
                       "--rungs", help="Rungs each student is distilled at (KD steps x3 per rung from the trial's) "
                       "\\[default: the study's trial budget's].")] = None,
                   budget: Annotated[str, typer.Option("--budget", help="Step budget of the exports.")
                                     ] = BENCH_EXPORT_BUDGET,
                   kd_steps: Annotated[Optional[int], typer.Option("--kd-steps", help="KD steps of each export.")
                                       ] = BENCH_EXPORT_KD_STEPS,
                   data_dir: DataDir = None, device: Device = "auto", threads: Threads = None,
                   results: Results = Path("results")):
    """Whether the search's rungs rank students as the export budget does: each chosen student distilled at
    every rung and exported; Spearman and Kendall of each rung's validation metric against the export's
    validation and dev metrics, and --pick's regret. Runs are kept in RESULTS/fidelity/<study>/ (the same
    command resumes); writes RESULTS/benchmarks/fidelity.json and .md.
    """
    from fastbert_nas.bench import fidelity as bf

    opts = bf.FidelityOptions(study=study, students=students, rungs=rungs, budget=budget, kd_steps=kd_steps,
                              data_dir=data_dir, results=results, threads=threads, device=device)
    r = bf.bench_fidelity(opts, log=typer.echo)
    finish(r, bf.fidelity_markdown, results)


@bench_app.command("search")
@handled(INTERRUPTED_BENCH)
def bench_search(task: Task = "sst2",
                 trials: Annotated[int, typer.Option(
                     "--trials", help="Trials in each study of an arm without rungs (COMPLETE, PRUNED and FAIL "
                     "count, as in search); an arm with rungs runs as many first-rung trials as cost about the same "
                     "steps (15 for 10 on two rungs).")] = 10,
                 seeds: Annotated[int, typer.Option(
                     "--seeds", help="Studies per arm, with seeds 0 to SEEDS-1: figures are min / median / max "
                     "over them.")] = 5,
                 setting: Annotated[str, typer.Option(
                     "--setting", help="Space and rung ladder. reduced: the thin-deep space, 20 hint + 100 KD "
                     "steps at the first rung and 300 (with augmentation) at the top, a checkpoint every 50 and 150 "
                     "KD steps on 500 validation examples, 16,000 training examples (SST-2 on a 2-core CPU); tiny: "
                     "the tiny space and the smoke budget (tests).")] = "reduced",
                 arms: Annotated[str, typer.Option(
                     "--arms", help="Comma-separated arms: default (TPE, Pareto pruning, rungs: the search as it "
                     "ships), tpe (TPE, Pareto pruning, every trial at the top rung's budget), random (random search, "
                     "no pruning, the top rung's budget), gp (GPSampler with pruning and rungs: the sampler "
                     "comparison).")] = "default,tpe,random",
                 jobs: Annotated[int, typer.Option(
                     "--jobs", help="Studies run at once, each in its own process (give each --threads 1 on a "
                     "CPU: a small student's trial gains little from a second thread).")] = 1,
                 data_dir: DataDir = None, teacher: TeacherOpt = None, device: Device = "auto",
                 threads: Threads = None, results: Results = Path("results")):
    """The default search (TPE, Pareto pruning, rungs) against random search and against TPE without rungs:
    hypervolume of the metric-vs-FLOPs front, every student at the top rung's budget, against training steps
    and wall time, --seeds studies per arm, no baselines.

    The studies are kept in RESULTS/search-<task>.db and resumed when they exist; the report is written to
    RESULTS/benchmarks/search-<task>.json and .md, with the curves as .html and .png.
    """
    from fastbert_nas.bench import search as bench_search_mod
    from fastbert_nas.bench import search_report

    chosen = bench_search_mod.parse_arms(arms)
    env = run_env(task, data_dir, teacher=teacher, device=device, threads=threads, results=results)
    r = bench_search_mod.bench_search(env, trials, seeds, setting, chosen, jobs=jobs, log=typer.echo)
    finish(r, search_report.search_markdown, results)


@bench_app.command("speed")
@handled()
def bench_speed(task: Task = "sst2", data_dir: DataDir = None, teacher: TeacherOpt = None,
                results: Results = Path("results"), threads: Threads = None,
                device: Annotated[str, typer.Option(
                    "--device", help="auto (cuda when there is one), cpu or cuda. Timings synchronize the "
                    "device.")] = "auto",
                repeats: Annotated[int, typer.Option(
                    "--repeats", help="Timed runs per student, with and without the cache (interleaved); every "
                    "figure is reported as min / median / max over them.")] = 3,
                student: Annotated[Optional[list[str]], typer.Option(
                    "--student", help="A student to time, ARCH@HINTS (e.g. L4-H128-A2-I512@2:3,4:6); repeat the "
                    "option for several \\[default: L4-H128-A2-I512@2:3,4:6, L3-H320-A10-I640@1:2,2:4,3:6 and "
                    "L6-H384-A12-I1536@2:2,4:4,6:6].")] = None,
                warmup_steps: Annotated[int, typer.Option(
                    "--warmup-steps", help="Untimed steps per stage before the clock starts.")] = 5,
                steps: Annotated[int, typer.Option("--steps", help="Timed steps per stage and run.")] = 30,
                profile_steps: Annotated[int, typer.Option(
                    "--profile-steps", help="Steps per stage under torch.profiler for the smallest and the largest "
                    "student (cache on); 0: no profile.")] = 10,
                space: Annotated[str, typer.Option(
                    "--space", help="Search space whose per-trial budget (batch size, examples, steps, evaluations) "
                    "the runs use and the trial estimate is for.")] = DEFAULT_SPACE,
                budget: Annotated[str, typer.Option(
                    "--budget", help="That space's trial budget: smoke, cpu or gpu.")] = DEFAULT_TRIAL_BUDGET,
                peak_size: Annotated[int, typer.Option(
                    "--peak-size", help="n of the n x n fp32 matrix products timed for the matmul peak.")] = 4096):
    """Distillation throughput (examples/s, tokens/s, GFLOP/s and share of the fp32 matmul peak) of a small,
    a quarter-FLOPs and a teacher-size student, with and without the teacher cache; a trial's time
    estimated from them; torch.profiler's top ops."""
    # The defaults above repeat bench_speed's constants (importing it here would load torch for --help).
    from fastbert_nas.bench import speed
    from fastbert_nas.bench.speed_report import speed_markdown

    env = run_env(task, data_dir, teacher=teacher, device=device, threads=threads, results=results)
    r = speed.bench_speed(env, students=student, repeats=repeats, warmup=warmup_steps, steps=steps,
                          profile_steps=profile_steps, space=space, budget=budget, peak_size=peak_size,
                          log=typer.echo)
    finish(r, speed_markdown, results)


@bench_app.command("depth")
@handled("interrupted: run the same command to resume; finished runs are kept in RESULTS/depth/runs.json, an "
         "unfinished one resumes from its checkpoint")
def bench_depth(tasks: Annotated[str, typer.Option(
                    "--tasks", help="Comma-separated tasks, each distilled from its own cached teacher.")
                ] = ",".join(DEPTH_TASKS),
                shares: Annotated[str, typer.Option(
                    "--shares", help="Comma-separated FLOPs shares of the teacher (at the task's length): one "
                    "ladder of equal-FLOPs students per share.")] = ",".join(f"{x:.2f}" for x in DEPTH_SHARES),
                depths: Annotated[str, typer.Option(
                    "--depths", help="Comma-separated student depths of each ladder; each one's width holds its "
                    "FLOPs within 5% of the share.")] = ",".join(map(str, DEPTH_LADDER)),
                methods: Annotated[str, typer.Option(
                    "--methods", help="Comma-separated: fitnets (teacher init, hint stage, KD), kd (teacher init, "
                    "KD only), random-hints (random init, hint stage, KD).")] = ",".join(DEPTH_METHODS),
                seeds: Annotated[int, typer.Option("--seeds", help="Seeds 0 to SEEDS-1 of every run.")] = DEPTH_SEEDS,
                budget: Annotated[str, typer.Option(
                    "--budget", help="Step budget (examples, augmentation, batch) of every run: small, standard "
                    "or full (distill's), or cpu or gpu (a search trial's, without augmentation).")
                ] = BENCH_EXPORT_BUDGET,
                kd_steps: Annotated[int, typer.Option("--kd-steps", help="KD steps of every run.")
                                    ] = BENCH_EXPORT_KD_STEPS,
                hint_steps: Annotated[int, typer.Option(
                    "--hint-steps", help="Hint-stage steps of the methods with hints.")] = DEPTH_HINT_STEPS,
                max_hints: Annotated[Optional[int], typer.Option(
                    "--max-hints", help="Sparse hints: at most N hinted student layers, spread evenly, the last "
                    "on the last \\[default: one per teacher layer the student can take].")] = None,
                hint_lr: Annotated[Optional[float], typer.Option(
                    "--hint-lr", help="Peak learning rate of the hint stage \\[default: 1e-3, distill's].")] = None,
                recorded_only: Annotated[bool, typer.Option(
                    "--recorded-only", help="Distill no student: write the report and plot of the runs on "
                    "record (an interrupted benchmark's so far). The report needs each task's teacher: one not "
                    "cached is fine-tuned first (minutes).")] = False,
                report: Annotated[str, typer.Option(
                    "--report", help="Name of the report: RESULTS/benchmarks/REPORT.json, .md and REPORT/ (give a "
                    "variant, such as other step counts or a subset of the ladder, a name of its own so that it "
                    "leaves the main report as it is).")] = DEPTH_REPORT,
                data_dir: DataDir = None, device: Device = "auto", threads: Threads = None,
                results: Results = Path("results")):
    """Thinner-deeper with FitNets hints against shallower-wider at equal FLOPs: a ladder of students of equal
    FLOPs per share, each distilled by every method and seed; validation and dev metrics with their spread,
    where each hint stage's loss flattened, and a plot of dev metric against depth. Runs are kept in
    RESULTS/depth/runs.json (the same command resumes, a shorter --kd-steps keeps runs of its own); writes
    RESULTS/benchmarks/depth.json, .md and depth/metric_vs_depth.png (or under the name --report gives).
    """
    from fastbert_nas.bench import depth as bd
    from fastbert_nas.bench.export import parse_shares, parse_tasks

    opts = bd.DepthOptions(tasks=parse_tasks(tasks), shares=parse_shares(shares), depths=bd.parse_depths(depths),
                           methods=parse_tasks(methods), seeds=seeds, budget=budget, kd_steps=kd_steps,
                           hint_steps=hint_steps, max_hints=max_hints, hint_lr=hint_lr, data_dir=data_dir,
                           results=results, threads=threads, device=device, recorded_only=recorded_only, report=report)
    r = bd.bench_depth(opts, log=typer.echo)
    finish(r, bd.depth_markdown, results)


@bench_app.command("throughput")
@handled()
def bench_throughput(tasks: Annotated[str, typer.Option(
                         "--tasks", help="Comma-separated tasks; each needs its cached teacher.")] = "sst2",
                     data_dir: DataDir = None, results: Results = Path("results")):
    """The fastText-style table: accuracy (validation and dev) and inference speed (examples per second at the
    dev examples' real lengths, batch 1 and batched, one thread and all) of each task's teacher, its exported
    students (one per FLOPs share in RESULTS/exports/) and a fastText classifier trained on the same rows.
    Writes RESULTS/benchmarks/throughput.json and .md.
    """
    from fastbert_nas.bench import throughput as bt
    from fastbert_nas.bench.export import parse_tasks

    r = bt.bench_throughput(parse_tasks(tasks), results, data_dir, log=typer.echo)
    finish(r, bt.throughput_markdown, results)


@bench_app.command("families")
@handled()
def bench_families(families: Annotated[str, typer.Option(
                       "--families", help="Comma-separated teacher families, each from a random base of its own "
                       "config class: " + ", ".join(FAMILIES) + ".")] = ",".join(FAMILIES),
                   data_dir: DataDir = None, device: Device = "auto", threads: Threads = None,
                   results: Results = Path("results")):
    """One SST-2 row per teacher family: a randomly initialized classifier of the family (no pre-trained
    non-BERT weights are reachable offline) fine-tuned into the teacher through --base, and a student of the
    family distilled from it; validation and dev accuracy, params, FLOPs share and speed-up, beside the
    pre-trained BERT (MiniLM-L6) rows of bench export. Finished rows are kept in RESULTS/families/ (the same
    command resumes); writes RESULTS/benchmarks/families.json and .md.
    """
    from fastbert_nas.bench import families as bf

    r = bf.bench_families(bf.parse_families(families), results, data_dir, device, threads, log=typer.echo)
    finish(r, bf.families_markdown, results)

