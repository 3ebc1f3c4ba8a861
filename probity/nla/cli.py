"""``probity nla train|explain|audit``.

Every option is checked before a model loads: the target's depth comes from its config
(:func:`probity.nla.pipeline.target_config`), a checkpoint's settings from its sidecar
(:func:`probity.nla.core.check_nla`), a text's length from the checkpoint's tokenizer. Bad input is
one line, ``error: ...``, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from probity.report.console import fail, note, usage_errors, writable
from probity.report.io import read_text

app = typer.Typer(
    help="Natural-language autoencoders: describe activations in words, and audit with them.", no_args_is_help=True
)
console = Console()
AUTO_LAYER = "auto: about 2/3 up the model; 15 for censored and smollm2-135m's own texts"


@app.command()
def train(
    model: str = typer.Option(
        "censored_tiny",
        help="censored_tiny (the organism) or a folder it was trained into, smollm2-135m, "
        "tiny-qwen3|tiny-llama|tiny-gpt2, an HF name or a local path.",
    ),
    layer: int = typer.Option(
        None,
        show_default=AUTO_LAYER,
        help="Residual stream after block K (0-based, below the model's depth); -1, the old default, is auto.",
    ),
    steps: int = typer.Option(300, help="GRPO steps (>= 1)."),
    sft_steps: int = typer.Option(400, help="Steps of AR SFT and of AV SFT, each (>= 1)."),
    batch_size: int = typer.Option(32, help="Activations per SFT step; rollouts per RL step (>= 1)."),
    group: int = typer.Option(8, help="GRPO group size: rollouts per activation, 4..64 (4-8 is typical)."),
    out: Path = typer.Option(
        Path("runs/nla"), help="Folder for checkpoints, the trained NLA (out/nla) and the HTML report."
    ),
    json_path: Path = typer.Option(
        None, "--json", help="Write the headline metrics and the run's inputs (provenance) here as JSON."
    ),
    texts: Path = typer.Option(
        None,
        help="Real models: a text file, one training text per line, at least 2 (default: built-in corpus; "
        "smollm2-135m: the texts it wrote itself, with the LoRA recipe).",
    ),
    labeller_url: str = typer.Option(
        "",
        help="Real models: OpenAI-compatible endpoint for teacher labels (default: context labels); with "
        "smollm2-135m it selects the full fine-tune recipe on --texts or the built-in corpus.",
    ),
    labeller_model: str = typer.Option("", help="Model name at --labeller-url."),
    replay_coef: float = typer.Option(
        1.0,
        "--replay",
        help="Weight (>= 0) of the knowledge-replay KL to the target (organism: documents of the training facts; "
        "real models: the training texts); 0 turns it off.",
    ),
    keep_checkpoints: int = typer.Option(
        None,
        show_default="auto: 1 for real models, 2 for censored_tiny and tiny-*",
        help="How many of the newest training checkpoints stay in OUT/checkpoints (a run resumes from the newest).",
    ),
    seed: int = typer.Option(
        0, help="Seed of the held-out split, the batches and the GRPO rollouts: the same seed gives the same run."
    ),
    inject: str = typer.Option(
        "layer1",
        help="censored and smollm2-135m (without --texts or --labeller-url) only: how the activation enters the "
        "verbalizer (paper, embed, layer1, same, add1; see probity.nla.pipeline.injection).",
    ),
) -> None:
    """Train an NLA (AR SFT, AV SFT, GRPO) and report held-out FVE, controls and audit. ``--model censored``
    (the censored SmolLM2) trains LoRA adapters on the shipped teacher data and reads its lies;
    ``--model smollm2-135m`` without ``--texts`` trains the same LoRA recipe on the texts SmolLM2 wrote itself."""
    from probity import organisms, report
    from probity.models.client import ChatClient, EndpointError
    from probity.models.load import SMOLLM2, is_real
    from probity.nla.labellers import OpenAILabeller
    from probity.nla.pipeline import (
        GENERIC_SCHEDULE,
        INJECTIONS,
        LORA_SCHEDULE,
        SMOLLM2_LAYER,
        check_layer,
        estimate,
        run_censored,
        run_model,
        run_organism,
        run_smollm2,
        target_config,
    )
    from probity.nla.training import CheckpointMismatch, TrainConfig
    from probity.report.console import provenance

    # every setting is checked before any model loads
    for name, value in (("--steps", steps), ("--sft-steps", sft_steps)):
        if value < 1:
            fail(
                f"{name.lstrip('-')} must be >= 1, got {value}: the run reports held-out FVE after SFT and "
                "after GRPO, which need at least one step of each",
                name,
            )
    if keep_checkpoints is not None and keep_checkpoints < 1:
        fail(f"must keep at least 1 checkpoint (the run resumes from it), got {keep_checkpoints}", "--keep-checkpoints")
    writable(out, "--out", folder=True)
    writable(json_path, "--json")
    if bool(labeller_url) != bool(labeller_model):
        fail("give both --labeller-url and --labeller-model, or neither")
    if inject not in INJECTIONS:
        fail(f"unknown injection {inject!r}; choose from {', '.join(INJECTIONS)}", "--inject")
    with usage_errors():  # batch size, group, replay: TrainConfig's own checks
        cfg = TrainConfig(
            ar_sft_steps=sft_steps,
            av_sft_steps=sft_steps,
            rl_steps=steps,
            batch_size=batch_size,
            group=group,
            seed=seed,
            replay_coef=replay_coef,
            eval_every=max(1, (2 * sft_steps + steps) // 12),
        )
        labeller = OpenAILabeller(ChatClient(labeller_url, labeller_model, max_tokens=60)) if labeller_url else None
    with usage_errors("--model"):
        config = target_config(model)
        found = organisms.find(model)  # the censored_tiny organism (or a folder it was trained into) brings its data
        organism = found is not None and found[0] == "censored_tiny"
        censored = model == "censored"  # the shipped censored SmolLM2 and its teacher data
        real = is_real(model)
    # SmolLM2 with no corpus of the user's: the generic recipe on the texts it wrote itself (run_smollm2)
    own_texts = model == SMOLLM2 and texts is None and not labeller_url
    if censored and (texts is not None or labeller_url):
        fail("--texts and --labeller-url are for other models; the censored SmolLM2 brings its own data and labels")
    if organism and (texts is not None or labeller_url):
        fail(
            "--texts and --labeller-url are for real models; the censored_tiny organism brings its own data and labels"
        )
    corpus = None
    if texts is not None:
        if not texts.is_file():
            fail(f"no text file {texts}; give a text file with one training text per line", "--texts")
        with usage_errors("--texts"):
            corpus = [t for t in read_text(texts).splitlines() if t.strip()]
        if len(corpus) < 2:
            fail(
                f"{texts} holds {len(corpus) or 'no'} non-empty line{'s' if len(corpus) != 1 else ''}; give at "
                "least 2 (whole texts are held out for the held-out FVE)",
                "--texts",
            )
    with usage_errors("--layer"):  # the LoRA runs on SmolLM2 read the block their benchmarks and adapters use
        lay = check_layer(layer, config, model, default=SMOLLM2_LAYER if censored or own_texts else None)
    keep = keep_checkpoints or (1 if real else 2)
    rank = _join_launcher()
    if real and not censored and not own_texts:
        note(estimate(model, config, lay, cfg, keep, out, corpus).line())
    if censored or own_texts:
        bench, minutes = (LORA_SCHEDULE, "60-75") if censored else (GENERIC_SCHEDULE, "about 86")
        note(
            f"LoRA adapters on SmolLM2 ({'the censored organism' if censored else 'its own texts'}): "
            f"{sft_steps} AR-SFT + {sft_steps} AV-SFT + {steps} GRPO steps of {batch_size}; the benchmarked "
            f"{bench.ar_sft_steps} + {bench.av_sft_steps} + {bench.rl_steps} steps of "
            f"{bench.batch_size} take {minutes} minutes on 2 CPU cores"
        )
    loaded = {}
    if config is None or (organism and model != "censored_tiny"):  # a registered name, or a trained organism folder
        from probity.models import load

        loaded["model"], loaded["tokenizer"] = load(model)
        with usage_errors("--layer"):
            lay = check_layer(layer, loaded["model"].config, model)
    schedule = dataclasses.replace(  # the LoRA schedule of the SmolLM2 runs at the steps asked for
        LORA_SCHEDULE,
        **{k: getattr(cfg, k) for k in ("ar_sft_steps", "av_sft_steps", "rl_steps", "batch_size", "group")},
        seed=seed,
        eval_every=cfg.eval_every,
    )
    try:
        if censored:
            result, _, _ = run_censored(schedule, out, layer=lay, inject=inject, keep_checkpoints=keep)
        elif own_texts:
            result, _, _ = run_smollm2(schedule, out, layer=lay, inject=inject, keep_checkpoints=keep)
        elif organism:
            result, _, _ = run_organism(lay, cfg, out, keep_checkpoints=keep, target=model, **loaded)
        else:
            result, _, _ = run_model(
                model, lay, cfg, out, texts=corpus, labeller=labeller, keep_checkpoints=keep, **loaded
            )
    except (EndpointError, CheckpointMismatch) as err:
        fail(str(err))
    inputs = provenance(
        "nla train",
        model=model,
        layer=result.layer,
        steps=steps,
        sft_steps=sft_steps,
        batch_size=batch_size,
        group=group,
        replay=0.0 if censored or own_texts else replay_coef,  # the LoRA schedule replays nothing
        **({"inject": inject} if censored or own_texts else {}),  # only the LoRA runs inject into a block
        seed=seed,
        texts=None if texts is None else str(texts),
        labeller_model=labeller_model or None,
    )
    result.provenance = inputs
    if rank != 0:  # under torchrun / accelerate launch one process reports
        return
    html = report.save(result, out, title=f"NLA on {model}")
    _print_headline(result.metrics())
    if json_path is not None:
        report.write_json(json_path, {"provenance": inputs, **result.metrics()})
    console.print(f"[green]checkpoint:[/green] {result.checkpoint}   [green]report:[/green] {html}")


def _join_launcher() -> int:
    """Join the process group a launcher set up (``torchrun`` or ``accelerate launch``: WORLD_SIZE > 1 in
    the environment), so training averages gradients across the processes. gloo: ``nla train`` keeps
    its models on the CPU (a GPU run of the same loop needs each process's model on its LOCAL_RANK
    device, not wired here). Returns this process's rank (0 without a launcher)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank()


