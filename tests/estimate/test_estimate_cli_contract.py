"""`probity estimate run|bench`'s contract: bad input is one line on stderr and exit 2 with nothing
written (the ``usage_error`` fixture), a network that cannot fit is refused before it is allocated,
a ground truth too noisy for its budgets is refused, caches go under --out (or --cache-dir) and
every --json carries provenance."""

import json
import subprocess
import sys
import textwrap

import pytest

from probity import __version__
from probity.cli import main
from probity.estimate.bench import GT_OVER_BUDGET, BenchConfig, memory_needed


@pytest.mark.parametrize(
    "args, says",
    [
        (["--width", "100000"], "needs about 11,1"),  # ~11,000 GB (K=3 augment: 7 H^2 + 8 H n^2 matrices), refused
        (["--width", "100000"], "--max-memory"),
        (["--width", "4096", "--max-memory", "1"], "over the 1 GB limit (--max-memory 1 GB)"),
        (["--max-memory", "0"], "--max-memory must be > 0"),
        (["--width", "0"], "--width must be an integer >= 1, got 0"),
        (["--hidden-layers", "-1"], "--hidden-layers must be an integer >= 0, got -1"),
        (["--order", "5"], "order must be one of (1, 2, 3, 4), got 5"),
        (["--order", "4", "--width", "512"], "as width^4 at K=4"),  # dense [n]^4: 550 GB, refused
        (["--variant", "fancy"], "variant must be one of"),
        (["--variant", "repeated"], "'repeated' is K=4 only"),  # the default order is 3
        (["--order", "2", "--variant", "repeated"], "variant must be one of ('simple', 'augment') at order 2"),
        (["--order", "4", "--variant", "repeated", "--width", "4096"], "width^3 at K=4 repeated"),  # 6,000 GB
        (["--activation", "swish"], "unknown activation 'swish'"),
        (["--init", "xavier"], "unknown init 'xavier'; choose one of he, critical"),
        (["--check", "1"], "--check must be 0 (no sampling) or >= 2"),
        (["--check", "-5"], "--check must be 0 (no sampling) or >= 2"),
        (["--width", "x"], "--width"),
    ],
)
def test_bad_run_input_is_one_line(usage_error, args, says):
    assert says in usage_error("estimate", "run", *args)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--gt-samples", "1000", "--mc-budgets", "100000"], f"gt_samples >= {GT_OVER_BUDGET} x the largest budget"),
        (["--gt-samples", "1000", "--mc-budgets", "100000"], "raise gt_samples to 10000000"),
        (["--gt-samples", "100000"], "cannot grade a sample budget of 100000"),  # the default budgets reach 10^5
        (["--blend-budgets", "1000000"], "cannot grade a sample budget of 1000000"),
        (["--gt-samples", "10"], "--gt-samples must be an integer >= 1000"),
        (["--widths", "100000"], "estimate bench at width 100000 needs about"),
        (["--widths", "0"], "widths must be integers >= 1"),
        (["--widths", "a,b"], "--widths takes comma-separated integers"),
        (["--widths", ","], "widths must be integers >= 1"),
        (["--seeds", ""], "seeds must be a non-empty list"),
        (["--orders", "5"], "order must be one of"),
        (["--variants", "fancy"], "variant must be one of"),
        (["--hidden-layers", "0"], "--hidden-layers must be an integer >= 1"),
        (["--activation", "swish"], "unknown activation"),
        (["--mc-budgets", "1"], "sample budgets must be integers >= 2"),
        (["--max-memory", "-1"], "--max-memory must be > 0"),
    ],
)
def test_bad_bench_input_is_one_line(usage_error, args, says):
    assert says in usage_error("estimate", "bench", *args)


