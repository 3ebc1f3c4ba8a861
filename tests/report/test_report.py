import json
from dataclasses import dataclass, field

import pytest
import torch

from probity import report


@dataclass
class Row:
    name: str
    value: float


@dataclass
class Inner:
    score: float
    rows: list[Row]

    def figures(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([r.value for r in self.rows])
        return {"values": fig}


@dataclass
class Result:
    title: str
    n: int
    inner: Inner
    curve: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def make():
    return Result("demo", 3, Inner(0.5, [Row("a", 1.0), Row("b", 2.5)]), [0.1, 0.2], {"k": 1})


def test_save_load_roundtrip(tmp_path):
    result = make()
    html_path = report.save(result, tmp_path / "out")
    assert report.load(tmp_path / "out", Result) == result
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["type"] == "Result" and doc["title"] == "Result" and doc["headline"] == []
    html = html_path.read_text()
    assert html.startswith("<!doctype html>") and "<figure>" in html
    assert ">Name</th>" in html and "http" not in html.split("</style>")[0]  # self-contained
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_tensors_and_nan_serialise(tmp_path):
    @dataclass
    class T:
        x: object
        y: float

    report.save(T(torch.tensor([1.0, 2.0]), float("nan")), tmp_path)
    assert report.load(tmp_path) == {"x": [1.0, 2.0], "y": None}


def test_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="result dataclass"):
        report.save({"a": 1}, tmp_path)
    with pytest.raises(FileNotFoundError, match="no result.json"):
        report.load(tmp_path / "missing")

    @dataclass
    class Bad:
        x: object

    with pytest.raises(TypeError, match="cannot serialise set"):
        report.save(Bad({1}), tmp_path)
