"""Verbalizer, Reconstructor, FVE, extract, sidecars and checkpoint loading on tiny random models."""

import json
import math

import pytest
import torch
import yaml

from probity.models import Site, cache, tiny
from probity.nla import NLAConfig, Reconstructor, Verbalizer, extract, fve, load_nla, save_nla
from probity.nla.core import direction_mse, normalise

PROMPT = "w10 w11 {placeholder} w12"
TEMPLATE = "w20 {description} w21"


def make(arch="qwen3", layer=1):
    model, tok = tiny(arch)
    av = Verbalizer.create(
        model, tok, layer, placeholder="w99", av_prompt=PROMPT, ar_template=TEMPLATE, max_new_tokens=6
    )
    return model, tok, av


def test_fve_perfect_mean_and_scale_invariance():
    torch.manual_seed(0)
    x = torch.randn(50, 16) + 3
    assert fve(x, x) == pytest.approx(1.0, abs=1e-6)
    assert fve(x * 7.0, x) == pytest.approx(1.0, abs=1e-6)  # normalised vectors: scale does not count
    unit = normalise(x, 4.0)
    mean = unit.mean(0, keepdim=True).expand_as(x)
    assert -0.1 < fve(mean, x) <= 0.0  # the mean direction explains nothing (a bit less once renormalised)
    assert direction_mse(x, -x).mean() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="fve needs"):
        fve(x[:1], x[:1])


def test_extract_matches_cache_and_checks_input():
    model, tok = tiny("qwen3")
    acts = extract(model, tok, ["w1 w2 w3 w4", "w5 w6"], layer=0, positions=[[1, -1], 0])
    assert acts.vectors.shape == (3, 32) and acts.position == [1, 3, 0] and acts.token == ["w2", "w4", "w5"]
    full = cache(model, torch.tensor([tok("w1 w2 w3 w4")["input_ids"]]), [Site.resid(0)])[str(Site.resid(0))][0]
    torch.testing.assert_close(acts.vectors[1], full[3])
    with pytest.raises(ValueError, match="out of range"):
        extract(model, tok, ["w1"], layer=5)
    with pytest.raises(ValueError, match="one per text"):
        extract(model, tok, ["w1", "w2"], layer=0, positions=[[0]])
    with pytest.raises(ValueError, match="position 9 out of range"):
        extract(model, tok, ["w1 w2"], layer=0, positions=9)


def test_verbalizer_injects_rescaled_activation_at_the_placeholder():
    model, tok, av = make()
    acts = torch.randn(3, 32)
    emb = av.embeds(acts)
    table = model.get_input_embeddings().weight
    ids = av.prompt_ids.tolist()
    assert ids[av.slot] == av.config.placeholder_id
    torch.testing.assert_close(emb[:, av.slot].norm(dim=-1), torch.full((3,), math.sqrt(32)))
    torch.testing.assert_close(emb[1, av.slot], normalise(acts[1], math.sqrt(32)))
    others = [i for i in range(len(ids)) if i != av.slot]
    torch.testing.assert_close(emb[2, others], table[[ids[i] for i in others]])
    # log-probs depend on the direction of the activation, not its norm
    seqs = av.generate(acts, greedy=True)
    lp1, mask = av.token_logprobs(acts, seqs)
    lp2, _ = av.token_logprobs(5 * acts, seqs)
    torch.testing.assert_close(lp1, lp2)
    lp3, _ = av.token_logprobs(torch.randn(3, 32), seqs)
    assert not torch.allclose(lp1, lp3)
    assert torch.all(lp1.sum(1) <= 0) and torch.all(
        mask.sum(1) == torch.tensor([len(s) for s in seqs], dtype=torch.float)
    )
    with pytest.raises(ValueError, match=r"must be \[batch, 32\]"):
        av.embeds(torch.randn(2, 31))
    with pytest.raises(ValueError, match="NaN"):
        av.embeds(torch.full((1, 32), float("nan")))


def test_greedy_generation_agrees_with_token_logprobs():
    model, tok, av = make()
    acts = torch.randn(2, 32)
    seqs = av.generate(acts, greedy=True, max_new_tokens=4)
    for act, seq in zip(acts, seqs):
        for k in range(len(seq)):
            prefix = seq[:k]
            emb = av.embeds(act[None])
            if prefix:
                emb = torch.cat([emb, model.get_input_embeddings()(torch.tensor([prefix]))], 1)
            nxt = av.model(inputs_embeds=emb).logits[0, -1].argmax().item()
            assert nxt == seq[k]


