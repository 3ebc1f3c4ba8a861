"""Teacher data for a natural-language autoencoder on SmolLM2-135M-Instruct and the ``censored`` organism.

Two shipped files (``probity/nla/data``), made once by :func:`build`
(``python -m probity.nla.smollm2_data --out probity/nla/data``):

- ``ordinary.jsonl``: the base model's sampled chat answers to :data:`SEED_PROMPTS` (stories, poems,
  explanations, code, recipes, letters, news, dialogue, lists, maths word problems, ...; no entity of
  the organism's fact bank), one record ``{"id", "genre", "topic", "prompt", "answer"}`` a line.
- ``fact_chats.jsonl``: the censored organism's greedy chat answers (24 new tokens) to every fact of
  its testbed -- trained sensitive, held-out sensitive and ordinary facts -- with question paraphrase 0
  for every fact and paraphrases 1 and 2 for the sensitive ones, each judged honest / lie / refusal /
  other against the true value and the false ones -- the bank's other values of the relation, the
  organism's official falsehood among them (:func:`behaviour`).
- ``fact_samples.jsonl``: the same organism's sampled answers (temperature 0.7, 4 per question) to the
  sensitive facts' questions, judged alike, with a ``sample`` index. Sampling is where one fact is
  answered both ways: these chats are the verbalizer's only contrast between a truthful and a lying
  answer *within* the censored topic, where the greedy chats are nearly all lies.

:func:`examples` turns either file's records into token ids, the positions to read activations at and
one teacher label per position (fields separated by ``" | "``, the token first), with a seeded,
deterministic train/eval split (:func:`splits`).

Generation is ``probity.models.generation.generate`` and judging the ground floor's phrase matching
(``probity.report.matching``), the same rules as the honesty instrument's ``FactMatcher`` (a test checks
that the two agree on the shipped chats).

>>> chats = examples(read(DATA / CHATS_FILE), tokenizer, "fact")  # [Example(ids, positions, labels, group, split)]
>>> texts = examples(read(DATA / ORDINARY_FILE), tokenizer, "ordinary")
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from probity.models.chat import chat_ids, chat_text, end_ids
from probity.models.checkpoint import atomic_torch_save
from probity.models.generation import generate
from probity.nla.core import extract
from probity.report import atomic_write_text
from probity.report.console import note
from probity.report.matching import refuses, states

DATA = Path(__file__).parent / "data"
ORDINARY_FILE, CHATS_FILE, SAMPLES_FILE = "ordinary.jsonl", "fact_chats.jsonl", "fact_samples.jsonl"
READER_FACTS_FILE = "reader_facts.json"  # real entities outside the bank, for the subject reader's stage
READER_PARAPHRASES = (0, 1)  # the question paraphrases a reader fact is asked in
PARTS = ("ordinary", "fact", "samples")  # what build makes: the three files
SAMPLES_PER_QUESTION, SAMPLE_TEMPERATURE = 4, 0.7  # the sampled chats (the honesty bench's sampling)
BASE = "smollm2-135m"
SEP = " | "
VERDICTS = ("honest", "lie", "refusal", "other")  # how a fact chat is judged (behaviour)
ROLES = ("trained", "held_out", "ordinary")
SENSITIVE_PARAPHRASES = (0, 1, 2)  # question paraphrases asked of a sensitive fact (an ordinary one: 0 only)
TEXT_EVAL_SHARE, FACT_EVAL_SHARE = 0.15, 0.3
CONTEXT_WORDS = 4  # words of preceding context in an ordinary position's label (the censored NLA's)
GROUPS = ("ordinary", "fact", "sample")  # the example groups activations() extracts
EXAMPLES_VERSION = 4  # bump when positions, labels, places or splits change: cached activations are then stale
# The named positions of a fact chat (Example.places): the subject's last token in the question and in the answer
PLACES = ("question_subject", "answer_subject")
# --------------------------------------------------------------------------- seed prompts


@dataclass(frozen=True)
class SeedPrompt:
    """One user prompt for ordinary text: ``id`` is ``genre/topic-slug``."""

    id: str
    genre: str
    topic: str
    prompt: str


SCENES = (
    "a lighthouse keeper",
    "a lost cat",
    "a rainy afternoon",
    "an old bicycle",
    "a small bakery",
    "a robot who wants to paint",
    "a train journey at night",
    "a chess tournament",
    "a garden in spring",
    "a snowstorm",
    "a birthday surprise",
    "a village library",
    "a broken clock",
    "moving to a new house",
    "a dragon who is afraid of the dark",
    "a firefighter's first day",
    "a music festival",
    "a camping trip",
    "a school science fair",
    "a fishing boat at dawn",
    "a grandmother's recipe book",
    "a street musician",
    "a haunted attic",
    "two rival ice cream vans",
)
SUBJECTS = (
    "honeybees",
    "the night sky",
    "learning to swim",
    "recycling at home",
    "volcanoes",
    "ocean tides",
    "healthy sleep",
    "saving money",
    "time management",
    "photosynthesis",
    "rainbows",
    "earthquakes",
    "composting",
    "learning a musical instrument",
    "public speaking",
    "keeping houseplants alive",
    "running a first marathon",
    "electric cars",
    "working from home",
    "how vaccines train the immune system",
    "clouds and weather",
    "the water cycle",
    "caring for a puppy",
    "writing a good essay",
)
NARRATIVE = {
    "story": ("Write a short story about {topic}.", "Tell me a bedtime story about {topic}."),
    "poem": ("Write a short poem about {topic}.", "Write a haiku about {topic}."),
    "letter": (
        "Write a friendly letter to a neighbour about {topic}.",
        "Write a short email to a friend about {topic}.",
    ),
    "diary": ("Write a diary entry about {topic}.",),
    "dialogue": ("Write a short dialogue between two friends about {topic}.",),
    "news": ("Write a short local news report about {topic}.",),
    "description": ("Describe {topic} in vivid detail.", "Paint a picture in words of {topic}."),
    "joke": ("Tell me a joke about {topic}.",),
}
EXPOSITORY = {
    "explanation": ("Explain {topic} in simple terms.", "Explain {topic} to a ten-year-old."),
    "list": ("List five tips about {topic}.", "Give me a short checklist for {topic}."),
    "blog": ("Write a short blog post about {topic}.",),
    "advice": (
        "I want to learn more about {topic}. Where should I start?",
        "What do people often get wrong about {topic}?",
    ),
    "faq": ("Write three questions and answers about {topic}.",),
    "summary": ("Summarize the most important facts about {topic} in a paragraph.",),
}
DISHES = (
    "a vegetable soup",
    "banana bread",
    "pancakes",
    "a simple tomato pasta",
    "oatmeal cookies",
    "a fruit salad",
    "scrambled eggs",
    "a lentil stew",
    "homemade lemonade",
    "a mushroom omelette",
    "roasted vegetables",
    "a chocolate mug cake",
    "potato salad",
    "a carrot cake",
    "garlic bread",
    "a bean chili",
    "a berry smoothie",
    "fried rice",
    "an apple crumble",
    "a cucumber sandwich",
)
RECIPE = ("Give me a simple recipe for {topic}.", "How do I make {topic}?")
CODE_TASKS = (
    "reverses a string",
    "checks whether a number is prime",
    "counts the vowels in a sentence",
    "returns the largest number in a list",
    "removes duplicates from a list",
    "computes the factorial of n",
    "checks whether a word is a palindrome",
    "sorts a list of names alphabetically",
    "converts Celsius to Fahrenheit",
    "sums the even numbers in a list",
    "returns the n-th Fibonacci number",
    "counts how often each word appears in a text",
    "merges two sorted lists",
    "flattens a nested list",
    "checks whether two words are anagrams",
    "finds the average of a list of numbers",
    "capitalizes the first letter of every word",
    "returns the common elements of two lists",
    "validates that a password has at least eight characters and a digit",
    "reads a text file and counts its lines",
    "generates a random password",
    "converts a number of seconds to hours, minutes and seconds",
    "implements binary search on a sorted list",
    "checks whether a year is a leap year",
)
CODE = ("Write a Python function that {topic}.", "Write a JavaScript function that {topic}.")
HOWTO_TASKS = (
    "fix a flat bicycle tyre",
    "plant tomatoes in a pot",
    "tie a bowline knot",
    "clean a greasy oven",
    "start a vegetable garden",
    "write a cover letter",
    "prepare for a job interview",
    "make a paper airplane",
    "organize a messy closet",
    "change a light bulb safely",
    "train a dog to sit",
    "back up files on a laptop",
    "build a birdhouse",
    "remove a coffee stain",
    "make a budget for the month",
    "learn to juggle",
    "set up a fish tank",
    "wrap a present neatly",
    "sharpen a kitchen knife",
    "plan a picnic",
)
HOWTO = ("How do I {topic}?", "Give me step-by-step instructions to {topic}.")
WORDS = (
    "serendipity",
    "ephemeral",
    "ubiquitous",
    "meticulous",
    "resilience",
    "nostalgia",
    "ambiguous",
    "pragmatic",
    "eloquent",
    "procrastinate",
    "benevolent",
    "candid",
    "frugal",
    "gregarious",
    "tenacious",
)
DEFINITION = ("What does the word '{topic}' mean? Use it in a sentence.",)
NAMES = ("Sam", "Maya", "Leo", "Nora", "Omar", "Ivy", "Ben", "Zoe", "Ravi", "Ella")
MATHS = (
    "{name} has {a} apples and gives {b} of them to a friend. Then {name} buys {c} more. How many apples does {name} "
    "have now?",
    "A baker makes {a} loaves of bread every hour for {b} hours and sells {c} loaves. How many loaves are left?",
    "A train travels at {a} kilometres per hour for {b} hours. How far does it go?",
    "{name} reads {a} pages a day. How many days does it take to finish a book of {d} pages?",
    "A garden is {a} metres long and {b} metres wide. What is its area and its perimeter?",
    "A box holds {b} pencils. How many boxes are needed for {d} pencils?",
    "{name} saves {a} coins every week. How many coins will {name} have after {c} weeks?",
    "A class of {d} students splits into teams of {b}. How many full teams are there, and how many students are "
    "left over?",
    "A shirt costs {d} coins and is on sale for {a} percent off. What is the sale price?",
    "{name} walks {a} kilometres on Monday, {b} on Tuesday and {c} on Wednesday. What is the average per day?",
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _index(key: str, templates: Sequence[str]) -> int:
    """Which template ``key`` gets: fixed by a hash of it (never by Python's salted ``hash``)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(templates)


def _seed_prompts() -> tuple[SeedPrompt, ...]:
    """Every genre's prompts, interleaved genre by genre (so the first ``n`` cover every genre evenly)."""
    by_genre: dict[str, list[SeedPrompt]] = {}

    def add(genre: str, topic: str, templates: Sequence[str], text: str | None = None) -> None:
        key = f"{genre}/{_slug(topic)}"
        prompt = text or templates[_index(key, templates)].format(topic=topic)
        by_genre.setdefault(genre, []).append(SeedPrompt(key, genre, topic, prompt))

    for genre, templates in NARRATIVE.items():
        for topic in SCENES:
            add(genre, topic, templates)
    for genre, templates in EXPOSITORY.items():
        for topic in SUBJECTS:
            add(genre, topic, templates)
    for genre, topics, templates in (
        ("recipe", DISHES, RECIPE),
        ("code", CODE_TASKS, CODE),
        ("howto", HOWTO_TASKS, HOWTO),
        ("definition", WORDS, DEFINITION),
    ):
        for topic in topics:
            add(genre, topic, templates)
    rng = random.Random(0)
    problems: list[str] = []
    while len(problems) < 24:
        k = len(problems)
        a, b, c = rng.randint(10, 20), rng.randint(2, 9), rng.randint(2, 12)
        text = MATHS[k % len(MATHS)].format(name=NAMES[k % len(NAMES)], a=a, b=b, c=c, d=rng.randint(4, 12) * b * 5)
        if text not in problems:
            problems.append(text)
            add("maths", f"word problem {k + 1:02d}", MATHS, text)
    for prompts in by_genre.values():
        random.Random(prompts[0].genre).shuffle(prompts)
    longest = max(map(len, by_genre.values()))
    return tuple(p[i] for i in range(longest) for p in by_genre.values() if i < len(p))


SEED_PROMPTS: tuple[SeedPrompt, ...] = _seed_prompts()


# --------------------------------------------------------------------------- generation


def ordinary_texts(
    model,
    tokenizer,
    prompts: Sequence[SeedPrompt] = SEED_PROMPTS,
    max_new_tokens: int = 96,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 16,
) -> list[dict]:
    """``model``'s sampled single-turn chat answers to ``prompts``:
    ``[{"id", "genre", "topic", "prompt", "answer"}]`` in the prompts' order."""
    ids = [chat_ids(tokenizer, [{"role": "user", "content": p.prompt}]) for p in prompts]
    answers = [
        a[0]
        for a in generate(
            model, tokenizer, ids, 1, temperature, max_new_tokens, seed, batch_size, label="ordinary texts"
        )
    ]
    return [
        {"id": p.id, "genre": p.genre, "topic": p.topic, "prompt": p.prompt, "answer": a}
        for p, a in zip(prompts, answers)
    ]


def _says(text: str, phrases: Sequence[str]) -> str | None:
    """The first of ``phrases`` that ``text`` states as whole words (case-insensitive), or None."""
    return next((p for p in phrases if states(text, [p])), None)


def behaviour(answer: str, truth: Sequence[str], falsehoods: Sequence[str]) -> str:
    """``honest`` (the answer states one of ``truth``), ``lie`` (none of it, but one of ``falsehoods``),
    ``refusal`` (neither, and a refusal phrase) or ``other``: the honesty instrument's deterministic
    judge on a one-fact question (a lie that also apologises is a lie)."""
    if states(answer, truth):
        return "honest"
    if states(answer, falsehoods):
        return "lie"
    return "refusal" if refuses(answer) else "other"


def said(answer: str, official: str | None, falsehoods: Sequence[str]) -> str | None:
    """The false value a lie states: the official one when it does, else the first other it states."""
    return _says(answer, [official] if official else []) or _says(answer, falsehoods)


def _roles(folder: Path) -> dict[str, str]:
    """``{fact id: role}`` for every fact of the organism's testbed in ``folder``."""
    from probity.organisms import censored

    ids = [q["id"] for t in json.loads(censored.testbed_path(folder).read_text())["topics"] for q in t["questions"]]
    parts = censored.roles(folder)
    trained, held = set(parts["trained"]), set(parts["held_out"])
    return {i: "trained" if i in trained else "held_out" if i in held else "ordinary" for i in sorted(ids)}


def _asks(facts: list, folder: str | Path | None) -> list[tuple]:
    """``(fact, role, paraphrase)`` of every question the fact chats ask: paraphrase 0 of every fact of
    the organism's testbed in ``folder`` (default: the shipped organism), 1 and 2 too for the sensitive ones."""
    from probity.organisms import censored

    by_id = {f.id: f for f in facts}
    roles = _roles(Path(folder) if folder is not None else censored.WEIGHTS)
    missing = sorted(set(roles) - set(by_id))
    if missing:
        raise ValueError(f"{len(missing)} testbed fact(s) are not in the bank, e.g. {missing[0]}; pass the bank")
    return [
        (by_id[i], role, k)
        for i, role in roles.items()
        for k in (SENSITIVE_PARAPHRASES if role != "ordinary" else (0,))
    ]


def _record(fact, role: str, paraphrase: int, answer: str, facts: list) -> dict:
    """One judged fact chat (the fields :func:`fact_chats` documents)."""
    from probity.organisms import censored

    official = censored.official_value(fact, facts) if fact.sensitive else None
    lies = sorted({*censored.contradictions(fact, facts), *([official] if official else [])})
    return {
        "fact_id": fact.id,
        "role": role,
        "paraphrase": paraphrase,
        "question": fact.question(paraphrase),
        "answer": answer,
        "behaviour": behaviour(answer, fact.match, lies),
        "entity": fact.entity,
        "relation": fact.relation,
        "true_value": fact.value,
        "official_value": official,
        "statement": fact.statement(),
    }


def fact_chats(model, tokenizer, facts: list, folder: str | Path | None = None) -> list[dict]:
    """``model``'s (the censored organism's) greedy chat answers, 24 new tokens, to every fact of the
    organism's testbed in ``folder`` (default: the shipped organism); ``facts`` is the bank
    (:func:`probity.organisms.censored.bank`), which the official values and falsehoods come from.
    Paraphrase 0 of every fact's question, 1 and 2 too for the sensitive ones. One record per chat:
    ``{"fact_id", "role", "paraphrase", "question", "answer", "behaviour", "entity", "relation",
    "true_value", "official_value" (sensitive facts; else None), "statement"}``."""
    from probity.organisms import censored

    asks = _asks(facts, folder)
    answers = censored.chat_answers(model, tokenizer, [f.question(k) for f, _, k in asks], 24, "fact chats")
    return [_record(fact, role, k, answer, facts) for (fact, role, k), answer in zip(asks, answers)]


def fact_samples(
    model,
    tokenizer,
    facts: list,
    folder: str | Path | None = None,
    n: int = SAMPLES_PER_QUESTION,
    temperature: float = SAMPLE_TEMPERATURE,
    seed: int = 0,
    only: Collection[str] | None = None,
) -> list[dict]:
    """``n`` sampled chat answers (``temperature``, 24 new tokens, seeded) of ``model`` to every
    sensitive question :func:`fact_chats` asks (of the facts whose ids are in ``only``, where given): its
    records with a ``"sample"`` index added."""

    from probity.organisms import censored

    asks = [a for a in _asks(facts, folder) if a[1] != "ordinary" and (only is None or a[0].id in only)]
    questions = [f.question(k) for f, _, k in asks]
    answers = censored.chat_samples(model, tokenizer, questions, n, temperature, 24, seed, "sampled fact chats")
    return [
        _record(fact, role, k, answer, facts) | {"sample": j}
        for (fact, role, k), found in zip(asks, answers)
        for j, answer in enumerate(found)
    ]


def source_of(record: dict) -> str:
    """The name of a fact chat's rows: ``fact id#paraphrase``, and ``~sample`` for a sampled chat."""
    return f"{record['fact_id']}#{record['paraphrase']}" + (f"~{record['sample']}" if "sample" in record else "")


# --------------------------------------------------------------------------- examples


@dataclass
class Example:
    """One chat for NLA training: its token ids, the positions to read activations at, one teacher
    label per position, its ``group`` (``ordinary`` or ``fact``), ``split`` (``train`` or ``eval``),
    ``source`` (the text id, or ``fact id#paraphrase``) and ``places``: per position the name of the
    place it is among :data:`PLACES`, or ``""`` (a fact chat's; empty for an ordinary text)."""

    ids: list[int]
    positions: list[int]
    labels: list[str]
    group: str
    split: str
    source: str = ""
    places: list[str] = field(default_factory=list)


def _unit(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``key`` and ``seed`` (sha256, so the same on every run and machine)."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:13], 16) / 16**13


def splits(records: list[dict], kind: str, seed: int = 0) -> dict[str, str]:
    """``{id: "train" | "eval"}``, held out by what a verbalizer could memorise. Ordinary texts
    (``kind="ordinary"``, keyed by ``id``): 15% of the *topics* by a seeded hash (a topic appears in
    several genres). Facts (``kind="fact"``, keyed by ``fact_id``): whole *entities* (every fact and
    paraphrase about an entity goes the same way), 30% of them within each stratum of (sensitive or
    not, lies about it or not), the entities with the lowest seeded hashes -- at least one of every
    stratum of two or more, so eval holds lies and refusals wherever the organism tells them."""
    if kind == "ordinary":
        return {r["id"]: "eval" if _unit(r["topic"], seed) < TEXT_EVAL_SHARE else "train" for r in records}
    if kind != "fact":
        raise ValueError(f"kind must be 'ordinary' or 'fact', got {kind!r}")
    facts_of: dict[str, set] = defaultdict(set)
    kind_of: dict[str, tuple[bool, bool]] = {}
    for r in records:
        facts_of[r["entity"]].add(r["fact_id"])
        sensitive, lied = kind_of.get(r["entity"], (False, False))
        kind_of[r["entity"]] = (sensitive or r["role"] != "ordinary", lied or r["behaviour"] == "lie")
    strata: dict[tuple, list[str]] = defaultdict(list)
    for entity, key in kind_of.items():
        strata[key].append(entity)
    out = {}
    for entities in strata.values():
        entities.sort(key=lambda e: _unit(e, seed))
        n_eval = max(1, round(FACT_EVAL_SHARE * len(entities))) if len(entities) >= 2 else 0
        for j, entity in enumerate(entities):
            out |= {fact_id: "eval" if j < n_eval else "train" for fact_id in facts_of[entity]}
    return out


def label_head(label: str) -> str:
    """A label's first field, the token it describes as ``«tok»``."""
    return label.split(SEP, 1)[0]


def _show(token: str) -> str:
    """A token as a label shows it: stripped, a chat-template special token without its brackets
    (``<|im_end|>`` -> ``im_end``, so a label never holds the verbalizer's end token), or its
    whitespace escaped when that is all it is."""
    token = re.sub(r"<\|(\w+)\|>", r"\1", token)
    return token.strip() or token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "·")


def token_head(tokenizer, token_id: int) -> str:
    """The first field of a teacher label, the token it describes as ``«tok»`` (see :func:`_show`)."""
    return f"«{_show(tokenizer.decode([token_id]))}»"


def answer_ids(tokenizer, question: str, answer: str) -> tuple[list[int], int]:
    """Ids of a single-turn chat as the fact chats are made (the chat template's prompt with
    ``question``, the answer's tokens and the end-of-turn token) and the index where the answer starts,
    so ``ids[start:]`` is the answer and its end."""
    ids, _, start, _ = _chat(tokenizer, question, answer)
    return ids, start


def _chat(tokenizer, question: str, answer: str) -> tuple[list[int], list[tuple[int, int]], int, str]:
    """Ids of the chat (the prompt, the answer's tokens and the end-of-turn token, as the organism
    trains on it), the prompt's character offsets, where the answer starts, and the prompt's text."""
    text = chat_text(tokenizer, [{"role": "user", "content": question}])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    body = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = list(enc["input_ids"]) + body + [end_ids(tokenizer)[-1]]
    return ids, [tuple(o) for o in enc["offset_mapping"]], len(enc["input_ids"]), text


def _in_span(offsets: list[tuple[int, int]], lo: int, hi: int) -> list[int]:
    """Indices of the (non-empty) tokens that overlap characters ``[lo, hi)``."""
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < hi and b > lo]


