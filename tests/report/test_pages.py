"""The page: verdict card first, verdict colours, one table per list of rows, alignment, escaping,
no empty headings; the registry round trip, ``probity report DIR`` and the tour page."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from htmlcheck import body_elements, is_number, parse
from typer.testing import CliRunner

from probity import report
from probity.report import Claim, verdict

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Technique:
    technique: str
    rate: float
    rate_ci: tuple[float, float]
    n: int


@dataclass
class Settings:
    seed: int = 0
    name: str = "x"


@report.result_type("test.Elicitation")
@dataclass
class Elicitation:
    """A hand-made result: one met, one missed and one unjudged claim, rows with intervals,
    a config, a tree, a raw array and fields that are empty (no heading may show for them)."""

    model: str
    order: list[str]
    rows: list[Technique]
    config: Settings = field(default_factory=Settings)
    tree: dict = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)
    per_node: list[Technique] = field(default_factory=list)
    note: str | None = None

    def headline(self):
        best = max(self.rows, key=lambda r: r.rate)
        return [
            Claim("best rate", best.rate, best.rate_ci, reference=0.88, source="Doe et al. 2024", target=">= 0.70"),
            Claim(
                "order of techniques",
                "reversed: " + ", ".join(self.order),
                reference="a > b",
                source="Doe et al. 2024",
                target="paper order",
                verdict=verdict(not self.order),
            ),
            Claim("rows", len(self.rows)),
        ]

    def figures(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(3, 2))
        ax.bar([r.technique for r in self.rows], [r.rate for r in self.rows])
        return {"rates": fig}


def make() -> Elicitation:
    rows = [Technique("chat", 0.043, (0.0, 0.09), 40), Technique("few_shot", 0.23, (0.15, 0.31), 40)]
    curve = [0.1 * k for k in range(30)]
    return Elicitation("censored & co", ["1b < 1a"], rows, tree={"a": {"b": [1, 2]}}, curve=curve)


@pytest.fixture
def page(tmp_path):
    path = report.save(make(), tmp_path / "run", title="elicitation <demo>")
    return path.read_text()


def test_verdict_card_comes_first(page):
    els = body_elements(parse(page))
    assert els[0].tag == "h1" and els[0].text == "elicitation <demo>"
    first_block = next(e for e in els[1:] if e.tag in ("table", "figure", "h2", "h3", "details", "p"))
    assert first_block.tag == "table" and "card" in first_block.classes
    figure = next(e for e in els if e.tag == "figure")
    assert first_block.index < figure.index  # figures after the card


def test_verdict_classes_and_miss_in_red(page):
    els = parse(page)
    card = next(e for e in els if e.tag == "table" and "card" in e.classes)
    rows = [e for e in els if e.tag == "tr" and e.index > card.index and e.classes & {"met", "missed", "no-reference"}]
    assert [sorted(r.classes)[0] for r in rows] == ["missed", "missed", "no-reference"]
    assert "0.230 [0.15, 0.31]" in rows[0].text and "0.88" in rows[0].text and "Doe et al. 2024" in rows[0].text
    assert "missed" in rows[1].text and "reversed: 1b < 1a" in rows[1].text
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    red = re.search(r"tr\.missed td\.verdict\{color:#([0-9a-f]{6})", css).group(1)
    r, g, b = (int(red[k : k + 2], 16) for k in (0, 2, 4))
    assert r > 150 and g < 80 and b < 80  # the miss is red


def test_no_double_escaping_and_no_empty_headings(page):
    for entity in ("&amp;lt;", "&amp;gt;", "&amp;amp;", "&amp;quot;", "&amp;#"):
        assert entity not in page
    els = parse(page)
    texts = " ".join(e.text for e in els if e.tag == "td")
    assert "reversed: 1b < 1a" in texts and "censored & co" in texts
    headings = [e for e in els if re.fullmatch(r"h[1-6]", e.tag)]
    assert headings and all(h.text.strip() for h in headings)
    names = {h.text for h in headings}
    assert not names & {"per_node", "curve", "tree", "config", "note", "Per node", "Note"}


def test_numbers_right_text_left(page):
    cells = [e for e in body_elements(parse(page)) if e.tag == "td"]
    numbers = [c for c in cells if is_number(c.text)]
    texts = [c for c in cells if re.search(r"[a-z]{3}", c.text) and not is_number(c.text)]
    assert numbers and texts
    assert all("n" in c.classes for c in numbers), [c.text for c in numbers if "n" not in c.classes]
    assert not any("n" in c.classes for c in texts), [c.text for c in texts if "n" in c.classes]


def test_rows_with_intervals_are_one_table(page):
    els = parse(page)
    tables = [e for e in els if e.tag == "table" and "Few shot" not in e.text and "few_shot" in e.text]
    rows_tables = [t for t in tables if "card" not in t.classes]
    assert len(rows_tables) == 1  # one table, a row per technique
    assert "0.043 [0, 0.09]" in rows_tables[0].text and "0.23 [0.15, 0.31]" in rows_tables[0].text
    folded = [e for e in els if e.tag == "details"]
    assert any("Config" in d.text for d in folded) and any("Tree" in d.text for d in folded)
    assert "In result.json only: Curve (30 values)" in page
    assert "0.30000000000000004" not in page  # raw arrays stay in result.json


def test_registry_roundtrip_and_relative_paths(tmp_path):
    result = make()
    result.note = str(tmp_path)  # an absolute machine path: stored relative to the run folder
    report.save(result, tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert doc["type"] == "test.Elicitation" and doc["result"]["note"] == ".."
    assert [c["verdict"] for c in doc["headline"]] == ["missed", "missed", "no reference"]
    back = report.load(tmp_path / "run")
    assert isinstance(back, Elicitation) and back.rows[1].rate_ci == (0.15, 0.31)
    assert back.config == Settings() and back.note == ".."


def test_probity_report_rerenders(tmp_path):
    from probity.cli import app

    path = report.save(make(), tmp_path / "run", title="elicitation <demo>")
    before = path.read_text()
    path.unlink()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert path.read_text() == before
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "is not a folder" in " ".join(missing.output.replace("│", " ").split())


def test_tour_opens_with_linked_summary_and_roundtrips(tmp_path):
    from probity.models.tour import ModelsTour

    models = ModelsTour("smollm2-135m", 30, 576, 272, "sites", "The capital of France is", " Paris.", [1.0, 2.0])
    tour = report.Tour([report.Section("models", "Models", models), report.Section("demo", "Demo", make())])
    path = report.save(tour, tmp_path / "tour", title="probity tour")
    els = body_elements(parse(path.read_text()))
    card = next(e for e in els if e.tag == "table")
    assert "card" in card.classes and "Paris." in card.text and "best rate" in card.text
    links = [e.attrs["href"] for e in els if e.tag == "a" and e.index > card.index][:2]
    assert links == ["#models", "#demo"]
    anchors = {e.attrs.get("id") for e in els if e.tag == "section"}
    assert {"models", "demo"} <= anchors
    back = report.load(tmp_path / "tour")
    assert back == tour and isinstance(back.sections[1].result, Elicitation)
    assert report.rerender(tmp_path / "tour").read_text() == path.read_text()


def test_real_result_roundtrips(tmp_path):
    """A real (tiny) estimate benchmark: its headline renders, and it survives result.json."""
    from probity.estimate.bench import BenchConfig, BenchResult, run_bench

    cfg = BenchConfig(
        widths=[16],
        hidden_layers=3,
        orders=[1, 2],
        seeds=[0],
        gt_samples=100_000,
        cache_dir=str(tmp_path / "cache"),
        mc_budgets=[10, 100],
        blend_budgets=[10, 100],
    )
    result = run_bench(cfg)
    path = report.save(result, tmp_path / "bench", title="bench")
    back = report.load(tmp_path / "bench")
    assert isinstance(back, BenchResult) and back.summary == result.summary
    assert (tmp_path / "bench" / "result.json").read_text().count(str(tmp_path)) == 0  # no machine paths
    card = next(e for e in parse(path.read_text()) if e.tag == "table")
    assert "card" in card.classes and "blend" in card.text


def test_cli_finds_its_sub_apps_without_importlib():  # report/'s own imports: tests/test_layers.py
    assert "importlib" not in (REPO / "probity" / "cli.py").read_text()