def test_bad_folders_are_one_line(usage_error, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a folder" in usage_error("estimate", "run", "--json", tmp_path)
    assert "is a folder" in usage_error("estimate", "bench", "--json", tmp_path)
    assert "is a file, not a folder" in usage_error("estimate", "bench", "--out", afile)
    assert "is a file, not a folder" in usage_error("estimate", "bench", "--cache-dir", afile)


SMALL = ["--widths", "8", "--seeds", "0", "--orders", "1", "--variants", "simple", "--gt-samples", "20000"]
SMALL += ["--mc-budgets", "100", "--blend-budgets", "100"]


def test_bench_caches_under_out_and_json_has_provenance(tmp_path, monkeypatch, capsys):
    """Nothing in the current folder: the ground truth goes to OUT/cache (or --cache-dir)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    assert main(["estimate", "bench", *SMALL, "--out", str(out), "--json", str(tmp_path / "b.json")]) == 0
    assert list(cwd.iterdir()) == []
    assert len(list((out / "cache").glob("gt_*.pt"))) == 1 and (out / "index.html").is_file()
    data = json.loads((tmp_path / "b.json").read_text())
    prov = data["provenance"]
    assert prov["probity"] == __version__ and prov["command"] == "estimate bench"
    assert prov["inputs"]["widths"] == [8] and prov["inputs"]["gt_samples"] == 20000 and prov["inputs"]["seeds"] == [0]
    assert "cache_dir" not in prov["inputs"] and len(data["rows"]) == 3
    cache = tmp_path / "mycache"
    assert main(["estimate", "bench", *SMALL, "--out", str(out), "--cache-dir", str(cache)]) == 0
    assert len(list(cache.glob("gt_*.pt"))) == 1 and list(cwd.iterdir()) == []
    capsys.readouterr()


def test_run_json_has_provenance(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [
        "estimate",
        "run",
        "--width",
        "8",
        "--hidden-layers",
        "2",
        "--order",
        "2",
        "--seed",
        "3",
        "--json",
        "r.json",
    ]
    assert main(args) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["provenance"]["command"] == "estimate run" and data["provenance"]["probity"] == __version__
    inputs = data["provenance"]["inputs"]
    assert (inputs["width"], inputs["hidden_layers"], inputs["order"], inputs["seed"]) == (8, 2, 2, 3)
    assert len(data["out"]) == 8 and data["order"] == 2
    capsys.readouterr()


def test_unresolved_errors_are_flagged(capsys):
    """A --check too small to resolve kprop's error gives MSE/Var <= 0 on some layers: one line says so."""
    assert main(["estimate", "run", "--width", "64", "--order", "3", "--check", "2"]) == 0
    out = " ".join(capsys.readouterr().err.split())  # a note, on stderr
    assert "3 layer(s) with MSE/Var <= 0: kprop's error there is below the noise of 2 samples" in out


def test_gt_rule_keeps_the_shipped_configs():
    """The committed benchmark, the tour and the tests' configs satisfy the ground-truth rule."""
    BenchConfig().check_grading()  # bench/estimate.py: 10^7 against budgets up to 10^5
    small = BenchConfig(widths=[64], seeds=[0], gt_samples=10**6, mc_budgets=[100, 1000, 10000], blend_budgets=[10000])
    small.check_grading()
    loose = BenchConfig(gt_samples=10**6)  # builds, so that older results still load, but cannot run
    with pytest.raises(ValueError, match="cannot grade a sample budget of 100000") as err:
        loose.check_grading()
    assert "\n" not in str(err.value)


def test_memory_estimate_is_an_upper_bound():
    """Peak memory measured in a fresh process (kprop K=3 augment, and sampling) stays under the estimate."""
    code = textwrap.dedent(
        """
        import resource, torch
        torch.set_num_threads(1)
        from probity.estimate import RandomMLP, kprop, monte_carlo
        rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        base = rss()
        mlp = RandomMLP(512, 3, seed=0)
        with torch.no_grad():
            kprop(mlp, 3, "augment")
        kprop_peak = rss() - base
        base = rss()
        small = RandomMLP(256, 3, seed=0)
        with torch.no_grad():
            monte_carlo(small, 70000)
        print(kprop_peak, rss() - base)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kprop_peak, sampling_peak = map(int, done.stdout.split())
    assert kprop_peak <= memory_needed(512, 3, [3]), (kprop_peak, memory_needed(512, 3, [3]))
    assert sampling_peak <= memory_needed(256, 3, [], 70000), (sampling_peak, memory_needed(256, 3, [], 70000))
    assert memory_needed(100_000, 4, [3]) > 2**40  # the width: terabytes, refused
