"""``probity estimate challenge``: networks under ARC's protocol, the score rule (multiplier floor, over
budget zeroed), the interval over networks, one-line errors and provenance; on small networks."""

import json
import math

import pytest
import torch

from probity import __version__
from probity.cli import main
from probity.estimate.challenge import (
    MULTIPLIER_FLOOR,
    ChallengeConfig,
    challenge_network,
    run_challenge,
)


def test_network_is_he_relu_with_the_last_activation_as_output():
    mlp = challenge_network(0, width=64, depth=3)
    assert mlp.hidden_layers == 3 and all(b is None for b in mlp.biases)
    for w in mlp.weights[:3]:
        assert w.var().item() == pytest.approx(2 / 64, rel=0.1)  # He, the first layer included
    x = torch.randn(5, 64, dtype=torch.float64)
    h = x
    for w in mlp.weights[:3]:
        h = torch.relu(h @ w.T)
    assert torch.allclose(mlp.forward(x)[2], h)
    assert torch.equal(challenge_network(0, 64, 3).weights[1], mlp.weights[1])


@pytest.mark.usefixtures("one_thread")
def test_scores_follow_the_rule():
    cfg = ChallengeConfig(networks=2, width=16, depth=2, budget=4e4, gt_samples=20_000)
    result = run_challenge(cfg, show_progress=False)
    assert len(result.rows) == 2 * 5 and [s.score for s in result.summary] == sorted(s.score for s in result.summary)
    for r in result.rows:
        over = r.flops > cfg.budget
        assert r.multiplier == (1.0 if over else max(MULTIPLIER_FLOOR, r.flops / cfg.budget))
        assert r.score == pytest.approx(r.final_layer_mse * r.multiplier)
    over = [r for r in result.rows if r.flops > cfg.budget]
    assert over and all(r.multiplier == 1.0 for r in over)  # over budget: no discount, and zeroed:
    assert min(r.final_layer_mse for r in over) > 0.01  # a zero prediction of post-ReLU means is far off
    assert any(r.multiplier == MULTIPLIER_FLOOR for r in result.rows)
    for s in result.summary:
        lo, hi = s.interval
        assert lo <= s.score <= hi and not math.isnan(lo)
    names = [c.name for c in result.headline()]
    assert names[1] == "challenge score, covariance propagation"


@pytest.mark.parametrize(
    "args, says",
    [
        (["--networks", "1"], "--networks must be an integer >= 2"),
        (["--gt-samples", "10"], "--gt-samples must be an integer >= 10000"),
        (["--budget", "0"], "--budget must be a positive number of FLOPs"),
        (["--width", "0"], "width must be an integer >= 1"),
        (["--depth", "0"], "--depth must be an integer >= 1"),
    ],
)
def test_bad_challenge_input_is_one_line(usage_error, args, says):
    assert says in usage_error("estimate", "challenge", *args)


def test_challenge_json_has_provenance(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["estimate", "challenge", "--networks", "2", "--width", "16", "--depth", "2"]
    assert main([*args, "--gt-samples", "20000", "--json", "c.json"]) == 0
    data = json.loads((tmp_path / "c.json").read_text())
    prov = data["provenance"]
    assert prov["command"] == "estimate challenge" and prov["probity"] == __version__
    assert prov["inputs"]["networks"] == 2 and prov["inputs"]["gt_samples"] == 20000
    assert len(data["summary"]) == 5 and len(data["rows"]) == 10
    assert "best public score 6.7e-07" in capsys.readouterr().out