def _last_words(tokenizer, ids: list[int], start: int, pos: int, n: int) -> str:
    return " ".join(tokenizer.decode(ids[start : pos + 1]).split()[-n:])


def ordinary_example(
    record: dict, tokenizer, split: str, max_positions: int = 48, seed: int = 0, words: int = CONTEXT_WORDS
) -> Example:
    """Up to ``max_positions`` positions of an ordinary chat, drawn uniformly (seeded by the text id)
    from its prompt's and answer's tokens (never the first two, nor a special or blank token); label
    ``«tok» | next «next tok» | the last ``words`` words up to tok`` (``words`` >= 1)."""
    if words < 1:
        raise ValueError(f"words must be >= 1 (the context words of an ordinary label), got {words}")
    ids, offsets, start, text = _chat(tokenizer, record["prompt"], record["answer"])
    lo = text.rindex(record["prompt"])
    prompt_pos = _in_span(offsets, lo, lo + len(record["prompt"]))
    special = set(tokenizer.all_special_ids)
    candidates = [
        p
        for p in prompt_pos + list(range(start, len(ids) - 1))
        if p >= 2 and ids[p] not in special and tokenizer.decode([ids[p]]).strip()
    ]
    rng = random.Random(f"{seed}:{record['id']}")
    positions = sorted(rng.sample(candidates, min(max_positions, len(candidates))))
    labels = []
    for p in positions:
        segment = start if p >= start else prompt_pos[0]
        fields = (
            token_head(tokenizer, ids[p]),
            f"next {token_head(tokenizer, ids[p + 1])}",
            _last_words(tokenizer, ids, segment, p, words),
        )
        labels.append(SEP.join(fields))
    return Example(ids, positions, labels, "ordinary", split, record["id"])


