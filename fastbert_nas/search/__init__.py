"""The architecture search: space files, the pruning rule, options, storage, baselines, the objective, and running
studies and their workers.
"""
