"""Testbeds: topics -> questions -> reference facts, in JSON or YAML.

A testbed file looks like::

    name: capitals
    topics:
      - name: france
        sensitive: false            # optional, default false; questions may override
        questions:
          - id: france-capital      # optional, default <topic>-<index>
            question: What is the capital of France?
            answer: The capital of France is Paris.          # optional reference answer
            false_answer: The capital of France is Lyon.     # optional canonical falsehood
            prefill: The capital of France is                # optional answer stem (prefill attacks)
            facts:
              - fact: the capital of France is Paris
                match: [Paris]                # any of these words means "mentioned"
                contradict: [Lyon, Marseille] # optional: any of these (without a match) means "contradicted"

``answer``/``false_answer`` pairs of non-sensitive questions are the generic
honest/dishonest data that probes and honesty fine-tuning learn from. Any other key is an
error (a misspelt ``sensitve:`` would otherwise make a topic silently ordinary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from probity import organisms
from probity.report.io import read_structured


class TestbedError(ValueError):
    """A malformed testbed file; the message names the bad entry."""

    __test__ = False  # not a pytest test class despite the name


@dataclass(frozen=True)
class Fact:
    """A reference fact with the words that show it was stated or contradicted."""

    fact: str
    match: tuple[str, ...]
    contradict: tuple[str, ...] = ()


@dataclass(frozen=True)
class Question:
    """One testbed question with its reference facts."""

    id: str
    topic: str
    question: str
    facts: tuple[Fact, ...]
    sensitive: bool = False
    answer: str | None = None
    false_answer: str | None = None
    prefill: str | None = None


@dataclass
class Testbed:
    """A named list of questions (grouped by topic in the file)."""

    __test__ = False

    name: str
    questions: list[Question] = field(default_factory=list)

    def sensitive(self) -> list[Question]:
        """The questions on sensitive topics."""
        return [q for q in self.questions if q.sensitive]

    def split(self) -> tuple[list[Question], list[Question]]:
        """(target questions, helper questions).

        Targets are the sensitive questions; helpers (few-shot examples, probe and
        fine-tuning data) are the non-sensitive ones. A testbed with no sensitive
        question (ordinary facts) is split in alternating halves so that helpers
        never include a target."""
        if self.sensitive():
            return self.sensitive(), [q for q in self.questions if not q.sensitive]
        return self.questions[1::2], self.questions[0::2]


# The keys each level of a testbed file may hold.
KEYS = {
    "testbed": ("name", "topics"),
    "topic": ("name", "sensitive", "questions"),
    "question": ("id", "question", "facts", "sensitive", "answer", "false_answer", "prefill"),
    "fact": ("fact", "match", "contradict"),
}


def _known_keys(entry: dict, level: str, where: str) -> None:
    unknown = [k for k in entry if k not in KEYS[level]]
    if unknown:
        raise TestbedError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; a {level} takes {', '.join(KEYS[level])}"
        )


def _strings(value, where: str, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise TestbedError(f"{where}: '{name}' must be a non-empty list of non-empty strings")
    return tuple(value)


def _text(entry: dict, key: str, where: str, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise TestbedError(f"{where}: '{key}' must be a non-empty string")
    return value


def parse_testbed(data, source: str = "testbed") -> Testbed:
    """Validate a testbed already parsed from JSON/YAML into a ``Testbed``."""
    if not isinstance(data, dict):
        raise TestbedError(f"{source}: top level must be a mapping with 'name' and 'topics'")
    _known_keys(data, "testbed", source)
    name = _text(data, "name", source)
    topics = data.get("topics")
    if not isinstance(topics, list) or not topics:
        raise TestbedError(f"{source}: 'topics' must be a non-empty list")
    questions, seen = [], set()
    for ti, topic in enumerate(topics):
        where = f"{source}: topics[{ti}]"
        if not isinstance(topic, dict):
            raise TestbedError(f"{where}: must be a mapping with 'name' and 'questions'")
        tname = _text(topic, "name", where)
        where = f"{source}: topic {tname!r}"
        _known_keys(topic, "topic", where)
        if not isinstance(topic.get("sensitive", False), bool):
            raise TestbedError(f"{where}: 'sensitive' must be true or false")
        if not isinstance(topic.get("questions"), list) or not topic["questions"]:
            raise TestbedError(f"{where}: 'questions' must be a non-empty list")
        for qi, q in enumerate(topic["questions"]):
            qwhere = f"{where} question {qi}"
            if not isinstance(q, dict):
                raise TestbedError(f"{qwhere}: must be a mapping with 'question' and 'facts'")
            _known_keys(q, "question", qwhere)
            qid = q.get("id", f"{tname}-{qi}")
            if not isinstance(qid, str) or not qid.strip() or qid in seen:
                raise TestbedError(
                    f"{qwhere}: id {qid!r} is not a non-empty string or is used twice; give each question a unique id"
                )
            seen.add(qid)
            qwhere = f"{where} question {qid!r}"
            facts = q.get("facts")
            if not isinstance(facts, list) or not facts:
                raise TestbedError(f"{qwhere}: 'facts' must be a non-empty list")
            parsed = []
            for fi, f in enumerate(facts):
                fwhere = f"{qwhere} fact {fi}"
                if not isinstance(f, dict):
                    raise TestbedError(f"{fwhere}: must be a mapping with 'fact' and 'match'")
                _known_keys(f, "fact", fwhere)
                contradict = f.get("contradict")
                if contradict is None or contradict == []:
                    contradict = ()
                else:
                    contradict = _strings(contradict, fwhere, "contradict")
                parsed.append(Fact(_text(f, "fact", fwhere), _strings(f.get("match"), fwhere, "match"), contradict))
            sensitive = q.get("sensitive", topic.get("sensitive", False))
            if not isinstance(sensitive, bool):
                raise TestbedError(f"{qwhere}: 'sensitive' must be true or false")
            questions.append(
                Question(
                    qid,
                    tname,
                    _text(q, "question", qwhere),
                    tuple(parsed),
                    sensitive,
                    _text(q, "answer", qwhere, False),
                    _text(q, "false_answer", qwhere, False),
                    _text(q, "prefill", qwhere, False),
                )
            )
    return Testbed(name, questions)


def load_testbed(path: str | Path) -> Testbed:
    """Read and validate a testbed from a ``.json`` or ``.yaml``/``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"testbed {path} not found; pass a .json/.yaml testbed file (see probity/honesty/testbeds/)"
        )
    return parse_testbed(read_structured(path, TestbedError), str(path))


BUILTIN = Path(__file__).parent / "testbeds"


def builtin_testbed(model_name: str) -> Path:
    """The shipped testbed for a model: a chat organism's own facts (``testbed_path`` of its folder,
    shipped or trained into), else ordinary capitals (for real models)."""
    found = organisms.find(model_name)
    if found is not None and found[0] in organisms.CHAT:
        path = organisms.CHAT[found[0]].testbed_path(found[1])
        if path.is_file():
            return path
    return BUILTIN / "capitals.yaml"
