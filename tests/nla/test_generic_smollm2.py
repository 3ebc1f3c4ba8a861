"""The generic NLA on the base SmolLM2 (``pipeline.run_smollm2``) on a slice of the texts it wrote itself,
and ``probity nla train --model smollm2-135m`` choosing it."""

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from probity.models.load import SMOLLM2
from probity.nla import pipeline
from probity.nla import smollm2_data as data
from probity.nla.cli import app
from probity.nla.core import load_nla
from probity.nla.training import TrainConfig

runner = CliRunner()


@pytest.fixture
def six_texts(monkeypatch):
    """The shipped ordinary texts cut to four training and two held-out ones (the split is by topic)."""
    records = data.read(data.DATA / data.ORDINARY_FILE)
    split = data.splits(records, "ordinary")
    train = [r for r in records if split[r["id"]] == "train"][:4]
    held = [r for r in records if split[r["id"]] == "eval"][:2]
    read = data.read
    monkeypatch.setattr(
        data, "read", lambda path: train + held if Path(path).name == data.ORDINARY_FILE else read(path)
    )


def test_generic_nla_trains_on_its_own_texts_and_reloads(tmp_path, six_texts, monkeypatch, one_thread):
    seen = {}
    train = pipeline.train

    def spy(*args, **kwargs):  # what run_smollm2 trains on
        seen["data"] = args[3:7]
        return train(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train", spy)
    cfg = TrainConfig(
        ar_sft_steps=2, av_sft_steps=2, rl_steps=1, batch_size=2, group=4, eval_every=5, eval_size=8, lora_rank=4
    )
    report, av, ar = pipeline.run_smollm2(cfg, tmp_path / "run", layer=3, words=8, progress=False)
    assert report.model == SMOLLM2 and report.layer == 3
    assert report.attribute_recovery is None and report.audit_auroc is None  # no facts to recover: ordinary text
    for value in (report.fve_ar_sft, report.fve_sft, report.fve_rl, report.fve_shuffled):
        assert math.isfinite(value)
    assert av.config.target == SMOLLM2 and av.config.base == SMOLLM2
    cache = tmp_path / "run" / "acts.pt"
    acts = data.activations(None, None, 3, cache=cache, groups=("ordinary",), words=8)  # from the cache
    assert set(acts["train"]) == {"ordinary"} and set(acts["eval"]) == {"ordinary"}
    labels = acts["train"]["ordinary"]["labels"]
    assert len(labels) == 4 * 48 and max(len(lab.rsplit(data.SEP, 1)[1].split()) for lab in labels) == 8
    # every training row and every held-out row scored keeps its own label
    train_v, train_l, eval_v, eval_l = seen["data"]
    assert len(train_l) == len(labels) and len(eval_l) == cfg.eval_size
    for vectors, names, split in ((train_v, train_l, "train"), (eval_v, eval_l, "eval")):
        label_of = {
            tuple(v.tolist()): lab
            for v, lab in zip(acts[split]["ordinary"]["vectors"], acts[split]["ordinary"]["labels"])
        }
        assert all(label_of[tuple(v.tolist())] == lab for v, lab in zip(vectors, names))
    every = labels + acts["eval"]["ordinary"]["labels"]
    longest = max(len(ids) for ids in av.tokenizer(every, add_special_tokens=False)["input_ids"])
    assert av.config.max_new_tokens == longest + 2  # room for the longest teacher label and its end
    assert [e.teacher for e in report.examples] == eval_l[: len(report.examples)]

    class Extracting(Exception):
        pass

    def extract(*args, **kwargs):
        raise Extracting

    monkeypatch.setattr(data, "extract", extract)
    with pytest.raises(Extracting):  # other label words are another cache entry: extracted again
        data.activations(None, av.tokenizer, 3, cache=cache, groups=("ordinary",), words=4)
    assert data.activations(None, None, 3, cache=cache, groups=("ordinary",), words=8) is not None  # still cached
    loaded, loaded_ar = load_nla(tmp_path / "run" / "nla")
    assert loaded_ar is not None and len(loaded.describe(acts["eval"]["ordinary"]["vectors"][:2])) == 2
    tunable, _ = load_nla(tmp_path / "run" / "nla", trainable=True)  # the adapter kept apart, to train on
    trained = [name for name, p in tunable.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in name for name in trained)
    few = acts["eval"]["ordinary"]["vectors"][:2]
    seqs = loaded.generate(few, greedy=True)
    tunable.eval()
    torch.testing.assert_close(
        tunable.token_logprobs(few, seqs)[0], loaded.token_logprobs(few, seqs)[0], rtol=1e-4, atol=1e-4
    )


def _route(tmp_path, monkeypatch, *extra: str) -> dict:
    """Run ``probity nla train --model smollm2-135m EXTRA`` with the three runners replaced by a recorder."""
    seen = {}

    def recorder(name):
        def run(*args, **kwargs):
            seen.update(runner=name, args=args, kwargs=kwargs)
            raise SystemExit(0)  # stop before the report: the choice of run is what is checked

        return run

    for name in ("run_smollm2", "run_model", "run_censored"):
        monkeypatch.setattr(pipeline, name, recorder(name))
    args = ["train", "--model", SMOLLM2, "--steps", "3", "--sft-steps", "5", "--out", str(tmp_path / "r"), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return seen | {"output": " ".join(result.output.split())}


def test_train_model_smollm2_runs_the_generic_recipe_at_layer_15(tmp_path, monkeypatch):
    seen = _route(tmp_path, monkeypatch)
    assert seen["runner"] == "run_smollm2"
    cfg = seen["args"][0]
    assert (cfg.ar_sft_steps, cfg.av_sft_steps, cfg.rl_steps) == (5, 5, 3)
    assert (cfg.lr_av, cfg.lora_rank) == (pipeline.LORA_SCHEDULE.lr_av, pipeline.LORA_SCHEDULE.lora_rank)
    assert seen["kwargs"] == {"layer": pipeline.SMOLLM2_LAYER, "inject": "layer1", "keep_checkpoints": 1}
    bench = pipeline.GENERIC_SCHEDULE  # the note compares the steps asked for with the generic benchmark's
    steps = f"{bench.ar_sft_steps} + {bench.av_sft_steps} + {bench.rl_steps} steps of {bench.batch_size}"
    assert f"the benchmarked {steps} take about 86 minutes" in seen["output"]
    assert bench.rl_steps != pipeline.LORA_SCHEDULE.rl_steps
    seen = _route(tmp_path, monkeypatch, "--inject", "same", "--layer", "7")
    assert (seen["kwargs"]["layer"], seen["kwargs"]["inject"]) == (7, "same")


def test_train_model_smollm2_on_your_texts_keeps_the_full_fine_tune(tmp_path, monkeypatch):
    texts = tmp_path / "t.txt"
    texts.write_text("One text about boats.\nAnother about trains.\n")
    seen = _route(tmp_path, monkeypatch, "--texts", str(texts))
    assert seen["runner"] == "run_model" and seen["args"][1] == pipeline.layer_for(30)  # 2/3 up: block 19