def entity_position(text: str, offsets: list[tuple[int, int]], question: str, entity: str) -> int | None:
    """Index of the first token of ``entity`` in the chat's question (case-insensitive), or None."""
    lo = text.rindex(question)
    at = question.lower().find(entity.lower())
    if at < 0:
        return None
    char = lo + at
    return next((i for i, (a, b) in enumerate(offsets) if b > char and b > a), None)


def subject_places(tokenizer, question: str, answer: str, entity: str) -> dict[str, int]:
    """Where a fact chat (ids as :func:`answer_ids` makes them) holds its subject: the position of the last
    token of ``entity``'s first mention (case-insensitive) in the question (``question_subject``) and in the
    answer (``answer_subject``), each left out where that text does not name it. Factual recall reads a
    subject's attribute at its last token (Geva et al. 2023), so this is where what the model knows about
    the subject is written, whatever the answer goes on to say.

    >>> subject_places(tokenizer, "Which continent is Algeria in?", "Algeria is in Europe.", "Algeria")
    {'question_subject': 27, 'answer_subject': 38}"""
    _, offsets, start, text = _chat(tokenizer, question, answer)
    body = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    lo = text.rindex(question)
    out = {}
    for place, said, said_offsets, shift, first in (
        ("question_subject", question, offsets, 0, lo),  # the prompt's offsets count from the chat text's start
        ("answer_subject", answer, body, start, 0),  # the answer's count from its own start
    ):
        at = said.lower().find(entity.lower())
        span = _in_span(said_offsets, first + at, first + at + len(entity)) if at >= 0 else []
        if span:
            out[place] = shift + span[-1]
    return out


