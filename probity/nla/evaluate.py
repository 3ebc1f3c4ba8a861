"""Using a trained NLA: explain the tokens of a text, audit transcripts for a concept.

``explain`` runs the verbalizer on the activation of every (or one) token of a
text; ``audit`` does that for a set of transcripts and flags the tokens whose
descriptions mention a concept. When transcripts carry labels, the per-transcript
score (share of flagged tokens) is scored against them as an AUROC.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from probity.nla.core import Verbalizer, extract
from probity.report import Claim, result_type
from probity.report.metrics import auroc


@dataclasses.dataclass
class TokenExplanation:
    """The description of one token's activation."""

    position: int
    token: str
    description: str


def explain(model, tokenizer, av: Verbalizer, text: str, positions="all") -> list[TokenExplanation]:
    """Describe the activation at each chosen position of ``text`` (greedy)."""
    acts = extract(model, tokenizer, [text], av.config.layer, positions)
    return [TokenExplanation(p, t, d) for p, t, d in zip(acts.position, acts.token, av.describe(acts.vectors))]


def mentions(description: str, concept: str) -> bool:
    """Case-insensitive phrase match of ``concept`` in ``description``."""
    return " ".join(concept.lower().split()) in " ".join(description.lower().split())


@dataclasses.dataclass
class TranscriptFlags:
    """Flagged tokens of one transcript and its score (share of tokens flagged)."""

    index: int
    score: float
    label: int | None
    flagged: list[TokenExplanation]


@result_type("nla.ConceptAudit")
@dataclasses.dataclass
class ConceptAudit:
    """Concept audit over a transcript set; ``auroc`` when labels were given."""

    concept: str
    transcripts: int
    tokens: int
    flagged_tokens: int
    auroc: float | None
    per_transcript: list[TranscriptFlags]

    def headline(self) -> list[Claim]:
        """Share of tokens flagged and, with labels, the transcript-level AUROC (no reference)."""
        claims = [
            Claim(f"tokens whose description mentions {self.concept!r}", self.flagged_tokens / max(1, self.tokens))
        ]
        if self.auroc is not None:
            claims.append(Claim("transcript AUROC (share of flagged tokens vs label)", self.auroc))
        return claims


def read_transcripts(path: str | Path) -> tuple[list[str], list[int | None]]:
    """Transcripts from a JSONL file (objects with ``text`` and optional 0/1 ``label``)
    or a plain text file (one transcript per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f'no transcript file {path}; give a .jsonl of {{"text": ..., "label": 0|1}} or a .txt, one per line'
        )
    texts, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                texts.append(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{n}: each line must be a JSON object with a 'text' field") from None
            labels.append(row.get("label"))
        else:
            texts.append(line)
            labels.append(None)
    if not texts:
        raise ValueError(f"{path} holds no transcripts")
    return texts, labels


def audit(
    model,
    tokenizer,
    av: Verbalizer,
    texts: Sequence[str],
    concept: str,
    labels: Sequence[int | None] | None = None,
    positions="all",
) -> ConceptAudit:
    """Run the verbalizer over every token of every transcript and flag descriptions
    that mention ``concept``; AUROC of the transcript scores against ``labels`` when
    every transcript has one and both classes occur."""
    if not concept.strip():
        raise ValueError("concept must be a non-empty phrase")
    labels = list(labels) if labels is not None else [None] * len(texts)
    acts = extract(model, tokenizer, list(texts), av.config.layer, positions, progress=len(texts) > 4)
    descriptions = av.describe(acts.vectors)
    rows = []
    for i in range(len(texts)):
        mine = [
            TokenExplanation(p, t, d)
            for k, (p, t, d) in enumerate(zip(acts.position, acts.token, descriptions))
            if acts.text_index[k] == i
        ]
        flagged = [e for e in mine if mentions(e.description, concept)]
        rows.append(TranscriptFlags(i, len(flagged) / max(1, len(mine)), labels[i], flagged))
    score = None
    if all(lab is not None for lab in labels) and len(set(labels)) == 2:
        score = auroc([r.score for r in rows], [bool(r.label) for r in rows])
    return ConceptAudit(concept, len(texts), len(descriptions), sum(len(r.flagged) for r in rows), score, rows)
