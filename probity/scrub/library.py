"""Built-in hypotheses: the two case studies of Chan et al. (2022), plus ``identity`` and ``empty``.

Paper figures are the loss recovered reported by Redwood for their own models; our
organisms are trained differently, so their head roles (which head computes the count
test, which the horizon test; which heads are previous-token and induction heads) are
read from each organism's ``config.json`` (``roles``) when present.
"""

from __future__ import annotations

from probity.scrub.hypothesis import Hypothesis, Node
from probity.scrub.run import EMPTY, IDENTITY

PAREN_ROLES = {"count": ["1.0", "2.0"], "horizon": ["2.1"], "proportion": ["0.0"], "start": [], "top": ["output", "mlp2"]}


def paren(roles: dict | None = None) -> dict[str, Hypothesis]:
    """The paren-balance case study (hypotheses 1a-4), with ``roles`` naming the heads."""
    r = {**PAREN_ROLES, **(roles or {})}

    def count(refine: str | None = None) -> Node:
        children = [] if refine is None else [
            Node("open_proportion@1", r["proportion"], "open_proportion", via=["v"], positions=[1])]
        return Node("count", r["count"], "count_test", rest=refine or "random", children=children)

    def horizon(feature: str, refine: str | None = None) -> Node:
        children = [] if refine is None else [Node("horizon@pos", ["*"], "horizon_ok", via=["v"])]
        return Node("horizon", r["horizon"], feature, rest=refine or "random", children=children)

    def hyp(name, paper, text, *children) -> Hypothesis:
        return Hypothesis(name, Node("out", r["top"], children=list(children)), text, paper)

    # Where the organism has a separate head checking that the string starts with an open paren
    # (ours: 1.1), hypotheses from 1b on claim it too; Redwood's model folds that check into 2.1.
    start = [Node("start", r["start"], "starts_open")] if r.get("start") else []
    return {h.name: h for h in [
        hyp("1a", 0.88, "count heads compute the count test; the horizon head the horizon test; nothing else reaches the output",
            count(), horizon("horizon_test")),
        hyp("1b", 0.93, "1a, and the starts-with-open check: the horizon head reads it, and so does the start head if there is one",
            count(), horizon("horizon_and_start"), *start),
        hyp("2a", 0.88, "1b, and the count heads' value from position 1 of the proportion head depends only on the proportion of opens",
            count("self"), horizon("horizon_and_start"), *start),
        hyp("2b", 0.87, "2a, and the count heads' other inputs only carry the count test (a fresh input agreeing on it)",
            count("count_test"), horizon("horizon_and_start"), *start),
        hyp("3a", 0.74, "1b, and the horizon head's value at each position depends only on that position's horizon check",
            count(), horizon("horizon_and_start", "self"), *start),
        hyp("3b", 0.74, "3a, and the horizon head's queries and keys only carry its feature (a fresh input agreeing on it)",
            count(), horizon("horizon_and_start", "horizon_and_start"), *start),
        hyp("4", 0.72, "2b and 3b together", count("count_test"), horizon("horizon_and_start", "horizon_and_start"), *start),
    ]}


def induction(prev: list[int], heads: list[int], n_heads: int = 4) -> dict[str, Hypothesis]:
    """The induction case study for previous-token heads ``prev`` (layer 0) and induction heads ``heads``
    (layer 1). Every path outside the induction heads stays exact (root ``rest=self``); inside,
    the named paths run on the reference and every other path into the heads on a random input."""
    ind = [f"1.{h}" for h in heads]
    prev_sites = [f"0.{h}" for h in prev]
    emb_v = Node("emb->V", ["embed"], via=["v"])
    emb_q = Node("emb->Q", ["embed"], via=["q"])
    prev_k = Node("prev->K", prev_sites, via=["k"])

    def exact(kinds: list[str]) -> Node:
        return Node("exact " + "".join(kinds).upper(), ["*"], via=kinds)

    def hyp(name, paper, text, *children, feature: str = "identity") -> Hypothesis:
        heads = Node("induction", ind, feature, children=list(children))
        return Hypothesis(name, Node("out", ["output"], rest="self", children=[heads]), text, paper)

    others = [f"0.{h}" for h in range(n_heads) if h not in prev]
    return {h.name: h for h in [
        hyp("ind-inputs-random", None, "floor: the induction heads run on a random input", feature="none"),
        hyp("emb->V", 0.90, "the induction heads' values read only the token embeddings", emb_v, exact(["q", "k"])),
        hyp("emb->Q", 0.51, "the induction heads' queries read only the token embeddings", emb_q, exact(["k", "v"])),
        hyp("prev->K", 0.83, "the induction heads' keys read only the previous-token heads", prev_k, exact(["q", "v"])),
        hyp("all-three", 0.36, "values and queries from the embeddings, keys from the previous-token heads", emb_v, emb_q, prev_k),
        # ours: the current token reaches the induction heads' values through the non-previous-token
        # layer-0 heads (0.0 here) as much as directly; these two make that claim explicit
        hyp("emb+L0->V", None, "emb->V, with the non-previous-token layer-0 heads also allowed into the values",
            Node("emb+L0->V", ["embed", *others], via=["v"]), exact(["q", "k"])),
        hyp("all-three+L0", None, "all-three with emb+L0->V", Node("emb+L0->V", ["embed", *others], via=["v"]), emb_q, prev_k),
        hyp("refined", 0.89, "all-three, plus positions everywhere, the other layer-0 heads into queries and values, embeddings into keys",
            Node("V", ["embed", "pos", *others], via=["v"]), Node("Q", ["embed", "pos", *prev_sites, *others], via=["q"]),
            Node("K", ["embed", "pos", *prev_sites], via=["k"])),
    ]}


def builtin(organism: str, meta: dict | None = None, n_heads: int = 4) -> dict[str, Hypothesis]:
    """All built-in hypotheses for ``organism`` (``paren`` or ``induction``), with ``identity`` and ``empty``."""
    meta = meta or {}
    if organism == "paren":
        found = paren(meta.get("roles"))
    elif organism == "induction":
        found = induction(meta.get("prev_token_heads") or [0], meta.get("induction_heads") or list(range(n_heads)), n_heads)
    else:
        raise KeyError(f"unknown organism {organism!r}; choose paren or induction")
    return {"identity": IDENTITY, "empty": EMPTY, **found}
