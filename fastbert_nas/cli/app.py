"""The Typer app and its error handling: one line and an exit code for bad input and for Ctrl-C."""

from __future__ import annotations

import functools
import os
from typing import Annotated

import typer

from fastbert_nas.config import UserError

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
DEBUG_ENV = "FASTBERT_NAS_DEBUG"        # "1": show the traceback behind an error line (as --debug does)
STORAGE_ENV = "FASTBERT_NAS_STORAGE"    # --storage's default: keeps a database password out of `ps` and history


_debug = [False]  # this invocation's --debug


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search for small, fast BERT students distilled from a fine-tuned teacher (FitNets).")


@app.callback()
def root(debug: Annotated[bool, typer.Option(
        "--debug", help=f"Show the full traceback behind an error line (also ${DEBUG_ENV}=1).")] = False) -> None:
    """Search for small, fast BERT students distilled from a fine-tuned teacher (FitNets)."""
    from transformers.utils import logging

    _debug[0] = debug or os.environ.get(DEBUG_ENV) == "1"  # set anew by every invocation
    logging.set_verbosity_error()  # no load reports: a base's new classifier head is expected


def handled(interrupted: str = "interrupted"):
    """A command decorator: UserError becomes one line on stderr and exit code 2; Ctrl-C the line
    `interrupted` and exit code 130. With --debug the traceback is printed first."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (UserError, KeyboardInterrupt) as exc:
                if _debug[0]:
                    import traceback

                    traceback.print_exc()
                if isinstance(exc, KeyboardInterrupt):
                    typer.echo(interrupted, err=True)
                    raise typer.Exit(130) from None
                typer.echo(f"error: {' '.join(str(exc).splitlines())}", err=True)  # one line, whatever it quotes
                raise typer.Exit(2) from None
        return wrapper
    return decorate


INTERRUPTED_SEARCH = "interrupted: the running trial is queued again; run the same command to resume"
INTERRUPTED_BENCH = "interrupted: the running trials are queued again; run the same command to resume"
