"""Built-in hypotheses: the two case studies of Chan et al. (2022), plus ``identity`` and ``empty``.

Paper figures are the loss recovered reported by Redwood for their own models; our
organisms are trained differently, so their head roles (which head computes the count
test, which the horizon test, which the proportion of opens; which heads are
previous-token and induction heads) are read from each organism's ``config.json``
(``roles``) when present.

The paren hypotheses follow Redwood's own reproduction of the post (the REMIX "paren
balancer" exercises, rust_circuit): every claimed head is its own interpretation node
with its own input, claimed only along its direct path to the logits, and everything
not claimed (every MLP, the other heads, the embeddings) runs on a random input.

- 1a: the count heads' outputs depend only on the count test, the horizon head's only
  on the horizon test.
- 1b: the count heads use "count test passed and the string starts with an open paren"
  (``count_open``); the horizon head is unchanged.
- 2a: 1b, and each count head reads only its input at position 1, where the proportion
  head's output depends only on the proportion of opens (exactly; one class for strings
  starting with a close paren) and every other term only on whether the string starts
  open. Redwood's matchers also route the proportion head's contribution *inside* the
  other layer-0/1 terms to the proportion input; here those terms (``mlp0``, the other
  heads) run entirely on the starts-open input.
- 2b: 2a with the proportion head's output at position 1 replaced by its linear fit
  ``phi(p) = v (2p - 1)`` on the proportion input plus the fit's residual on a random
  input (Redwood fit ``v`` from the weights; we fit it by least squares, ``phi`` nodes).
- 3a: 1b, and the horizon head's input at each position depends only on that position's
  horizon class (padding / END after an open / END after a close / the parens from there
  on hold more opens than closes / not), the head's node on the horizon test.
- 3b: 3a with the classes computed from the "adjusted" proportion: opens weighted as the
  proportion head attends (``task.adjusted_open_after``).
- 4: 2b and 3b together.
- faithful: our organism's mechanism, reached by ``probity scrub refine`` from 1b (``bench/scrub.py
  --refine``): the last MLP in the root, the count heads on ``count_open``, and every head of the last
  layer (the horizon head and its neighbour) already on ``balanced``.

The role ``top`` names the model nodes the root (the answer, computed from the heads)
maps to: ``output`` in Redwood's model, whose heads write the answer directly, and the
default here. Our paren organism records its count, horizon and proportion heads
(``paren.roles``) but computes the answer in its last MLP (mlp2's direct path alone on the
reference, all else random, recovers 0.82 of the loss; all six heads' direct paths 0.41;
2000 rows, scrub seed 0), so ``case_study(..., roles={"top": ["output", "mlp2"]})`` runs the
hypotheses with the root also claiming mlp2.
"""

from __future__ import annotations

from probity.models.sites import Site
from probity.scrub.hypothesis import Hypothesis, Node
from probity.scrub.model import layer_and_head
from probity.scrub.run import EMPTY, IDENTITY

PAREN_ROLES = {"count": ["1.0", "2.0"], "horizon": ["2.1"], "proportion": ["0.0"], "top": ["output"]}


def _senders(head: Site | str, n_heads: int) -> list[str]:
    """Every residual-stream term that reaches ``head`` (e.g. "1.0"): embeddings, earlier heads and MLPs."""
    layer, _ = layer_and_head(head)
    return [
        "embed",
        "pos",
        *[f"{earlier}.{h}" for earlier in range(layer) for h in range(n_heads)],
        *[f"mlp{earlier}" for earlier in range(layer)],
    ]


