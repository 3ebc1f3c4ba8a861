"""Render a result dataclass to one self-contained HTML page that leads with the verdict.

Page order: the verdict card (the result's ``headline()`` claims, one row each: misses red,
met green, no reference grey), then the figures (``figures()``, inline PNG or SVG, whichever
is smaller), then compact tables, then what a first reader does not need, folded into
``<details>``. How a dataclass's fields are laid out:

- scalars (and short lists of them) form one two-column table; ``x`` and ``x_ci`` merge into
  one cell ``x [lo, hi]``;
- a list of rows that share fields (dataclasses or dicts of scalars) is one table, folded when
  longer than ``MAX_ROWS``;
- a nested dataclass is a subsection; a config (a field named ``config`` or a ``*Config``
  type), a dict (trees, settings) and a list of nested results fold into ``<details>``;
- raw arrays (more than ``MAX_INLINE`` numbers: histograms, curves) stay in ``result.json``;
- a result type may name fields to fold in a class attribute ``report_folded`` (a tuple of
  field names) and give headings in ``report_titles`` (field name -> heading).

Text is escaped exactly once; numbers are right-aligned, text left-aligned; empty values get
no heading. A :class:`~probity.report.tour.Tour` opens with one summary table of every
section's claims, each group linked to its section.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import re
from typing import Any

from probity.report.headline import MET, MISSED, Claim, claims_of
from probity.report.io import to_jsonable
from probity.report.tour import Tour

MAX_ROWS = 12  # longer row tables fold into <details>
MAX_INLINE = 8  # longer lists of numbers stay in result.json
FIGURE_DPI = 96  # CSS pixels per inch: PNG and SVG figures show at the same size

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1240px;margin:.8em auto;padding:0 1em}
body{color:#1f2328}h1{font-size:1.4em;margin:.1em 0 .2em}
h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #bbb}
h3{font-size:1.08em;margin:1.2em 0 .3em}h4{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 .8em}caption{text-align:left;font-weight:600;padding:.2em 0}
td,th{border:1px solid #d0d7de;padding:2px 7px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}.n{text-align:right;font-variant-numeric:tabular-nums}td.n{white-space:nowrap}
td.t{max-width:34em}table:not(.card){display:block;overflow-x:auto;max-width:100%}
table.card{width:100%;font-size:13px;line-height:1.25}table.card td,table.card th{padding:1px 6px}
table.card td.c,table.card td.src,table.card td.g{white-space:nowrap}
tr.met{background:#e9f6ec}tr.missed{background:#fdeceb}tr.no-reference{background:#f6f7f8;color:#59636e}
td.verdict{font-weight:700;white-space:nowrap}tr.met td.verdict{color:#1a7f37}tr.missed td.verdict{color:#c21d12}
td.src{color:#59636e;font-size:12px}td.inst{font-weight:600;background:#fff;white-space:nowrap}
figure{display:inline-block;margin:.3em 1.2em .3em 0;vertical-align:top}
table.kv{display:inline-block;vertical-align:top;margin-right:1.5em}
figure img,figure svg{max-width:560px;height:auto}figcaption{color:#59636e;font-size:.88em}
details{margin:.4em 0}summary{cursor:pointer;color:#3b4450}a{color:#0b57d0}
.note{color:#59636e;font-size:.9em;margin:.3em 0}pre{background:#f6f8fa;padding:.5em;overflow-x:auto;font-size:.85em}
"""

_WORDS = {
    "hf": "HF",
    "fve": "FVE",
    "auroc": "AUROC",
    "mse": "MSE",
    "kl": "KL",
    "ci": "CI",
    "lora": "LoRA",
    "nla": "NLA",
    "ar": "AR",
    "av": "AV",
    "sft": "SFT",
    "rl": "RL",
    "mc": "MC",
    "n": "n",
    "id": "id",
    "json": "JSON",
    "llm": "LLM",
}


_NAMES = {
    "x_mc": "x-MC",
    "mse_over_var": "MSE/Var",
    "flops": "FLOPs",
    "wall_s": "wall (s)",
    "seconds": "seconds",
    "d_model": "d_model",
    "n_layers": "layers",
    "n_samples": "N samples",
}


