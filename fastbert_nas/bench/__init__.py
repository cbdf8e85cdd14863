"""Benchmarks: shared helpers, one module per benchmark; figures go to RESULTS/benchmarks/.
"""
