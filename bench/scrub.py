"""Benchmark for probity.scrub: engine speed vs a per-example hook-patching baseline, and both
case studies over 5 seeds (loss recovered beside the paper; both bootstrap stderrs vs the seed spread).

Speed: the same hypothesis and the same sampled input tree, scrubbed (a) by our engine
(one clean cached forward over the dataset, gathers, batched forwards only where
ancestry is patched) and (b) by a straightforward implementation that handles one
reference example at a time and gets every clean activation from hooked forwards of the model
on that example's sampled inputs (an organism's TransformerBridge with TransformerLens hooks,
``run_with_cache``; an HF decoder with PyTorch forward hooks), then recomputes what the
hypothesis patches on that one example. The baseline runs twice: with one hooked forward per
distinct input of the example (the fewest it can run: the headline ``speedup``), and with one
per clean activation the plan asks for (``speedup_per_gather``, the baseline of the first
organism rows). Both end to end, after sampling, logits at the task's loss positions; the
baseline's logits are checked against ours, and the engine's peak RSS is recorded. Speeds are per
CPU second of the one-thread process (``time.process_time``: the machine is shared, so wall time
also counts other jobs' turns; recorded beside them).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/scrub.py [--quick] [--organisms=paren,induction] [--speed-only]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/scrub.py --recipe-seeds=0,1,2 [--recipe-dir=DIR]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/scrub.py --refine
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/scrub.py --smollm2 [--keep-only-curve]
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/scrub.py --smollm2-speed
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/scrub.py --smollm2-ioi
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/scrub.py --smollm2-refine

The SmolLM2 studies are set up by ``probity.scrub.lm``, as ``probity scrub run|refine --model`` sets them up:
the task and its rows and chunk (``lm.TASKS``, ``lm.lm_task``), every head's score (``lm.score_heads``), the
hypotheses on the heads scoring >= ``lm.THRESHOLD`` (0.5; ``lm.builtins``) and refinement's start, senders
and settings (``lm.refine_config``); the bench adds seed 0 (``SEED``), the keep-only curve, the speed
baselines and peak RSS.

``--smollm2-speed`` runs only the speed row on SmolLM2-135M-Instruct (the engine on the induction study's 64
rows in chunks of 16, the baselines on the first 4 (``SMOLLM2_SPEED``); all-three on the heads the study finds)
and writes it into the ``speed`` list of bench/results/scrub.json as organism ``smollm2-135m``.

``--smollm2`` runs only the induction study on SmolLM2-135M-Instruct (64 rows of ``repeat_task``, span 20,
seed 0; batch 16): both halves' losses, the heads ``find_heads`` finds (score >= 0.5), the paper's four
hypotheses and the floor beside the paper, the share the named heads carry (``keep_only``), that share as
a curve over the induction-score threshold (0.5, 0.4, 0.3, 0.2; previous-token heads at 0.5) and peak RSS,
under ``smollm2_induction`` in bench/results/scrub.json (every other figure there is left as it was).
With ``--keep-only-curve`` it runs only the curve (same rows, seed and batch; the heads' scores computed
once per kind) and writes it under ``smollm2_induction.keep_only_curve``, leaving the study's figures.

``--smollm2-ioi`` runs only the IOI study on SmolLM2-135M-Instruct (``scrub.ioi.ioi_study``: 128 prompts of
``ioi_task``, seed 0, heads scoring >= 0.5 per role; the ``ioi_lm`` hypotheses with their floor shares and the
keep-only rows), then ``scrub.refine`` from keep-only of the name movers, its new paths drawn from the heads
scoring >= 0.3 (``lm.SENDER_THRESHOLD``) in any IOI role and every MLP, and writes both and the peak RSS under
``smollm2_ioi`` in bench/results/scrub.json (every other figure there is left as it was).

``--smollm2-refine`` runs only ``scrub.refine`` on the SmolLM2 induction study (its rows, seed and batch) from
the paper's all-three on its heads (score >= 0.5), new paths drawn from the heads scoring >= 0.3 (induction) /
0.5 (previous-token) and the MLPs below the top one (``lm.senders``), under ``smollm2_induction_refine``.
(From ``keep_only`` instead it stops after one step: that root claims everything above layer 1, the lowest
previous-token head's, and mlp0 on the token makes it the model: 0.677 -> 1.000 in 7 scrubs, 159 s.)

``--refine`` runs only ``scrub.refine`` from paren's 1b on the full dataset (2000 rows, seed 0), checks the
``faithful`` built-in it leads to, and writes both under ``refine`` in bench/results/scrub.json (every
other figure there is left as it was).

Each speed is the fastest of 3 timings from scratch (the machine is shared). For paren it also
scrubs one set of direct paths to the logits at a time (everything else on a random input):
which components write the answer.

``--recipe-seeds`` trains the paren recipe once per seed (about 7 min each on 1 thread; weights cached
under bench/results/cache/paren_seeds or DIR) and tabulates each run's mechanism and case study in
bench/results/scrub_paren_seeds.json. Which mechanism the recipe finds depends on its seed; the shipped
seed is one of these runs.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from rich.console import Console
from rich.table import Table

from probity import report
from probity.models.decoder import decoder_parts
from probity.scrub import Decomposed, Hypothesis, Node, Scrubber, case_study, engine, lm, scrub, setup
from probity.scrub.model import layer_and_head, shorthand
from probity.scrub.study import order_violations

ROOT = Path(__file__).resolve().parent
console = Console()
REPLICATES = 10  # whole-experiment bootstrap replicates per hypothesis and seed


class PerExampleCache(engine.CleanCache):
    """The baseline's clean activations: nothing stored across examples, every request answered by a hooked
    forward of the model on the requested rows (the subclass's ``_hooked``). ``per_input``: one forward per
    distinct input of the current example (memoised until ``next_example``), the fewest a per-example patcher
    can run; otherwise one per clean activation the plan asks for (a gather and each of its ``exclude``
    terms), the organisms' first baseline. ``forwards`` counts the forwards run."""

    def __init__(self, decomposed, task, targets, per_input: bool):
        super().__init__(
            decomposed, task.tokens, targets, enabled=False, features=task.features, key_mask=task.key_mask
        )
        self.per_input, self.seen, self.forwards = per_input, {}, 0

    def next_example(self) -> None:
        self.seen.clear()

    def _forward(self, rows: torch.Tensor) -> dict:
        key = tuple(rows.tolist())
        if not self.per_input or key not in self.seen:
            self.forwards += 1
            self.seen[key] = super()._forward(rows)
        return self.seen[key]

    def _run(self, tokens, key_mask):
        logits, got = self._hooked(tokens, key_mask)
        outs = _Lazy(lambda c: self._output(got, c))
        return logits, {
            (c, resid): self._stream(got, outs, c) if resid else outs[c]
            for c, resid in self.targets
            if resid or c != self.model.output
        }

    def _hooked(self, tokens, key_mask) -> tuple[torch.Tensor, object]:
        """The logits ``[batch, pos, vocab]`` of one hooked forward on ``tokens`` and what its hooks caught."""
        raise NotImplementedError

    def _output(self, got, comp) -> torch.Tensor:
        """``comp``'s clean output ``[batch, pos, d_model]`` (without its output bias) from the hooks' catch."""
        raise NotImplementedError

    def _stream(self, got, outs, comp) -> torch.Tensor:
        """The sum of the senders' outputs into ``comp`` ``[batch, pos, d_model]`` (``outs``: component -> output)."""
        return sum(outs[s] for s in self.model.senders(comp))


class HookCache(PerExampleCache):
    """Per-example clean activations from the TransformerBridge of a native organism, by ``run_with_cache``."""

    def __init__(self, bridge, decomposed, task, targets, per_input: bool):
        super().__init__(decomposed, task, targets, per_input)
        self.bridge = bridge

    def _hooked(self, tokens, key_mask):
        return self.bridge.run_with_cache(tokens, attention_mask=None if key_mask is None else key_mask.long())

    def _output(self, cache, comp):
        if comp.kind == "head":
            # native bridges expose hook_z but not per-head results: project z through that head's W_O
            o = self.model.native.layers[comp.layer].attn.o.weight
            d_head = self.model.d_head
            return (
                cache[f"blocks.{comp.layer}.attn.hook_z"][:, :, comp.head]
                @ o[:, comp.head * d_head : (comp.head + 1) * d_head].T
            )
        if comp.kind == "mlp":
            return cache[f"blocks.{comp.layer}.hook_mlp_out"] - self.model.native.layers[comp.layer].mlp.fc_out.bias
        return cache[comp.name]


class HFHookCache(PerExampleCache):
    """Per-example clean activations from a Hugging Face Llama-family decoder by forward hooks: its token
    embedding's output, every attention block's ``o_proj`` input (the heads' z, concatenated), every MLP's
    output, and the inputs of the norms (the residual stream into the heads, the MLPs and the logits). A
    head's output (z through its slice of ``o_proj``) is computed only when the plan asks for it."""

    def __init__(self, hf, decomposed, task, targets, per_input: bool):
        super().__init__(decomposed, task, targets, per_input)
        self.hf, self.parts = hf, decoder_parts(hf)

    def _hooked(self, tokens, key_mask):
        got = {}

        def keep(name):
            return lambda module, args, out=None: got.__setitem__(name, args[0] if out is None else out)

        handles = [
            self.parts.embed.register_forward_hook(keep("embed")),
            self.parts.final_norm.register_forward_pre_hook(keep(("stream", self.model.n_layers, 0))),
        ]
        for layer, block in enumerate(self.parts.layers):
            handles += [
                block.input_layernorm.register_forward_pre_hook(keep(("stream", layer, 0))),  # [batch, pos, d_model]
                block.self_attn.o_proj.register_forward_pre_hook(keep(("z", layer))),  # [batch, pos, head * d_head]
                block.post_attention_layernorm.register_forward_pre_hook(keep(("stream", layer, 1))),
                block.mlp.register_forward_hook(keep(("mlp", layer))),
            ]
        try:
            logits = self.hf(tokens, attention_mask=None if key_mask is None else key_mask.long()).logits
        finally:
            for h in handles:
                h.remove()
        return logits, got

    def _output(self, got, comp):
        if comp.kind == "embed":
            return got["embed"]
        if comp.kind == "mlp":
            return got[("mlp", comp.layer)] - self.model.backend.mlp_bias(comp.layer)
        dh, h = self.model.d_head, comp.head
        w_o = self.parts.layers[comp.layer].self_attn.o_proj.weight[:, h * dh : (h + 1) * dh]  # [d_model, d_head]
        return got[("z", comp.layer)][..., h * dh : (h + 1) * dh] @ w_o.T

    def _stream(self, got, outs, comp):
        return got[("stream", comp.layer, comp.order)] - self.model.bias(comp)


class _Lazy(dict):
    """A dict whose missing keys are computed by ``make(key)`` on first use."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = value = self.make(key)
        return value


def _timed(run) -> tuple[float, float, object]:
    """``run()``'s CPU seconds (this process's: on one thread, the work done, however busy the shared machine),
    its wall seconds and its result."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = run()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def per_example_baseline(model, scrubber: Scrubber, hyp, n: int, per_input: bool) -> tuple[float, float, tuple]:
    """CPU and wall seconds to scrub the first ``n`` references one at a time with hooked forwards (``model``: the
    organism's TransformerBridge or an HF decoder; ``per_input`` as in ``PerExampleCache``), and (their logits at
    the task's loss positions ``[n, m, vocab]``, the hooked forwards per reference)."""
    root, rows = scrubber.sample(hyp)
    plan = engine.compile_plan(scrubber.model, root, scrubber.task.n_ctx)
    kind = HookCache if type(getattr(model, "original_model", None)).__name__ == "NativeModel" else HFHookCache
    hooks = kind(model, scrubber.model, scrubber.task, engine.gather_targets(plan), per_input)

    def run() -> torch.Tensor:
        out = []
        for i in range(n):
            hooks.next_example()
            one = {k: v[i : i + 1] for k, v in rows.items()}
            out.append(engine.execute(scrubber.model, plan, one, hooks, scrubber.task.loss_positions))
        return torch.cat(out)

    cpu, wall, logits = _timed(run)
    return cpu, wall, (logits, hooks.forwards / n)