def paren(roles: dict | None = None, n_heads: int = 2) -> dict[str, Hypothesis]:
    """The paren-balance case study (hypotheses 1a-4, see module doc), with ``roles`` naming the heads
    (each a ``Site`` or a string such as ``"1.0"``)."""
    r = {**PAREN_ROLES, **(roles or {})}
    prop = r["proportion"][0]

    def count(head: Site | str, feature: str, at1: str | None = None) -> Node:  # at1: None, "exact" or "phi"
        if at1 is None:
            return Node(str(head), [head], feature)
        kw = {"phi": "open_centered"} if at1 == "phi" else {}
        others = [s for s in _senders(head, n_heads) if Site.parse(s) != Site.parse(prop)]
        return Node(
            str(head),
            [head],
            feature,
            children=[
                Node(f"{head}<-{prop}@1", [prop], "p_if_starts_open", positions=[1], **kw),
                Node(f"{head}<-rest@1", others, "starts_open", positions=[1]),
            ],
        )

    def horizon(head: Site | str, classes: str | None = None) -> Node:
        if classes is None:
            return Node(str(head), [head], "horizon_test")
        every = "horizon_all" + classes.removeprefix("horizon_class")
        return Node(str(head), [head], every, children=[Node(f"{head}@each position", ["*"], classes)])

    def hyp(name, paper, text, counts, horizons) -> Hypothesis:
        children = [*counts, *horizons]
        return Hypothesis(name, Node("out", r["top"], children=children), text, paper)

    c1a = [count(h, "count_test") for h in r["count"]]
    c1b = [count(h, "count_open") for h in r["count"]]
    c2a = [count(h, "count_open", "exact") for h in r["count"]]
    c2b = [count(h, "count_open", "phi") for h in r["count"]]
    h1 = [horizon(h) for h in r["horizon"]]
    h3a = [horizon(h, "horizon_class") for h in r["horizon"]]
    h3b = [horizon(h, "horizon_class_adjusted") for h in r["horizon"]]
    return {
        h.name: h
        for h in [
            hyp(
                "1a",
                0.88,
                "the count heads' direct outputs depend only on the count test, the horizon head's only on "
                "the horizon test; every other path runs on a random input",
                c1a,
                h1,
            ),
            hyp("1b", 0.93, "1a with the count heads on 'count test passed and starts with an open paren'", c1b, h1),
            hyp(
                "2a",
                0.88,
                "1b, and each count head reads only position 1, where the proportion head depends only on "
                "the proportion of opens and everything else only on the first paren",
                c2a,
                h1,
            ),
            hyp(
                "2b",
                0.87,
                "2a with the proportion head's output at position 1 replaced by v(2p-1) on the proportion "
                "input plus the residual on a random input",
                c2b,
                h1,
            ),
            hyp(
                "3a",
                0.74,
                "1b, and the horizon head's input at each position depends only on that position's horizon class",
                c1b,
                h3a,
            ),
            hyp(
                "3b",
                0.74,
                "3a with horizon classes from the proportion head's attention-weighted (adjusted) proportion",
                c1b,
                h3b,
            ),
            hyp("4", 0.72, "2b and 3b together", c2b, h3b),
            faithful(r, n_heads),
        ]
    }


def faithful(roles: dict, n_heads: int = 2) -> Hypothesis:
    """The organism's own mechanism, reached by ``probity scrub refine`` from 1b (see ``paren``): the last
    layer's MLP computes the answer from the count heads (on "count test passed and starts open") and
    the last layer's heads (the horizon head and its neighbour, each already on "balanced")."""
    layer, _ = layer_and_head(roles["horizon"][0])
    last = sorted({f"{layer}.{h}" for h in range(n_heads)} | set(map(str, roles["horizon"])))
    last = [h for h in last if h not in map(str, roles["count"])]
    return Hypothesis(
        "faithful",
        Node(
            "out",
            ["output", f"mlp{layer}"],
            children=[
                *(Node(str(h), [h], "count_open") for h in roles["count"]),
                *(Node(h, [h], "balanced") for h in last),
            ],
        ),
        f"refined from 1b (probity scrub refine): mlp{layer} is in the root (it writes the answer) and reads the "
        f"count heads {', '.join(map(str, roles['count']))} on 'count test passed and starts open' and the "
        f"layer-{layer} heads {', '.join(last)} (horizon head {', '.join(map(str, roles['horizon']))}), which "
        "already compute 'balanced'; every other path runs on a random input",
    )


