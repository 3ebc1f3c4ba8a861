"""What a command says while it runs: progress, one-line usage errors, and where a result came from.

- :func:`progress` / :func:`track`: a rich bar on a terminal; piped to a log, a plain line every
  ``PROBITY_PROGRESS_EVERY`` seconds (default 30) and one at the end, so a long run's log shows
  that it moves.
- :func:`usage_errors`: inside the block, a ``ValueError``, ``FileNotFoundError`` or
  ``LookupError`` (what the library raises for bad input) becomes a usage error
  (``typer.BadParameter``); the ``probity`` entry point prints any usage error as one line,
  ``error: ...``, and exits 2.
- :func:`writable`: one usage error, before any work, unless an output path can be written.
- :func:`note`: a one-line note or warning on stderr (never mixed into a command's output).
- :func:`provenance`: the command, its inputs and probity's version, for every ``--json``.

>>> with progress(len(batches), "sampling") as bar:
...     for batch in batches:
...         run(batch)
...         bar.advance()
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import typer

DEFAULT_EVERY = 30.0  # seconds between progress lines when not on a terminal


class _Lines:
    """Progress as plain lines on stderr (a pipe or a log file)."""

    def __init__(self, total: int | None, label: str, every: float):
        self.total, self.label, self.every = total, label, every
        self.done, self.note = 0, ""
        self.last = time.monotonic()

    def advance(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more units done; ``note`` (e.g. the current loss) goes on the next line."""
        self.done += n
        self.note = note or self.note
        if time.monotonic() - self.last >= self.every:
            self._print()

    def _print(self) -> None:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        of = f"/{self.total}" if self.total is not None else ""
        print(
            f"{self.label}: {self.done}{of}{share}{' ' + self.note if self.note else ''}", file=sys.stderr, flush=True
        )
        self.last = time.monotonic()


class _Bar:
    """Progress as a rich bar (a terminal)."""

    def __init__(self, bar, task, label: str):
        self.bar, self.task, self.label = bar, task, label

    def advance(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more units done; ``note`` (e.g. the current loss) shows beside the label."""
        self.bar.update(self.task, advance=n, description=f"{self.label} {note}".strip())


class _Off:
    def advance(self, n: int = 1, note: str = "") -> None:
        """Nothing to show."""


@contextlib.contextmanager
def progress(
    total: int | None, label: str, enabled: bool = True, done: int = 0, console=None
) -> Iterator[_Lines | _Bar | _Off]:
    """A tracker for ``total`` units of work (``done`` of them already, e.g. after a resume):
    ``tracker.advance(n, note)``. A rich bar when stderr is a terminal, else a line every
    ``PROBITY_PROGRESS_EVERY`` seconds and at the end; nothing when ``enabled`` is False."""
    if not enabled:
        yield _Off()
        return
    from rich.console import Console
    from rich.progress import Progress

    console = console or Console(stderr=True)
    if console.is_terminal:
        with Progress(console=console, transient=True) as bar:
            yield _Bar(bar, bar.add_task(label, total=total, completed=done), label)
        return
    lines = _Lines(total, label, float(os.environ.get("PROBITY_PROGRESS_EVERY", DEFAULT_EVERY)))
    lines.done = done
    try:
        yield lines
    finally:
        if lines.done > done:
            lines._print()


def track(items: Iterable, label: str, enabled: bool = True, total: int | None = None) -> Iterator:
    """``items``, one at a time, with :func:`progress` over them."""
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    with progress(total, label, enabled) as bar:
        for item in items:
            yield item
            bar.advance()


@contextlib.contextmanager
def usage_errors(param: str | None = None) -> Iterator[None]:
    """Turn bad-input errors raised inside the block (``ValueError``, ``FileNotFoundError``,
    ``LookupError``) into a one-line usage error (exit 2), naming the option ``param`` if given."""
    try:
        yield
    except (ValueError, FileNotFoundError, LookupError) as err:
        fail(str(err) or type(err).__name__, param)


def fail(message: str, param: str | None = None) -> None:
    """Stop the command with a one-line usage error (exit 2) about the option ``param``, if given.
    A message that starts with a parameter's Python name (``batch_size must be ...``, as config
    checks word it) names the option as typed instead (``--batch-size must be ...``)."""
    raise typer.BadParameter(" ".join(message.split()), param_hint=param)


def provenance(command: str, **inputs: Any) -> dict:
    """What produced a result file: ``{"probity": version, "command": ..., "inputs": {...}}``
    (no time stamp: the same inputs give the same JSON)."""
    from probity import __version__

    return {"probity": __version__, "command": command, "inputs": inputs}


def writable(path: str | os.PathLike | None, option: str, folder: bool = False) -> None:
    """Stop with one usage error about ``option`` unless ``path`` can be written as a file (``folder``
    False) or a folder: not the other kind already, and no file where one of its parent folders must go.
    Commands call it for every ``--out``/``--json`` before any work; None (not asked for) passes."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        if folder:
            fail(f"{path} is a file, not a folder; give a folder for {option}", option)
        fail(f"{path} is a folder, not a file; give a file name, e.g. {path / 'result.json'}", option)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            fail(f"{parent} is a file, so {path} cannot be written; choose another {option}", option)


def note(message: str) -> None:
    """Print ``message`` as one line, ``note: ...``, on stderr: warnings and remarks a command makes
    beside its output (a cost estimate, a number it cannot resolve), so stdout holds only the output."""
    print(f"note: {' '.join(message.split())}", file=sys.stderr, flush=True)


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (a ``bool`` is not), for config checks."""
    return isinstance(value, int) and not isinstance(value, bool)
