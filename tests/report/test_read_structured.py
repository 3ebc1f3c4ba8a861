"""report.io.read_structured: YAML and JSON files, one-line typed errors."""

import pytest

from probity.report.io import read_structured


class MyError(ValueError):
    pass


def test_reads_yaml_and_json(tmp_path):
    (tmp_path / "a.yaml").write_text("name: x\nsites: [1.0, mlp2]\n")
    (tmp_path / "a.json").write_text('{"name": "x", "n": 3}')
    assert read_structured(tmp_path / "a.yaml") == {"name": "x", "sites": [1.0, "mlp2"]}
    assert read_structured(tmp_path / "a.json") == {"name": "x", "n": 3}


@pytest.mark.parametrize("name, text, kind", [("bad.yaml", "name: [unclosed", "YAML"), ("bad.json", "{", "JSON")])
def test_malformed_file_is_one_line_of_the_callers_type(tmp_path, name, text, kind):
    (tmp_path / name).write_text(text)
    with pytest.raises(MyError, match=f"bad.* not valid {kind}") as err:
        read_structured(tmp_path / name, MyError)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError):
        read_structured(tmp_path / "missing.json")
