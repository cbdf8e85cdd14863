"""From a point on the front to a deployable model: `fastbert-nas export`.

    choose a trial (--trial N, or --pick "flops<=0.25") -> its student, hints and settings   plan.py
    -> distill it again on a full budget (checkpointed, resumable)                          checkpoint.py, run.py
    -> score it on the official dev set, cost it beside the teacher -> save a Hugging Face
       model folder with a model card and export.json                                       run.py, card.py
    (and, with --onnx, a checked and timed model.onnx)                                      onnx.py

The study is found as `show` and `plot` find it (report.rows.find_study). The student is re-distilled
by the same pipeline as a trial (core.pipeline.prepare, run_student): the trial's architecture, hint
mapping and distillation settings, with the budget's steps and examples, in the study's run environment.
"""
