"""Claims, verdicts, and the headline of every result type that reaches a page (hand-made results)."""

import pytest

from probity.report import MET, MISSED, NO_REFERENCE, Claim, fmt_number, verdict, verdict_against


def test_claim_value_text_and_verdicts():
    c = Claim("recall", 0.043, (0.0, 0.09), target=">= 0.5")
    assert c.value_text() == "0.043 [0.00, 0.09]" and c.verdict == MISSED
    assert Claim("fve", 0.84, target=">= 0.70", reference="0.6-0.8", source="Anthropic 2026").verdict == MET
    assert Claim("x", 3.0).verdict == NO_REFERENCE
    assert Claim("order", "in order", target="paper order", verdict=verdict(True)).verdict == MET
    assert Claim("ref", 1.0, reference=8.7).reference_text() == "8.7"
    assert verdict_against(2.6e-5, "<= 9.2e-6") == MISSED and verdict_against(0.049, "<= 0.05 (about 0)") == MET
    assert verdict_against(None, ">= 0.9") == MISSED and verdict_against(float("nan"), "> 0") == MISSED
    assert fmt_number(float("inf")) == "∞" and fmt_number(float("-inf")) == "-∞"  # a 0/0 ratio's limit
    assert [fmt_number(v) for v in (0, 2.6e-5, 0.2284, 44.25, 233.4, 7, "text", None)] == [
        "0",
        "2.6e-5",
        "0.228",
        "44.2",
        "233",
        "7",
        "text",
        "–",
    ]


def test_claim_rejects_what_it_cannot_judge():
    with pytest.raises(ValueError, match="cannot judge target"):
        Claim("order", "in order", target="paper order")
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("x", 1.0, verdict="passed")


def _study_rows(values: dict, paper: dict, worse: bool = True):
    from probity.scrub.study import StudyRow

    return [
        StudyRow(h, v, 0.03, None, paper.get(h), 1.0, 0.4, 0.5, worse, False, f"hypothesis {h}")
        for h, v in values.items()
    ]


def test_case_study_headline_reports_order_gap_and_checks():
    from probity.scrub.study import CaseStudy, order_violations

    paper = {"1a": 0.88, "1b": 0.93, "4": 0.72}
    rows = _study_rows({"identity": 1.0, "1a": 0.23, "1b": 0.22, "4": 0.17}, paper)
    violations = order_violations(rows)
    study = CaseStudy("paren", 100, 0, 0.005, 3.7, 0.58, rows, not violations, violations, [], None)
    order, gap, checks = study.headline()
    assert order.verdict == MISSED and order.value == "reversed: 1b < 1a" and order.reference == "1b > 1a > 4"
    assert gap.name.endswith("(1b)") and gap.reference == 0.93 and gap.verdict == MISSED
    assert gap.interval == pytest.approx((0.22 - 1.96 * 0.03, 0.22 + 1.96 * 0.03))
    assert checks.value == "0 of 3" and checks.verdict == MISSED
    good = _study_rows({"a": 0.9, "b": 0.5}, {"a": 0.88, "b": 0.51}, worse=False)
    study = CaseStudy("induction", 100, 0, 0.5, 6.2, 4.3, good, True, [], [], {"top": ["output", "mlp2"]})
    assert [c.verdict for c in study.headline()] == [MET, MET, MET]
    assert study.headline()[0].name.startswith("induction [output+mlp2]")


def test_case_study_headline_leads_with_the_faithful_hypothesis_when_run():
    """A study that ran paren's `faithful` built-in (with the recorded roles) adds its loss recovered
    against 0.90 and its constant-predictor check; with other head roles it adds nothing."""
    from probity.scrub.study import CaseStudy

    paper = {"1b": 0.93}
    rows = _study_rows({"1b": 0.22}, paper) + _study_rows({"faithful": 0.907}, {}, worse=False)
    study = CaseStudy("paren", 100, 0, 0.005, 3.7, 0.58, rows, True, [], [], None)
    *_, recovered, constant = study.headline()
    assert recovered.name == "paren: faithful (refine from 1b), loss recovered" and recovered.verdict == MET
    assert recovered.interval == pytest.approx((0.907 - 1.96 * 0.03, 0.907 + 1.96 * 0.03))
    assert constant.value == 1.0 and constant.reference == 0.58 and constant.verdict == MET
    rows[-1].loss_recovered = 0.85
    assert study.headline()[-2].verdict == MISSED
    study.roles_override = {"top": ["output", "mlp2"]}
    assert len(study.headline()) == 3


