"""The naive oracle: explicitly treeified scrubbing, one example at a time.

Every path from the output down to the embeddings is walked separately, and the
input it runs on is decided from the hypothesis by the documented rules, with no
clean cache, no shared subtrees and no gathers. Exponential in depth: tiny models only.
"""

import torch

from probity.scrub.model import Decomposed


def naive_logits(
    model: Decomposed,
    root,
    rows: dict,
    tokens: torch.Tensor,
    b: int,
    features: dict | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scrubbed logits ``[P, V]`` for reference example ``b`` given the sampled rows (``features``: the
    task's, for ``phi`` nodes; ``key_mask``: the task's, a head masking keys as the row it is evaluated on)."""
    P = tokens.shape[1]

    clean: dict = {}  # a subtree entirely on one row is that row's clean forward: compute it once

    def on_row(c, r: int) -> torch.Tensor:  # c's output [P, d] with every path below on row r
        if (c, r) not in clean:
            clean[(c, r)] = on_row_uncached(c, r)
        return clean[(c, r)]

    def on_row_uncached(c, r: int) -> torch.Tensor:
        toks = tokens[r][None]
        if c.kind == "embed":
            return model.embed(toks)[0]
        if c.kind == "pos":
            return model.pos_embed(toks)[0]
        return apply(c, {k: resid(c, lambda s: on_row(s, r)) for k in c.inputs}, r)

    def resid(c, value) -> torch.Tensor:
        x = model.bias(c).expand(P, -1).clone()
        for s in model.senders(c):
            x = x + value(s)
        return x

    def apply(c, inputs: dict, r: int) -> torch.Tensor:  # r: the row whose key mask a head uses
        if c.kind == "head":
            mask = None if key_mask is None else key_mask[int(r)][None]
            return model.heads(c.layer, [c.head], *(inputs[k][None, None] for k in ("q", "k", "v")), mask)[0, 0]
        if c.kind == "mlp":
            return model.mlp(c.layer, inputs["in"][None])[0]
        return model.unembed(inputs["in"][None])[0]

    def in_node(c, node) -> torch.Tensor:  # c is one of node's sites
        r = rows[(node.index, 0)][b]
        if node.node.phi is not None and c.kind not in ("embed", "pos"):
            f = features[node.node.phi].double()
            outs = torch.stack([on_row(c, i) for i in range(len(tokens))]).double()
            v = (torch.einsum("b,bpd->pd", f, outs) / (f @ f)).float()  # least-squares fit, no intercept
            rest = int(rows[(node.index, 1)][b])
            return on_row(c, rest) + (f[int(r)] - f[rest]).float() * v
        if not node.children or c.kind in ("embed", "pos"):
            return on_row(c, int(r))
        rest = int(rows[(node.index, 1)][b])
        inputs = {}
        for kind in c.inputs:
            x = model.bias(c).expand(P, -1).clone()
            for s in model.senders(c):
                owners = {}  # position -> who owns the path (s -> c via kind) there
                for p in range(P):
                    owner = [
                        j
                        for j in node.children
                        if s in j.components and kind in j.via and (j.positions is None or p in j.positions)
                    ]
                    owners[p] = owner[0].index if owner else ("self" if s in node.components else "rest")
                for who in set(owners.values()):
                    if who == "self":
                        value = in_node(s, node)
                    elif who == "rest":
                        value = on_row(s, rest)
                    else:
                        j = next(j for j in node.children if j.index == who)
                        if j.per_position:
                            value = torch.stack([on_row(s, int(r))[p] for p, r in enumerate(rows[(j.index, 0)][b])])
                        else:
                            value = in_node(s, j)
                    for p in [p for p, w in owners.items() if w == who]:
                        x[p] += value[p]
            inputs[kind] = x
        return apply(c, inputs, r)

    return in_node(model.output, root)