def ours_timed(model, task, hyp, batch_size: int = 512) -> tuple[float, float, torch.Tensor]:
    """CPU and wall seconds for a fresh scrubber to scrub every reference (clean cache + compile + evaluate); the
    logits at the task's loss positions ``[n, m, vocab]`` (what a scrub's losses read)."""
    scrubber = Scrubber(model, task, seed=0, batch_size=batch_size)
    return _timed(lambda: torch.cat([lg for _, lg in scrubber.logits(hyp, positions=task.loss_positions)]))


def speed(organism: str, hypothesis: str, n: int, n_baseline: int, repeats: int = 3) -> dict:
    """Examples per second, ours vs the per-example baselines on an organism (see ``speed_row``)."""
    bridge, task, hyps = setup(organism, n, seed=0)
    return {"organism": organism, **speed_row(bridge, task, hyps[hypothesis], n, n_baseline, repeats)}


def speed_row(model, task, hyp, n: int, n_baseline: int, repeats: int = 3, batch_size: int = 512) -> dict:
    """Examples per CPU second of our engine on the ``n`` rows of ``task`` against the per-example baseline on
    the first ``n_baseline`` of them, once with one hooked forward per distinct input of an example (the
    headline speed-up) and once with one per clean activation asked for (the organisms' first baseline); same
    hypothesis, same sampled tree (same seed). Each timed ``repeats`` times from scratch and the fastest kept;
    CPU seconds (one thread) because the machine is shared, wall seconds beside them. The baselines' logits are
    checked against ours; the engine's peak RSS is the process's over its runs (the model loaded)."""
    _reset_peak_rss()
    ours_cpu, ours_wall, ours = min(
        (ours_timed(model, task, hyp, batch_size) for _ in range(repeats)), key=lambda r: r[0]
    )
    ours_eps = n / ours_cpu
    row = {
        "hypothesis": hyp.name,
        "ours_examples": n,
        "ours_batch_size": batch_size,
        "ours_seconds": round(ours_cpu, 3),
        "ours_wall_seconds": round(ours_wall, 3),
        "ours_examples_per_s": round(ours_eps, 2),
        "ours_peak_rss_gb": round(_peak_rss_gb(), 2),
        "baseline_examples": n_baseline,
    }
    for tag, per_input in (("", True), ("_per_gather", False)):
        base_cpu, base_wall, (base, forwards) = min(
            (
                per_example_baseline(model, Scrubber(model, task, seed=0), hyp, n_baseline, per_input)
                for _ in range(repeats)
            ),
            key=lambda r: r[0],
        )
        base_eps = n_baseline / base_cpu
        row |= {
            f"baseline{tag}_forwards_per_example": round(forwards, 2),
            f"baseline{tag}_seconds": round(base_cpu, 3),
            f"baseline{tag}_wall_seconds": round(base_wall, 3),
            f"baseline{tag}_examples_per_s": round(base_eps, 3),
            f"speedup{tag}": round(ours_eps / base_eps, 1),
            f"max_abs_logit_diff{tag}": float((ours[:n_baseline] - base).abs().max()),
        }
    return row


