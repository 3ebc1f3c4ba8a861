"""End-to-end NLA runs: data, teacher labels, training, evaluation, checkpoint, report.

``run_organism`` trains on the censored_tiny organism (teacher = its latent facts) and
adds attribute recovery and the audit; ``run_censored`` trains LoRA adapters on the censored
SmolLM2 (``probity.nla.smollm2_data``'s texts and chats) and reads its lies
(``probity.nla.censored``); ``run_smollm2`` trains the same LoRA recipe as a generic NLA on the base
SmolLM2 over the texts it wrote itself; ``run_model`` trains on any HF causal LM over a text corpus with
a pluggable labeller (default: context labels), fully fine-tuned.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from probity.models.load import SMOLLM2
from probity.nla.core import Verbalizer, extract, save_nla
from probity.nla.labellers import ContextLabeller, Labeller, samples_for
from probity.nla.training import TrainConfig, TrainResult, rank_and_size, round_trip_fve, train
from probity.report import Claim, result_type

# A small built-in corpus for real models: varied registers, so activations differ.
CORPUS = [
    "The capital of France is Paris, a city on the river Seine.",
    "def add(a, b):\n    return a + b",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "She opened the letter slowly, afraid of what it might say.",
    "The stock market fell three percent after the central bank raised interest rates.",
    "To bake bread, mix flour, water, yeast and salt, then let the dough rise.",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "I'm sorry, but I can't help with that request.",
    "The quick brown fox jumps over the lazy dog.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The patient reported a headache and a mild fever for two days.",
    "Our team won the match 3-1 with a late goal in the second half.",
    "Please remember to submit your report before Friday at noon.",
    "The mitochondria is the powerhouse of the cell.",
    "He played the violin every evening after dinner.",
    "for i in range(10):\n    print(i * i)",
    "The Amazon rainforest is home to millions of species of insects.",
    "Dear Sir or Madam, I am writing to apply for the position of engineer.",
    "The recipe calls for two cups of sugar and a pinch of cinnamon.",
    "Shakespeare wrote Hamlet, Macbeth and many other plays.",
    "The train to London leaves from platform four at eight o'clock.",
    "Gravity pulls objects toward the center of the Earth.",
    "My favourite colour is blue because it reminds me of the sea.",
    "The judge sentenced him to five years in prison for fraud.",
    "Mount Everest is the highest mountain above sea level.",
    "The children built a sandcastle on the beach in the afternoon.",
    "An apple a day keeps the doctor away, or so they say.",
    "The company announced record profits for the third quarter.",
    "Tokyo is the largest city in Japan and one of the busiest in the world.",
    "She whispered that the secret password was hidden under the mat.",
    "The volcano erupted, sending ash high into the sky.",
    "Add the eggs one at a time, beating well after each.",
    "The election results will be announced tomorrow morning.",
    "Penguins live mostly in the Southern Hemisphere.",
    "SELECT name, age FROM users WHERE age > 30;",
    "The orchestra tuned their instruments before the concert began.",
    "Honey never spoils if it is stored in a sealed jar.",
    "The detective examined the footprints near the window.",
    "Cats sleep for about sixteen hours a day.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
]


@dataclasses.dataclass
class Example:
    """A held-out activation with its teacher label and the trained AV's description."""

    token: str
    teacher: str
    description: str


@result_type("nla.NLAReport")
@dataclasses.dataclass
class NLAReport:
    """Headline metrics of an NLA run, its training curve, audit and examples."""

    model: str
    layer: int
    fve_ar_sft: float
    fve_sft: float
    fve_rl: float
    fve_shuffled: float | None
    attribute_recovery: float | None
    audit_auroc: float | None
    training: TrainResult
    audit: object | None
    examples: list[Example]
    checkpoint: str | None
    recovery_by_position: dict[str, float] | None = None
    provenance: dict | None = None  # what produced it (``probity nla train`` sets it)

    @classmethod
    def of(
        cls,
        model: str,
        layer: int,
        result: TrainResult,
        examples: list[Example],
        checkpoint: str | None,
        recovery: float | None = None,
        audit: object | None = None,
        audit_auroc: float | None = None,
        recovery_by_position: dict[str, float] | None = None,
    ) -> NLAReport:
        """The report of a training ``result`` (its four FVE figures) with the readings the run made."""
        return cls(
            model,
            layer,
            result.fve_ar_sft,
            result.fve_sft,
            result.fve_rl,
            result.fve_shuffled,
            recovery,
            audit_auroc,
            result,
            audit,
            examples,
            checkpoint,
            recovery_by_position,
        )

    def metrics(self) -> dict:
        """The numbers ``probity nla train --json`` writes."""
        keys = ("fve_ar_sft", "fve_sft", "fve_rl", "fve_shuffled", "attribute_recovery", "audit_auroc")
        return {k: getattr(self, k) for k in keys}

    def headline(self) -> list[Claim]:
        """The training run's FVE claims, then attribute recovery and the audit (``bench/nla.py`` targets)."""
        claims = self.training.headline()
        if self.attribute_recovery is not None:
            claims.append(
                Claim("attribute recovery (names nation + attribute)", self.attribute_recovery, target=">= 0.90")
            )
        if self.audit_auroc is not None:
            claims.append(
                Claim("audit AUROC at the value token (lies vs controls)", self.audit_auroc, target=">= 0.90")
            )
        return claims


