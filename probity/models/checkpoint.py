"""Atomic, resumable checkpoints for long jobs (training, large sampling runs)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from probity.report.io import atomic_write_bytes


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj, path)`` through a temp file and a rename (never a torn file)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


class Checkpointer:
    """Keeps ``step-XXXXXXXX.pt`` files in ``folder``; each is written to a temp file and
    renamed, so a job killed mid-write leaves the previous checkpoint intact.

    ``state`` is anything ``torch.save`` takes (state dicts, RNG states, lists of results)."""

    def __init__(self, folder: str | Path, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep

    def _steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = (re.fullmatch(r"step-(\d+)\.pt", p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, step: int, state: Any) -> Path:
        """Write the checkpoint for ``step`` and drop all but the newest ``keep``."""
        path = atomic_torch_save(self.folder / f"step-{step:08d}.pt", {"step": step, "state": state})
        for old in self._steps()[: -self.keep]:
            (self.folder / f"step-{old:08d}.pt").unlink(missing_ok=True)
        return path

    def clear(self) -> None:
        """Delete every checkpoint (and the folder when nothing else is in it): the run is over."""
        for step in self._steps():
            (self.folder / f"step-{step:08d}.pt").unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def latest(self) -> tuple[int, Any] | None:
        """``(step, state)`` of the newest checkpoint, or ``None`` when there is none."""
        steps = self._steps()
        if not steps:
            return None
        payload = torch.load(self.folder / f"step-{steps[-1]:08d}.pt", weights_only=False)
        return payload["step"], payload["state"]