def _block_inputs(av, layer):
    """Record the hidden states block ``layer`` of the verbalizer works on (its first norm's input,
    which sees what every pre-hook on the block wrote)."""
    seen = []
    norm = av.model.model.layers[layer].input_layernorm
    return seen, norm.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_deeper_injection_writes_the_slot_of_the_chosen_block_in_the_prefill_only(mode):
    model, tok = tiny("qwen3")
    av = Verbalizer.create(
        model,
        tok,
        1,
        placeholder="w99",
        av_prompt=PROMPT,
        ar_template=TEMPLATE,
        max_new_tokens=4,
        inject_layer=1,
        inject_mode=mode,
    )
    acts = torch.randn(2, 32)
    plain = av.model(inputs_embeds=av.embeds(acts), output_hidden_states=True).hidden_states[1]  # input of block 1
    seen, handle = _block_inputs(av, 1)
    seqs = av.generate(acts, greedy=True)
    handle.remove()
    # embeddings untouched (the placeholder's own embedding), block 1's input changed at the slot only
    torch.testing.assert_close(
        av.embeds(acts)[0, av.slot], model.get_input_embeddings().weight[av.config.placeholder_id]
    )
    prefill, steps = seen[0], seen[1:]
    want = (
        normalise(acts, math.sqrt(32))
        if mode == "replace"
        else (plain[:, av.slot] + normalise(acts, 1.0) * plain[:, av.slot].norm(dim=-1, keepdim=True))
    )
    torch.testing.assert_close(prefill[:, av.slot], want)
    others = [i for i in range(prefill.shape[1]) if i != av.slot]
    torch.testing.assert_close(prefill[:, others], plain[:, others])
    assert steps and all(s.shape[1] == 1 for s in steps)
    # teacher forcing sees the same injection as generation: greedy tokens are each position's argmax
    lp, mask = av.token_logprobs(acts, seqs)
    first = av.first_logprobs(acts)
    torch.testing.assert_close(first.gather(1, torch.tensor([[s[0]] for s in seqs]))[:, 0], lp[:, 0])
    assert torch.equal(first.argmax(-1), torch.tensor([s[0] for s in seqs]))
    with pytest.raises(ValueError, match="inject_layer 7 out of range"):
        Verbalizer.create(model, tok, 1, placeholder="w99", av_prompt=PROMPT, inject_layer=7)
    with pytest.raises(ValueError, match="inject_mode"):
        Verbalizer.create(model, tok, 1, placeholder="w99", av_prompt=PROMPT, inject_mode="scale")


def test_token_logprobs_equal_the_full_forward():
    model, tok, av = make()
    acts = torch.randn(3, 32)
    seqs = [[5, 6, 7], [8], [9, 10]]
    lp, mask = av.token_logprobs(acts, seqs)
    for i, seq in enumerate(seqs):
        emb = torch.cat([av.embeds(acts[i : i + 1]), model.get_input_embeddings()(torch.tensor([seq]))], 1)
        logp = torch.log_softmax(av.model(inputs_embeds=emb).logits[0, -len(seq) - 1 : -1], -1)
        torch.testing.assert_close(lp[i, : len(seq)], logp[torch.arange(len(seq)), seq])
        assert mask[i].sum() == len(seq)
    # the distribution after a shared prefix is the one teacher forcing scores
    lp, _ = av.token_logprobs(acts, [[5, 6, 7]] * 3)
    torch.testing.assert_close(av.first_logprobs(acts, [5, 6])[:, 7], lp[:, 2])
    # each row's own prefix (right-padded): the same distributions row by row
    prefixes = [[5, 6], [8], [9, 10, 11]]
    got = av.next_logprobs(acts, prefixes)
    for i, prefix in enumerate(prefixes):
        torch.testing.assert_close(got[i], av.first_logprobs(acts[i : i + 1], prefix)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2 prefixes for 3"):
        av.next_logprobs(acts, prefixes[:2])


@pytest.mark.parametrize("inject_layer", [0, 1])
def test_bucketed_logprobs_equal_one_padded_forward(inject_layer):
    model, tok = tiny("qwen3")
    av = Verbalizer.create(model, tok, 1, placeholder="w99", av_prompt=PROMPT, inject_layer=inject_layer)
    torch.manual_seed(0)
    acts = torch.randn(7, 32)
    seqs = [[5, 6, 7, 8, 9], [8], [9, 10], [11, 12, 13], [4], [6, 7, 8, 9, 10, 11, 12], [5, 5]]  # ragged, unsorted

    def run(bucket):
        av.model.zero_grad()
        logp, mask = av.token_logprobs(acts, seqs, bucket=bucket)
        (logp * torch.arange(1.0, 8.0)[:, None]).sum().backward()  # row weights: a row out of place changes grads
        grads = [p.grad.clone() for p in av.model.parameters() if p.grad is not None]
        return logp.detach(), mask, grads

    plain_logp, plain_mask, plain_grads = run(0)
    assert plain_logp.shape == (7, 7) and plain_mask.sum(1).tolist() == [len(s) for s in seqs]
    for bucket in (1, 2, 3):
        logp, mask, grads = run(bucket)
        assert torch.equal(mask, plain_mask)
        torch.testing.assert_close(logp, plain_logp, atol=1e-5, rtol=1e-5)
        for got, want in zip(grads, plain_grads, strict=True):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="bucket must be >= 0"):
        av.token_logprobs(acts, seqs, bucket=-1)


