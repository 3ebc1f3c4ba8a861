"""The paren and induction organisms: shipped quality, the recipes on a short schedule, TL hooks."""

import json

import pytest
import torch

from probity.organisms import _native, induction, paren
from probity.scrub.model import Component, Decomposed


def test_decomposition_matches_the_bridge_hooks():
    bridge = _native.bridge(_native.native_model(paren.TL_CONFIG, seed=4))
    tokens = paren.sample(8, seed=1)
    mask = paren.attention_mask(tokens)  # the organism masks PAD out of attention; rows have different lengths
    logits, cache = bridge.run_with_cache(tokens, attention_mask=mask)
    d = Decomposed(bridge)
    mine, outs = d.run(tokens, key_mask=mask.bool())
    assert not torch.allclose(d.run(tokens)[0], mine, atol=1e-3)  # the mask matters
    torch.testing.assert_close(mine, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[d.component("embed")], cache["hook_embed"])
    mlp = d.native.layers[1].mlp.fc_out.bias
    torch.testing.assert_close(outs[d.component("mlp1")] + mlp, cache["blocks.1.hook_mlp_out"], atol=1e-5, rtol=1e-5)
    o = d.native.layers[2].attn.o
    head = cache["blocks.2.attn.hook_z"][:, :, 1] @ o.weight[:, 28:].T
    torch.testing.assert_close(outs[Component(2, 0, "head", 1)], head, atol=1e-5, rtol=1e-5)
    resid = sum(outs[c] for c in d.senders(Component(2, 1, "mlp"))) + d.bias(Component(2, 1, "mlp"))
    torch.testing.assert_close(resid, cache["blocks.2.hook_resid_mid"], atol=1e-5, rtol=1e-5)


def test_paren_data_and_features():
    t = paren.encode(["(())", ")(", "(()", "())(()", ""])
    f = paren.features(t)
    assert f["balanced"].tolist() == [True, False, False, False, True]
    assert f["count_test"].tolist() == [True, True, False, True, True]
    assert f["horizon_test"].tolist() == [True, False, False, False, True]  # right to left: no suffix has more opens
    assert f["elevation"][0, 1:5].tolist() == [0, -1, -2, -1]
    rows = paren.sample(2000, seed=3)
    g = paren.features(rows)
    assert 0.2 < g["balanced"].float().mean() < 0.3
    assert (g["count_test"] & ~g["horizon_test"]).float().mean() > 0.2  # the adversarial quarter
    assert (g["length"] % 2 == 0).all() and g["length"].max() <= 40
    with pytest.raises(ValueError, match="at most 40"):
        paren.encode(["(" * 41])


def test_shipped_paren_reaches_99_percent():
    model, tok = paren.load()
    meta = model.probity_meta
    assert meta["metrics"]["accuracy"] >= 0.99
    m = paren.evaluate(model, n=2000, seed=777)
    assert m["accuracy"] >= 0.99 and m["accuracy_count_pass_horizon_fail"] >= 0.97


def test_recorded_paren_roles_are_what_roles_finds():
    model, _ = paren.load()
    found = paren.roles(model)
    assert {k: found[k] for k in ("count", "horizon", "proportion")} == model.probity_meta["roles"]
    scores = found["scores"]
    # well above chance (0.5 and 0); the shipped seed 3: count heads 0.78 and 0.75, horizon head 0.97,
    # proportion R^2 0.47
    assert (
        min(scores["auroc_count_test"][h] for h in found["count"]) > 0.7
    )  # the count heads do separate the count test
    assert scores["auroc_horizon_test"][found["horizon"][0]] > 0.9
    assert scores["proportion_r2_at_1"][found["proportion"][0]] > 0.4


def test_induction_data_starts_with_bos_and_marks_real_repeats():
    toks, cand = induction.sample_with_candidates(16, seed=3)
    assert toks.shape == cand.shape == (16, induction.N_CTX)
    assert (toks[:, 0] == induction.BOS).all() and (toks[:, 1:] >= induction.N_SPECIAL).all()
    assert not cand[:, 0].any() and not cand[:, -1].any() and cand.any()
    for i, t in zip(*cand.nonzero(as_tuple=True)):  # (token t, token t+1) occurred earlier
        pairs = set(zip(toks[i, :t].tolist(), toks[i, 1 : t + 1].tolist()))
        assert (toks[i, t].item(), toks[i, t + 1].item()) in pairs


def test_shipped_induction_formed_its_heads():
    model, _ = induction.load()
    meta = model.probity_meta
    assert meta["prev_token_heads"] and meta["induction_heads"]
    m = induction.evaluate(model, n=48)
    assert m["loss_candidates"] < 2.0 and m["accuracy_candidates"] > 0.5  # unigram loss is about 4.3
    scores = m["head_scores"]
    assert (
        max(scores["prev_token"]) > induction.PREV_THRESHOLD
        and max(scores["induction"]) > induction.INDUCTION_THRESHOLD
    )


def test_recipes_on_a_short_schedule_match_the_shipped_record(tmp_path, one_thread):
    """Both recipes, a few hundred steps: the same early metrics the shipped config recorded for
    that schedule (the full schedules take minutes; `probity organisms train` runs them)."""
    for module, key in ((paren, "accuracy"), (induction, "loss_candidates")):
        record = json.loads((_native.WEIGHTS / module.NAME / "config.json").read_text())["meta"]["quick"]
        got = module.train(out_dir=tmp_path / module.NAME, quick=True)
        assert got[key] == pytest.approx(record[key], abs=0.02 if key == "accuracy" else 0.05)
        assert (tmp_path / module.NAME / "model.safetensors").is_file()
        assert not (tmp_path / module.NAME / "ckpt").exists()  # a finished recipe leaves no checkpoints


def test_cli_train_uses_the_recipe_seed(tmp_path, one_thread):
    """`probity organisms train NAME` without --seed trains the recipe's seed (the shipped one); the folder
    it writes loads by path wherever an organism name is accepted."""
    from typer.testing import CliRunner

    from probity import models
    from probity.cli import app as probity_app
    from probity.organisms.cli import app

    folder = tmp_path / "trained"
    result = CliRunner().invoke(app, ["train", "paren", "--quick", "--out", str(folder)])
    assert result.exit_code == 0, result.output
    meta = json.loads((folder / "config.json").read_text())["meta"]
    assert (
        meta["metrics"]["seed"]
        == paren.SEED
        == json.loads((_native.WEIGHTS / "paren" / "config.json").read_text())["meta"]["metrics"]["seed"]
    )
    model, _ = models.load(str(folder))
    assert model.probity_meta == meta and type(model).__name__ == "TransformerBridge"
    runner = CliRunner()
    sites = runner.invoke(probity_app, ["models", "sites", str(folder)])
    assert sites.exit_code == 0 and "sites on TransformerBridge" in sites.output, sites.output
    out = tmp_path / "r.json"
    args = ["scrub", "run", "--organism", str(folder), "--hypothesis", "1a", "--samples", "50", "--json", str(out)]
    scrubbed = runner.invoke(probity_app, [*args, "--out", str(tmp_path / "report")])
    assert scrubbed.exit_code == 0, scrubbed.output
    assert json.loads(out.read_text())["provenance"]["inputs"]["organism"] == str(folder)