def _induction_paper(prev: list, ind: list, top: list) -> dict[str, Hypothesis]:
    """The floor and the paper's four hypotheses on induction heads ``ind`` with previous-token heads
    ``prev`` (``Site``s or strings), under a root claiming ``top`` (``rest=self``: every path outside the
    induction heads stays exact; inside, the named paths run on the reference and every other path into
    the heads on a random input)."""
    emb_v = Node("emb->V", ["embed"], via=["v"])
    emb_q = Node("emb->Q", ["embed"], via=["q"])
    prev_k = Node("prev->K", list(prev), via=["k"])

    def exact(kinds: list[str]) -> Node:
        return Node("exact " + "".join(kinds).upper(), ["*"], via=kinds)

    def hyp(name, paper, text, *children, feature: str = "identity") -> Hypothesis:
        heads = Node("induction", list(ind), feature, children=list(children))
        return Hypothesis(name, Node("out", list(top), rest="self", children=[heads]), text, paper)

    return {
        h.name: h
        for h in [
            hyp("ind-inputs-random", None, "floor: the induction heads run on a random input", feature="none"),
            hyp("emb->V", 0.90, "the induction heads' values read only the token embeddings", emb_v, exact(["q", "k"])),
            hyp(
                "emb->Q", 0.51, "the induction heads' queries read only the token embeddings", emb_q, exact(["k", "v"])
            ),
            hyp(
                "prev->K",
                0.83,
                "the induction heads' keys read only the previous-token heads",
                prev_k,
                exact(["q", "v"]),
            ),
            hyp(
                "all-three",
                0.36,
                "values and queries from the embeddings, keys from the previous-token heads",
                emb_v,
                emb_q,
                prev_k,
            ),
        ]
    }


def induction_lm(prev: list[Site | str], ind: list[Site | str]) -> dict[str, Hypothesis]:
    """The induction study of a deep language model (e.g. SmolLM2-135M on ``task.repeat_task``) for the
    previous-token heads ``prev`` and induction heads ``ind`` anywhere in it (``find_heads(...).heads``):
    the floor (``ind-inputs-random``) and the paper's four hypotheses emb->V, emb->Q, prev->K and
    all-three. The root claims ``output`` and ``above`` (every component above the lowest induction head
    but those heads), so the model above the heads is recomputed from the scrubbed heads rather than read
    clean. No ``pos`` node: rotary models add positions inside Q and K. A previous-token head in or above
    the top induction head's layer feeds no induction head's key and is left out of prev->K."""
    below = _below(prev, ind, "induction_lm", "previous-token", "induction")
    return _induction_paper(below, ind, ["output", "above"])


def _below(senders: list, receivers: list, caller: str, sender_role: str, receiver_role: str) -> list:
    """The ``senders`` below the top layer of ``receivers`` (the heads that can feed one of them); a one-line
    ``ValueError`` from ``caller`` when there are no receivers or no such sender."""
    if not receivers:
        raise ValueError(f"{caller} needs at least one {receiver_role} head")
    top = max(layer_and_head(h)[0] for h in receivers)
    below = [h for h in senders if layer_and_head(h)[0] < top]
    if not below:
        raise ValueError(f"{caller} needs a {sender_role} head below layer {top}, the top {receiver_role} head's")
    return below


def keep_only(heads: list[Site | str], name: str = "keep-only") -> Hypothesis:
    """Only ``heads`` carry the reference: their outputs run on the reference input (a leaf), every other
    path from the input runs on a random input, and the model above the lowest named head (the root's
    ``above``) is recomputed from them. Its loss recovered is the share of the behaviour the heads carry."""
    if not heads:
        raise ValueError("keep_only needs at least one head")
    return Hypothesis(
        name,
        Node("out", ["output", "above"], children=[Node("heads", list(heads))]),
        f"only {', '.join(map(str, heads))} carry the reference; every other path runs on a random input",
    )


