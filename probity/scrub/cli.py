"""``probity scrub run|list``: causal scrubbing on the paren and induction organisms."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Causal scrubbing: test interpretability hypotheses by resampling activations.", no_args_is_help=True
)
console = Console()


@app.command("list")
def list_(organism: str = typer.Option("paren", help="paren or induction")) -> None:
    """List the built-in hypotheses of an organism (with identity and empty)."""
    from probity.scrub import study

    _, _, hyps = study.setup(organism, samples=50)
    table = Table("name", "paper", "description")
    for name, h in hyps.items():
        table.add_row(name, "" if h.paper is None else f"{h.paper:.2f}", h.description)
    console.print(table)


@app.command()
def run(
    organism: str = typer.Option("paren", help="paren or induction"),
    hypothesis: str = typer.Option("1a", help="a built-in name (probity scrub list) or a YAML/JSON file"),
    samples: int = typer.Option(0, help="reference examples (default 2000 paren, 300 induction)"),
    seed: int = typer.Option(0),
    json_path: Path = typer.Option(None, "--json", help="write the headline numbers here"),
    out: Path = typer.Option(Path("runs/scrub"), help="folder for result.json and index.html"),
    batch_size: int = typer.Option(512, help="reference examples per forward chunk (bounds memory)"),
    replicates: int = typer.Option(
        0, help="whole-experiment bootstrap replicates (dataset and trees redrawn) for stderr_experiment"
    ),
) -> None:
    """Scrub one hypothesis and report loss recovered, per-node and per-subset tables, cancellation check."""
    from probity import report
    from probity.scrub import load_hypothesis, scrub, study
    from probity.scrub.hypothesis import HypothesisError

    if samples < 0 or replicates < 0:
        raise typer.BadParameter("--samples and --replicates must be positive")
    model, task, hyps = study.setup(organism, samples or None, seed)
    if hypothesis in hyps:
        hyp = hyps[hypothesis]
    elif Path(hypothesis).suffix in (".yaml", ".yml", ".json"):
        try:
            hyp = load_hypothesis(hypothesis)
        except (HypothesisError, FileNotFoundError) as err:
            raise typer.BadParameter(str(err), param_hint="--hypothesis") from None
    else:
        raise typer.BadParameter(
            f"unknown hypothesis {hypothesis!r}; built-ins: {', '.join(hyps)}, or give a .yaml/.json file"
        )
    result = scrub(model, task, hyp, seed=seed, batch_size=batch_size, replicates=replicates)
    console.print(
        f"[bold]{organism} / {hyp.name}[/bold]: L_model {result.loss_model:.4f}  L_all {result.loss_scrubbed_all:.4f}  "
        f"L_hyp {result.loss_hypothesis:.4f}  recovered {result.loss_recovered:.3f} ± {result.stderr:.3f}"
        + ("" if result.stderr_experiment is None else f" (whole experiment ± {result.stderr_experiment:.3f})")
    )
    c = result.cancellation
    console.print(
        f"cancellation check: {c.share_worse:.1%} worse, {c.share_better:.1%} better, KL {c.kl_to_model:.4f}, "
        f"constant predictor {c.constant_loss:.4f}"
        + (" [red]WORSE THAN CONSTANT[/red]" if c.worse_than_constant else "")
        + (" [red]CANCELLATION SUSPECTED[/red]" if c.cancellation_suspected else "")
    )
    if json_path is not None:
        headline = {
            k: getattr(result, k)
            for k in (
                "loss_model",
                "loss_scrubbed_all",
                "loss_hypothesis",
                "loss_recovered",
                "stderr",
                "stderr_experiment",
            )
        }
        headline["per_node"] = {n.node: n for n in result.per_node}
        headline["cancellation"] = c
        report.write_json(json_path, headline)
    console.print(f"[green]report:[/green] {report.save(result, out, title=f'scrub {organism} {hyp.name}')}")