def _print_headline(metrics: dict) -> None:
    table = Table("metric", "value")
    for k, v in metrics.items():
        table.add_row(k, "-" if v is None else f"{v:.3f}")
    console.print(table)


def _check(checkpoint: Path, model_name: str):
    """(sidecar, target name) of a checkpoint, checked without loading a model: the checkpoint's
    files and sidecar, and that the target's config fits it (width and depth)."""
    from probity.nla.core import check_nla
    from probity.nla.pipeline import target_config

    with usage_errors("--checkpoint"):
        config = check_nla(checkpoint)
    name = model_name or config.target
    if not name:
        fail("the checkpoint does not name its target model; pass --model", "--model")
    with usage_errors("--model"):
        target = target_config(name)
    if target is not None:
        width, depth = target.hidden_size, target.num_hidden_layers
        if width != config.d_model or config.layer >= depth:
            fail(
                f"the checkpoint reads block {config.layer} of a model {config.d_model} wide; {name} is {width} "
                f"wide with {depth} blocks: pass the target it was trained on with --model",
                "--model",
            )
    return config, name


def _token_count(checkpoint: Path, text) -> int:
    """Tokens of ``text`` (a string or an :class:`probity.nla.evaluate.Chat`) as the verbalizer's
    tokenizer (a copy of the target's, or its base model's when the checkpoint holds adapters) counts
    them."""
    from transformers import AutoTokenizer

    from probity.models import load_tokenizer
    from probity.nla.core import ADAPTER, check_nla
    from probity.nla.evaluate import transcript_ids

    folder = checkpoint / "av" if (checkpoint / "av").is_dir() else checkpoint
    with usage_errors("--checkpoint"):
        if (folder / ADAPTER).is_file():  # adapters: the base model's tokenizer
            tokenizer = load_tokenizer(check_nla(checkpoint).base)
        else:
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder))
            except OSError as err:
                raise FileNotFoundError(f"no tokenizer in {folder} ({str(err).splitlines()[0]})") from None
    with usage_errors("--text"):
        return len(transcript_ids(tokenizer, text)[0])