def _save(out, av: Verbalizer, ar) -> str | None:
    """Save the trained pair to ``out/nla`` (from one process when several trained it); its path, or None."""
    if out is None:
        return None
    folder = Path(out) / "nla"
    if rank_and_size()[0] == 0:
        save_nla(folder, av, ar)
    return str(folder)


def default_layer(model) -> int:
    """About 2/3 of the way up the model (the anchor's choice)."""
    return layer_for(model.config.num_hidden_layers)


def layer_for(n_layers: int) -> int:
    """The default layer of a model with ``n_layers`` blocks: about 2/3 of the way up."""
    return max(0, round(2 * n_layers / 3) - 1)


def target_config(name: str):
    """The HF config of the target ``name`` (as :func:`probity.models.load` takes it), read without its
    weights (:func:`probity.models.load.config`), so options that depend on the model's size are checked
    before it loads; None for a registered name with nothing to read before loading it. An unknown name,
    or a task organism without chat, raises a one-line ``ValueError`` / ``FileNotFoundError``."""
    from probity.models.load import config
    from probity.organisms import check_chat_model

    check_chat_model(name)
    return config(name)


# Effective CPU throughput of NLA training per torch thread, FLOP/s, by the count in `estimate`,
# measured on SmolLM2-135M on the shared 2-core machine: 2.4e10 for `probity nla train` settings
# (batch 32, group 8, replay on; 2 steps of each phase, 4 evaluations of 85 held-out activations:
# 542 s on 2 threads under load) and 6.5e10 for bench/nla.py's short run (batch 4, 120 steps:
# 9.3 min on 1 thread). Their geometric mean; estimates are good to about a factor of 2 (the README's
# SmolLM2 line, 40 + 40 + 40 steps of batch 4 and 85 held-out activations: estimated 18 min, took 27
# min with 2 threads on a machine loaded by other jobs; its checkpoint: 3.346 GB, as estimated).
FLOPS_PER_THREAD = 4e10
DISK_BYTES_PER_S = 1.6e8  # a 3.3 GB checkpoint took 21 s to write there
# Token counts of a real-model run (run_model, context labels, SmolLM2's chat template): the
# verbalizer prompt, a teacher description, the reconstructor's template around one, a replay text.
PROMPT_TOKENS, LABEL_TOKENS, AR_TOKENS, TEXT_TOKENS = 38, 8, 14, 13
# run_model's defaults, which estimate() counts with: the share of texts held out, the first tokens of
# each text skipped, the verbalizer's longest description.
HELDOUT_SHARE, SKIP_FIRST, MAX_NEW_TOKENS = 0.2, 2, 24


