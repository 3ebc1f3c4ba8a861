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
    order: int = typer.Option(3, help="Cumulant order K: 1, 2 or 3."),
    variant: str = typer.Option("simple", help="simple or augment."),
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
    """Print per-layer mean estimates of a random MLP under Gaussian input."""
    import torch

    from probity.estimate import RandomMLP, count_flops, kprop, monte_carlo, mse_over_var
    from probity.estimate.bench import check_memory, memory_needed
    from probity.estimate.propagate import check_order

    with usage_errors():
        check_order(order, variant)
        RandomMLP.check(width, hidden_layers, activation, init)
        if check and check < 2:
            raise ValueError(f"--check must be 0 (no sampling) or >= 2 samples, got {check}")
        needed = memory_needed(width, hidden_layers, [order], check)
        check_memory(needed, max_memory, f"estimate run at width {width} with {hidden_layers} hidden layers")
    writable(json_path, "--json")
    mlp = RandomMLP(width, hidden_layers, activation, init=init, seed=seed)
    with torch.no_grad():
        est, flops = count_flops(kprop, mlp, order, variant)
        stats = monte_carlo(mlp, check, progress=True) if check else None
    layers = [
        (f"act{i + 1}", est.act[i], stats.act_mean[i] if stats else None, stats.act_var[i] if stats else None)
        for i in range(mlp.hidden_layers)
    ]
    layers.append(("out", est.out, stats.out_mean if stats else None, stats.out_var if stats else None))
    table = Table(
        title=f"kprop K={order} {variant}: width {width}, {hidden_layers} hidden layers, {activation}, "
        f"seed {seed} ({flops:.3g} FLOPs)"
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
            ),
            "order": order,
            "variant": variant,
            "flops": flops,
            "act": [a.tolist() for a in est.act],
            "pre": [p.tolist() for p in est.pre],
            "out": est.out.tolist(),
        }
        from probity.report import write_json

        write_json(json_path, payload, indent=None)
        console.print(f"[green]wrote[/green] {json_path}")


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
    orders: str = typer.Option("1,2,3", help="Comma-separated kprop orders."),
    variants: str = typer.Option("simple,augment", help="Comma-separated kprop variants."),
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