def _load(checkpoint: Path, name: str):
    """(verbalizer, target, its tokenizer): the verbalizer alone (its folder ``av/`` holds its own
    sidecar), so the reconstructor, which explain and audit do not use, is never loaded."""
    from probity.models import load
    from probity.nla.core import load_nla

    with usage_errors("--checkpoint"):
        av, _ = load_nla(checkpoint / "av" if (checkpoint / "av").is_dir() else checkpoint)
    target, tokenizer = load(name)
    return av, target, tokenizer


@app.command()
def explain(
    checkpoint: Path = typer.Option(..., help="A trained NLA folder (OUT/nla of `probity nla train`)."),
    text: str = typer.Option(
        None,
        help="Text to explain; the tokenizer adds its special start token (for chat models include the chat "
        "template yourself, or give --question and --answer instead).",
    ),
    question: str = typer.Option(
        None, help="With --answer, instead of --text: a chat, rendered with the target's chat template."
    ),
    answer: str = typer.Option(None, help="The assistant's answer to --question (its tokens are described)."),
    position: int = typer.Option(
        None,
        show_default="all positions",
        help="Only this token position (negative counts from the end; a chat ends with its end-of-turn token). "
        "Left out: every token of --text, the answer's tokens of a chat.",
    ),
    model: str = typer.Option("", show_default="the one named in the checkpoint", help="Target model."),
) -> None:
    """Print the verbalizer's description of each token's activation. On the censored SmolLM2, e.g.
    ``--checkpoint probity/nla/checkpoints/censored_smollm2_subject --model censored --question Q --answer A``
    (the subject reader); behind a lie, read the row of the subject's last token in the answer: there it names
    the withheld true value on more than half of the held-out lies, where the answer's last tokens read mostly
    the token and the topic. Its behaviour field is not the audit's: flag lies with ``probity nla audit
    --likelihood --checkpoint probity/nla/checkpoints/censored_smollm2`` (docs/design/nla-issue14.md, sections
    g, n and o)."""
    from probity.nla.evaluate import Chat
    from probity.nla.evaluate import explain as run

    chat = None
    if (question is None) != (answer is None):
        fail(
            "give --question and --answer together (a chat), or --text", "--answer" if answer is None else "--question"
        )
    if question is not None:
        if text is not None:
            fail("give --text or --question and --answer, not both", "--text")
        for flag, value in (("--question", question), ("--answer", answer)):
            if not value.strip():
                fail(f"the {flag.lstrip('-')} is empty; give the chat's {flag.lstrip('-')}", flag)
        chat = Chat(question, answer)
    elif text is None:
        fail("give --text, or --question and --answer (a chat), to explain", "--text")
    elif not text.strip():
        fail("the text is empty; give the text whose tokens to describe", "--text")
    _, name = _check(checkpoint, model)
    if position is not None:
        n = _token_count(checkpoint, chat or text)
        if not -n <= position < n:
            fail(
                f"position {position} is out of range: the {'chat' if chat else 'text'} has {n} tokens (0..{n - 1}, "
                f"or -{n}..-1 from the end); leave it out for every {'answer token' if chat else 'token'}",
                "--position",
            )
    av, target, tokenizer = _load(checkpoint, name)
    positions = ("answer" if chat else "all") if position is None else position
    table = Table("pos", "token", "description")
    with usage_errors("--text"):
        found = run(target, tokenizer, av, chat or text, positions, progress=True)
    for e in found:
        table.add_row(str(e.position), e.token, e.description)
    console.print(table)


