"""The benchmarks' fixed settings (no torch): the command line shows them as defaults without loading a model.
"""

# `bench export`: which exports, and how they are timed (`bench deploy` and `bench fidelity` take the same).
BENCH_EXPORT_STUDY = "sst2-compact"              # the SST-2 study whose students serve every task (space
                                                 # compact, made as results/README.md says)
BENCH_EXPORT_TASKS = ("sst2", "cola", "amazon")
BENCH_EXPORT_SHARES = (0.25, 0.10)               # largest shares of the teacher's FLOPs: --pick "flops<=SHARE"
BENCH_EXPORT_BUDGET = "small"                    # 300 hint steps over all of a task's train (up to 70,000 rows)
BENCH_EXPORT_KD_STEPS = 16000                    # KD steps per export: twice small's 8,000 (results/README.md says
                                                 # how it was chosen)
BENCH_EXPORT_SEEDS = 3                           # seeds of each headline row (a task with goals): mean and spread
BENCH_EXPORT_OTHER_SEEDS = 1                     # seeds of the other tasks' rows (an Amazon export is about 2 CPU hours)
BENCH_EXPORT_ROUNDS = 5                          # timing rounds, each timing every model once: min/median/max over them
BENCH_FIDELITY_STUDENTS = 8                      # `bench fidelity`: students distilled at every rung and exported

# `bench depth`: students of equal FLOPs from shallow-wide to thin-deep, each distilled three ways.
DEPTH_TASKS = ("sst2", "cola")
DEPTH_SHARES = (0.10, 0.25)                      # of the teacher's FLOPs at the task's length
DEPTH_LADDER = (2, 4, 8, 12)                     # student layers, shallow-wide to thin-deep
DEPTH_METHODS = ("fitnets", "kd", "random-hints")  # bench/depth.py's METHODS
DEPTH_SEEDS = 3
DEPTH_HINT_STEPS = 2000                          # stage-1 steps of 32 examples for the methods with hints (FitNets
                                                 # trains the guided layers until they fit: each run's flat step
                                                 # says whether this was long enough)
DEPTH_REPORT = "depth"                           # RESULTS/benchmarks/depth.{json,md} and depth/ (the plot)

# `bench families`: one SST-2 row per teacher family, from a random base of each (bench/families.py).
FAMILIES = ("bert", "roberta", "electra", "distilbert")
FAMILY_SHAPE = (4, 128, 4, 512)                  # teacher layers, width, heads, FFN (minutes per teacher on 2 cores)
FAMILY_TEACHER_EPOCHS = 2.0                      # passes over SST-2's train split
FAMILY_TEACHER_LR = 5e-4                         # peak lr: random weights take a larger one than fine-tuning does
FAMILY_STUDENT = "L2-H64-A2-I256"                # half the teacher's depth and width
FAMILY_HINTS = "1:2,2:4"
FAMILY_BUDGET = "small"                          # all of SST-2's train split, batch 32
FAMILY_KD_STEPS = 2000                           # KD steps of each student
FAMILY_HINT_STEPS = 300                          # hint steps of each student (small's)
