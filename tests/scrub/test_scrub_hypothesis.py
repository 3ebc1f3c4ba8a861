"""Hypotheses as data: parsing, round trips and one-line validation errors before any forward pass."""

import pytest
import torch

from probity.models.sites import Site
from probity.scrub import Hypothesis, HypothesisError, Node, Scrubber, Task, load_hypothesis
from probity.scrub.model import layer_and_head, shorthand
from probity.scrub.task import compute_features

TREE = {
    "name": "demo",
    "description": "d",
    "root": {
        "name": "out",
        "sites": ["output", "mlp1"],
        "children": [
            {
                "name": "a",
                "site": "1.0",
                "feature": "first",
                "rest": "self",
                "children": [
                    {"name": "q", "sites": ["embed", "0.1"], "via": "q", "positions": [0, 2]},
                    {"name": "b", "site": "blocks.0.attn.hook_result[0]", "feature": "tok", "via": ["v"]},
                ],
            }
        ],
    },
}


def test_round_trip_through_yaml_and_json(tmp_path, tiny_model, tiny_task):
    hyp = Hypothesis.from_dict(TREE)
    for suffix in (".yaml", ".json"):
        hyp.save(tmp_path / f"h{suffix}")
        again = load_hypothesis(tmp_path / f"h{suffix}")
        assert again.to_dict() == hyp.to_dict()
    root = Scrubber(tiny_model, tiny_task).resolve(hyp)
    names = [str(c) for c in root.children[0].children[0].components]
    assert names == ["hook_embed", "blocks.0.attn.hook_result[head=1]"]
    b = root.children[0].children[1]
    assert b.per_position and b.via == {"v"} and root.children[0].via == {"q", "k", "v", "in"}


def _bad(path, **change):
    tree = {
        "name": "out",
        "sites": ["output"],
        "children": [
            {"name": "a", "site": "1.0", "feature": "first", "children": [{"name": "b", "site": "0.0", "via": "k"}]}
        ],
    }
    node = tree
    for key in path:
        node = node["children"][key]
    node.update(change)
    return Hypothesis.from_dict({"root": tree})


@pytest.mark.parametrize(
    "hyp, message",
    [
        (_bad([0], site="3.0"), "node 'a': unknown site '3.0'"),
        (_bad([0], feature="colour"), "node 'a': unknown feature 'colour'"),
        (_bad([0, 0], site="mlp1"), "does not feed any site of its parent 'a'"),
        (_bad([0, 0], site="0.0", via="in"), "does not feed any site of its parent 'a'"),
        (_bad([0, 0], site="1.0"), "already a site of its parent"),
        (_bad([], sites=["mlp1"]), "must claim the `output` site"),
        (_bad([0, 0], positions=[9]), "positions [9] outside 0..5"),
        (_bad([0, 0], via="x"), "via 'x' is not one of"),
        (_bad([0, 0], feature="tok", children=[{"name": "c", "site": "embed"}]), "per-position feature"),
        (_bad([0], rest="tok"), "rest feature 'tok' is per-position"),
        (_bad([0, 0], name="a"), "two nodes are named 'a'"),
    ],
)
def test_validation_errors_are_one_line_and_name_the_node(tiny_model, tiny_task, hyp, message):
    with pytest.raises(HypothesisError) as e:
        Scrubber(tiny_model, tiny_task).resolve(hyp)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_overlapping_claims_are_rejected(tiny_model, tiny_task):
    hyp = Hypothesis(
        "o", Node("out", ["output"], children=[Node("x", ["1.0", "mlp0"]), Node("y", ["mlp0"], positions=[1])])
    )
    with pytest.raises(HypothesisError, match="nodes 'x' and 'y' both claim blocks.0.hook_mlp_out"):
        Scrubber(tiny_model, tiny_task).resolve(hyp)
    ok = Hypothesis(
        "o", Node("out", ["output"], children=[Node("x", ["mlp0"], positions=[0]), Node("y", ["mlp0"], positions=[1])])
    )
    Scrubber(tiny_model, tiny_task).resolve(ok)


