"""Using a trained NLA: explain the tokens of a text, audit transcripts for a concept.

``explain`` runs the verbalizer on the activation of every (or one) token of a
text; ``audit`` does that for a set of transcripts and flags the tokens whose
descriptions mention a concept. When transcripts carry labels, the per-transcript
score (share of flagged tokens) is scored against them as an AUROC. A transcript is a
text as is or a :class:`Chat` (a question and its answer, rendered with the chat template
the way the censored organism's fact chats are made: :func:`transcript_ids`). The censored
SmolLM2's likelihood audit is :func:`probity.nla.censored.likelihood_audit`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from probity.models.chat import NoChatTemplateError, chat_text
from probity.nla.core import Verbalizer, extract
from probity.nla.smollm2_data import answer_ids
from probity.report import Claim, result_type
from probity.report.console import progress as console_progress
from probity.report.io import read_text
from probity.report.metrics import auroc


@dataclasses.dataclass
class TokenExplanation:
    """The description of one token's activation."""

    position: int
    token: str
    description: str


@dataclasses.dataclass(frozen=True)
class Chat:
    """A single-turn chat transcript: the user's ``question`` and the assistant's ``answer``."""

    question: str
    answer: str


def transcript_ids(tokenizer, transcript: str | Chat) -> tuple[list[int], int]:
    """Token ids of ``transcript`` and the index where its answer starts (``ids[start:]`` is the answer).
    A :class:`Chat` is rendered as the censored organism's fact chats are
    (:func:`probity.nla.smollm2_data.answer_ids`: the chat template's prompt, the answer, the
    end-of-turn token); a text is tokenised as :func:`probity.nla.core.extract` does, its answer
    after the last assistant header of the tokenizer's chat template (the whole text when it holds
    none, or the tokenizer has no template; ``start == len(ids)`` when it ends at the header)."""
    if isinstance(transcript, Chat):
        return answer_ids(tokenizer, transcript.question, transcript.answer)
    header = _assistant_header(tokenizer)
    at = transcript.rfind(header) if header else -1
    if at < 0:
        return tokenizer(transcript, add_special_tokens=True)["input_ids"], 0
    enc = tokenizer(transcript, add_special_tokens=True, return_offsets_mapping=True)
    ids, begin = list(enc["input_ids"]), at + len(header)
    return ids, next((i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a >= begin), len(ids))


def _assistant_header(tokenizer) -> str:
    """The text the chat template opens an assistant turn with (e.g. ``<|im_start|>assistant\\n``), or
    an empty string when the tokenizer has no template."""
    probe = [{"role": "user", "content": "x"}]
    try:
        opened = chat_text(tokenizer, probe)
    except NoChatTemplateError:
        return ""
    return opened[len(tokenizer.apply_chat_template(probe, tokenize=False)) :]


def describe(av: Verbalizer, vectors, progress: bool = False, batch_size: int = 64) -> list[str]:
    """``av.describe(vectors)`` (greedy, in the same batches), with a progress line per batch when
    ``progress`` (a rich bar on a terminal, plain lines in a pipe)."""
    starts = range(0, len(vectors), batch_size)
    out = []
    with console_progress(len(vectors), "describing", enabled=progress) as bar:
        for i in starts:
            chunk = vectors[i : i + batch_size]
            out += av.describe(chunk, batch_size=batch_size)
            bar.advance(len(chunk))
    return out


def explain(
    model, tokenizer, av: Verbalizer, text: str | Chat, positions="all", progress: bool = False
) -> list[TokenExplanation]:
    """Describe the activation at each chosen position of ``text`` (greedy): ``positions`` is "all",
    "answer" (the answer's tokens, :func:`transcript_ids`), an int (negative counts from the end)
    or a list of them."""
    if isinstance(text, str) and not text.strip():
        raise ValueError("text is empty; give the text whose tokens to describe")
    source = text
    if isinstance(text, Chat) or positions == "answer":
        source, start = transcript_ids(tokenizer, text)
        positions = list(range(start, len(source))) if positions == "answer" else positions
    acts = extract(
        model, tokenizer, [source], av.config.layer, [positions] if isinstance(positions, list) else positions
    )
    descriptions = describe(av, acts.vectors, progress)
    return [TokenExplanation(p, t, d) for p, t, d in zip(acts.position, acts.token, descriptions)]


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
    provenance: dict | None = None  # what produced it (``probity nla audit`` sets it)

    def headline(self) -> list[Claim]:
        """Share of tokens flagged and, with labels, the transcript-level AUROC (no reference)."""
        claims = [
            Claim(f"tokens whose description mentions {self.concept!r}", self.flagged_tokens / max(1, self.tokens))
        ]
        if self.auroc is not None:
            claims.append(Claim("transcript AUROC (share of flagged tokens vs label)", self.auroc))
        return claims


def read_transcripts(path: str | Path) -> tuple[list[str | Chat], list[int | None]]:
    """Transcripts from a JSONL file (objects with a non-empty ``text``, or a non-empty ``question``
    and ``answer`` (a :class:`Chat`), and an optional 0/1 ``label``) or a plain text file (one
    transcript per line). A missing, empty or malformed file raises ``FileNotFoundError`` /
    ``ValueError`` naming the file (and the line)."""
    path = Path(path)
    form = (
        'give a .jsonl of {"text": ..., "label": 0|1} or {"question": ..., "answer": ..., "label": 0|1} per line, '
        "or a .txt, one transcript per line"
    )
    if not path.is_file():
        raise FileNotFoundError(f"no transcript file {path}; {form}")
    if path.suffix in (".json", ".yaml", ".yml", ".csv"):
        raise ValueError(f"{path}: a {path.suffix} file is not read as transcripts; {form}")
    lines = read_text(path).splitlines()
    texts, labels = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                fields = ("question", "answer") if "text" not in row and "question" in row else ("text",)
                values = [row[k] for k in fields]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(
                    f"{path}:{n}: each line must be a JSON object with a 'text' field, or 'question' and 'answer'"
                ) from None
            for k, value in zip(fields, values):
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{path}:{n}: {k!r} must be a non-empty string, got {value!r}")
            text = Chat(*values) if len(values) == 2 else values[0]
            label = row.get("label")
            if label is not None and (isinstance(label, str) or label not in (0, 1)):
                raise ValueError(f"{path}:{n}: 'label' must be 0 or 1 (or left out), got {label!r}")
            texts.append(text)
            labels.append(None if label is None else int(label))
        else:
            texts.append(line)
            labels.append(None)
    if not texts:
        raise ValueError(f"{path} holds no transcripts; {form}")
    return texts, labels


def audit(
    model,
    tokenizer,
    av: Verbalizer,
    texts: Sequence[str | Chat],
    concept: str,
    labels: Sequence[int | None] | None = None,
    positions="all",
    progress: bool = False,
) -> ConceptAudit:
    """Run the verbalizer over every token of every transcript (a text or a :class:`Chat`) and flag
    descriptions that mention ``concept``; AUROC of the transcript scores against ``labels`` when
    every transcript has one and both classes occur."""
    if not concept.strip():
        raise ValueError("concept must be a non-empty phrase")
    labels = list(labels) if labels is not None else [None] * len(texts)
    inputs = [transcript_ids(tokenizer, t)[0] if isinstance(t, Chat) else t for t in texts]
    acts = extract(model, tokenizer, inputs, av.config.layer, positions, progress=progress or len(texts) > 4)
    descriptions = describe(av, acts.vectors, progress)
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
