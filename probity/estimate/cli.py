"""``probity estimate run|bench``: estimate a random MLP's layer means; benchmark against sampling."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from probity.report.console import fail, note, provenance, usage_errors, writable

app = typer.Typer(
    help="Mechanistic estimation of random MLPs (cumulant propagation vs sampling).", no_args_is_help=True
)
console = Console()


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        fail(f"--{name} takes comma-separated integers, e.g. 16,32,64; got {text!r}")


MAX_MEMORY_HELP = "Refuse a run estimated to need more memory than this many GB. Default: 3/4 of this machine's RAM."


@app.command()
def run(
    width: int = typer.Option(64, help="Width n of every layer."),
    hidden_layers: int = typer.Option(4, help="Hidden layers (the network has this many + 1 linear layers)."),
    activation: str = typer.Option("relu", help="relu, gelu, tanh, sigmoid, silu or softplus."),
    order: int = typer.Option(
        None,
        help="Cumulant order K: 1-4 (default 3; 4 simple/augment keep dense [n]^4 tensors, 8 n^4 bytes).",
        show_default=False,
    ),
    variant: str = typer.Option(
        None,
        help="simple or augment (default simple); at --order 4 also repeated: the fourth cumulant's "
        "repeated-index slices only, [n]^3, O(n^4) FLOPs.",
        show_default=False,
    ),
    budget: float = typer.Option(
        None,
        help="FLOP budget: pick the method (kprop order/variant, blend or Monte Carlo with N samples) expected "
        "to be most accurate for it, instead of --order/--variant.",
        show_default=False,
    ),
    init: str = typer.Option("he", help="he or critical."),
    seed: int = typer.Option(0, help="Network seed."),
    check: int = typer.Option(
        0, help="Also sample this many inputs and report MSE/Var per layer, their noise subtracted (0: no sampling)."
    ),
    json_path: Path = typer.Option(
        None, "--json", help="Write every layer's estimate vector, with provenance, here.", show_default=False
    ),
    max_memory: float = typer.Option(None, help=MAX_MEMORY_HELP, show_default=False),
) -> None:
    """Print per-layer mean estimates of a random MLP under Gaussian input (with --budget: the output's,
    by the method chosen for that budget)."""
    import torch

    from probity.estimate import RandomMLP, count_flops, kprop, monte_carlo, mse_over_var
    from probity.estimate.bench import check_memory, memory_limit, memory_needed
    from probity.estimate.choose import estimate, plan
    from probity.estimate.propagate import check_order

    chosen = None
    with usage_errors():
        if budget is not None and (order is not None or variant is not None):
            raise ValueError("--budget chooses the method; drop --order and --variant, or drop --budget")
        order, variant = (3 if order is None else order), ("simple" if variant is None else variant)
        check_order(order, variant)
        RandomMLP.check(width, hidden_layers, activation, init)
        if check and check < 2:
            raise ValueError(f"--check must be 0 (no sampling) or >= 2 samples, got {check}")
        if budget is not None:
            chosen = plan(width, hidden_layers, budget, activation, max_bytes=memory_limit(max_memory)[0])
            order, variant = chosen.best.order or 1, chosen.best.variant or "simple"
        samples = max(check, chosen.best.n_samples if chosen else 0)
        needed = memory_needed(width, hidden_layers, [(order, variant)], samples)
        check_memory(needed, max_memory, f"estimate run at width {width} with {hidden_layers} hidden layers")
    writable(json_path, "--json")
    mlp = RandomMLP(width, hidden_layers, activation, init=init, seed=seed)
    if chosen is not None:
        print_plan(chosen, console)
        result = estimate(mlp, budget, progress=True, max_gb=max_memory)
        est, flops, method = result.layers, result.plan.best.flops, result.plan.best.label
    else:
        with torch.no_grad():
            est, flops = count_flops(kprop, mlp, order, variant)
        method = f"kprop K={order} {variant}"
    with torch.no_grad():
        stats = monte_carlo(mlp, check, progress=True) if check else None
    layers = []
    if est is not None:
        layers = [
            (f"act{i + 1}", est.act[i], stats.act_mean[i] if stats else None, stats.act_var[i] if stats else None)
            for i in range(mlp.hidden_layers)
        ]
    out = est.out if est is not None else result.out
    layers.append(("out", out, stats.out_mean if stats else None, stats.out_var if stats else None))
    table = Table(
        title=f"{method}: width {width}, {hidden_layers} hidden layers, {activation}, seed {seed} ({flops:.3g} FLOPs)"
    )
    for col in ["layer", "mean over neurons", "sd over neurons", "first values"] + (
        [f"MSE/Var vs {check} samples"] if check else []
    ):
        table.add_column(col)
    unresolved = 0
    for name, vec, mean, var in layers:
        cells = [name, f"{vec.mean():.5f}", f"{vec.std():.5f}", " ".join(f"{v:.4f}" for v in vec[:4].tolist())]
        if check:
            mse = mse_over_var(vec, mean, var, check)
            unresolved += mse <= 0
            cells.append(f"{mse:.3g}")
        table.add_row(*cells)
    console.print(table)
    if unresolved:
        note(
            f"{unresolved} layer(s) with MSE/Var <= 0: kprop's error there is below the noise of "
            f"{check} samples (1/{check} of Var); raise --check to resolve it"
        )
    if json_path:
        payload = {
            "provenance": provenance(
                "estimate run",
                width=width,
                hidden_layers=hidden_layers,
                activation=activation,
                order=order,
                variant=variant,
                init=init,
                seed=seed,
                check=check,
                budget=budget,
            ),
            "method": chosen.best.method if chosen else "kprop",
            "order": order if est is not None else None,
            "variant": variant if est is not None else None,
            "flops": flops,
            "act": [a.tolist() for a in est.act] if est is not None else None,
            "pre": [p.tolist() for p in est.pre] if est is not None else None,
            "out": out.tolist(),
        }
        if chosen is not None:
            from probity.report import to_jsonable

            payload["plan"] = to_jsonable(chosen)
        from probity.report import write_json

        write_json(json_path, payload, indent=None)
        console.print(f"[green]wrote[/green] {json_path}")


@app.command()
def challenge(
    networks: int = typer.Option(5, help="Networks to draw (seeds --seed, --seed + 1, ...); the score is their mean."),
    seed: int = typer.Option(0, help="Seed of the first network."),
    width: int = typer.Option(256, help="Width (the challenge's is 256; smaller for a quick look)."),
    depth: int = typer.Option(8, help="ReLU layers (the challenge's is 8)."),
    budget: float = typer.Option(6.8e10, help="FLOP budget B of the compute multiplier max(0.1, C/B)."),
    gt_samples: int = typer.Option(
        10**6, help="Ground-truth samples per network (its noise, about 1.7e-7 at 10^6, is subtracted)."
    ),
    cache_dir: Path = typer.Option(None, help="Cache the ground truths here (default: none).", show_default=False),
    json_path: Path = typer.Option(
        None, "--json", help="Write {provenance, config, summary, rows} JSON here.", show_default=False
    ),
) -> None:
    """ARC's white-box estimation challenge (width 256, depth 8, He ReLU): score = final-layer MSE x
    max(0.1, FLOPs / budget), for kprop K=2/3 and Monte Carlo, against the public figures. About 40 s a
    network on one CPU core, nearly all of it the ground truth."""
    from probity import report
    from probity.estimate.challenge import (
        BEST_PUBLIC_SCORE,
        COVARIANCE_PROPAGATION_SCORE,
        ChallengeConfig,
        run_challenge,
    )

    with usage_errors():
        cfg = ChallengeConfig(
            networks=networks,
            seed=seed,
            width=width,
            depth=depth,
            budget=budget,
            gt_samples=gt_samples,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    writable(json_path, "--json")
    if cache_dir is not None:
        writable(cache_dir, "--cache-dir", folder=True)
    result = run_challenge(cfg)
    table = Table(
        title=f"challenge score over {networks} networks (width {cfg.width}, depth {cfg.depth}, B = {budget:.3g}; "
        f"ground truth {gt_samples:.0e} samples)"
    )
    for col in ["method", "score", "95% interval", "final-layer MSE", "FLOPs", "multiplier", "s"]:
        table.add_column(col, justify="right", no_wrap=True)
    for s in result.summary:
        lo, hi = s.interval
        table.add_row(
            s.method,
            f"{s.score:.3g}",
            f"{lo:.3g} to {hi:.3g}",
            f"{s.final_layer_mse:.3g}",
            f"{s.flops:.3g}",
            f"{s.multiplier:.3f}",
            f"{s.wall_s:.2f}",
        )
    console.print(table)
    console.print(
        f"reference: best public score {BEST_PUBLIC_SCORE:g}; covariance propagation {COVARIANCE_PROPAGATION_SCORE:g}"
    )
    if json_path:
        inputs = {k: v for k, v in report.to_jsonable(cfg).items() if k != "cache_dir"}
        payload = {"provenance": provenance("estimate challenge", **inputs), **report.to_jsonable(result)}
        report.write_json(json_path, payload, indent=1)
        console.print(f"[green]wrote[/green] {json_path}")


def print_plan(chosen, console: Console) -> None:
    """The candidates a budget plan weighed (chosen first), with FLOPs and expected MSE/Var."""
    table = Table(title=f"methods that fit {chosen.budget:.3g} FLOPs (chosen: {chosen.best.label})")
    for col in ["method", "FLOPs", "expected MSE/Var"]:
        table.add_column(col, justify="right")
    for option in chosen.options:
        table.add_row(option.label, f"{option.flops:.3g}", f"{option.expected_mse_over_var:.2e}")
    console.print(table)
    if chosen.extrapolated:
        note(chosen.extrapolated)


def print_summary(result, console: Console) -> None:
    """The seed-averaged table of a BenchResult (N: samples; aug: augment)."""
    seeds = max(s.seeds for s in result.summary)
    table = Table(title=f"MSE/Var at the output, mean over {seeds} seed(s), ground-truth noise subtracted")
    for col in ["n", "method", "K", "variant", "N", "MSE/Var", "FLOPs", "s", "x-MC"]:
        table.add_column(col, justify="right", no_wrap=True)
    for s in result.summary:
        xmc = "-" if s.x_mc is None else f"{s.x_mc:.1f}"
        variant = "aug" if s.variant == "augment" else s.variant
        table.add_row(
            str(s.width),
            s.method,
            str(s.order or ""),
            variant,
            str(s.n_samples or ""),
            f"{s.mse_over_var:.2e}",
            f"{s.flops:.1e}",
            f"{s.wall_s:.3f}",
            xmc,
        )
    console.print(table)
    unresolved = [s for s in result.summary if s.mse_over_var <= 0]
    if unresolved:
        gt = result.config.gt_samples
        note(
            f"{len(unresolved)} row(s) with MSE/Var <= 0: their error is below the ground truth's own noise "
            f"(1/{gt:.0e} of Var), so it is not resolved; raise --gt-samples to grade them"
        )


@app.command()
def bench(
    activation: str = typer.Option("relu", help="relu, gelu, tanh, sigmoid, silu or softplus."),
    widths: str = typer.Option("16,32,64,128", help="Comma-separated widths."),
    hidden_layers: int = typer.Option(4, help="Hidden layers of every network."),
    orders: str = typer.Option(
        "1,2,3", help="Comma-separated kprop orders (4 runs repeated, and dense simple up to width 128)."
    ),
    variants: str = typer.Option("simple,augment", help="Comma-separated kprop variants of K=1-3."),
    seeds: str = typer.Option("0,1,2,3,4", help="Comma-separated network seeds."),
    gt_samples: int = typer.Option(10**7, help="Ground-truth samples per network (cached by network and N)."),
    mc_budgets: str = typer.Option("10,100,1000,10000,100000", help="Sample budgets for Monte Carlo."),
    blend_budgets: str = typer.Option("10,100,1000,10000,100000", help="Sample budgets for the blend estimator."),
    cache_dir: Path = typer.Option(
        None, help="Ground-truth cache folder (reused across runs). Default: OUT/cache.", show_default=False
    ),
    json_path: Path = typer.Option(
        None, "--json", help="Write {provenance, config, summary, rows} JSON here.", show_default=False
    ),
    out: Path = typer.Option(
        Path("runs/estimate-bench"), help="Folder for the HTML report (error-vs-FLOPs frontier) and the cache."
    ),
    max_memory: float = typer.Option(None, help=MAX_MEMORY_HELP, show_default=False),
) -> None:
    """Benchmark kprop, Monte Carlo and blend: MSE/Var, FLOPs, wall time, x-MC. The ground truth
    must have at least 100x the samples of every budget it grades (--gt-samples >= 100 x the largest
    of --mc-budgets and --blend-budgets), so that its own noise stays 1% of the error it measures."""
    from probity import report
    from probity.estimate.bench import BenchConfig, check_memory, run_bench

    cache_dir = cache_dir if cache_dir is not None else out / "cache"
    with usage_errors():
        cfg = BenchConfig(
            activation=activation,
            widths=_ints(widths, "widths"),
            hidden_layers=hidden_layers,
            orders=_ints(orders, "orders"),
            variants=[v.strip() for v in variants.split(",") if v.strip()],
            seeds=_ints(seeds, "seeds"),
            gt_samples=gt_samples,
            cache_dir=str(cache_dir),
            mc_budgets=_ints(mc_budgets, "mc-budgets"),
            blend_budgets=_ints(blend_budgets, "blend-budgets"),
        )
        cfg.check_grading()
        check_memory(cfg.memory_needed(), max_memory, f"estimate bench at width {max(cfg.widths)}")
    writable(out, "--out", folder=True)
    writable(cache_dir, "--cache-dir", folder=True)
    writable(json_path, "--json")
    result = run_bench(cfg)
    print_summary(result, console)
    if json_path:
        inputs = {k: v for k, v in report.to_jsonable(cfg).items() if k != "cache_dir"}
        payload = {"provenance": provenance("estimate bench", **inputs), **report.to_jsonable(result)}
        report.write_json(json_path, payload, indent=1)
        console.print(f"[green]wrote[/green] {json_path}")
    console.print(f"[green]report:[/green] {report.save(result, out, title='probity estimate bench')}")