@app.command()
def audit(
    checkpoint: Path = typer.Option(..., help="A trained NLA folder (OUT/nla of `probity nla train`)."),
    transcripts: Path = typer.Option(
        ...,
        help='.jsonl with {"text"} or {"question", "answer"} (a chat) and an optional "label": 0|1 per line, '
        "or .txt with one transcript per line.",
    ),
    concept: str = typer.Option(
        ..., help="Phrase to look for in the descriptions, e.g. 'lie'; with --likelihood: lie, honest or refusal."
    ),
    likelihood: bool = typer.Option(
        False,
        "--likelihood",
        help="Score p(concept) at the behaviour field of the verbalizer's labels at the answer tokens --window "
        "reads, beside "
        "the same score with the activation hidden (the token-only control); for checkpoints trained on the "
        "censored SmolLM2's teacher data (their sidecar's target is censored).",
    ),
    threshold: float = typer.Option(
        None,
        show_default="0.5",
        help="--likelihood: flag a transcript whose mean p(concept) over the answer tokens read is above this.",
    ),
    calibrate: Path = typer.Option(
        None,
        help="--likelihood: labelled transcripts (every line with a 0/1 label, both classes; not the ones audited) "
        "to choose the threshold on: the cut of highest balanced accuracy on their scores.",
    ),
    window: str = typer.Option(
        None,
        show_default="the checkpoint's window.json, else all",
        help="--likelihood: the answer tokens to read: LAST (the last LAST), LAST,SKIP (the last LAST before the "
        "final SKIP; 2,2 reads a chat's stated value, before its full stop and end of turn) or all.",
    ),
    model: str = typer.Option("", show_default="the one named in the checkpoint", help="Target model."),
    out: Path = typer.Option(
        None, help="Write result.json (with the inputs: checkpoint, transcripts, concept) and index.html here."
    ),
) -> None:
    """Describe every token of every transcript and flag those whose description mentions the concept;
    with --likelihood, score the answer of every transcript for a behaviour of the censored SmolLM2
    (lie, honest, refusal) and report its token-only control beside it (--calibrate chooses the flag's
    threshold on other, labelled transcripts)."""
    from probity import report
    from probity.nla.evaluate import read_transcripts
    from probity.report.console import provenance

    if not concept.strip():
        fail("the concept is empty; give a phrase to look for, e.g. 'lie'", "--concept")
    if likelihood:
        from probity.nla.censored import BEHAVIOURS

        if concept not in BEHAVIOURS:
            fail(
                f"--likelihood scores a behaviour of the labels: {', '.join(BEHAVIOURS)}; got {concept!r}", "--concept"
            )
        if threshold is not None and not 0 <= threshold <= 1:
            fail(f"the threshold is a probability in [0, 1], got {threshold}", "--threshold")
        if threshold is not None and calibrate is not None:
            fail("give --threshold or --calibrate (which chooses the threshold), not both", "--calibrate")
        reads = _window(window)
    elif window is not None:
        fail("--window is for --likelihood (the description audit reads every token)", "--window")
    elif threshold is not None:
        fail("--threshold is for --likelihood (the description audit flags tokens, not transcripts)", "--threshold")
    elif calibrate is not None:
        fail("--calibrate is for --likelihood (it chooses the threshold on transcript scores)", "--calibrate")
    writable(out, "--out", folder=True)
    with usage_errors("--transcripts"):
        texts, labels = read_transcripts(transcripts)
    reference = None
    if calibrate is not None:
        with usage_errors("--calibrate"):
            reference = read_transcripts(calibrate)
        if any(lab is None for lab in reference[1]) or len(set(reference[1])) != 2:
            fail(f"{calibrate}: every line needs a 0/1 label, and both classes must be there", "--calibrate")
    config, name = _check(checkpoint, model)
    if likelihood and config.target != "censored":
        fail(
            f"--likelihood reads the behaviour field of the censored SmolLM2's labels; this checkpoint was "
            f"trained on {config.target or 'an unnamed target'}",
            "--checkpoint",
        )
    if likelihood and window is None:
        from probity.nla.censored import load_window

        with usage_errors("--checkpoint"):
            reads = load_window(checkpoint)
    av, target, tokenizer = _load(checkpoint, name)
    inputs = {"checkpoint": str(checkpoint), "model": name, "transcripts": str(transcripts), "concept": concept}
    if likelihood:
        inputs |= {"window": "all" if reads is None else str(reads)}
        if reference is not None:
            threshold = _calibrated(av, target, tokenizer, *reference, concept, reads)
            inputs |= {"calibrate": str(calibrate)}
        threshold = 0.5 if threshold is None else threshold
        _likelihood_audit(av, target, tokenizer, texts, labels, concept, threshold, inputs, out, reads)
        return
    from probity.nla.evaluate import audit as run

    result = run(target, tokenizer, av, texts, concept, labels, progress=True)
    result.provenance = provenance("nla audit", **inputs, layer=av.config.layer)
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


