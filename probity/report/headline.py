"""Claims: the few numbers a reader needs first, each judged against a reference or target.

A result type's ``headline()`` returns a list of :class:`Claim`; ``probity.report.save``
renders them as the verdict card at the top of the page (misses in red). A claim holds our
value (with its interval), the reference figure and who it is from (a paper or an anchor
run), the target it must reach, and the verdict::

    Claim("held-out FVE", 0.84, target=">= 0.70", reference="0.6-0.8", source="Anthropic 2026")
    Claim("loss recovered, 1a", 0.23, interval=(0.15, 0.30), reference=0.88,
          source="Chan et al. 2022", target="within 0.10 of the paper", verdict=verdict(False))

With a target of the form ``"<op> <number>"`` (``>=``, ``<=``, ``>``, ``<``, ``==``) the verdict
is derived from the value; any other target needs ``verdict=`` given (``verdict(ok)`` maps a
bool to met / missed). A claim without a target has the verdict "no reference".
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

MET, MISSED, NO_REFERENCE = "met", "missed", "no reference"
VERDICTS = (MET, MISSED, NO_REFERENCE)

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_TARGET = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*)$")


def verdict(ok: bool | None) -> str:
    """``MET`` for True, ``MISSED`` for False, ``NO_REFERENCE`` for None."""
    return NO_REFERENCE if ok is None else MET if ok else MISSED


def verdict_against(value: float | int | str | None, target: str) -> str:
    """The verdict of ``value`` against a target such as ``">= 0.70"`` (text after the number is
    a comment: ``"<= 0.05 (about 0)"``). No target: ``NO_REFERENCE``; no value (``None``,
    NaN): ``MISSED``. Raises ``ValueError`` for a target this cannot read."""
    if not target:
        return NO_REFERENCE
    m = _TARGET.match(target)
    if m is None:
        raise ValueError(
            f"cannot judge target {target!r}; write it as '<op> <number>' (>=, <=, >, <, ==) or give verdict="
        )
    if value is None or isinstance(value, str) or (isinstance(value, float) and math.isnan(value)):
        return MISSED
    return verdict(_OPS[m.group(1)](float(value), float(m.group(2))))


@dataclass
class Claim:
    """One headline claim: ``name``, our ``value`` (a number or a short text) with its
    ``interval`` (lo, hi) or None, the ``reference`` figure and its ``source`` (e.g.
    "Chan et al. 2022", "ARC reference code"), the ``target`` where there is one (e.g.
    ">= 0.70", "paper order") and the ``verdict`` (met / missed / no reference; derived from
    ``target`` when not given, see :func:`verdict_against`)."""

    name: str
    value: float | int | str | None
    interval: tuple[float, float] | None = None
    reference: float | str | None = None
    source: str = ""
    target: str = ""
    verdict: str = ""

    def __post_init__(self):
        if self.interval is not None:
            self.interval = (float(self.interval[0]), float(self.interval[1]))
        if not self.verdict:
            self.verdict = verdict_against(self.value, self.target)
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}; got {self.verdict!r}")

    def value_text(self) -> str:
        """Our value with its interval, e.g. ``0.043 [0.00, 0.09]``."""
        text = fmt_number(self.value)
        if self.interval is not None:
            lo, hi = self.interval
            text += f" [{fmt_number(lo, interval=True)}, {fmt_number(hi, interval=True)}]"
        return text

    def reference_text(self) -> str:
        """The reference figure as quoted (no trailing zeros; no source), or an empty string."""
        return "" if self.reference is None else fmt_number(self.reference, trim=True)


def claims_of(result) -> list[Claim]:
    """``result.headline()`` when the result defines it, else no claims."""
    headline = getattr(result, "headline", None)
    return list(headline()) if callable(headline) else []


def fmt_number(v: float | int | str | None, interval: bool = False, trim: bool = False) -> str:
    """A number as a reader wants it: 3 decimals below 10 (2 for interval ends), fewer above,
    2 significant digits in scientific notation below 0.001 or from 10^4 (``2.6e-5``);
    ``trim`` drops trailing zeros (for quoted figures: ``8.7``, not ``8.700``). Text passes
    through; ``None`` and NaN give "–"."""
    text = _fmt(v, interval)
    if trim and "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _fmt(v: float | int | str | None, interval: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if math.isinf(a):
        return "∞" if v > 0 else "-∞"
    if a == 0:
        return "0.00" if interval else "0"
    if a < 1e-3 or a >= 1e4:
        mant, exp = f"{v:.1e}".split("e")
        return f"{mant}e{int(exp)}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if interval else f"{v:.3f}"
