"""report.save: machine paths leave neither result.json nor the page; NaN survives a re-render."""

import math
from dataclasses import dataclass

from probity import report
from probity.report.headline import Claim


@report.result_type("tests.PathResult")
@dataclass
class PathResult:
    checkpoint: str
    fve: float

    def headline(self) -> list[Claim]:
        return [Claim("FVE minus one", self.fve - 1, target=">= 0")]  # arithmetic on a NaN read back


def test_paths_are_relative_on_the_page_and_in_json_and_nan_round_trips(tmp_path):
    run = tmp_path / "run"
    ckpt = run / "nla"
    ckpt.mkdir(parents=True)
    page = report.save(PathResult(str(ckpt), float("nan")), run, title="paths").read_text()
    data = (run / "result.json").read_text()
    assert str(tmp_path) not in page and str(tmp_path) not in data
    assert '"checkpoint": "nla"' in data
    again = report.rerender(run).read_text()
    assert again == page
    loaded = report.load(run)
    assert isinstance(loaded, PathResult) and math.isnan(loaded.fve)