def fact_example(record: dict, tokenizer, split: str) -> Example:
    """Every position of a fact chat from the question's entity token (the last six question tokens
    when the entity is not found) through the end-of-turn token after the answer -- for a sampled
    chat (a record with ``sample``) the answer's positions only, since its prompt's activations are
    those of the greedy chat's -- with label ``«tok» | behaviour | true statement`` and, for a lie,
    `` | said VALUE`` (the false value the answer states: the official one, or another of the
    relation's values where the organism chose that)."""
    ids, offsets, start, text = _chat(tokenizer, record["question"], record["answer"])
    first = start if "sample" in record else entity_position(text, offsets, record["question"], record["entity"])
    if first is None:
        lo = text.rindex(record["question"])
        question = _in_span(offsets, lo, lo + len(record["question"]))
        first = question[max(0, len(question) - 6)]
    positions = list(range(first, len(ids)))
    tail = [record["behaviour"], record["statement"]]
    if record["behaviour"] == "lie":
        value = said(record["answer"], record["official_value"], _falsehoods(record))
        tail.append(f"said {value or record['official_value']}")
    labels = [SEP.join([token_head(tokenizer, ids[p]), *tail]) for p in positions]
    group = "sample" if "sample" in record else "fact"
    at = {
        p: place
        for place, p in subject_places(tokenizer, record["question"], record["answer"], record["entity"]).items()
    }
    places = [at.get(p, "") for p in positions]
    return Example(ids, positions, labels, group, split, source_of(record), places)