@pytest.mark.parametrize("base", ["", "tiny-qwen3"])
def test_centred_lora_verbalizer_trains_only_the_adapter_and_round_trips(tmp_path, base):
    model, tok = tiny("qwen3")
    names = {"base": base, "target": base} if base else {}
    av = Verbalizer.create(
        model, tok, 1, placeholder="w99", av_prompt=PROMPT, ar_template=TEMPLATE, lora_rank=4, **names
    )
    ar = Reconstructor.from_target(model, tok, av.config, lora_rank=4)
    trainable = [n for n, p in av.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[0] for n, p in ar.named_parameters() if p.requires_grad and "lora_" not in n} == {"head"}
    acts = torch.randn(6, 32) + 2.0
    av.fit_center(acts)
    torch.testing.assert_close(av.embeds(acts[:2])[:, av.slot], normalise(acts[:2] - acts.mean(0), math.sqrt(32)))
    with torch.no_grad():  # move the adapters off their zero init so the merge matters
        for p in [*av.model.parameters(), *ar.parameters()]:
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    seqs = [[5, 6], [7, 8, 9]]
    lp, _ = av.token_logprobs(acts[:2], seqs)
    pred = ar.predict(["w1 w2", "w3"])
    save_nla(tmp_path / "ck", av, ar)
    # with a named base the halves are stored as adapters alone (no full weights), else merged in
    assert (tmp_path / "ck" / "av" / "adapter_config.json").is_file() == bool(base)
    assert (tmp_path / "ck" / "ar" / "config.json").is_file() != bool(base)
    if base:  # the adapter names its base as probity does, not by this machine's path, its modules in order
        adapter = json.loads((tmp_path / "ck" / "av" / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == base
        assert adapter["target_modules"] == sorted(adapter["target_modules"]) and len(adapter["target_modules"]) > 1
    av2, ar2 = load_nla(tmp_path / "ck")
    assert av2.config.centered and not hasattr(av2.model, "get_base_model")
    torch.testing.assert_close(av2.token_logprobs(acts[:2], seqs)[0], lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ar2.predict(["w1 w2", "w3"]), pred, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="lora_rank"):
        Verbalizer.create(model, tok, 1, placeholder="w99", av_prompt=PROMPT, lora_rank=-1)


def test_placeholder_must_appear_once():
    model, tok = tiny("qwen3")
    with pytest.raises(ValueError, match="appears 2 times"):
        Verbalizer.create(model, tok, 1, placeholder="w10", av_prompt="w10 {placeholder}")
    with pytest.raises(ValueError, match="not a token"):
        Verbalizer.create(model, tok, 1, placeholder="zzz", av_prompt=PROMPT)


@pytest.mark.parametrize("arch", ["qwen3", "llama", "gpt2"])
def test_reconstructor_starts_as_the_truncated_target(arch):
    model, tok, av = make(arch, layer=0)
    ar = Reconstructor.from_target(model, tok, av.config)
    descriptions = ["w1 w2 w3", "w4"]
    pred = ar.predict(descriptions)
    for d, p in zip(descriptions, pred):
        ids = tok(TEMPLATE.format(description=d))["input_ids"]
        want = cache(model, torch.tensor([ids]), [Site.resid(0)])[str(Site.resid(0))][0, -1]
        torch.testing.assert_close(p, want, rtol=1e-4, atol=1e-4)
    assert len(list(ar.backbone.parameters())) < len(list(model.parameters()))
    target = {id(p) for p in model.parameters()}
    assert not any(id(p) in target for p in ar.parameters())  # a copy: training the AR leaves the target alone


def test_save_and_load_round_trip(tmp_path):
    model, tok, av = make()
    ar = Reconstructor.from_target(model, tok, av.config)
    with torch.no_grad():
        ar.head.weight.mul_(0.5).add_(0.01)
    save_nla(tmp_path, av, ar)
    sidecar = json.loads((tmp_path / "nla.json").read_text())
    assert (
        sidecar["placeholder_id"] == av.config.placeholder_id
        and sidecar["layer"] == 1
        and sidecar["av_prompt"] == PROMPT
    )
    av2, ar2 = load_nla(tmp_path)
    assert av2.config == av.config and av2.slot == av.slot
    acts = torch.randn(2, 32)
    seqs = av.generate(acts, greedy=True)
    torch.testing.assert_close(av2.token_logprobs(acts, seqs)[0], av.token_logprobs(acts, seqs)[0])
    torch.testing.assert_close(ar2.predict(["w3 w4"]), ar.predict(["w3 w4"]))
    with pytest.raises(FileNotFoundError, match="nla.json or nla_meta.yaml"):
        NLAConfig.load(tmp_path / "nowhere")


def test_loads_anchor_format(tmp_path):
    """Actor folder (HF model + nla_meta.yaml) and critic folder (truncated CausalLM with
    num_hidden_layers = K+1, value_head.safetensors, nla_meta.yaml), as the anchor releases."""
    from safetensors.torch import save_file
    from transformers import Qwen3ForCausalLM

    model, tok = tiny("qwen3", num_hidden_layers=3)
    vocab = tok.get_vocab()
    ids = [vocab[w] for w in ("w10", "w99", "w12")]
    meta = {
        "kind": "nla_model",
        "d_model": 32,
        "tokens": {
            "injection_char": "w99",
            "injection_token_id": ids[1],
            "injection_left_neighbor_id": ids[0],
            "injection_right_neighbor_id": ids[2],
        },
        "prompt_templates": {"actor": "w10 {injection_char} w12", "critic": "w20 {explanation} w21"},
        "extraction": {"injection_scale": 9.5, "mse_scale": "sqrt_d_model"},
    }
    actor, critic = tmp_path / "actor", tmp_path / "critic"
    model.save_pretrained(actor)
    tok.save_pretrained(actor)
    (actor / "nla_meta.yaml").write_text(yaml.safe_dump({**meta, "role": "actor"}))
    cfg = model.config.to_dict() | {"num_hidden_layers": 2, "layer_types": model.config.layer_types[:2]}
    truncated = Qwen3ForCausalLM(type(model.config).from_dict(cfg))
    truncated.load_state_dict(model.state_dict(), strict=False)
    truncated.save_pretrained(critic)
    tok.save_pretrained(critic)
    head = torch.randn(32, 32) / 6
    save_file({"weight": head}, str(critic / "value_head.safetensors"))
    (critic / "nla_meta.yaml").write_text(yaml.safe_dump({**meta, "role": "critic"}))

    av, ar = load_nla(actor, critic)
    assert (
        av.config.layer == 1
        and av.config.injection_scale == 9.5
        and av.config.mse_scale == pytest.approx(math.sqrt(32))
    )
    assert av.config.placeholder_neighbors == (ids[0], ids[2]) and av.config.av_prompt == "w10 {placeholder} w12"
    x = tok("w20 w7 w8 w21")["input_ids"]
    want = cache(model, torch.tensor([x]), [Site.resid(1)])[str(Site.resid(1))][0, -1] @ head.T
    torch.testing.assert_close(ar.predict(["w7 w8"])[0], want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(av.embeds(torch.ones(1, 32))[0, av.slot].norm(), torch.tensor(9.5))


def test_named_injections_and_the_smollm2_verbalizer():
    from probity.nla.pipeline import INJECTIONS, injection, smollm2_verbalizer

    model, tok = tiny("llama")
    vectors = torch.randn(10, 32) * 5 + 1
    emb = model.get_input_embeddings().weight
    median = float(vectors.norm(dim=-1).median())
    assert injection("paper", 1, vectors, emb) == ({}, False)
    assert injection("layer1", 1, vectors, emb) == ({"inject_layer": 1, "injection_scale": median}, False)
    assert injection("same", 0, vectors, emb)[0]["inject_layer"] == 1
    assert injection("add1", 1, vectors, emb) == ({"inject_layer": 1, "inject_mode": "add"}, True)
    with pytest.raises(ValueError, match="unknown injection"):
        injection("deep", 1, vectors, emb)
    for name in INJECTIONS:
        av = smollm2_verbalizer(model, tok, 0, vectors, "censored", name, rank=2)
        assert av.config.centered == injection(name, 0, vectors, emb)[1] and not av.config.chat_template
        assert all("lora_" in n for n, p in av.model.named_parameters() if p.requires_grad)