def test_malformed_dicts_and_files(tmp_path):
    with pytest.raises(HypothesisError, match="unknown key"):
        Hypothesis.from_dict({"root": {"name": "out", "site": "output", "colour": 1}})
    with pytest.raises(HypothesisError, match="give `site` or `sites`"):
        Hypothesis.from_dict({"root": {"name": "out"}})
    with pytest.raises(HypothesisError, match="`root` node"):
        Hypothesis.from_dict({"name": "x"})
    with pytest.raises(FileNotFoundError, match="no hypothesis file"):
        load_hypothesis(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("root: [unclosed")
    with pytest.raises(HypothesisError, match="not valid YAML"):
        load_hypothesis(bad)
    bad.write_text("root: {name: out, sites: [output, 1.10]}")  # YAML reads 1.10 as 1.1: head 1
    with pytest.raises(HypothesisError, match="quote head shorthands"):
        load_hypothesis(bad)
    with pytest.raises(HypothesisError, match="positions must be integers"):
        Hypothesis.from_dict({"root": {"name": "out", "site": "output", "positions": [1.5]}})


def test_bad_features_and_small_classes(tiny_model, tiny_task):
    tokens = tiny_task.tokens
    with pytest.raises(HypothesisError, match="feature 'boom' failed on the dataset: ZeroDivisionError"):
        compute_features({"boom": lambda t: 1 // 0}, tokens)
    nan = torch.zeros(64)
    nan[17] = float("nan")
    with pytest.raises(HypothesisError, match="feature 'n' is NaN on dataset row 17"):
        compute_features({"n": lambda t: nan}, tokens)
    with pytest.raises(HypothesisError, match=r"one value per row \[64\]"):
        compute_features({"s": lambda t: t[:3]}, tokens)
    feats = {**tiny_task.features, "rare": (torch.arange(64) == 0).long()}
    task = Task("t", tokens, tiny_task.targets, tiny_task.loss_mask, feats)
    with pytest.warns(UserWarning, match="feature 'rare'.*fewer than 5 rows"):
        Scrubber(tiny_model, task).resolve(
            Hypothesis("r", Node("out", ["output"], children=[Node("a", ["1.0"], feature="rare")]))
        )


def test_bad_model_inputs(tiny_model, tiny_task):
    t = tiny_task
    with pytest.raises(ValueError, match="vocabulary"):
        Scrubber(tiny_model, Task("t", t.tokens + 10, t.targets, t.loss_mask, {}))
    with pytest.raises(ValueError, match="targets and loss_mask must be"):
        Task("t", t.tokens, t.targets[:, :2], t.loss_mask, {})
    with pytest.raises(ValueError, match="key_mask must be a bool tensor"):
        Task("t", t.tokens, t.targets, t.loss_mask, {}, key_mask=torch.ones_like(t.tokens))
    with pytest.raises(TypeError, match="TransformerLens native model"):
        Scrubber(torch.nn.Linear(2, 2), t)


def test_one_spelling_of_a_site(tiny_model, tiny_task):
    """``Site.parse`` reads every shorthand; scrub's components convert to and from ``Site``s; a hypothesis
    written with ``Site`` objects resolves, scrubs and serialises like the one written with strings."""
    head = Site("blocks.1.attn.hook_result", head=0)
    for text in ("1.0", " 1.0 ", "blocks.1.attn.hook_result[0]", "blocks.1.attn.hook_result[head=0]", str(head)):
        assert Site.parse(text) == head
    assert Site.parse("mlp1") == Site.parse("blocks.1.hook_mlp_out") == Site("blocks.1.hook_mlp_out")
    assert Site.parse("embed") == Site.parse("tok") == Site("hook_embed")
    assert Site.parse("pos") == Site.parse("pos_embed") == Site("hook_pos_embed")
    assert Site.parse("logits") == Site("output") and Site.parse("blocks.0.attn.hook_z[1]").head == 1
    d = tiny_model
    for c in [*d.components, d.output]:
        assert d.component(c.site) == d.component(c.name) == c and Site.parse(c.name) == c.site
        assert d.component(c.short) == c and shorthand(c.name) == c.short  # the shorthand reads back
    assert [shorthand(s) for s in ("1.0", "blocks.2.hook_mlp_out", "hook_embed", "pos", "logits")] == [
        "1.0",
        "mlp2",
        "embed",
        "pos",
        "output",
    ]
    assert shorthand("blocks.0.attn.hook_z[1]") == "blocks.0.attn.hook_z[head=1]"  # not a component: as written
    assert d.component("1.0") == d.component(head) and layer_and_head("1.0") == layer_and_head(head) == (1, 0)
    with pytest.raises(KeyError, match="unknown site 'mlp7'"):
        d.component("mlp7")
    with pytest.raises(ValueError, match="not an attention head"):
        layer_and_head("mlp1")

    def with_sites(node: dict) -> dict:  # the same node dict, every site a Site object
        sites = node.get("sites", node.get("site"))
        rest = {k: v for k, v in node.items() if k not in ("site", "sites", "children")}
        children = [with_sites(c) for c in node.get("children", [])]
        return {
            **rest,
            "sites": [Site.parse(s) for s in ([sites] if isinstance(sites, str) else sites)],
            "children": children,
        }

    def resolved(hyp: Hypothesis) -> list:
        return [(r.node.name, r.components, r.via, r.positions) for r in scrubber.resolve(hyp).walk()]

    scrubber = Scrubber(tiny_model, tiny_task)
    strings = Hypothesis.from_dict(TREE)
    sites = Hypothesis.from_dict({**TREE, "root": with_sites(TREE["root"])})
    assert all(isinstance(s, Site) for n in sites.nodes() for s in n.sites)
    assert resolved(sites) == resolved(strings)
    torch.testing.assert_close(scrubber.losses(sites)[0], scrubber.losses(strings)[0], atol=0, rtol=0)
    assert resolved(Hypothesis.from_dict(sites.to_dict())) == resolved(strings)  # saved as strings Site.parse reads
