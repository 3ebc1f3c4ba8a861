import pytest
import torch

from probity import models
from probity.models import PatchError, Site, SiteError

ARCHS = ["qwen3", "llama", "gpt2"]
IDS = torch.tensor([[4, 9, 17, 3, 22, 8], [5, 5, 30, 12, 7, 41]])


@pytest.fixture(scope="module", params=ARCHS + ["bridge"])
def model(request):
    if request.param == "bridge":
        hf, tok = models.tiny("qwen3", seed=3)
        return models.to_bridge(hf, tok)
    return models.tiny(request.param, seed=2)[0]


SITES = [
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.1.hook_resid_post",
    "blocks.0.hook_attn_out",
    "blocks.1.hook_mlp_out",
    "blocks.1.mlp.hook_post",
    Site("blocks.0.attn.hook_z", head=1),
    Site("blocks.1.attn.hook_z", head=0, pos=(1, 3)),
    Site("blocks.0.attn.hook_q", head=2, pos=-1),
    Site("blocks.1.attn.hook_v"),
    Site.resid(0, pos=2),
]


@pytest.mark.parametrize("site", SITES, ids=str)
def test_patch_with_own_activation_is_identity_and_zeros_change(model, site):
    clean = models.run(model, IDS).detach()
    act = models.cache(model, IDS, [site])[str(site)]
    same = models.patch(model, IDS, {site: act})
    assert (same - clean).abs().max() < 1e-5
    zeroed = models.patch(model, IDS, {site: torch.zeros_like(act)})
    assert (zeroed - clean).abs().max() > 1e-4


def test_site_shapes_follow_transformerlens(model):
    acts = models.cache(
        model, IDS, ["blocks.0.hook_resid_post", "blocks.0.attn.hook_z", Site("blocks.0.attn.hook_z", head=1, pos=-1)]
    )
    d = acts["blocks.0.hook_resid_post"].shape[-1]
    b, p = IDS.shape
    assert acts["blocks.0.hook_resid_post"].shape == (b, p, d)
    z = acts["blocks.0.attn.hook_z"]
    assert z.shape[:3] == (b, p, 4)
    torch.testing.assert_close(acts["blocks.0.attn.hook_z[head=1,pos=-1]"], z[:, -1, 1])


@pytest.mark.parametrize("arch", ARCHS)
def test_resid_post_is_hidden_states(arch):
    model, _ = models.tiny(arch)
    hidden = model(IDS, output_hidden_states=True).hidden_states
    acts = models.cache(model, IDS, [Site.resid(0)])
    torch.testing.assert_close(acts["blocks.0.hook_resid_post"], hidden[1])


def test_hf_and_bridge_agree_on_activations():
    hf, tok = models.tiny("llama", seed=4)
    bridge = models.to_bridge(hf, tok)
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"]
    a, b = models.cache(hf, IDS, names), models.cache(bridge, IDS, names)
    for name in names:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_patch_function_and_broadcast_vector(model):
    clean = models.run(model, IDS)
    same = models.patch(model, IDS, {"blocks.0.hook_resid_post": lambda act: act})
    assert (same - clean).abs().max() < 1e-6
    d = models.cache(model, IDS, ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"].shape[-1]
    steered = models.patch(model, IDS, {Site("blocks.0.hook_resid_post", pos=-1): torch.ones(d)})
    torch.testing.assert_close(steered[:, :-1], clean[:, :-1])  # causal: earlier positions untouched
    assert (steered[:, -1] - clean[:, -1]).abs().max() > 1e-4


def test_patching_stays_on_during_generate():
    model, tok = models.tiny("qwen3")
    ids = torch.tensor([[5, 6, 7]])
    calls = []

    def spy(act):
        calls.append(act.shape[1])
        return act

    with models.patching(model, {"blocks.0.hook_resid_post": spy}):
        model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert len(calls) == 3
    models.run(model, ids)
    assert len(calls) == 3  # hook removed on exit


def test_unknown_site_lists_valid_ones():
    model, _ = models.tiny("gpt2")
    with pytest.raises(SiteError) as err:
        models.cache(model, IDS, ["blocks.7.hook_resid_post"])
    msg = str(err.value)
    assert "unknown site 'blocks.7.hook_resid_post'" in msg and "blocks.{0..1}.hook_resid_post" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "value, match",
    [
        (torch.zeros(2, 6, 5), r"shape \(2, 6, 5\) but the site's activation has shape \(2, 6, 32\)"),
        (torch.full((2, 6, 32), float("nan")), "NaN"),
        (torch.zeros(2, 6, 32, dtype=torch.float64), "dtype torch.float64 but the model runs in torch.float32"),
        (torch.zeros(2, 6, 32, dtype=torch.int64), "pass a floating tensor"),
        ("zeros", "must be a tensor or a function"),
    ],
)
def test_bad_patch_values(value, match):
    model, _ = models.tiny("llama")
    with pytest.raises(PatchError, match=match):
        models.patch(model, IDS, {"blocks.0.hook_resid_post": value})


def test_bad_indices_and_inputs():
    model, _ = models.tiny("llama")
    with pytest.raises(SiteError, match="head 9 out of range; the model has 4 heads"):
        models.cache(model, IDS, [Site("blocks.0.attn.hook_z", head=9)])
    with pytest.raises(SiteError, match="has no head axis"):
        models.cache(model, IDS, [Site("blocks.0.hook_resid_post", head=0)])
    with pytest.raises(SiteError, match="position out of range"):
        models.cache(model, IDS, [Site.resid(0, pos=10)])
    with pytest.raises(TypeError, match="not raw strings"):
        models.run(model, ["w1 w2"])
    with pytest.raises(TypeError, match="integer tensor"):
        models.run(model, IDS.float())


def test_smollm2_sites_and_patch(smollm2):
    model, tok = smollm2
    names = models.sites(model)
    assert "blocks.29.hook_resid_post" in names and len(names) == 2 + 9 * 30
    ids = tok("The capital of France is", return_tensors="pt")
    site = Site.resid(20)
    act = models.cache(model, ids, [site])[str(site)]
    clean = models.run(model, ids)
    assert (models.patch(model, ids, {site: act}) - clean).abs().max() < 1e-4