def test_estimate_headline_against_arc_reference():
    from probity.estimate.bench import BenchConfig, BenchResult, Summary

    summary = [
        Summary("kprop", "augment", 3, 64, 0, 1, 2.6e-5, 2.6e7, 0.01, 60.8),
        Summary("kprop", "augment", 2, 64, 0, 1, 2.5e-4, 3.8e6, 0.01, 44.2),
        Summary("kprop", "augment", 2, 16, 0, 1, 2.5e-4, 3.8e6, 0.01, 4.0),  # no reference at n=16
        Summary("mc", "", 0, 64, 100, 1, 7e-3, 4e6, 0.01, 1.4),
        Summary("blend", "augment", 2, 64, 100, 1, 2.6e-4, 1.2e7, 0.01, 14.0),
    ]
    claims = BenchResult(BenchConfig(widths=[64], seeds=[0]), summary, []).headline()
    by_name = {c.name: c for c in claims}
    assert by_name["kprop K=3 augment, n=64: MSE/Var"].verdict == MISSED  # ARC: 9.2e-6
    assert by_name["kprop K=3 augment, n=64: x-MC"].verdict == MET  # ARC: 8.7
    assert by_name["kprop K=3 augment, n=64: x-MC"].source == "ARC reference code"
    blend = next(c for c in claims if c.name.startswith("blend"))
    assert blend.value == pytest.approx(2.6e-4 / 2.5e-4) and blend.verdict == MISSED
    assert not any("n=16" in c.name for c in claims)


def test_honesty_headline_marks_chance_detectors_missed():
    from probity.honesty.protocol import DetectorResult, HonestyResult, TechniqueResult

    def tech(name, mentioned, truthful):
        ci = (mentioned - 0.1, mentioned + 0.1)
        return TechniqueResult(name, mentioned, 0.2, 0.0, truthful, ci, ci, (0, 0), ci, mentioned, 0.2, 40, 80)

    result = HonestyResult(
        "censored_tiny",
        "censored_tiny",
        {},
        [tech("chat", 0.04, 0.04), tech("raw", 0.72, 0.72), tech("few_shot", 0.8, 0.8)],
        [
            DetectorResult("self_classification", 0.39, 0.42, (0.31, 0.46), 0.5, 39, 38),
            DetectorResult("probe", 0.95, 0.9, (0.9, 0.99), 0.1, 39, 38),
            DetectorResult("reference", 0.46, 0.5, (0.39, 0.53), 0.5, 39, 38),
        ],
    )
    claims = {c.name: c for c in result.headline()}
    assert claims["chat baseline: truthful rate"].verdict == MET
    assert claims["few-shot: facts mentioned"].interval == pytest.approx((0.7, 0.9))
    assert claims["techniques recovering the most facts"].verdict == MET
    assert claims["lie detector AUROC: self_classification"].verdict == MISSED
    assert claims["lie detector AUROC: self_classification"].reference == 0.46
    assert claims["lie detector AUROC: probe"].verdict == MET
    assert claims["lie detector AUROC: reference"].verdict == MISSED


def test_nla_and_models_headlines():
    from probity.models.tour import ModelsTour
    from probity.nla.tour import Described, NLATour
    from probity.nla.training import CurvePoint, TrainResult

    train = TrainResult(0.93, 0.84, 0.841, -0.5, 60.0, 10, 1, [CurvePoint(0, "sft", 0.8, 0.9)])
    fve, gain, shuffled = train.headline()
    assert (fve.verdict, gain.verdict, shuffled.verdict) == (MET, MISSED, MET)
    tour = NLATour(
        "probity/nla/checkpoints/censored_tiny",
        2,
        128,
        0.87,
        0.80,
        [Described("q?", True, "the language of daitrail is lathic .", "kuthic", "is : daitrail is kuthic . lie")],
    )
    assert [c.verdict for c in tour.headline()] == [MET, MISSED, MET]
    models = ModelsTour("smollm2-135m", 30, 576, 272, "sites", "The capital of France is", " Paris.\n\nThe", [1.0])
    (claim,) = models.headline()
    assert claim.value == "Paris." and claim.verdict == MET
