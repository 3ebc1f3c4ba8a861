"""NLA training on a tiny random Qwen3: it learns, the controls hold, it resumes, it runs under DDP."""

import dataclasses
import functools
import random

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import probity.nla.training as train_mod
from probity.models import tiny
from probity.models.training import OptimConfig, Stepper
from probity.nla import TrainConfig, Verbalizer, extract, train

N_WORDS = 12


@functools.lru_cache(maxsize=1)
def _data():
    model, tok = tiny("qwen3", seed=0)
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(N_WORDS)}" for _ in range(3)) for _ in range(120)]
    acts = extract(model, tok, texts, layer=1, positions=-1)
    return model, tok, acts.vectors, [t.split()[-1] for t in texts]


def task(lora_rank: int = 0):
    """Last-token activations of random texts; the teacher label names the last word.
    Returns (target, tokenizer, fresh verbaliser (LoRA when ``lora_rank``), activations (120, 32), labels)."""
    model, tok, acts, labels = _data()
    av = Verbalizer.create(
        model,
        tok,
        1,
        placeholder="w99",
        av_prompt="w100 w101 {placeholder} w102",
        ar_template="w103 {description} w104",
        max_new_tokens=4,
        lora_rank=lora_rank,
    )
    return model, tok, av, acts, labels


def test_training_learns_and_controls_hold():
    model, tok, av, acts, labels = task()
    cfg = TrainConfig(
        ar_sft_steps=80, av_sft_steps=80, rl_steps=10, batch_size=16, group=4, eval_every=40, lr_ar=1e-3, lr_av=3e-3
    )
    av, ar, res = train(model, tok, av, acts[:90], labels[:90], acts[90:], labels[90:], cfg, progress=False)
    # the label (the current word) carries most of the activation; a shuffled pairing carries none
    assert res.fve_ar_sft > 0.5
    assert res.fve_shuffled is not None and res.fve_shuffled < 0.1
    # the SFT'd verbaliser names the word for held-out activations, so the round trip works
    said = av.describe(acts[90:])
    assert sum(s == lab for s, lab in zip(said, labels[90:])) / 30 > 0.8
    assert res.fve_sft > 0.5 and res.fve_rl > 0.5
    assert [p.step for p in res.curve] == [40, 80, 120, 160, 170]
    assert res.curve[-1].phase == "rl" and res.curve[-1].mean_reward is not None


def test_grpo_step_rewards_and_penalises_malformed_output():
    model, tok, av, acts, labels = task()
    ar = train_mod.Reconstructor.from_target(model, tok, av.config)
    ref = Verbalizer(model, tok, av.config)
    cfg = TrainConfig(group=4, batch_size=8)
    update_av = Stepper(av.parameters(), OptimConfig(1e-3, schedule="constant"), 1).step
    update_ar = Stepper(ar.parameters(), OptimConfig(1e-3, schedule="constant"), 1).step
    before = [p.clone() for p in av.parameters()]
    av.config.max_new_tokens = 1  # every rollout is cut before its end token: all malformed
    stats = train_mod.grpo_step(av, ref, ar, acts[:2], cfg, update_av, update_ar)
    assert stats["malformed"] == 1.0 and stats["reward"] == pytest.approx(-2.0)
    # equal rewards within every group: zero advantage, only the (zero) KL term, so the AV barely moves
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, av.parameters()))


def test_replay_term_pulls_the_av_back():
    """The knowledge-replay KL is zero for an unchanged copy of the target and grows
    as the AV drifts; a GRPO step where only that term acts moves the AV back towards the target."""
    model, tok, av, acts, labels = task()
    texts = [" ".join(labels[i : i + 3]) for i in range(0, 30, 3)]
    assert train_mod.replay_loss(av, model, tok, texts) < 1e-6
    with torch.no_grad():
        for p in av.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    drift = train_mod.replay_loss(av, model, tok, texts).item()
    assert drift > 1e-4
    ar = train_mod.Reconstructor.from_target(model, tok, av.config)
    cfg = TrainConfig(group=4, batch_size=8, kl_coef=0.0, replay_coef=10.0)
    opt_av = torch.optim.SGD(av.parameters(), lr=0.05)

    def update_av(loss):
        opt_av.zero_grad()
        loss.backward()
        opt_av.step()

    av.config.max_new_tokens = 1  # all rollouts malformed: zero advantage, only the replay term acts
    train_mod.grpo_step(
        av,
        Verbalizer(model, tok, av.config),
        ar,
        acts[:2],
        cfg,
        update_av,
        lambda loss: None,  # the AR stays as it is
        lambda: train_mod.replay_loss(av, model, tok, texts),
    )
    assert train_mod.replay_loss(av, model, tok, texts).item() < drift


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_resumes_after_a_kill(tmp_path, monkeypatch, lora_rank):
    cfg = TrainConfig(
        lora_rank=lora_rank,
        ar_sft_steps=6,
        av_sft_steps=6,
        rl_steps=6,
        batch_size=8,
        group=4,
        eval_every=3,
        checkpoint_every=4,
        shuffled_control=False,
    )
    model, tok, av, acts, labels = task(lora_rank)
    args = (acts[:90], labels[:90], acts[90:], labels[90:], cfg)
    _, ar_ref, res_ref = train(model, tok, av, *args, progress=False)
    want = [p.detach().clone() for p in av.parameters()] + [p.detach().clone() for p in ar_ref.parameters()]

    model, tok, av, acts, labels = task(lora_rank)
    real, calls = train_mod.grpo_step, {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # step 15: after the checkpoint at step 12, before the one at 16
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "grpo_step", dies)
    with pytest.raises(KeyboardInterrupt):
        train(model, tok, av, *args, out_dir=tmp_path, progress=False)
    monkeypatch.setattr(train_mod, "grpo_step", real)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000008.pt", "step-00000012.pt"]

    model, tok, av, acts, labels = task(lora_rank)  # a fresh process: everything rebuilt from scratch
    av, ar, res = train(model, tok, av, *args, out_dir=tmp_path, progress=False)
    got = [p.detach() for p in av.parameters()] + [p.detach() for p in ar.parameters()]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))
    assert [p.step for p in res.curve] == [p.step for p in res_ref.curve]
    assert res.fve_rl == pytest.approx(res_ref.fve_rl, abs=1e-4)
    saved = torch.load(tmp_path / "checkpoints" / "step-00000018.pt", weights_only=False)["state"]
    if lora_rank:  # a LoRA run's checkpoint holds the adapters and the head, not the frozen base
        assert saved["ref"] is not None and all("lora_" in k for k in [*saved["av"], *saved["ref"]])
        assert all("lora_" in k or k.startswith("head.") for k in saved["ar"])
    # another run's checkpoints are never resumed
    model, tok, av, acts, labels = task(lora_rank)
    with pytest.raises(ValueError, match="different run"):
        train(
            model,
            tok,
            av,
            acts[:90],
            labels[:90],
            acts[90:],
            labels[90:],
            dataclasses.replace(cfg, kl_coef=0.5),
            out_dir=tmp_path,
            progress=False,
        )


