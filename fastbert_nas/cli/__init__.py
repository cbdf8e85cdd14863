"""fastbert-nas command line: parse, build the run environment, call library code, print.

The only package importing typer. Importing it registers every command on `app`.
"""

from fastbert_nas.cli import bench, commands  # noqa: F401  (they register the commands)
from fastbert_nas.cli.app import app

__all__ = ["app"]