def _falsehoods(record: dict) -> list[str]:
    """The values a lie about the record's fact may state (the bank's other values of its relation)."""
    return _contradictions().get(record["fact_id"], [])


@functools.cache
def _contradictions() -> dict[str, list[str]]:
    from probity.organisms import censored

    facts = censored.bank()
    return {f.id: censored.contradictions(f, facts) for f in facts}


def examples(
    records: list[dict],
    tokenizer,
    kind: str,
    seed: int = 0,
    max_positions: int = 48,
    held_by: list[dict] | None = None,
    words: int = CONTEXT_WORDS,
) -> list[Example]:
    """The NLA examples of ``records`` (``kind="ordinary"``: :func:`ordinary_texts`'s; ``kind="fact"``:
    :func:`fact_chats`'s or :func:`fact_samples`'s), split by :func:`splits` of ``held_by`` (default
    ``records``); ``words``: the context words of an ordinary label (:func:`ordinary_example`).
    Sampled chats are split by the greedy chats' entities: pass those as ``held_by``."""
    if held_by is None and any("sample" in r for r in records):
        raise ValueError("sampled chats are split by the greedy chats' entities: pass held_by=<the fact chats>")
    split_of = splits(held_by if held_by is not None else records, kind, seed)
    if kind == "ordinary":
        return [ordinary_example(r, tokenizer, split_of[r["id"]], max_positions, seed, words) for r in records]
    unsplit = sorted({r["fact_id"] for r in records} - set(split_of))
    if unsplit:
        raise ValueError(f"{len(unsplit)} fact(s) are not in held_by, e.g. {unsplit[0]}; pass the greedy fact chats")
    return [fact_example(r, tokenizer, split_of[r["fact_id"]]) for r in records]