def _window(text: str | None):
    """``--window``: ``LAST``, ``LAST,SKIP`` or ``all`` as a :class:`probity.nla.censored.Window` (None: every
    answer token, or the checkpoint's window where ``text`` is None)."""
    from probity.nla.censored import Window

    if text is None or text.strip() == "all":
        return None
    try:
        return Window(*(int(k) for k in text.split(",")))
    except (TypeError, ValueError) as e:
        fail(f"--window is LAST, LAST,SKIP or all (e.g. 2,2), got {text!r}: {e}", "--window")


def _calibrated(av, target, tokenizer, texts, labels, concept, window) -> float:
    """``--calibrate``: the threshold of highest balanced accuracy on the scores of labelled ``texts``
    (:func:`probity.report.metrics.youden_threshold`) read at ``window``, printed with that accuracy."""
    from probity.nla.censored import likelihood_audit
    from probity.report.metrics import balanced_accuracy, youden_threshold

    with usage_errors("--calibrate"):
        found = likelihood_audit(target, tokenizer, av, texts, labels, concept, progress=len(texts) > 4, window=window)
    scores, truth = [row.score for row in found.per_transcript], [bool(lab) for lab in labels]
    cut = youden_threshold(scores, truth)
    if cut is None:
        fail("no threshold on the calibration transcripts' scores does better than chance", "--calibrate")
    cut = min(max(cut, 0.0), 1.0)
    accuracy = balanced_accuracy([x > cut for x in scores], truth)
    console.print(
        f"threshold {cut:g}: the best cut on {len(texts)} calibration transcripts (balanced accuracy {accuracy:.3f})"
    )
    return cut


