from typer.testing import CliRunner

import probity
from probity.cli import app

runner = CliRunner()


def test_version_and_help():
    assert probity.__version__ in runner.invoke(app, ["--version"]).output
    out = runner.invoke(app, ["--help"]).output
    assert "tour" in out and "models" in out


def test_models_sites():
    result = runner.invoke(app, ["models", "sites", "tiny-gpt2"])
    assert result.exit_code == 0, result.output
    assert "blocks.{0..1}.attn.hook_z" in result.output and "21 sites" in result.output


def test_tour_models_section_writes_report(tmp_path, smollm2, monkeypatch):
    from probity import models

    monkeypatch.setattr(models, "load", lambda name: smollm2)
    result = runner.invoke(app, ["tour", "--only", "models", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "index.html").read_text()
    assert "Paris" in html and "<figure>" in html