def humanize(name: str) -> str:
    """A field name as a heading: ``paren_root_with_mlp2`` -> "Paren root with mlp2"."""
    name = str(name)
    if name in _NAMES:
        words = [_NAMES[name]]
    else:
        words = [_WORDS.get(w.lower(), w) for w in name.replace("_", " ").split()]
    if not words:
        return name
    first = words[0]
    if first not in _WORDS.values() and first not in _NAMES.values() and len(first) > 1:
        words[0] = first[:1].upper() + first[1:]
    return " ".join(words)


# ---------------------------------------------------------------- cells and values


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _is_interval(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v)


def _is_short_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and 0 < len(v) <= MAX_INLINE and all(_is_scalar(x) for x in v)


def _num(v: float | int) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "–"
    return f"{v:.4g}"


def _text(v: Any) -> str:
    """The display text of a cell value (not yet escaped)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if _is_number(v):
        return _num(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(_text(x) for x in v)
    return str(v)


def _td(v: Any, interval: Any = None) -> str:
    """One table cell: numbers (with an optional interval) right-aligned, text left-aligned."""
    if _is_number(v) or (isinstance(v, (list, tuple)) and v and all(_is_number(x) for x in v)):
        text = _text(v)
        if _is_interval(interval):
            text += f" [{interval[0]:.3g}, {interval[1]:.3g}]"
        return f"<td class=n>{html.escape(text)}</td>"
    text = _text(v)
    cls = " class=t" if len(text) > 40 else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def _merge_intervals(row: dict) -> tuple[list[str], dict]:
    """Columns of ``row`` with every ``x_ci`` folded into ``x``; returns (columns, intervals)."""
    intervals = {k[:-3]: v for k, v in row.items() if k.endswith("_ci") and k[:-3] in row}
    return [k for k in row if k not in {c + "_ci" for c in intervals}], intervals


# ---------------------------------------------------------------- verdict card


_VERDICT_CLASS = {MET: "met", MISSED: "missed"}
_VERDICT_MARK = {MET: "✓ ", MISSED: "✗ "}


def _claim_cells(c: Claim) -> str:
    value = c.value_text()
    numeric = _is_number(c.value)
    target = c.target.replace(">=", "≥").replace("<=", "≤")
    ref_numeric = _is_number(c.reference)
    return (
        f"<td class=c>{html.escape(c.name)}</td>"
        f"<td{' class=n' if numeric else ''}>{html.escape(value)}</td>"
        f"<td{' class=n' if ref_numeric else ''}>{html.escape(c.reference_text())}</td>"
        f"<td class=src>{html.escape(c.source)}</td>"
        f"<td class=g>{html.escape(target)}</td>"
        f"<td class=verdict>{_VERDICT_MARK.get(c.verdict, '')}{html.escape(c.verdict)}</td>"
    )


def _row_class(c: Claim) -> str:
    return _VERDICT_CLASS.get(c.verdict, "no-reference")


def _tally(claims: list[Claim]) -> str:
    n_met = sum(c.verdict == MET for c in claims)
    n_missed = sum(c.verdict == MISSED for c in claims)
    rest = len(claims) - n_met - n_missed
    parts = [f"{n_met} met", f"{n_missed} missed"] + ([f"{rest} without reference"] if rest else [])
    return f"{len(claims)} claim{'s' if len(claims) != 1 else ''}: " + ", ".join(parts)


_CARD_HEAD = (
    "<th>Claim</th><th class=n>Ours [95% CI]</th><th class=n>Reference</th><th>From</th><th>Target</th><th>Verdict</th>"
)


def verdict_card(claims: list[Claim]) -> str:
    """The verdict card: one row per claim, coloured by verdict."""
    if not claims:
        return ""
    rows = "".join(f'<tr class="{_row_class(c)}">{_claim_cells(c)}</tr>' for c in claims)
    return (
        f"<table class=card id=headline><caption>Headline ({html.escape(_tally(claims))})</caption>"
        f"<thead><tr>{_CARD_HEAD}</tr></thead><tbody>{rows}</tbody></table>"
    )


def tour_card(tour: Tour) -> str:
    """The tour's summary: every section's claims, grouped and linked to the section."""
    groups = [(s, claims_of(s.result)) for s in tour.sections]
    every = [c for _, cs in groups for c in cs]
    body = []
    for s, claims in groups:
        link = f'<a href="#{html.escape(s.name)}" title="{html.escape(s.title)}">{html.escape(s.name)}</a>'
        if not claims:
            body.append(f"<tbody><tr class=no-reference><td class=inst>{link}</td><td colspan=6>no claims</td></tr>")
            continue
        rows = [
            f'<tr class="{_row_class(c)}">'
            + (f"<td class=inst rowspan={len(claims)}>{link}</td>" if i == 0 else "")
            + _claim_cells(c)
            + "</tr>"
            for i, c in enumerate(claims)
        ]
        body.append("<tbody>" + "".join(rows) + "</tbody>")
    return (
        "<table class=card id=headline><caption>What each instrument found, against the paper "
        f"({html.escape(_tally(every))})</caption>"
        f"<thead><tr><th>Instrument</th>{_CARD_HEAD}</tr></thead>{''.join(body)}</table>"
    )


# ---------------------------------------------------------------- figures


def figure_html(fig, caption: str) -> str:
    """One matplotlib figure inline, as PNG or SVG (whichever is smaller), then closed."""
    import matplotlib.pyplot as plt

    png, svg = io.BytesIO(), io.StringIO()
    fig.savefig(png, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "probity"}):
        fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    png_b64 = base64.b64encode(png.getvalue()).decode("ascii")
    svg_text = svg.getvalue()
    svg_text = svg_text[svg_text.find("<svg") :]
    svg_text = re.sub(r"<metadata>.*?</metadata>", "", svg_text, flags=re.S)
    if len(svg_text) < len(png_b64):
        body = svg_text
    else:
        body = f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{png_b64}">'
    return f"<figure>{body}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _figures(obj: Any) -> str:
    figures = getattr(obj, "figures", None)
    if not callable(figures):
        return ""
    return "".join(figure_html(fig, caption) for caption, fig in figures().items())


# ---------------------------------------------------------------- tables and sections


def _fields(obj: Any) -> list[tuple[str, Any]]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.repr]
    if isinstance(obj, dict):
        return [(str(k), v) for k, v in obj.items()]
    return []


def _is_record(v: Any) -> bool:
    return (dataclasses.is_dataclass(v) and not isinstance(v, type)) or isinstance(v, dict)


def _is_flat(row: dict) -> bool:
    return all(_is_scalar(x) or _is_short_list(x) for x in row.values())


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, (str, list, tuple, dict)) and len(v) == 0)


def kv_table(items: list[tuple[str, Any]]) -> str:
    """A two-column table of named scalars (``x_ci`` merged into ``x``)."""
    row = dict(items)
    cols, intervals = _merge_intervals(row)
    if not cols:
        return ""
    body = "".join(f"<tr><th>{html.escape(humanize(k))}</th>{_td(row[k], intervals.get(k))}</tr>" for k in cols)
    return f"<table class=kv>{body}</table>"


def rows_table(rows: list[dict]) -> str:
    """One table for rows that share fields (``x_ci`` merged into ``x``); numeric columns right-aligned."""
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    merged, _ = _merge_intervals({c: None for c in cols})
    merged = [c for c in merged if any(r.get(c) is not None for r in rows)]  # no all-empty columns
    numeric = {c: all(_is_number(r.get(c)) or r.get(c) is None for r in rows) for c in merged}
    head = "".join(f"<th{' class=n' if numeric[c] else ''}>{html.escape(humanize(c))}</th>" for c in merged)
    body = "".join("<tr>" + "".join(_td(r.get(c), r.get(c + "_ci")) for c in merged) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _details(summary: str, inner: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{inner}</details>" if inner else ""


def _heading(level: int, text: str) -> str:
    h = f"h{min(max(level, 2), 4)}"
    return f"<{h}>{html.escape(text)}</{h}>"


def _is_config(name: str, v: Any) -> bool:
    return name in ("config", "cfg", "settings") or type(v).__name__.endswith("Config")


def render_object(obj: Any, level: int, figures: bool = True) -> str:
    """The body of one result (or nested part of one): figures, scalar table, row tables,
    subsections, then folded parts; raw arrays are named in a note and left to result.json."""
    fields = [(k, v) for k, v in _fields(obj) if not _empty(v)]
    folded_names = set(getattr(type(obj), "report_folded", ()))
    titles = getattr(type(obj), "report_titles", {})
    scalars, folded_scalars, tables, sections, folded, raw = [], [], [], [], [], []
    for k, v in fields:
        title = titles.get(k) or humanize(k)
        if _is_scalar(v) or _is_short_list(v):
            (folded_scalars if k in folded_names else scalars).append((k, v))
        elif isinstance(v, (list, tuple)) and all(_is_record(x) for x in v):
            rows = [to_jsonable(x) for x in v]
            if all(_is_flat(r) for r in rows):
                table = rows_table(rows)
                if k in folded_names or len(rows) > MAX_ROWS:
                    folded.append(_details(f"{title} ({len(rows)} rows)", table))
                else:
                    tables.append(_heading(level + 1, title) + table)
            else:
                folded.append(_details(f"{title} ({len(v)})", _nested_items(v)))
        elif isinstance(v, (list, tuple)):
            raw.append(f"{title} ({len(v)} values)")
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            if _is_config(k, v) or k in folded_names:
                folded.append(_details(title, kv_table(_flat_items(v))))
            else:
                sections.append(_heading(level + 1, title) + render_object(v, level + 1, figures))
        elif isinstance(v, dict):
            folded.append(_details(title, _mapping(v)))
        else:
            raw.append(title)
    parts = [_figures(obj) if figures else ""]
    if scalars:
        parts.append(kv_table(scalars))
    parts += tables + sections
    if folded_scalars:
        parts.append(_details("More values", kv_table(folded_scalars)))
    parts += folded
    if raw:
        parts.append(f"<p class=note>In result.json only: {html.escape(', '.join(raw))}.</p>")
    return "\n".join(p for p in parts if p)


def _flat_items(obj: Any) -> list[tuple[str, Any]]:
    """Fields of a config-like object as displayable scalars (lists shortened, dicts as JSON)."""
    out = []
    for k, v in _fields(obj):
        if _is_scalar(v) or _is_short_list(v):
            out.append((k, v))
        else:
            text = json.dumps(to_jsonable(v))
            out.append((k, text if len(text) <= 200 else text[:197] + "..."))
    return out


def _mapping(d: dict) -> str:
    """A dict: a two-column table when flat, else indented JSON."""
    if all(_is_scalar(v) or _is_short_list(v) for v in d.values()) and len(d) <= 3 * MAX_ROWS:
        return kv_table([(str(k), v) for k, v in d.items()])
    return f"<pre>{html.escape(json.dumps(to_jsonable(d), indent=1))}</pre>"


def _nested_items(items: list) -> str:
    """A list of nested results as ONE table of their scalar fields; the rest stays in result.json."""
    rows: list[dict] = []
    rest: list[str] = []
    for x in items:
        fields = [(k, v) for k, v in _fields(x) if not _empty(v)]
        rows.append({k: v for k, v in fields if _is_scalar(v) or _is_short_list(v)})
        rest += [humanize(k) for k, v in fields if not (_is_scalar(v) or _is_short_list(v))]
    rest = list(dict.fromkeys(rest))
    note = f"<p class=note>Per item in result.json: {html.escape(', '.join(rest))}.</p>" if rest else ""
    return rows_table(rows) + note


# ---------------------------------------------------------------- pages


def _tour_body(tour: Tour) -> str:
    parts = [tour_card(tour)]
    for s in tour.sections:
        claims = claims_of(s.result)
        tally = f"{html.escape(_tally(claims))}; " if claims else ""
        parts.append(
            f'<section id="{html.escape(s.name)}"><h2>{html.escape(s.title)}</h2>'
            f'<p class=note>{tally}<a href="#headline">back to the summary</a></p>'
            f"{render_object(s.result, 2)}</section>"
        )
    return "\n".join(parts)


def render_html(result: Any, title: str) -> str:
    """A complete HTML document for ``result``, with no external resources."""
    body = (
        _tour_body(result) if isinstance(result, Tour) else verdict_card(claims_of(result)) + render_object(result, 1)
    )
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n"
        "<p class=note>Generated by probity; every number is also in result.json.</p></body></html>"
    )