def _likelihood_audit(av, target, tokenizer, texts, labels, concept, threshold, inputs, out, window) -> None:
    """``probity nla audit --likelihood``: run :func:`probity.nla.censored.likelihood_audit` at ``window`` (None:
    every answer token), print one row per transcript and the AUROC beside its token-only control, and save the
    report to ``out``."""
    from probity import report
    from probity.nla.censored import likelihood_audit
    from probity.nla.evaluate import Chat
    from probity.report.console import provenance

    with usage_errors("--transcripts"):
        result = likelihood_audit(
            target, tokenizer, av, texts, labels, concept, threshold, progress=len(texts) > 4, window=window
        )
    result.provenance = provenance("nla audit", **inputs, likelihood=True, threshold=threshold, layer=av.config.layer)
    table = Table(
        "transcript", "label", f"p({concept})", "token only", "flagged", "top token", "answer", title="likelihood audit"
    )
    for row, text in zip(result.per_transcript, texts):
        top = max(range(len(row.p)), key=row.p.__getitem__)
        answer = text.answer if isinstance(text, Chat) else tokenizer.convert_tokens_to_string(row.tokens)
        table.add_row(
            str(row.index),
            "-" if row.label is None else str(row.label),
            f"{row.score:.2f}",
            f"{row.token_only:.2f}",
            "yes" if row.flagged else "",
            f"{tokenizer.convert_tokens_to_string([row.tokens[top]]).strip()} {row.p[top]:.2f}",
            " ".join(answer.split())[:60],
        )
    console.print(table)
    line = (
        f"{result.flagged}/{result.transcripts} transcripts flagged (mean p({concept}) over "
        + ("the answer" if window is None else f"the answer's {window}")
        + f" > {threshold:g})"
    )
    if result.auroc is None:
        line += "; no AUROC: give every transcript a 0/1 label, both classes"
    else:
        lo, hi = result.ci
        c_lo, c_hi = result.token_only_ci
        line += (
            f"; AUROC {result.auroc:.3f} [{lo:.2f}, {hi:.2f}]; token-only control (every activation replaced by "
            f"their mean) {result.token_only_auroc:.3f} [{c_lo:.2f}, {c_hi:.2f}]"
        )
    console.print(line)
    if result.auroc is not None and result.token_only_auroc >= result.auroc - 0.1:
        note(
            f"the token-only control ({result.token_only_auroc:.3f}) is not 0.1 below the audit "
            f"({result.auroc:.3f}): the audit reads no more from the activation than from the answer's tokens"
        )
    if out is not None:
        console.print(f"[green]report:[/green] {report.save(result, out, title=f'NLA likelihood audit: {concept}')}")