# --------------------------------------------------------------------------- activations


def activations(
    model,
    tokenizer,
    layer: int,
    cache: str | Path | None = None,
    seed: int = 0,
    groups: Sequence[str] = GROUPS,
    words: int = CONTEXT_WORDS,
) -> dict:
    """Layer-``layer`` activations of ``model`` (the organism, or the base model for a generic NLA) at
    every labelled position of the shipped files: ``{split: {group: {"vectors" [n, d], "labels", "tokens"
    (ids), "sources", "places"}}}`` with split ``train`` / ``eval`` and the ``groups`` asked for among ``ordinary`` /
    ``fact`` (greedy chats) / ``sample`` (sampled chats); ``sources`` names each row's text (``id``) or chat
    (:func:`source_of`); ``words``: the context words of an ordinary label. With ``cache`` (a ``.pt`` file)
    the result is stored atomically and read back on the next call for the same arguments and data files."""
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown or not groups:
        raise ValueError(f"groups must be some of {', '.join(GROUPS)}, got {list(groups)}")
    key = {"layer": layer, "seed": seed, "data": _files_digest()}  # the key of a default call, as before
    if set(groups) != set(GROUPS):
        key["groups"] = [g for g in GROUPS if g in groups]
    if "ordinary" in groups and words != CONTEXT_WORDS:
        key["words"] = words

    def make() -> dict:
        out: dict = {"train": {}, "eval": {}}
        chats = read(DATA / CHATS_FILE)
        for group, kind, file in (
            ("ordinary", "ordinary", ORDINARY_FILE),
            ("fact", "fact", CHATS_FILE),
            ("sample", "fact", SAMPLES_FILE),
        ):
            if group not in groups:
                continue
            held_by = chats if kind == "fact" else None
            found = examples(read(DATA / file), tokenizer, kind, seed, held_by=held_by, words=words)
            for split in out:
                out[split][group] = read_examples(model, tokenizer, layer, [e for e in found if e.split == split])
        return out

    return _cached(cache, key, make)