def _reset_peak_rss() -> None:
    """Restart this process's peak resident set (``VmHWM``) from its current size (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_gb() -> float:
    """This process's peak resident set since the last ``_reset_peak_rss`` (or its start), in GB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1e6  # kB


def direct_paths(model, task, seed: int = 0, show: bool = True) -> dict:
    """Loss recovered when only one set of direct paths to the logits of the paren organism ``model``
    runs on the reference input (everything else on a random input)."""
    s = Scrubber(model, task, seed=seed)
    roles = model.probity_meta["roles"]
    sets = {
        "mlp2": ["mlp2"],
        "every head": [f"{layer}.{h}" for layer in range(3) for h in range(2)],
        "count and horizon heads": roles["count"] + roles["horizon"],
        "every MLP": ["mlp0", "mlp1", "mlp2"],
    }
    out = {
        name: round(
            scrub(
                model,
                task,
                Hypothesis(name, Node("out", ["output"], children=[Node("x", sites)])),
                seed=seed,
                per_node=False,
                scrubber=s,
            ).loss_recovered,
            4,
        )
        for name, sites in sets.items()
    }
    if show:
        table = Table(
            "direct paths on the reference (all else random)", "loss recovered", title="paren: who writes the answer"
        )
        for name, v in out.items():
            table.add_row(name, f"{v:.3f}")
        console.print(table)
    return out


