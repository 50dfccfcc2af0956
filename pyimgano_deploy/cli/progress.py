"""The progress bar of the commands that score many images: on stderr, only when it is a terminal,
no JSON summary was asked for, and ``--no-progress`` was not given."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator, TypeVar

import click


F = TypeVar("F", bound=Callable[..., Any])


def progress_option(command: F) -> F:
    """The ``--progress/--no-progress`` option, as ``train`` has it (``progress``: bool)."""
    return click.option("--progress/--no-progress", default=True, show_default=True,
                        help="Progress bar on stderr (drawn only when stderr is a terminal, and never with --json).")(command)


def bar_wanted(progress: bool, as_json: bool) -> bool:
    """Whether to draw the bar: asked for, no JSON summary, and stderr is a terminal."""
    return progress and not as_json and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool, label: str) -> Iterator[Any]:
    """A click progress bar of ``total`` steps labelled ``label`` (``None`` when not ``enabled``)."""
    if not enabled:
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True, show_eta=True) as bar:
        yield bar