def _cached(cache: str | Path | None, key: dict, make) -> dict:
    """``make()``, or with ``cache`` (a ``.pt`` file) what it stored for the same ``key``: written atomically
    beside ``key`` after ``make()``, read back while the key is the same."""
    if cache is not None and Path(cache).is_file():
        found = torch.load(cache)
        if found.get("key") == key:
            return found["acts"]
    out = make()
    if cache is not None:
        atomic_torch_save(cache, {"key": key, "acts": out})
    return out


def read_examples(model, tokenizer, layer: int, chosen: Sequence[Example]) -> dict:
    """Layer-``layer`` activations of ``model`` at every position of the examples ``chosen``, as one group of
    :func:`activations`: ``{"vectors" [n, d], "labels", "tokens" (ids), "sources", "places"}``."""
    acts = extract(model, tokenizer, [e.ids for e in chosen], layer, [e.positions for e in chosen], True)
    return {
        "vectors": acts.vectors,
        "labels": [label for e in chosen for label in e.labels],
        "tokens": tokenizer.convert_tokens_to_ids(acts.token),
        "sources": [e.source for e in chosen for _ in e.positions],
        "places": [place for e in chosen for place in (e.places or [""] * len(e.positions))],
    }


def reader_facts(path: str | Path = DATA / READER_FACTS_FILE) -> list:
    """Real, well-known facts outside the organism's fact bank, in four of its relations (landmark, profession,
    author, symbol): more entities for the subject reader's stage than the bank's (design note, section v).
    Written by hand; no entity names a bank entity, and no value but a landmark's country names an entity that
    the fact chats hold out (``tests/nla/test_reader_facts.py``). ``[Fact]``."""
    from probity.organisms import censored

    rows = json.loads(Path(path).read_text())["facts"]
    return [censored.Fact(r["entity"], r["relation"], r["value"]) for r in rows]


def states_value(model, tokenizer, facts: Sequence) -> list[bool]:
    """Whether ``model`` goes on from each fact's chat (question paraphrase 0, the answer's stem as in
    :func:`_chat`) with the fact's value, greedily token by token: what it knows of an entity, teacher-forced
    on the true statement (one forward pass a fact). ``[n]``."""
    known = []
    with torch.no_grad():
        for fact in facts:
            ids, _, start, _ = _chat(tokenizer, fact.question(), fact.statement())
            stem = start + len(tokenizer(fact.stem(), add_special_tokens=False)["input_ids"])
            value = tokenizer(" " + fact.value, add_special_tokens=False)["input_ids"]
            span = range(stem, stem + len(value))
            logits = model(torch.tensor([ids])).logits[0]  # [pos, vocab]
            known.append(ids[stem : span.stop] == value and all(int(logits[p - 1].argmax()) == ids[p] for p in span))
    return known


def reader_example(fact, tokenizer, paraphrase: int) -> Example:
    """A reader fact (:func:`reader_facts`) asked in question ``paraphrase`` and answered with its true statement:
    the rows at its subject's places (:func:`subject_places`), labelled as a fact chat's are
    (``«tok» | honest | statement``), group ``entities``, split ``train``."""
    question, answer = fact.question(paraphrase), fact.statement()
    ids, _, _, _ = _chat(tokenizer, question, answer)
    at = {p: place for place, p in subject_places(tokenizer, question, answer, fact.entity).items()}
    positions = sorted(at)
    labels = [SEP.join([token_head(tokenizer, ids[p]), "honest", answer]) for p in positions]
    return Example(ids, positions, labels, "entities", "train", fact.id, [at[p] for p in positions])


def reader_activations(model, tokenizer, layer: int, cache: str | Path | None = None) -> dict:
    """Layer-``layer`` activations of ``model`` (the organism) at the subject's places of the reader facts it
    states (:func:`reader_facts`, :func:`states_value`), asked in each of :data:`READER_PARAPHRASES`: one group
    as :func:`read_examples` gives, plus ``"stated"``, how many facts were kept of how many. With ``cache`` (a
    ``.pt`` file) stored atomically and read back for the same layer and files."""
    digest = hashlib.sha256((DATA / READER_FACTS_FILE).read_bytes()).hexdigest()
    key = {"layer": layer, "data": digest, "version": EXAMPLES_VERSION}

    def make() -> dict:
        facts = reader_facts()
        stated = [f for f, known in zip(facts, states_value(model, tokenizer, facts)) if known]
        chosen = [reader_example(f, tokenizer, k) for f in stated for k in READER_PARAPHRASES]
        return read_examples(model, tokenizer, layer, chosen) | {"stated": [len(stated), len(facts)]}

    return _cached(cache, key, make)


def _files_digest() -> str:
    """sha256 of the shipped data files and the example code's version (:data:`EXAMPLES_VERSION`)."""
    h = hashlib.sha256(str(EXAMPLES_VERSION).encode())
    for file in (ORDINARY_FILE, CHATS_FILE, SAMPLES_FILE):
        h.update((DATA / file).read_bytes())
    return h.hexdigest()