def recipe_seeds(seeds: list[int], folder: Path, samples: int = 2000) -> list[dict]:
    """Train the paren recipe once per seed (weights cached in ``folder``/seedS) and record what each
    run computes: held-out accuracy, head roles (``paren.roles``), the count heads' attention from
    position 0 to position 1 (where Redwood's count heads read the count), who writes the answer, and
    the case study at scrub seed 0 with both roots, with the pairs ranked against the paper."""
    from probity.models import cache
    from probity.organisms import _native, paren
    from probity.scrub import builtin, paren_task

    out = []
    for seed in seeds:
        folder_s = folder / f"seed{seed}"
        if not (folder_s / "model.safetensors").is_file():
            paren.train(out_dir=folder_s, seed=seed)
        native, meta = _native.load_weights(folder_s)
        model = _native.bridge(native, paren.tokenizer())
        roles = meta.get("roles") or {k: v for k, v in paren.roles(model).items() if k != "scores"}
        model.probity_meta = {**meta, "roles": roles}
        probe = paren.sample(1000, seed=5)
        heads = {h: layer_and_head(h) for h in roles["count"]}  # "1.0" -> (1, 0), read by Site.parse
        names = [f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads.values()]
        pattern = cache(model, {"input_ids": probe, "attention_mask": paren.attention_mask(probe)}, names)
        attn = {h: round(float(pattern[n][:, heads[h][1], 0, 1].mean()), 3) for h, n in zip(roles["count"], names)}
        task = paren_task(samples, 0, model)
        s = Scrubber(model, task, seed=0)
        row = {
            "seed": seed,
            "accuracy": meta["metrics"]["accuracy"],
            "roles": roles,
            "count_heads_attention_0_to_1": attn,
            "direct_paths": direct_paths(model, task, show=False),
        }
        for tag, top in (("root_output", ["output"]), ("root_output_mlp2", ["output", "mlp2"])):
            hyps = builtin("paren", {**model.probity_meta, "roles": {**roles, "top": top}}, 2)
            rows = [
                scrub(model, task, hyps[n], per_node=False, scrubber=s)
                for n in ("1a", "1b", "2a", "2b", "3a", "3b", "4")
            ]
            row[tag] = {r.hypothesis: round(r.loss_recovered, 4) for r in rows}
            row[tag + "_violations"] = order_violations(rows)
        console.print(f"paren recipe seed {seed}: {json.dumps(row)}")
        out.append(row)
    table = Table(
        "seed",
        "count heads (attn 0->1)",
        "mlp2 / heads direct",
        "root output: 1a..4",
        "violations",
        "root output+mlp2: 1a..4",
        "violations",
        title="paren recipe seeds (scrub seed 0)",
    )
    for r in out:
        table.add_row(
            str(r["seed"]),
            " ".join(f"{h}:{a:.2f}" for h, a in r["count_heads_attention_0_to_1"].items()),
            f"{r['direct_paths']['mlp2']:.2f} / {r['direct_paths']['every head']:.2f}",
            " ".join(f"{v:.2f}" for v in r["root_output"].values()),
            str(len(r["root_output_violations"])),
            " ".join(f"{v:.2f}" for v in r["root_output_mlp2"].values()),
            str(len(r["root_output_mlp2_violations"])),
        )
    console.print(table)
    return out


def seeds_table(organism: str, seeds: list[int], samples: int, replicates: int, roles: dict | None = None) -> dict:
    runs = []
    for seed in seeds:
        study = case_study(organism, samples=samples, seed=seed, replicates=replicates, roles=roles)
        runs.append(study)
        console.print(
            f"{organism} seed {seed}: " + ", ".join(f"{r.hypothesis} {r.loss_recovered:.3f}" for r in study.rows)
        )
    rows = []
    for i, r in enumerate(runs[0].rows):
        vals = torch.tensor([run.rows[i].loss_recovered for run in runs])
        errs = torch.tensor([run.rows[i].stderr for run in runs])
        exp = [run.rows[i].stderr_experiment for run in runs if run.rows[i].stderr_experiment is not None]
        rows.append(
            {
                "hypothesis": r.hypothesis,
                "paper": r.paper,
                "mean": round(float(vals.mean()), 4),
                "spread_over_seeds": round(float(vals.std()), 4),
                "mean_bootstrap_stderr": round(float(errs.mean()), 4),
                "mean_experiment_stderr": round(float(torch.tensor(exp).mean()), 4) if exp else None,
                "per_seed": [round(float(v), 4) for v in vals],
                "worse_than_constant": any(run.rows[i].worse_than_constant for run in runs),
                "cancellation_suspected": any(run.rows[i].cancellation_suspected for run in runs),
                "share_worse": round(float(torch.tensor([run.rows[i].share_worse for run in runs]).mean()), 4),
            }
        )
    return {
        "organism": organism,
        "roles_override": roles,
        "samples": samples,
        "seeds": seeds,
        "loss_model": runs[0].loss_model,
        "loss_scrubbed_all": runs[0].loss_scrubbed_all,
        "constant_loss": runs[0].constant_loss,
        "in_paper_order_per_seed": [run.in_paper_order for run in runs],
        "order_violations_per_seed": [run.order_violations for run in runs],
        "order_violations_of_means": order_violations(
            [SimpleNamespace(hypothesis=r["hypothesis"], paper=r["paper"], loss_recovered=r["mean"]) for r in rows]
        ),
        "rows": rows,
    }


