"""probity.report.console and the entry point: progress lines in a pipe, one-line usage errors."""

import subprocess
import sys

import pytest
import typer

from probity import __version__
from probity.cli import main
from probity.report.console import fail, progress, provenance, track, usage_errors


def test_progress_prints_lines_when_not_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("PROBITY_PROGRESS_EVERY", "0")
    with progress(4, "steps") as bar:
        for _ in range(4):
            bar.advance(note="loss 1.0")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "steps: 1/4 (25%) loss 1.0" and lines[-1].startswith("steps: 4/4 (100%)")
    assert list(track(range(3), "items", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # disabled: silent


def test_progress_in_a_pipe_shows_a_long_loop_moving():
    code = (
        "import time\nfrom probity.report.console import progress\n"
        "with progress(3, 'work') as bar:\n    for _ in range(3):\n        time.sleep(0.2); bar.advance()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PROBITY_PROGRESS_EVERY": "0.1"}, check=True
    )
    assert out.stderr.splitlines()[-1] == "work: 3/3 (100%)" and len(out.stderr.splitlines()) >= 2


def test_usage_errors_are_one_line_bad_parameters():
    with pytest.raises(typer.BadParameter) as err:
        with usage_errors("--width"):
            raise ValueError("width must be\n >= 1")
    assert err.value.format_message() == "Invalid value for --width: width must be >= 1"
    with pytest.raises(typer.BadParameter, match="no such file"):
        fail("no such file")
    assert provenance("scrub run", seed=0) == {"probity": __version__, "command": "scrub run", "inputs": {"seed": 0}}


def test_entry_point_prints_one_line_and_exits_2(capsys):
    assert main(["estimate", "run", "--width", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--width must be an integer >= 1, got -3" in err
    assert main(["estimate", "run", "--width", "abc"]) == 2  # a type error from typer itself
    assert capsys.readouterr().err.startswith("error: Invalid value for '--width'")
    assert main(["nosuch"]) == 2 and "No such command" in capsys.readouterr().err
    assert main(["--version"]) == 0 and __version__ in capsys.readouterr().out