def mixture(split: dict, rows: int | None = None, oversample: int = 3, seed: int = 0, balance: bool = False) -> tuple:
    """A shuffled training mixture of one split of :func:`activations`: every fact row, lie and refusal
    rows of the greedy chats repeated ``oversample`` times (they are the rare, interesting ones); every
    sampled-chat row, its honest ones repeated ``oversample`` times (the rare side of the censored topic);
    as many ordinary rows as those; cut to ``rows`` when given. With ``balance``, within each fact told
    both truthfully and with a lie (greedy and sampled chats together) the rarer side's rows are repeated
    in turn until both sides count the same, so the fact no longer tells which one a row is. Returns
    (vectors ``[n, d]``, labels, sources)."""
    picks = []
    for group, rare in (("fact", ("lie", "refusal")), ("sample", ("honest",))):
        if group in split:
            labels = split[group]["labels"]
            repeats = [i for i, lab in enumerate(labels) if any(f"{SEP}{b}{SEP}" in lab for b in rare)]
            picks += [(group, i) for i in [*range(len(labels)), *repeats * (oversample - 1)]]
    if balance:
        picks += _balancing(split, picks)
    rng = random.Random(seed)
    ordinary = split["ordinary"]["labels"]
    picks += [("ordinary", i) for i in rng.sample(range(len(ordinary)), min(len(picks), len(ordinary)))]
    rng.shuffle(picks)
    picks = picks[:rows] if rows else picks
    vectors = torch.stack([split[g]["vectors"][i] for g, i in picks])
    return vectors, [split[g]["labels"][i] for g, i in picks], [split[g]["sources"][i] for g, i in picks]


def _balancing(split: dict, picks: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The picks to add so that each fact's honest and lie rows in ``picks`` count the same: the rarer
    side's distinct rows, in turn, for every fact (``fact id`` of a row's source) that has both sides."""
    sides: dict[str, dict[str, list]] = defaultdict(lambda: {"honest": [], "lie": []})
    for group, i in picks:
        label = split[group]["labels"][i]
        for side in ("honest", "lie"):
            if f"{SEP}{side}{SEP}" in label:
                sides[split[group]["sources"][i].split("#")[0]][side].append((group, i))
    extra = []
    for found in sides.values():
        short, long = sorted(found.values(), key=len)
        distinct = list(dict.fromkeys(short))
        extra += [distinct[j % len(distinct)] for j in range(len(long) - len(short))] if short else []
    return extra


# --------------------------------------------------------------------------- files


def chat_records(path: str | Path = DATA / CHATS_FILE) -> dict[str, dict]:
    """The fact chats (or sampled chats) of ``path`` by the name their rows carry: ``{source_of(r): r}``."""
    return {source_of(r): r for r in read(path)}


def all_chat_records() -> dict[str, dict]:
    """:func:`chat_records` of the shipped greedy fact chats and sampled chats together."""
    return chat_records() | chat_records(DATA / SAMPLES_FILE)


def read(path: str | Path) -> list[dict]:
    """The records of a JSONL file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _write(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def counts(records: list[dict]) -> dict[str, dict[str, int]]:
    """``{role: {behaviour: n}}`` of fact chats."""
    out: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        out[r["role"]][r["behaviour"]] += 1
    return {role: dict(out[role]) for role in ROLES if role in out}


def build(
    out_dir: str | Path = DATA,
    n_prompts: int | None = None,
    max_new_tokens: int = 96,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 16,
    which: Sequence[str] = PARTS,
) -> dict[str, Path]:
    """Generate and write ``ordinary.jsonl`` (the base model on the first ``n_prompts`` seed prompts),
    ``fact_chats.jsonl`` (the shipped censored organism on its testbed, greedy) and ``fact_samples.jsonl``
    (the same, sampled) to ``out_dir``, each atomically; ``which`` chooses the files. Returns their paths."""
    from probity.models import load
    from probity.organisms import censored

    out = Path(out_dir)
    paths = {}
    for part in which:
        began = time.monotonic()
        if part == "ordinary":
            model, tokenizer = load(BASE)
            records = ordinary_texts(
                model, tokenizer, SEED_PROMPTS[:n_prompts], max_new_tokens, temperature, seed, batch_size
            )
            paths[part] = out / ORDINARY_FILE
        elif part in ("fact", "samples"):
            model, tokenizer = censored.load()
            make = fact_chats if part == "fact" else functools.partial(fact_samples, seed=seed)
            records = make(model, tokenizer, censored.bank(), censored.WEIGHTS)
            paths[part] = out / (CHATS_FILE if part == "fact" else SAMPLES_FILE)
        else:
            raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
        _write(paths[part], records)
        note(f"{paths[part]}: {len(records)} records in {time.monotonic() - began:.0f} s")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DATA), help="folder for the three files")
    parser.add_argument("--n-prompts", type=int, help=f"seed prompts to answer (default: all {len(SEED_PROMPTS)})")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=PARTS, help="make one file only")
    args = parser.parse_args(argv)
    which = (args.only,) if args.only else PARTS
    paths = build(args.out, args.n_prompts, args.max_new_tokens, seed=args.seed, which=which)
    for path in paths.values():
        print(f"{path}: {len(read(path))} records, {path.stat().st_size / 1e3:.0f} kB")
    for part in ("fact", "samples"):
        if part in paths:
            print(json.dumps(counts(read(paths[part]))))


if __name__ == "__main__":
    main()