def refine_paren(samples: int = 2000, seed: int = 0) -> dict:
    """``scrub.refine`` from paren's 1b: the trajectory (each edit, loss recovered ± stderr, the constant-
    predictor check, scrubs spent) and the ``faithful`` built-in scrubbed on the same data."""
    from probity.scrub.refine import RefineConfig, refine

    model, task, hyps = setup("paren", samples, seed=seed)
    t0 = time.perf_counter()
    result = refine(model, task, hyps["1b"], RefineConfig(seed=seed))
    seconds = time.perf_counter() - t0
    table = Table("step", "edit", "loss recovered", "L_hyp", "constant", "scrubs", title="paren: refine from 1b")
    for s in result.steps:
        table.add_row(
            str(s.step),
            s.edit,
            f"{s.loss_recovered:.3f} ± {s.stderr:.3f}",
            f"{s.loss_hypothesis:.3f}" + (" (worse)" if s.worse_than_constant else ""),
            f"{s.constant_loss:.3f}",
            str(s.candidates),
        )
    console.print(table)
    faithful = scrub(model, task, hyps["faithful"], seed=seed, per_node=False)
    console.print(
        f"stopped: {result.stopped}; faithful built-in: {faithful.loss_recovered:.3f} ± {faithful.stderr:.3f}, "
        f"L_hyp {faithful.loss_hypothesis:.3f} vs constant {faithful.cancellation.constant_loss:.3f}"
    )
    return {
        "organism": "paren",
        "start": "1b",
        "samples": samples,
        "seed": seed,
        "seconds": round(seconds, 1),
        "stopped": result.stopped,
        "loss_model": result.loss_model,
        "loss_scrubbed_all": result.loss_scrubbed_all,
        "steps": [
            {
                "step": s.step,
                "edit": s.edit,
                "loss_recovered": round(s.loss_recovered, 4),
                "stderr": round(s.stderr, 4),
                "loss_hypothesis": round(s.loss_hypothesis, 4),
                "constant_loss": round(s.constant_loss, 4),
                "worse_than_constant": s.worse_than_constant,
                "cancellation_suspected": s.cancellation_suspected,
                "scrubs": s.candidates,
            }
            for s in result.steps
        ],
        "final_hypothesis": result.steps[-1].hypothesis,
        "faithful_builtin": {
            "loss_recovered": round(faithful.loss_recovered, 4),
            "stderr": round(faithful.stderr, 4),
            "loss_hypothesis": round(faithful.loss_hypothesis, 4),
            "worse_than_constant": faithful.cancellation.worse_than_constant,
            "cancellation_suspected": faithful.cancellation.cancellation_suspected,
        },
    }


# The SmolLM2 studies' rows, chunks, head thresholds, hypotheses and refinement settings are probity.scrub.lm's
# (what ``probity scrub run|refine --model`` uses); only the seed, the curve and the speed baselines are the bench's.
SEED = 0  # the SmolLM2 studies' task and scrub seed
INDUCTION, IOI = lm.TASKS["induction"], lm.TASKS["ioi"]
CURVE_THRESHOLDS = (0.5, 0.4, 0.3, 0.2)  # induction-score thresholds of the keep-only curve
# (previous-token heads kept at lm.THRESHOLD, the study's, at every point of it)


def _smollm2_setup(n: int = INDUCTION.samples, seed: int = SEED):
    """SmolLM2, its induction task (``lm.lm_task``: ``repeat_task``, span ``lm.SPAN``), its decomposition and
    every head's induction and previous-token score (``lm.score_heads``, threshold 0, the study's chunk)."""
    from probity import models

    model, tokenizer = models.load(models.SMOLLM2)
    task = lm.lm_task("induction", tokenizer, n, seed)
    d = Decomposed(model)
    return model, task, d, lm.score_heads(d, "induction", task, INDUCTION.batch_size)


def _scrub_row(d, task, hyp, s: Scrubber, seed: int, batch_size: int):
    """One scrub of ``hyp`` on the shared scrubber: its JSON row and the result."""
    t = time.perf_counter()
    r = scrub(d, task, hyp, seed=seed, batch_size=batch_size, per_node=False, scrubber=s)
    c = r.cancellation
    row = {
        "loss_recovered": round(r.loss_recovered, 4),
        "stderr": round(r.stderr, 4),
        "paper": hyp.paper,
        "loss_hypothesis": round(r.loss_hypothesis, 4),
        "kl_to_model": round(c.kl_to_model, 4),
        "worse_than_constant": c.worse_than_constant,
        "cancellation_suspected": c.cancellation_suspected,
        "seconds": round(time.perf_counter() - t, 1),
    }
    return row, r


def keep_only_curve(d, task, roles: dict, seed: int, batch_size: int, known: dict | None = None) -> dict:
    """The share of the loss the found heads alone carry (``keep_only``) as the induction-score threshold
    falls through ``CURVE_THRESHOLDS``, the previous-token heads fixed at ``lm.THRESHOLD``. ``roles``: every
    head's scores (``lm.score_heads``); ``known`` maps a threshold to a row already scrubbed (the study's
    keep-only at 0.5) so it is not scrubbed twice. Each point gets its own ``Scrubber`` (the same seed draws
    the same trees): one clean cache alive at a time, not one grown over every point."""
    from probity.scrub import keep_only

    known = known or {}
    ind, prev = roles["induction"], roles["previous_token"]
    prev_heads = [h for h, _ in lm.chosen(prev, lm.THRESHOLD)]
    table = Table(
        "induction >=", "heads", "loss recovered", "L_hyp", "worse than constant", "s", title="SmolLM2 keep-only curve"
    )
    points = []
    for threshold in CURVE_THRESHOLDS:
        ind_heads = [h for h, _ in lm.chosen(ind, threshold)]
        heads = list(dict.fromkeys([*ind_heads, *prev_heads]))  # a head of both kinds counted once
        if threshold in known:
            row = dict(known[threshold])
        else:
            s = Scrubber(d, task, seed=seed, batch_size=batch_size)
            row, _ = _scrub_row(d, task, keep_only(heads, name=f"keep-only@{threshold:g}"), s, seed, batch_size)
            del s
        row.pop("paper", None)
        point = {
            "induction_threshold": threshold,
            "previous_token_threshold": lm.THRESHOLD,
            "induction_heads": len(ind_heads),
            "previous_token_heads": len(prev_heads),
            "heads": len(heads),
            **row,
        }
        points.append(point)
        table.add_row(
            f"{threshold:g}",
            f"{len(ind_heads)} + {len(prev_heads)} = {len(heads)}",
            f"{row['loss_recovered']:.3f} ± {row['stderr']:.3f}",
            f"{row['loss_hypothesis']:.3f}",
            str(row["worse_than_constant"]),
            f"{row['seconds']:.0f}",
        )
        console.print(f"keep-only, induction >= {threshold:g}: {json.dumps(point)}")
    console.print(table)
    lowest = min(CURVE_THRESHOLDS)
    return {
        "constant_loss": round(task.constant_loss(), 4),
        "induction_heads": [{"head": shorthand(h), "score": round(v, 3)} for h, v in lm.chosen(ind, lowest)],
        "previous_token_heads": [
            {"head": shorthand(h), "score": round(v, 3)} for h, v in lm.chosen(prev, lm.THRESHOLD)
        ],
        "points": points,
    }


