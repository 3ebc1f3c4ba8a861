"""``probity nla train|explain|audit``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Natural-language autoencoders: describe activations in words, and audit with them.", no_args_is_help=True
)
console = Console()


@app.command()
def train(
    model: str = typer.Option("censored", help="censored (the organism), smollm2-135m, an HF name or a local path."),
    layer: int = typer.Option(-1, help="Residual stream after block K (default: about 2/3 up)."),
    steps: int = typer.Option(300, help="GRPO steps."),
    sft_steps: int = typer.Option(400, help="Steps of AR SFT and of AV SFT (each)."),
    batch_size: int = typer.Option(32, help="Activations per SFT step; rollouts per RL step."),
    group: int = typer.Option(8, help="GRPO group size (4-8 is typical)."),
    out: Path = typer.Option(
        Path("runs/nla"), help="Folder for checkpoints, the trained NLA (out/nla) and the HTML report."
    ),
    json_path: Path = typer.Option(None, "--json", help="Write the headline metrics here as JSON."),
    texts: Path = typer.Option(
        None, help="Real models: a text file, one training text per line (default: built-in corpus)."
    ),
    labeller_url: str = typer.Option(
        "", help="Real models: OpenAI-compatible endpoint for teacher labels (default: context labels)."
    ),
    labeller_model: str = typer.Option("", help="Model name at --labeller-url."),
    replay: float = typer.Option(
        1.0,
        help="Weight of the knowledge-replay KL to the target (organism: documents of the training facts; "
        "real models: the training texts); 0 turns it off.",
    ),
    seed: int = typer.Option(0),
) -> None:
    """Train an NLA (AR SFT, AV SFT, GRPO) and report held-out FVE, controls and audit."""
    from probity import report
    from probity.models.client import ChatClient, EndpointError
    from probity.nla.labellers import OpenAILabeller
    from probity.nla.pipeline import run_model, run_organism
    from probity.nla.training import TrainConfig

    if bool(labeller_url) != bool(labeller_model):
        raise typer.BadParameter("give both --labeller-url and --labeller-model, or neither")
    if texts is not None and not texts.is_file():
        raise typer.BadParameter(f"no text file {texts}")
    try:  # every setting is checked before any model loads
        cfg = TrainConfig(
            ar_sft_steps=sft_steps,
            av_sft_steps=sft_steps,
            rl_steps=steps,
            batch_size=batch_size,
            group=group,
            seed=seed,
            replay_coef=replay,
            eval_every=max(1, (2 * sft_steps + steps) // 12),
        )
        labeller = OpenAILabeller(ChatClient(labeller_url, labeller_model, max_tokens=60)) if labeller_url else None
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    lay = None if layer < 0 else layer
    try:
        if model == "censored":
            result, _, _ = run_organism(lay, cfg, out)
        else:
            corpus = [t for t in texts.read_text().splitlines() if t.strip()] if texts else None
            result, _, _ = run_model(model, lay, cfg, out, texts=corpus, labeller=labeller)
    except EndpointError as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    html = report.save(result, out, title=f"NLA on {model}")
    _print_headline(result.metrics())
    if json_path is not None:
        report.write_json(json_path, result.metrics())
    console.print(f"[green]checkpoint:[/green] {result.checkpoint}   [green]report:[/green] {html}")


def _print_headline(metrics: dict) -> None:
    table = Table("metric", "value")
    for k, v in metrics.items():
        table.add_row(k, "-" if v is None else f"{v:.3f}")
    console.print(table)


def _load(checkpoint: Path, model_name: str):
    from probity.models import load
    from probity.nla.core import load_nla

    av, _ = load_nla(checkpoint)
    name = model_name or av.config.target
    if not name:
        raise typer.BadParameter("the checkpoint does not name its target model; pass --model")
    target, tokenizer = load(name)
    return av, target, tokenizer


@app.command()
def explain(
    checkpoint: Path = typer.Option(..., help="A trained NLA folder (out/nla of `probity nla train`)."),
    text: str = typer.Option(..., help="Text to explain (for chat models include the chat template yourself)."),
    position: int = typer.Option(None, help="Only this token position (negative counts from the end)."),
    model: str = typer.Option("", help="Target model (default: the one named in the checkpoint)."),
) -> None:
    """Print the verbalizer's description of each token's activation."""
    from probity.nla.evaluate import explain as run

    av, target, tokenizer = _load(checkpoint, model)
    table = Table("pos", "token", "description")
    for e in run(target, tokenizer, av, text, "all" if position is None else position):
        table.add_row(str(e.position), e.token, e.description)
    console.print(table)


@app.command()
def audit(
    checkpoint: Path = typer.Option(..., help="A trained NLA folder."),
    transcripts: Path = typer.Option(
        ..., help='.jsonl with {"text", "label"} per line, or .txt with one transcript per line.'
    ),
    concept: str = typer.Option(..., help="Phrase to look for in the descriptions, e.g. 'lie'."),
    model: str = typer.Option("", help="Target model (default: the one named in the checkpoint)."),
    out: Path = typer.Option(None, help="Write result.json and index.html here."),
) -> None:
    """Describe every token of every transcript and flag those whose description mentions the concept."""
    from probity import report
    from probity.nla.evaluate import audit as run
    from probity.nla.evaluate import read_transcripts

    texts, labels = read_transcripts(transcripts)
    av, target, tokenizer = _load(checkpoint, model)
    result = run(target, tokenizer, av, texts, concept, labels)
    table = Table("transcript", "label", "score", "flagged tokens")
    for row in result.per_transcript:
        table.add_row(
            str(row.index),
            "-" if row.label is None else str(row.label),
            f"{row.score:.2f}",
            " ".join(f"{e.token}@{e.position}" for e in row.flagged[:8]),
        )
    console.print(table)
    console.print(
        f"{result.flagged_tokens}/{result.tokens} tokens flagged"
        + ("" if result.auroc is None else f"; AUROC {result.auroc:.3f}")
    )
    if out is not None:
        console.print(f"[green]report:[/green] {report.save(result, out, title=f'NLA audit: {concept}')}")
