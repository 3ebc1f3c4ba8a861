"""bench/nla.py refuses, in one line and before any model loads, a run that would read or ship adapters of
another injection than it names."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench" / "nla.py"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--part", "censored", "--ship"], "--ship writes the shipped adapters, trained with --inject layer1"),
        (["--part", "window", "--ship"], "--ship writes the shipped adapters, trained with --inject layer1"),
        # the subject reader is a checkpoint of its own and may ship from another injection, but only from a
        # verbalizer trained with it: else the shipped one (layer1) would be read and labelled same
        (["--part", "places", "--ship"], "--inject same: no censored NLA in"),
        (["--part", "span"], "run --part censored --inject same --out"),
    ],
)
def test_another_injection_is_refused_where_it_would_read_or_ship_the_wrong_adapters(tmp_path, args, message):
    res = subprocess.run(
        [sys.executable, str(BENCH), *args, "--inject", "same", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 2 and message in res.stderr.splitlines()[-1]
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written