def ioi_lm(name_movers: list[Site | str], s_inhibition: list[Site | str]) -> dict[str, Hypothesis]:
    """The IOI study of a language model (``task.ioi_task``) for name-mover heads ``name_movers`` (END
    attends to the indirect object: ``find_heads(..., "copy")``) and S-inhibition heads ``s_inhibition``
    (END attends to S2), after Wang et al. (2022). Every path outside the name movers stays exact (root
    ``rest=self``); the hypotheses differ in what the name movers' queries may read, and on what:

    - ``nm-q-random``: the floor, every path into the name movers' queries on a random input;
    - ``nm-q<-SI``: the queries read only the S-inhibition heads below them (the model's own values there);
    - ``SI=order`` / ``SI=s``: the same, the S-inhibition heads run on another prompt with the same name
      order (where S stands: ABBA or BABA) / the same subject name. Wang et al. found the position signal
      carries most of what S-inhibition heads tell the name movers in GPT-2 small;
    - ``nm=none`` / ``nm=io``: the name movers' outputs computed on a random prompt (the floor of the
      output claims) / on another prompt with the same indirect object: they carry which name to say and
      nothing else of the prompt.

    The keys and values of the name movers stay exact in the query hypotheses. S-inhibition heads in or
    above the top name mover's layer feed no name mover's query and are left out."""
    below = _below(s_inhibition, name_movers, "ioi_lm", "S-inhibition", "name-mover")
    exact_kv = Node("exact KV", ["*"], via=["k", "v"])

    def query(feature: str | None) -> list[Node]:
        return [exact_kv] + ([] if feature is None else [Node("SI->Q", list(below), feature, via=["q"])])

    def hyp(name, text, children, feature: str = "identity") -> Hypothesis:
        movers = Node("name movers", list(name_movers), feature, children=children)
        return Hypothesis(name, Node("out", ["output"], rest="self", children=[movers]), text)

    return {
        h.name: h
        for h in [
            hyp("nm-q-random", "floor: the name movers' queries read a random prompt", query(None)),
            hyp("nm-q<-SI", "the name movers' queries read only the S-inhibition heads", query("identity")),
            hyp("SI=order", "... which carry only where S stands (ABBA / BABA)", query("order")),
            hyp("SI=s", "... which carry only the subject's name", query("s")),
            hyp("nm=none", "floor: the name movers' outputs computed on a random prompt", [], "none"),
            hyp("nm=io", "the name movers' outputs carry only the indirect object's name", [], "io"),
        ]
    }


def induction(prev: list[int], heads: list[int], n_heads: int = 4) -> dict[str, Hypothesis]:
    """The induction case study for previous-token heads ``prev`` (layer 0) and induction heads ``heads``
    (layer 1). Every path outside the induction heads stays exact (root ``rest=self``); inside,
    the named paths run on the reference and every other path into the heads on a random input."""
    ind = [f"1.{h}" for h in heads]
    prev_sites = [f"0.{h}" for h in prev]
    emb_q = Node("emb->Q", ["embed"], via=["q"])
    prev_k = Node("prev->K", prev_sites, via=["k"])

    def exact(kinds: list[str]) -> Node:
        return Node("exact " + "".join(kinds).upper(), ["*"], via=kinds)

    def hyp(name, paper, text, *children) -> Hypothesis:
        heads = Node("induction", ind, children=list(children))
        return Hypothesis(name, Node("out", ["output"], rest="self", children=[heads]), text, paper)

    others = [f"0.{h}" for h in range(n_heads) if h not in prev]
    return {
        **_induction_paper(prev_sites, ind, ["output"]),
        **{
            h.name: h
            for h in [
                # ours: where a layer-0 head attends to the current token (head 0.0 of the first organism recipe),
                # the token reaches the values through it as much as directly; these two make that claim
                # explicit (they equal emb->V and all-three when every layer-0 head is a previous-token head)
                hyp(
                    "emb+L0->V",
                    None,
                    "emb->V, with the non-previous-token layer-0 heads also allowed into the values",
                    Node("emb+L0->V", ["embed", *others], via=["v"]),
                    exact(["q", "k"]),
                ),
                hyp(
                    "all-three+L0",
                    None,
                    "all-three with emb+L0->V",
                    Node("emb+L0->V", ["embed", *others], via=["v"]),
                    emb_q,
                    prev_k,
                ),
                hyp(
                    "refined",
                    0.89,
                    "all-three, plus positions everywhere, the other layer-0 heads into queries and values, "
                    "embeddings into keys",
                    Node("V", ["embed", "pos", *others], via=["v"]),
                    Node("Q", ["embed", "pos", *prev_sites, *others], via=["q"]),
                    Node("K", ["embed", "pos", *prev_sites], via=["k"]),
                ),
            ]
        },
    }


def builtin(organism: str, meta: dict | None = None, n_heads: int = 4) -> dict[str, Hypothesis]:
    """All built-in hypotheses for ``organism`` (``paren`` or ``induction``), with ``identity`` and ``empty``."""
    meta = meta or {}
    if organism == "paren":
        found = paren(meta.get("roles"), n_heads)
    elif organism == "induction":
        found = induction(
            meta.get("prev_token_heads") or [0], meta.get("induction_heads") or list(range(n_heads)), n_heads
        )
    else:
        raise KeyError(f"unknown organism {organism!r}; choose paren or induction")
    return {"identity": IDENTITY, "empty": EMPTY, **found}