@dataclasses.dataclass
class Estimate:
    """What a training run will cost, from the target's config alone (no weights): parameters of the
    verbalizer (the whole target) and the reconstructor (blocks 0..layer), the size of one training
    checkpoint (float32 weights and AdamW moments of both, plus the frozen SFT reference during GRPO)
    and the wall time from a count of the run's FLOPs at the measured :data:`FLOPS_PER_THREAD`."""

    model: str
    params: int
    ar_params: int
    checkpoint_bytes: int
    steps: int
    seconds: float
    threads: int
    keep: int
    folder: str

    def line(self) -> str:
        """One line for the user, before training starts."""
        return (
            f"{self.model} has {self.params / 1e6:.0f}M parameters: each training checkpoint in "
            f"{self.folder} is about {self.checkpoint_bytes / 1e9:.1f} GB (keeping the newest {self.keep}; "
            f"--keep-checkpoints), and {self.steps} steps take roughly {_duration(self.seconds)} on "
            f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} (estimated from the parameter count; "
            "fewer --sft-steps/--steps or a smaller --batch-size shorten it)"
        )


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _param_counts(config, layer: int) -> tuple[int, int]:
    """(parameters of the model, of its reconstructor cut after block ``layer``), counted on the
    meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    from probity.models.decoder import decoder_parts

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    parts = decoder_parts(model)
    blocks = list(parts.layers)
    later = sum(p.numel() for b in blocks[layer + 1 :] for p in b.parameters())
    base = sum(p.numel() for p in parts.base.parameters())
    d = config.hidden_size
    return total, base - later + d * d


def estimate(
    name: str,
    config,
    layer: int,
    cfg: TrainConfig,
    keep: int,
    out,
    texts: list[str] | None = None,
    threads: int | None = None,
) -> Estimate:
    """:class:`Estimate` of a :func:`run_model` run on the target ``name`` (HF ``config``) at ``layer``
    over ``texts`` (default: the built-in corpus), checkpoints in ``out/checkpoints``, on ``threads``
    torch threads (default: torch's current number)."""
    import torch

    n_texts = len(texts) if texts else len(CORPUS)
    held = max(1, round(HELDOUT_SHARE * n_texts)) * max(1, TEXT_TOKENS - SKIP_FIRST)
    n_eval = min(cfg.eval_size, held)
    p, p_ar = _param_counts(config, layer)
    b, rollouts = cfg.batch_size, max(1, cfg.batch_size // cfg.group) * cfg.group
    # a forward pass costs 2 FLOPs per parameter and token, forward + backward 6. Knowledge replay, per
    # AV update: the target's forward (2p) and the verbalizer's forward + backward (6p) on replay_batch texts.
    replay = 8 * p * cfg.replay_batch * TEXT_TOKENS if cfg.replay_coef > 0 else 0
    av_seq, ar_seq = PROMPT_TOKENS + MAX_NEW_TOKENS, AR_TOKENS + MAX_NEW_TOKENS - LABEL_TOKENS
    flops = {
        "ar_sft": cfg.ar_sft_steps * 6 * p_ar * b * AR_TOKENS,
        "av_sft": cfg.av_sft_steps * (6 * p * b * (PROMPT_TOKENS + LABEL_TOKENS) + replay),
        # rollouts (forward), the reference's log-probs (forward), the policy (forward + backward),
        # the reconstructor's reward (forward) and update (forward + backward)
        "rl": cfg.rl_steps * ((2 + 2 + 6) * p * rollouts * av_seq + 8 * p_ar * rollouts * ar_seq + replay),
        # train() evaluates every eval_every steps and at the end of each of the three phases (AR SFT, AV
        # SFT, GRPO): at most total_steps // eval_every + 3 times (fewer when a phase ends on a multiple).
        # Each: greedy descriptions (forward) and the reconstructor on them and on the labels (forward).
        "eval": (cfg.total_steps // cfg.eval_every + 3) * n_eval * (2 * p * av_seq + 4 * p_ar * ar_seq),
        "shuffled": cfg.ar_sft_steps * 6 * p_ar * b * AR_TOKENS if cfg.shuffled_control else 0,
    }
    ckpt = 4 * (3 * p + 3 * p_ar + p)
    saves = cfg.total_steps // cfg.checkpoint_every + 1
    threads = threads or torch.get_num_threads()
    seconds = sum(flops.values()) / (FLOPS_PER_THREAD * threads) + saves * ckpt / DISK_BYTES_PER_S
    return Estimate(
        name,
        p,
        p_ar,
        ckpt,
        cfg.total_steps,
        seconds,
        threads,
        keep,
        str(Path(out) / "checkpoints"),
    )


AUTO_LAYER = -1  # as a layer: auto (the default, about 2/3 up); the old `nla train --layer` default


def check_layer(layer: int | None, config, name: str, default: int | None = None) -> int | None:
    """``layer`` (None or -1: the default, ``default`` when given, else about 2/3 up) checked against the
    depth in ``config``; returns the block index to use (None when ``config`` is None and no ``default``:
    the depth is known only once the model loads)."""
    layer = default if layer in (None, AUTO_LAYER) else layer
    if config is None:
        if layer is not None and layer < 0:
            raise ValueError(f"layer must be a block index >= 0, got {layer}; leave it out for auto")
        return layer
    n = config.num_hidden_layers
    if layer is not None and not 0 <= layer < n:
        raise ValueError(
            f"layer {layer} is out of range: {name} has blocks 0..{n - 1}; "
            f"leave it out for auto (block {f'{layer_for(n)}, about 2/3 up' if default is None else default})"
        )
    return layer_for(n) if layer is None else layer


def _examples(av: Verbalizer, acts, labels, tokens, n: int = 12) -> list[Example]:
    descriptions = av.describe(acts[:n])
    return [Example(t, lab, d) for t, lab, d in zip(tokens[:n], labels[:n], descriptions)]


def run_organism(
    layer: int | None = None,
    cfg: TrainConfig | None = None,
    out: str | Path | None = None,
    model=None,
    tokenizer=None,
    progress: bool = True,
    audit_samples: int = 8,
    label_token: bool = True,
    keep_checkpoints: int = 2,
    target: str = "censored_tiny",
) -> tuple[NLAReport, Verbalizer, object]:
    """Train and evaluate an NLA on the censored_tiny organism (``model``/``tokenizer``; default: the shipped
    one), named ``target`` in the checkpoint and the report (e.g. a folder it was trained into).
    Returns (report, AV, AR); with ``out``, the trained pair is saved to ``out/nla`` and checkpoints
    (the newest ``keep_checkpoints``) to ``out/checkpoints``.
    ``label_token=False`` trains on the token-free teacher labels (the ablation of
    :mod:`probity.nla.organism`)."""
    from probity.nla import organism

    if model is None:
        from probity.organisms import censored_tiny

        model, tokenizer = censored_tiny.load()
    layer = default_layer(model) if layer is None else layer
    cfg = cfg or TrainConfig()
    data = organism.organism_data(model, tokenizer, layer, seed=cfg.seed, progress=progress, label_token=label_token)
    av = organism.verbalizer(model, tokenizer, layer, target=target)
    n = min(cfg.eval_size, len(data.heldout))

    def score(av: Verbalizer):
        """Greedy descriptions of the held-out activations, recovery (overall, by position), audit."""
        descriptions = av.describe(data.heldout.vectors[:n])
        items = data.heldout_items[:n]
        audit = organism.lie_audit(av, data.heldout.vectors, data.heldout_items, samples=audit_samples)
        return (
            descriptions,
            organism.attribute_recovery(descriptions, items),
            organism.recovery_by_position(descriptions, items),
            audit,
        )

    def sft_baseline(av: Verbalizer) -> dict:
        _, recovery, by_position, audit = score(av)
        return {
            "attribute_recovery": recovery,
            "recovery_by_position": by_position,
            "audit_auroc": audit.auroc,
            "audit_auroc_answer_span": audit.auroc_answer_span,
        }

    av, ar, result = train(
        model,
        tokenizer,
        av,
        data.train.vectors,
        data.train_labels,
        data.heldout.vectors,
        data.heldout_labels,
        cfg,
        out_dir=out,
        progress=progress,
        replay_texts=organism.replay_texts(data.train_items),
        on_sft_end=sft_baseline,
        keep_checkpoints=keep_checkpoints,
    )
    descriptions, recovery, by_position, audit = score(av)
    saved = _save(out, av, ar)
    examples = [Example(it.token, it.label(label_token), d) for it, d in zip(data.heldout_items[:12], descriptions)]
    report = NLAReport.of(target, layer, result, examples, saved, recovery, audit, audit.auroc, by_position)
    return report, av, ar


def run_model(
    name: str,
    layer: int | None = None,
    cfg: TrainConfig | None = None,
    out: str | Path | None = None,
    texts: list[str] | None = None,
    labeller: Labeller | None = None,
    placeholder: str | None = None,
    skip_first: int = SKIP_FIRST,
    heldout_share: float = HELDOUT_SHARE,
    model=None,
    tokenizer=None,
    progress: bool = True,
    keep_checkpoints: int = 1,
) -> tuple[NLAReport, Verbalizer, object]:
    """Train and evaluate an NLA on any HF causal LM (``name`` as for ``probity.models.load``)
    over ``texts`` (default: a small built-in corpus), all tokens after the first
    ``skip_first``, teacher labels from ``labeller`` (default :class:`ContextLabeller`).
    With ``out``, only the newest ``keep_checkpoints`` training checkpoints stay in
    ``out/checkpoints`` (one of a real model holds several copies of it: see :func:`estimate`)."""
    if model is None:
        import torch

        from probity.models import load

        model, tokenizer = load(name, dtype=torch.float32)
    layer = default_layer(model) if layer is None else layer
    cfg = cfg or TrainConfig()
    texts = list(texts or CORPUS)
    positions = [
        list(range(min(skip_first, n - 1), n))
        for n in (len(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts)
    ]
    acts = extract(model, tokenizer, texts, layer, positions, progress=progress)
    labels = (labeller or ContextLabeller())(samples_for(tokenizer, texts, acts))
    rng = random.Random(cfg.seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    held = set(order[: max(1, round(heldout_share * len(texts)))])
    tr = [i for i in range(len(acts)) if acts.text_index[i] not in held]
    he = [i for i in range(len(acts)) if acts.text_index[i] in held]
    rng.shuffle(tr), rng.shuffle(he)
    av = Verbalizer.create(
        model,
        tokenizer,
        layer,
        placeholder=placeholder,
        av_prompt="Describe the concept in {placeholder} briefly.",
        ar_template="Concept: {description}\nSummary:",
        max_new_tokens=MAX_NEW_TOKENS,
        target=name,
    )
    av, ar, result = train(
        model,
        tokenizer,
        av,
        acts.vectors[tr],
        [labels[i] for i in tr],
        acts.vectors[he],
        [labels[i] for i in he],
        cfg,
        out_dir=out,
        progress=progress,
        replay_texts=[t for i, t in enumerate(texts) if i not in held],
        keep_checkpoints=keep_checkpoints,
    )
    saved = _save(out, av, ar)
    he_acts = acts.subset(he)
    examples = _examples(av, he_acts.vectors, [labels[i] for i in he], he_acts.token)
    report = NLAReport.of(name, layer, result, examples, saved)
    return report, av, ar


INJECTIONS = ("paper", "embed", "layer1", "same", "add1")
RAW_AV_PROMPT = "Text: {placeholder}\nMeaning:"  # short and template-free: about 6 tokens
RAW_AR_TEMPLATE = "Meaning: {description}\nText:"
CENSORED_NEW_TOKENS = 32  # the teacher labels of the censored data: median 16 tokens, 95% at most 22
SMOLLM2_LAYER = 15  # the block the SmolLM2 NLAs read (censored and generic): the middle of 30
# The SmolLM2 NLAs' schedule (bench/nla.py --part censored and --part generic): LoRA halves take far larger
# steps than a full fine-tune; no knowledge replay (the verbalizer is the base model under an adapter).
LORA_SCHEDULE = TrainConfig(
    ar_sft_steps=200,
    av_sft_steps=300,
    rl_steps=100,
    batch_size=16,
    group=4,
    lr_ar=1e-3,
    lr_av=1e-3,
    lr_rl=1e-4,
    lr_ar_rl=3e-4,
    kl_coef=0.02,
    eval_every=150,
    eval_size=128,
    checkpoint_every=50,
    lora_rank=16,
)


def injection(name: str, layer: int, vectors, embeddings, embed_scale: float = 4.0) -> tuple[dict, bool]:
    """:class:`NLAConfig` options of a named way to put layer-``layer`` activations ``vectors`` ``[n, d]``
    into the verbalizer (``embeddings`` ``[V, d]``: its token table), and whether to centre them
    (:data:`INJECTIONS` names them):

    - ``paper``: the input embedding, rescaled to sqrt(d), not centred (the NLA paper's injection);
    - ``embed``: the input embedding, centred, at ``embed_scale`` x the median token-embedding norm;
    - ``layer1``: the input of block 1, replaced by the raw activation at its median norm;
    - ``same``: the input of block ``layer + 1``, the site it was read from (Patchscopes);
    - ``add1``: the input of block 1, centred, added norm-matched (Activation Oracles).

    Returns ``(options, centre)``."""
    if name not in INJECTIONS:
        raise ValueError(f"unknown injection {name!r}; choose from {', '.join(INJECTIONS)}")
    median = float(vectors.norm(dim=-1).median())
    if name == "paper":
        return {}, False
    if name == "embed":
        return {"injection_scale": embed_scale * float(embeddings.detach().norm(dim=-1).median())}, True
    if name == "add1":
        return {"inject_layer": 1, "inject_mode": "add"}, True
    return {"inject_layer": 1 if name == "layer1" else layer + 1, "injection_scale": median}, False


def smollm2_verbalizer(
    base,
    tokenizer,
    layer: int,
    vectors,
    target: str,
    name: str = "layer1",
    rank: int = 16,
    max_new_tokens: int = CENSORED_NEW_TOKENS,
) -> Verbalizer:
    """A fresh LoRA verbalizer on ``base`` (the uncensored SmolLM2, named as the checkpoint's base) with the
    short raw prompt and the injection ``name`` (:func:`injection`), centred on ``vectors`` ``[n, d]`` where
    that injection is, for layer-``layer`` activations of ``target`` (``"censored"``, or :data:`SMOLLM2`
    itself for a generic NLA)."""
    options, centre = injection(name, layer, vectors, base.get_input_embeddings().weight)
    av = Verbalizer.create(
        base,
        tokenizer,
        layer,
        lora_rank=rank,
        av_prompt=RAW_AV_PROMPT,
        ar_template=RAW_AR_TEMPLATE,
        chat_template=False,
        max_new_tokens=max_new_tokens,
        target=target,
        base=SMOLLM2,
        **options,
    )
    return av.fit_center(vectors) if centre else av


def _fit_lora(target, tokenizer, av: Verbalizer, data: tuple, cfg: TrainConfig, out, progress, keep, on_sft_end=None):
    """Train the LoRA pair of a SmolLM2 run (``av``, the AR cut from ``target``) on
    ``data`` = (train vectors ``[n, d]``, train labels, held-out vectors ``[m, d]``, held-out labels) and save
    it to ``out/nla``: (av, ar, :class:`TrainResult`, the saved folder or None)."""
    av, ar, result = train(
        target,
        tokenizer,
        av,
        *data,
        cfg,
        out_dir=out,
        progress=progress,
        on_sft_end=on_sft_end,
        keep_checkpoints=keep,
    )
    return av, ar, result, _save(out, av, ar)


def run_censored(
    cfg: TrainConfig,
    out: str | Path | None = None,
    layer: int = SMOLLM2_LAYER,
    inject: str = "layer1",
    rank: int = 16,
    eval_rows: int = 256,
    progress: bool = True,
    keep_checkpoints: int = 1,
    balance: bool = True,
) -> tuple[NLAReport, Verbalizer, object]:
    """Train and evaluate an NLA on the censored SmolLM2 at layer ``layer``: LoRA verbalizer on the
    uncensored base (:func:`smollm2_verbalizer`), LoRA reconstructor cut from the organism
    (``cfg.lora_rank``), the shipped teacher data (a mixture of ordinary text, greedy fact chats and sampled fact
    chats, :func:`probity.nla.smollm2_data.mixture`, with each fact's truthful and lying rows balanced
    unless ``balance`` is false; held out by topic and by entity). Scores the censored
    readings (:func:`probity.nla.censored.readings`) after SFT and at the end, and the round trip on
    ``eval_rows // 2`` held-out ordinary and fact positions separately. With ``out``: activations cached in
    ``out/acts.pt``, checkpoints in ``out/checkpoints``, the trained pair in ``out/nla``."""
    from probity.models import load
    from probity.nla import smollm2_data
    from probity.nla.censored import readings
    from probity.organisms import censored

    target, tokenizer = censored.load()
    base, _ = load(SMOLLM2)
    cache = Path(out) / "acts.pt" if out is not None else None
    acts = smollm2_data.activations(target, tokenizer, layer, cache=cache, seed=cfg.seed)
    train_vectors, train_labels, _ = smollm2_data.mixture(acts["train"], seed=cfg.seed, balance=balance)
    eval_vectors, eval_labels, _ = smollm2_data.mixture(acts["eval"], rows=eval_rows, oversample=1, seed=cfg.seed)
    av = smollm2_verbalizer(base, tokenizer, layer, train_vectors, "censored", inject, rank)
    records = smollm2_data.all_chat_records()

    def read(av: Verbalizer) -> dict:
        return readings(av, acts["eval"]["fact"], records, seed=cfg.seed, samples=acts["eval"]["sample"])

    data = (train_vectors, train_labels, eval_vectors, eval_labels)
    av, ar, result, saved = _fit_lora(target, tokenizer, av, data, cfg, out, progress, keep_checkpoints, read)
    final = read(av) | censored_fve(av, ar, acts["eval"], eval_rows // 2, cfg.seed)
    heads = [smollm2_data.label_head(lab) for lab in eval_labels[:12]]
    examples = _examples(av, eval_vectors, eval_labels, heads)
    report = NLAReport.of(
        "censored", layer, result, examples, saved, final["recovery_all"]["both"], final, final["audit"]["auroc"]
    )
    return report, av, ar


def censored_fve(av: Verbalizer, ar, held: dict, rows: int = 128, seed: int = 0) -> dict[str, float]:
    """``{"fve_ordinary", "fve_fact"}``: the round trip on ``rows`` seeded positions of each of the held-out
    split's ``held`` ordinary and fact-chat groups (``smollm2_data.activations``), as :func:`run_censored`
    reports them."""
    out = {}
    for group in ("ordinary", "fact"):
        vectors = held[group]["vectors"]
        pick = random.Random(seed).sample(range(len(vectors)), min(rows, len(vectors)))
        out[f"fve_{group}"] = round_trip_fve(av, ar, vectors[pick])[0]
    return out


GENERIC_SCHEDULE = dataclasses.replace(LORA_SCHEDULE, rl_steps=400)  # the generic run's GRPO climbs for longer
# (held-out round trip 0.36 / 0.47 / 0.52 after 100 / 300 / 400 GRPO steps of one run; 86 minutes on 2 CPU cores)
GENERIC_WORDS = 8  # context words in a generic SmolLM2 NLA's labels (AR on them: 0.70 held-out FVE, 4 words 0.64)


def run_smollm2(
    cfg: TrainConfig,
    out: str | Path | None = None,
    layer: int = SMOLLM2_LAYER,
    inject: str = "layer1",
    rank: int = 16,
    words: int = GENERIC_WORDS,
    progress: bool = True,
    keep_checkpoints: int = 1,
) -> tuple[NLAReport, Verbalizer, object]:
    """Train and evaluate a generic NLA on the base SmolLM2-135M-Instruct at layer ``layer``, on the
    texts it wrote itself (``probity.nla.smollm2_data``'s ordinary texts, 19 genres, 15% of the topics
    held out): teacher labels ``«tok» | next «next tok» | the last ``words`` words``, a LoRA verbalizer
    (:func:`smollm2_verbalizer`) and a LoRA reconstructor cut from the same model, the schedule ``cfg``
    (:data:`GENERIC_SCHEDULE` is the benchmarked one); the round trip scored on ``cfg.eval_size`` held-out
    positions drawn at random. With ``out``: activations cached in ``out/acts.pt``, checkpoints in
    ``out/checkpoints``, the trained pair in ``out/nla``.

    >>> report, av, ar = run_smollm2(GENERIC_SCHEDULE, "runs/nla_smollm2")  # about 86 minutes on 2 CPU cores
    >>> report.fve_rl                                                    # held-out round-trip FVE"""
    from probity.models import load
    from probity.nla import smollm2_data

    target, tokenizer = load(SMOLLM2)  # the model read (the AR is cut from it)
    base, _ = load(SMOLLM2)  # a second copy that carries the verbalizer's adapter
    cache = Path(out) / "acts.pt" if out is not None else None
    acts = smollm2_data.activations(
        target, tokenizer, layer, cache=cache, seed=cfg.seed, groups=("ordinary",), words=words
    )
    rng = random.Random(cfg.seed)
    train_rows, eval_rows = (acts[name]["ordinary"] for name in ("train", "eval"))
    held = rng.sample(range(len(eval_rows["labels"])), min(cfg.eval_size, len(eval_rows["labels"])))
    data = (
        train_rows["vectors"],
        train_rows["labels"],
        eval_rows["vectors"][held],
        [eval_rows["labels"][i] for i in held],
    )
    every = train_rows["labels"] + eval_rows["labels"]
    longest = max(len(ids) for ids in tokenizer(every, add_special_tokens=False)["input_ids"])
    av = smollm2_verbalizer(base, tokenizer, layer, data[0], SMOLLM2, inject, rank, max_new_tokens=longest + 2)
    av, ar, result, saved = _fit_lora(target, tokenizer, av, data, cfg, out, progress, keep_checkpoints)
    heads = [smollm2_data.label_head(lab) for lab in data[3][:12]]
    report = NLAReport.of(SMOLLM2, layer, result, _examples(av, data[2], data[3], heads), saved)
    return report, av, ar
