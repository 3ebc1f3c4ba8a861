"""``probity estimate run|bench``: estimate a random MLP's layer means; benchmark against sampling."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Mechanistic estimation of random MLPs (cumulant propagation vs sampling).", no_args_is_help=True
)
console = Console()


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise typer.BadParameter(f"--{name} takes comma-separated integers, e.g. 16,32,64; got {text!r}") from None


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
    json_path: Path = typer.Option(None, "--json", help="Write every layer's estimate vector here."),
) -> None:
    """Print per-layer mean estimates of a random MLP under Gaussian input."""
    import torch

    from probity.estimate import RandomMLP, count_flops, kprop, monte_carlo, mse_over_var
    from probity.estimate.propagate import check_order

    try:
        check_order(order, variant)
        if check and check < 2:
            raise ValueError(f"--check must be 0 (no sampling) or >= 2 samples, got {check}")
        mlp = RandomMLP(width, hidden_layers, activation, init=init, seed=seed)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
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
    for name, vec, mean, var in layers:
        cells = [name, f"{vec.mean():.5f}", f"{vec.std():.5f}", " ".join(f"{v:.4f}" for v in vec[:4].tolist())]
        if check:
            cells.append(f"{mse_over_var(vec, mean, var, check):.3g}")
        table.add_row(*cells)
    console.print(table)
    if json_path:
        payload = {
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
    cache_dir: Path = typer.Option(Path("bench/results/cache"), help="Ground-truth cache folder."),
    json_path: Path = typer.Option(None, "--json", help="Write {rows, summary, config} JSON here."),
    out: Path = typer.Option(Path("runs/estimate-bench"), help="Folder for the HTML report (error-vs-FLOPs frontier)."),
) -> None:
    """Benchmark kprop, Monte Carlo and blend: MSE/Var, FLOPs, wall time, x-MC."""
    from probity import report
    from probity.estimate.bench import BenchConfig, run_bench

    try:
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
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    result = run_bench(cfg)
    print_summary(result, console)
    if json_path:
        report.write_json(json_path, result, indent=1)
        console.print(f"[green]wrote[/green] {json_path}")
    console.print(f"[green]report:[/green] {report.save(result, out, title='probity estimate bench')}")
