"""`probity models ...`: inspect models and their activation sites."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(help="Inspect models: list activation sites.", no_args_is_help=True)
console = Console()


@app.command("sites")
def sites_command(
    name: str = typer.Argument(
        ...,
        help="smollm2-135m, tiny-qwen3|tiny-llama|tiny-gpt2, an organism (probity organisms list) or a folder one "
        "was trained into, an HF checkpoint folder, or an HF hub name (needs the hub or its local cache).",
    ),
    bridge: bool = typer.Option(
        False, help="List the sites of the model wrapped in a TransformerLens bridge (the organisms already are one)."
    ),
    full: bool = typer.Option(False, help="One line per site instead of the compressed summary."),
) -> None:
    """List every activation site NAME exposes (TransformerLens hook names)."""
    from probity import models
    from probity.models.sites import summarize_sites
    from probity.report.console import usage_errors

    # load() checks the name first (probity.models.load.check): one line before anything loads
    with console.status(f"loading {name}"), usage_errors("NAME"):
        model, tokenizer = models.load(name)
    if bridge:
        with console.status("wrapping it in a TransformerBridge"):
            model = models.to_bridge(model, tokenizer)  # an organism already is one: unchanged
    names = models.sites(model)
    if full:
        for n in names:
            console.print(n)
    else:
        for part in summarize_sites(names).split(", "):
            console.print(part)
    console.print(f"[bold]{len(names)}[/bold] sites on {type(model).__name__}")