def smollm2_induction(seed: int = SEED) -> dict:
    """The SmolLM2-135M induction study (see module doc)."""
    from probity import models
    from probity.scrub import repeat_losses

    t0 = time.perf_counter()
    n, batch_size = INDUCTION.samples, INDUCTION.batch_size
    model, task, d, roles = _smollm2_setup(n, seed)
    losses = repeat_losses(model, task, batch_size=batch_size)
    console.print(
        f"SmolLM2 {task.name}, {n} rows: loss first half {losses.first:.3f} ± {losses.first_stderr:.3f}, "
        f"repeat {losses.repeat:.3f} ± {losses.repeat_stderr:.3f}"
    )
    heads = {
        kind: [{"head": shorthand(h), "score": round(v, 3)} for h, v in lm.chosen(roles[kind], lm.THRESHOLD)]
        for kind in ("induction", "previous_token")
    }
    console.print(f"heads (score >= {lm.THRESHOLD:g}): {json.dumps(heads)}")
    hyps = {k: h for k, h in lm.builtins("induction", roles).items() if k not in ("identity", "empty")}
    s = Scrubber(d, task, seed=seed, batch_size=batch_size)
    table = Table(
        "hypothesis", "loss recovered", "paper", "L_hyp", "worse than constant", "s", title="SmolLM2 induction"
    )
    rows = {}
    for name, hyp in hyps.items():
        rows[name], r = _scrub_row(d, task, hyp, s, seed, batch_size)
        table.add_row(
            name,
            f"{r.loss_recovered:.3f} ± {r.stderr:.3f}",
            "" if hyp.paper is None else f"{hyp.paper:.2f}",
            f"{r.loss_hypothesis:.3f}",
            str(r.cancellation.worse_than_constant),
            f"{rows[name]['seconds']:.0f}",
        )
        console.print(f"{name}: {json.dumps(rows[name])}")
    console.print(table)
    del s  # free the study's clean cache before the curve's
    curve = keep_only_curve(d, task, roles, seed, batch_size, known={lm.THRESHOLD: rows["keep-only"]})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux -> GB
    console.print(f"L_model {r.loss_model:.3f}, L_all {r.loss_scrubbed_all:.3f}, peak RSS {peak:.2f} GB")
    return {
        "model": models.SMOLLM2,
        "task": task.name,
        "rows": n,
        "seed": seed,
        "batch_size": batch_size,
        "loss_first_half": round(losses.first, 4),
        "loss_first_half_stderr": round(losses.first_stderr, 4),
        "loss_repeat": round(losses.repeat, 4),
        "loss_repeat_stderr": round(losses.repeat_stderr, 4),
        "loss_model": round(r.loss_model, 4),
        "loss_scrubbed_all": round(r.loss_scrubbed_all, 4),
        "constant_loss": round(task.constant_loss(), 4),
        "heads": heads,
        "chance": {kind: round(roles[kind].chance, 4) for kind in ("induction", "previous_token")},
        "hypotheses": rows,
        "keep_only_share": rows["keep-only"]["loss_recovered"],
        "keep_only_curve": curve,
        "peak_rss_gb": round(peak, 2),
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def smollm2_curve_only(study: dict) -> dict:
    """Only the keep-only curve, on the rows, seed and batch of the recorded ``study`` (checked against the
    study's, ``lm.TASKS["induction"]`` and ``SEED``): the study's figures are not recomputed."""
    recorded = [study.get(k) for k in ("rows", "task", "seed", "batch_size")]
    expected = [INDUCTION.samples, f"repeat(span={lm.SPAN})", SEED, INDUCTION.batch_size]
    if recorded != expected:
        raise SystemExit(f"--keep-only-curve: the recorded study ran {recorded}, not {expected}; rerun --smollm2")
    t0 = time.perf_counter()
    _, task, d, roles = _smollm2_setup()
    curve = keep_only_curve(d, task, roles, SEED, INDUCTION.batch_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux -> GB
    curve |= {"peak_rss_gb": round(peak, 2), "seconds": round(time.perf_counter() - t0, 1)}
    console.print(f"curve: {curve['seconds']:.0f} s, peak RSS {peak:.2f} GB")
    return curve


SMOLLM2_SPEED = {"n_baseline": 4, "repeats": 3}  # baseline rows (the engine: the study's rows and chunk)


def smollm2_speed(n_baseline: int = 4, repeats: int = 3) -> dict:
    """The speed row on SmolLM2-135M-Instruct (``speed_row``): the induction study's task, rows and chunk
    (``lm.TASKS["induction"]``), the paper's all-three on its heads (``lm.builtins``: score >= ``lm.THRESHOLD``);
    the baselines on the first ``n_baseline`` rows."""
    n, batch_size = INDUCTION.samples, INDUCTION.batch_size
    model, task, _, roles = _smollm2_setup(n)
    hyp = lm.builtins("induction", roles)["all-three"]
    row = speed_row(model, task, hyp, n, n_baseline, repeats, batch_size)
    ind, prev = (lm.chosen(roles[kind], lm.THRESHOLD) for kind in ("induction", "previous_token"))
    return {
        "organism": "smollm2-135m",
        **row,
        "task": task.name,
        "induction_heads": [shorthand(h) for h, _ in ind],
        "previous_token_heads": [shorthand(h) for h, _ in prev],
        "threads": torch.get_num_threads(),
    }


def speed_table(r: dict) -> Table:
    """One speed row as a table."""
    table = Table(
        "organism",
        "hypothesis",
        "ours ex/s",
        "baseline ex/s (per input / per gather)",
        "speed-up",
        "max |logit diff|",
        "peak RSS",
    )
    table.add_row(
        r["organism"],
        r["hypothesis"],
        f"{r['ours_examples_per_s']:.1f}",
        f"{r['baseline_examples_per_s']:.2f} / {r['baseline_per_gather_examples_per_s']:.2f}",
        f"{r['speedup']:.1f}x / {r['speedup_per_gather']:.1f}x",
        f"{r['max_abs_logit_diff']:.1e} / {r['max_abs_logit_diff_per_gather']:.1e}",
        f"{r['ours_peak_rss_gb']:.2f} GB",
    )
    return table


def refine_run(d, task, start, config, thresholds: dict, t0: float) -> dict:
    """``scrub.refine`` from ``start`` with ``config`` (``lm.refine_config``), printing each step: its trajectory
    as JSON rows, under the sender ``thresholds`` it was built with and its settings."""
    from probity.scrub import refine

    def show(step) -> None:
        console.print(
            f"step {step.step}: {step.edit} -> {step.loss_recovered:.3f} ± {step.stderr:.3f} "
            f"(L {step.loss_hypothesis:.3f}, constant {step.constant_loss:.3f}, {step.candidates} scrubs, "
            f"{time.perf_counter() - t0:.0f} s)"
        )

    trajectory = refine(d, task, start, config, on_step=show)
    settings = {"max_steps": config.max_steps, "width": config.width, "features": config.features}
    return {
        "config": {**thresholds, **settings, "senders": len(config.senders)},
        "stopped": trajectory.stopped,
        "steps": [
            {k: v for k, v in vars(step).items() if k != "hypothesis"} | {"hypothesis": step.hypothesis}
            for step in trajectory.steps
        ],
    }


def smollm2_induction_refine() -> dict:
    """``scrub.refine`` on the SmolLM2 induction study (its rows, seed and chunk) from the paper's all-three on
    its heads, new paths only from ``lm.senders`` (induction heads >= ``lm.SENDER_THRESHOLD``, previous-token
    heads >= ``lm.THRESHOLD`` and the MLPs below the top one), as ``lm.refine_config`` sets it up."""
    t0 = time.perf_counter()
    _, task, d, roles = _smollm2_setup()
    start = lm.builtins("induction", roles)[INDUCTION.start]
    config = lm.refine_config("induction", roles, lm.THRESHOLD, d, seed=SEED, batch_size=INDUCTION.batch_size)
    thresholds = {
        "induction_threshold": min(lm.THRESHOLD, lm.SENDER_THRESHOLD),
        "previous_threshold": lm.THRESHOLD,
    }
    trajectory = refine_run(d, task, start, config, thresholds, t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux -> GB
    return {
        **trajectory,
        "task": task.name,
        "rows": INDUCTION.samples,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_gb": round(peak, 2),
    }


def smollm2_ioi() -> dict:
    """The SmolLM2-135M IOI study and a refinement from keep-only of its name movers (module doc)."""
    from probity import models
    from probity.scrub.ioi import ioi_study

    t0 = time.perf_counter()
    n, batch_size = IOI.samples, IOI.batch_size
    model, tokenizer = models.load(models.SMOLLM2)
    d = Decomposed(model)
    study = ioi_study(
        d,
        tokenizer,
        models.SMOLLM2,
        n=n,
        seed=SEED,
        threshold=lm.THRESHOLD,
        batch_size=batch_size,
        progress=lambda name: console.print(f"  scrubbed {name}"),
    )
    table = Table("hypothesis", "loss recovered", "L_hyp", "floor", "floor share", title="SmolLM2 IOI")
    for r in study.rows:
        share = "" if r.floor_share is None else f"{r.floor_share:.3f} ± {r.floor_share_stderr:.3f}"
        recovered = f"{r.loss_recovered:.3f} ± {r.stderr:.3f}"
        table.add_row(r.hypothesis, recovered, f"{r.loss_hypothesis:.3f}", r.floor, share)
    console.print(table)
    console.print(
        f"L_model {study.loss_model:.3f} (accuracy {study.accuracy:.3f}, logit diff {study.logit_diff:.2f}), "
        f"L_all {study.loss_scrubbed_all:.3f}, constant {study.constant_loss:.3f}; heads {json.dumps(study.heads)}"
    )
    seconds_study = time.perf_counter() - t0
    task = lm.lm_task("ioi", tokenizer, n, SEED)
    roles = lm.score_heads(d, "ioi", task, batch_size)
    start = lm.builtins("ioi", roles)[IOI.start]
    config = lm.refine_config("ioi", roles, lm.THRESHOLD, d, seed=SEED, batch_size=batch_size)
    thresholds = {"sender_threshold": min(lm.THRESHOLD, lm.SENDER_THRESHOLD)}
    refined = refine_run(d, task, start, config, thresholds, t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux -> GB
    return {
        **dataclasses.asdict(study),
        "refine": refined,
        "seconds_study": round(seconds_study, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_gb": round(peak, 2),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    torch.set_num_threads(1)
    quick = "--quick" in sys.argv
    if "--smollm2" in sys.argv:
        out = ROOT / "results" / "scrub.json"
        if "--keep-only-curve" in sys.argv:
            results = json.loads(out.read_text()) if out.is_file() else {}
            if "smollm2_induction" not in results:
                raise SystemExit(f"--keep-only-curve: no smollm2_induction study in {out}; run --smollm2 first")
            curve = smollm2_curve_only(results["smollm2_induction"])
            results = json.loads(out.read_text())  # read again: another figure may have been written meanwhile
            results["smollm2_induction"]["keep_only_curve"] = curve
        else:
            study = smollm2_induction()
            results = json.loads(out.read_text()) if out.is_file() else {}
            results["smollm2_induction"] = study
        report.write_json(out, results)
        console.print(f"wrote {out}")
        return
    if "--smollm2-speed" in sys.argv:
        out = ROOT / "results" / "scrub.json"
        results = json.loads(out.read_text()) if out.is_file() else {"speed": []}
        r = smollm2_speed(**SMOLLM2_SPEED)
        console.print(speed_table(r))
        results["speed"] = [x for x in results.get("speed", []) if x["organism"] != r["organism"]] + [r]
        report.write_json(out, results)
        console.print(f"wrote {out}")
        return
    for flag, key, run in (
        ("--smollm2-ioi", "smollm2_ioi", smollm2_ioi),
        ("--smollm2-refine", "smollm2_induction_refine", smollm2_induction_refine),
        ("--refine", "refine", refine_paren),
    ):
        if flag in sys.argv:  # one figure of bench/results/scrub.json rewritten, every other one left as it was
            value = run()  # read the file only after the run: another figure may have been written meanwhile
            out = ROOT / "results" / "scrub.json"
            results = json.loads(out.read_text()) if out.is_file() else {}
            results[key] = value
            report.write_json(out, results)
            console.print(f"wrote {out}")
            return
    recipe = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--recipe-seeds=")), None)
    if recipe is not None:
        folder = Path(
            next(
                (a.split("=", 1)[1] for a in sys.argv if a.startswith("--recipe-dir=")),
                ROOT / "results" / "cache" / "paren_seeds",
            )
        )
        report.write_json(
            ROOT / "results" / "scrub_paren_seeds.json",
            {"recipe_seeds": recipe_seeds([int(x) for x in recipe.split(",")], folder)},
        )
        return
    only = next(
        (a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--organisms=")), ["paren", "induction"]
    )
    out = ROOT / "results" / ("scrub_quick.json" if quick else "scrub.json")
    results = json.loads(out.read_text()) if out.is_file() else {"speed": [], "case_studies": []}
    cut = 4 if quick else 1
    for organism, hyp, n, nb in (("paren", "4", 2000, 10), ("induction", "all-three", 300, 20)):
        if organism not in only:
            continue
        r = speed(organism, hyp, n // cut, max(2, nb // cut))
        results["speed"] = [x for x in results["speed"] if x["organism"] != organism] + [r]
        console.print(speed_table(r))
    if "--speed-only" in sys.argv:
        report.write_json(out, results)
        return
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    if "paren" in only:
        model, task, _ = setup("paren", seed=0)
        results["direct_paths"] = {"paren": direct_paths(model, task)}
    # paren twice: strictly as Redwood's correspondence (the root is the logits) with the organism's head
    # roles, and with the root also claiming mlp2 (the organism's last MLP computes the answer from the heads)
    for organism, samples, roles in (
        ("paren", 2000, None),
        ("paren", 2000, {"top": ["output", "mlp2"]}),
        ("induction", 300, None),
    ):
        if organism not in only:
            continue
        study = seeds_table(organism, seeds, samples // cut, 2 if quick else REPLICATES, roles)
        results["case_studies"] = [
            x for x in results["case_studies"] if (x["organism"], x.get("roles_override")) != (organism, roles)
        ] + [study]
        table = Table(
            "hypothesis",
            "paper",
            "ours (mean)",
            "spread over seeds",
            "stderr (refs)",
            "stderr (experiment)",
            "share worse",
            "flags",
            title=f"{organism}{' ' + json.dumps(roles) if roles else ''}: "
            f"L_model {study['loss_model']:.4f}, L_all {study['loss_scrubbed_all']:.4f}, "
            f"constant {study['constant_loss']:.4f}",
        )
        for r in study["rows"]:
            flags = ("worse-than-constant " if r["worse_than_constant"] else "") + (
                "cancellation" if r["cancellation_suspected"] else ""
            )
            table.add_row(
                r["hypothesis"],
                "" if r["paper"] is None else f"{r['paper']:.2f}",
                f"{r['mean']:.3f}",
                f"{r['spread_over_seeds']:.3f}",
                f"{r['mean_bootstrap_stderr']:.3f}",
                "" if r["mean_experiment_stderr"] is None else f"{r['mean_experiment_stderr']:.3f}",
                f"{r['share_worse']:.2f}",
                flags,
            )
        console.print(table)
        console.print(
            f"paper order holds per seed: {study['in_paper_order_per_seed']}; "
            f"pairs ranked against the paper (means): {', '.join(study['order_violations_of_means']) or 'none'}"
        )
    report.write_json(out, results)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
