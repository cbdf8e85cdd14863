"""End-to-end pieces of one distillation: tasks and splits, training, the teacher and its output cache, the student,
costs, the distillation loop, augmentation, and the jobs that chain them.
"""
