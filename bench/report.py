"""Report bench: how the tour page reads at first sight.

Takes the tour page (``runs/tour/index.html`` by default; ``--rerender`` rebuilds it from its
``result.json`` first, ``--run`` runs ``probity tour`` first), counts what a reader meets (bytes,
tables, figures, headline claims by verdict), and, when Debian's chromium is installed, takes
a 1280x800 screenshot of the first screen (and measures the page height from a tall one).
Writes ``bench/results/tour_first_screen.png`` and ``bench/results/report.json`` (paths
relative to the repository).

    .venv/bin/python bench/report.py [--page runs/tour/index.html] [--rerender | --run]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


class _Count(HTMLParser):
    """Tables, figures, headings and the verdict rows of the first card."""

    def __init__(self):
        super().__init__()
        self.tables = self.figures = self.details = 0
        self.verdicts: dict[str, int] = {}
        self._cards = 0
        self._in_card = False

    def handle_starttag(self, tag, attrs):
        cls = set((dict(attrs).get("class") or "").split())
        if tag == "table":
            self.tables += 1
            self._in_card = "card" in cls and self._cards == 0
            self._cards += "card" in cls
        elif tag == "figure":
            self.figures += 1
        elif tag == "details":
            self.details += 1
        elif tag == "tr" and self._in_card and cls & {"met", "missed", "no-reference"}:
            key = (cls & {"met", "missed", "no-reference"}).pop()
            self.verdicts[key] = self.verdicts.get(key, 0) + 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_card = False


def chromium() -> str | None:
    """The chromium binary, if installed."""
    return shutil.which("chromium") or (str(Path("/usr/bin/chromium")) if Path("/usr/bin/chromium").exists() else None)


def screenshot(page: Path, out: Path, height: int) -> bool:
    """A 1280 x ``height`` headless screenshot of ``page`` into ``out``; False when it failed."""
    binary = chromium()
    if binary is None:
        return False
    with tempfile.TemporaryDirectory() as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size=1280,{height}"]
        cmd += [f"--screenshot={out}", page.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    return done.returncode == 0 and out.is_file()


def page_height(page: Path, limit: int = 16000) -> int | None:
    """The page's height in CSS pixels at 1280 wide (the last non-blank row of a tall screenshot;
    ``limit`` when the page is at least that tall)."""
    try:
        import numpy as np
        from PIL import Image
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "tall.png"
        if not screenshot(page, shot, limit):
            return None
        gray = np.asarray(Image.open(shot).convert("L"))
    rows = np.where(gray.min(axis=1) < 250)[0]
    return int(rows.max()) + 1 if len(rows) else 0


def _rel(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", type=Path, default=ROOT / "runs" / "tour" / "index.html")
    ap.add_argument("--rerender", action="store_true", help="rebuild the page from result.json first")
    ap.add_argument("--run", action="store_true", help="run `probity tour` first (about 2 minutes)")
    ap.add_argument("--name", default="tour", help="prefix of the files written under bench/results/")
    args = ap.parse_args()
    page: Path = args.page
    probity = [sys.executable, "-c", "from probity.cli import app; app()"]
    if args.run:
        subprocess.run([*probity, "tour", "--out", str(page.parent)], check=True)
    elif args.rerender:
        subprocess.run([*probity, "report", str(page.parent)], check=True)
    if not page.is_file():
        raise SystemExit(f"no page at {page}; run `make tour` or pass --run")
    text = page.read_text()
    count = _Count()
    count.feed(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / f"{args.name}_first_screen.png"
    shot = screenshot(page, png, 800)
    summary = {
        "page": _rel(page),
        "page_bytes": len(text.encode()),
        "tables": count.tables,
        "figures": count.figures,
        "folded_details": count.details,
        "headline_claims": sum(count.verdicts.values()),
        "verdicts": count.verdicts,
        "page_height_px": page_height(page) if shot else None,
        "first_screen_png": _rel(png) if shot else None,
        "chromium": chromium() is not None,
    }
    out = RESULTS / ("report.json" if args.name == "tour" else f"report_{args.name}.json")
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {_rel(out)}" + (f" and {_rel(png)}" if shot else " (no chromium: no screenshot)"))


if __name__ == "__main__":
    main()
