"""Studies turned into rows, fronts, figures and tables (no torch unless a figure is re-timed).
"""