def _ddp_worker(rank, world, port, out, lora_rank):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        model, tok, av, acts, labels = task(lora_rank)
        if rank == 1:  # different starting weights on rank 1 (the adapter's, for LoRA) are overwritten by rank 0's
            with torch.no_grad():
                for p in av.parameters():
                    if p.requires_grad:
                        p.add_(0.1)
        cfg = TrainConfig(
            ar_sft_steps=4,
            av_sft_steps=4,
            rl_steps=3,
            batch_size=8,
            group=4,
            eval_every=100,
            shuffled_control=False,
            lora_rank=lora_rank,
        )
        av, ar, res = train(model, tok, av, acts[:90], labels[:90], acts[90:], labels[90:], cfg, progress=False)
        flat = torch.cat([p.detach().flatten() for p in list(av.parameters()) + list(ar.parameters())])
        torch.save({"flat": flat, "processes": res.processes}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_ddp_two_processes_on_gloo_stay_in_sync(tmp_path, lora_rank):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path), lora_rank), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["processes"] == r1["processes"] == 2
    torch.testing.assert_close(r0["flat"], r1["flat"])
    model, tok, av, _, _ = task(lora_rank)
    start = torch.cat([p.detach().flatten() for p in av.parameters()])
    assert not torch.allclose(r0["flat"][: len(start)], start)  # it trained


def test_keeps_only_the_newest_checkpoints_asked_for(tmp_path):
    """A real model's checkpoint holds several copies of it: ``keep_checkpoints=1`` keeps one on disk."""
    cfg = TrainConfig(
        ar_sft_steps=2, av_sft_steps=2, rl_steps=2, batch_size=4, group=4, checkpoint_every=2, shuffled_control=False
    )
    model, tok, av, acts, labels = task()
    args = (acts[:90], labels[:90], acts[90:], labels[90:], cfg)
    train(model, tok, av, *args, out_dir=tmp_path, progress=False, keep_checkpoints=1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000006.pt"]
    with pytest.raises(ValueError, match="keep_checkpoints must be >= 1"):
        train(model, tok, av, *args, out_dir=tmp_path, progress=False, keep_checkpoints=0)


def test_emphasis_weights_the_named_words_in_the_sft_loss(monkeypatch):
    model, tok, av, acts, labels = task()
    targets = av.encode(["w1 w2", "w3"])
    weights = train_mod.emphasis_weights(tok, targets, ["w2"], 5.0)
    w2 = tok(" w2", add_special_tokens=False)["input_ids"]
    assert len(w2) == 1 and weights == [[5.0 if t == w2[0] else 1.0 for t in seq] for seq in targets]
    assert 5.0 in weights[0] and 5.0 not in weights[1]
    plain = train_mod.av_sft_loss(av, acts[:2], targets)
    ones = [[1.0] * len(seq) for seq in targets]
    assert torch.allclose(train_mod.av_sft_loss(av, acts[:2], targets, ones), plain)
    logp, mask = av.token_logprobs(acts[:2], targets)  # [2, pos], right-padded
    w = torch.tensor([row + [0.0] * (mask.shape[1] - len(row)) for row in weights])
    assert torch.allclose(train_mod.av_sft_loss(av, acts[:2], targets, weights), -(logp * w).sum() / w.sum())
    with pytest.raises(ValueError, match="one-token"):
        train_mod.emphasis_weights(tok, targets, ["w1 w2"], 5.0)
    with pytest.raises(ValueError, match="emphasis_weight"):
        TrainConfig(emphasis_weight=0)
    seen = []  # train passes the weights of each batch's labels through to the loss
    monkeypatch.setattr(train_mod, "av_sft_loss", lambda *a: seen.append(a[3]) or plain.detach().requires_grad_())
    cfg = TrainConfig(ar_sft_steps=0, av_sft_steps=1, rl_steps=0, batch_size=4, emphasis=("w2",), emphasis_weight=5.0)
    cfg = dataclasses.replace(cfg, shuffled_control=False, eval_size=4)
    train(model, tok, av, acts[:8], ["w2"] * 8, acts[8:12], labels[8:12], cfg, progress=False)
    assert seen and all(5.0 in row for row in seen[0]) and len(seen[0]) == 4
