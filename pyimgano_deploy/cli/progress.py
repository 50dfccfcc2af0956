"""The progress bar of the commands that score many images: on stderr, only when it is a terminal."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import click


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool, label: str) -> Iterator[Any]:
    """A click progress bar of ``total`` steps labelled ``label`` (``None`` when not ``enabled``)."""
    if not enabled:
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True, show_eta=True) as bar:
        yield bar
