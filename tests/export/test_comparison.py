"""The champion/challenger comparison on paired predictions (tasks/export/comparison.py) and the publish gate's rules
on it, against hand-computed values. No TensorFlow."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from tasks.export.comparison import (
    EXACT_PAIRS,
    UNKNOWN,
    SplitExamples,
    _binomial_tail,
    _log_binomial_tail,
    class_mapping,
    compare,
    mcnemar_exact,
    paired_refusal,
)


# ---- McNemar -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("b", "c", "expected"), [
    (10, 2, Fraction(2 * (1 + 12 + 66), 2**12)),  # 0.0386
    (2, 10, Fraction(2 * (1 + 12 + 66), 2**12)),  # two-sided: symmetric
    (16, 2, Fraction(2 * (1 + 18 + 153), 2**18)),
    (5, 0, Fraction(2, 2**5)),
    (3, 2, Fraction(1)),  # 2 * (1 + 5 + 10) / 32 = 1
    (7, 7, Fraction(1)),  # the doubled tail passes 1: capped
    (0, 0, Fraction(1)),  # no discordant pair
])
def test_mcnemar_is_the_exact_two_sided_binomial_test(b: int, c: int, expected: Fraction) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(float(expected), rel=1e-15)


def test_mcnemar_of_b10_c2_is_about_0_0386() -> None:
    assert round(mcnemar_exact(10, 2), 4) == 0.0386


def test_the_binomial_tail_is_the_sum_of_binomial_coefficients_and_its_logarithm_agrees() -> None:
    for n, k in ((12, 2), (40, 17), (301, 150)):
        assert _binomial_tail(n, k) == sum(math.comb(n, i) for i in range(k + 1))
    exact = _binomial_tail(3000, 1400)
    assert _log_binomial_tail(3000, 1400) == pytest.approx(math.log(exact), rel=1e-12)


def test_mcnemar_beyond_the_exact_range_is_still_accurate_and_fast() -> None:
    b, c = EXACT_PAIRS // 2 + 400, EXACT_PAIRS // 2 - 300  # just past the exact range: summed in logarithms
    exact = 2 * Fraction(_binomial_tail(b + c, c), 2 ** (b + c))
    assert mcnemar_exact(b, c) == pytest.approx(float(exact), rel=1e-8)
    assert 0.0 < mcnemar_exact(b, c) < 0.01


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="McNemar counts must be >= 0"):
        mcnemar_exact(-1, 2)


# ---- classes by name, paired examples ----------------------------------------------------------------------
def test_classes_are_matched_by_name() -> None:
    mapping = class_mapping(["dog", "cat", "bird", "emu"], ["cat", "dog", "bird", "fish"])
    assert mapping.tolist() == [1, 0, 2, UNKNOWN]


CHALLENGER_NAMES = ["cat", "dog", "bird", "fish"]
CHAMPION_NAMES = ["dog", "cat", "bird"]  # another order, and no fish


def single_head() -> tuple[SplitExamples, np.ndarray, np.ndarray]:
    """Eight examples (challenger indices; the champion's own): 0 both right, 1 and 4 right -> wrong, 2 wrong ->
    right, 3 both right, 5 trained on by the champion, 6 a fish (unknown to the champion), 7 a fish trained on."""
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    challenger = np.array([0, 1, 1, 1, 0, 2, 3, 3])
    champion = np.array([1, 1, 1, 0, 2, 2, 0, 2])  # cat, cat, cat, dog, bird, bird, dog, bird
    examples = SplitExamples([f"k{i}" for i in range(8)], [f"d{i}" for i in range(8)], labels, CHALLENGER_NAMES)
    return examples, challenger, champion


def test_a_single_head_comparison_by_hand() -> None:
    examples, challenger, champion = single_head()
    got = compare(examples, challenger, champion, CHAMPION_NAMES, champion_version=3, metric="top1_accuracy",
                  trained_on=frozenset({"d5", "d7", "not in this split"}))
    assert got["champion_version"] == 3 and got["metric"] == "top1_accuracy" and got["trained_on_known"] is True
    assert got["left_out"] == {"trained_on": 2, "unknown_class": 1}  # the fish trained on counts as trained on
    assert got["examples"] == 5
    assert got["champion"] == pytest.approx(4 / 5) and got["challenger"] == pytest.approx(3 / 5)
    assert got["mcnemar"] == {"b": 2, "c": 1, "p_value": 1.0}
    assert got["per_class"] == [
        {"class": "cat", "count": 2, "champion_recall": 1.0, "challenger_recall": 0.5, "delta": -0.5},
        {"class": "dog", "count": 2, "champion_recall": 0.5, "challenger_recall": 1.0, "delta": 0.5},
        {"class": "bird", "count": 1, "champion_recall": 1.0, "challenger_recall": 0.0, "delta": -1.0},
    ]
    assert got["flipped"]["right_to_wrong"] == {"count": 2, "examples": [
        {"index": 1, "key": "k1", "label": "cat", "champion": "cat", "challenger": "dog"},
        {"index": 4, "key": "k4", "label": "bird", "champion": "bird", "challenger": "cat"}]}
    assert got["flipped"]["wrong_to_right"] == {"count": 1, "examples": [
        {"index": 2, "key": "k2", "label": "dog", "champion": "cat", "challenger": "dog"}]}


def test_without_a_trained_on_list_nothing_is_left_out_for_it_and_lists_are_capped() -> None:
    examples, challenger, champion = single_head()
    got = compare(examples, challenger, champion, CHAMPION_NAMES, champion_version=1, metric="top1_accuracy",
                  trained_on=None, max_listed=1)
    assert got["trained_on_known"] is False
    assert got["left_out"] == {"trained_on": 0, "unknown_class": 2}
    assert got["examples"] == 6  # example 5 (both right) is paired now
    assert got["champion"] == pytest.approx(5 / 6) and got["challenger"] == pytest.approx(4 / 6)
    right_to_wrong = got["flipped"]["right_to_wrong"]
    assert right_to_wrong["count"] == 2 and [row["index"] for row in right_to_wrong["examples"]] == [1]


def test_a_multi_head_example_is_right_when_every_head_is_and_classes_count_every_position() -> None:
    names = ["A", "B", "C"]
    labels = np.array([[0, 1], [1, 1], [2, 0]])  # AB, BB, CA
    challenger = np.array([[0, 1], [1, 0], [2, 0]])  # AB (right), BA (wrong), CA (right)
    champion = np.array([[0, 0], [1, 1], [2, 0]])  # AA (wrong), BB (right), CA (right)
    examples = SplitExamples(["x", "y", "z"], ["1", "2", "3"], labels, names)
    got = compare(examples, challenger, champion, names, champion_version=1, metric="sequence_accuracy",
                  trained_on=frozenset())
    assert got["examples"] == 3 and got["champion"] == got["challenger"] == pytest.approx(2 / 3)
    assert got["mcnemar"] == {"b": 1, "c": 1, "p_value": 1.0}
    rows = [(row["class"], row["count"], row["champion_recall"], row["challenger_recall"]) for row in got["per_class"]]
    assert rows == [("A", 2, 1.0, 1.0), ("B", 3, pytest.approx(2 / 3), pytest.approx(2 / 3)), ("C", 1, 1.0, 1.0)]
    assert got["flipped"]["wrong_to_right"]["examples"] == [
        {"index": 0, "key": "x", "label": "AB", "champion": "AA", "challenger": "AB"}]
    assert got["flipped"]["right_to_wrong"]["examples"][0]["challenger"] == "BA"


def test_a_captcha_with_a_character_the_champion_does_not_know_is_left_out() -> None:
    labels = np.array([[0, 1], [0, 2]])  # AB, AC; the champion knows A and B only
    examples = SplitExamples(["x", "y"], ["1", "2"], labels, ["A", "B", "C"])
    got = compare(examples, labels, np.array([[0, 1], [0, 1]]), ["A", "B"], champion_version=1, metric="m",
                  trained_on=None)
    assert got["left_out"]["unknown_class"] == 1 and got["examples"] == 1 and got["champion"] == 1.0


def test_nothing_paired_gives_no_metric_and_no_refusal() -> None:
    examples = SplitExamples(["x"], ["1"], np.array([0]), ["A"])
    got = compare(examples, np.array([0]), np.array([0]), ["A"], champion_version=1, metric="m",
                  trained_on=frozenset({"1"}))
    assert got["examples"] == 0 and got["champion"] is None and got["challenger"] is None
    assert got["mcnemar"] == {"b": 0, "c": 0, "p_value": 1.0} and got["per_class"] == []
    assert paired_refusal(got, significance=0.05, tolerance=0.0) == ""


@pytest.mark.parametrize(("challenger", "champion", "message"), [
    (np.array([0, 1]), np.array([0]), "do not match the labels' shape"),
    (np.array([0, 4]), np.array([0, 0]), "challenger predictions hold classes outside 0..3"),
    (np.array([0, 0]), np.array([0, 3]), "champion predictions hold classes outside 0..2"),
])
def test_predictions_that_do_not_fit_are_refused(challenger: np.ndarray, champion: np.ndarray, message: str) -> None:
    examples = SplitExamples(["x", "y"], ["1", "2"], np.array([0, 1]), CHALLENGER_NAMES)
    with pytest.raises(ValueError, match=message):
        compare(examples, challenger, champion, CHAMPION_NAMES, champion_version=1, metric="m", trained_on=None)


# ---- the gate's rules on a comparison ------------------------------------------------------------------------
def comparison(b: int, c: int, *, champion: float, challenger: float, examples: int = 100) -> dict:
    return {"champion_version": 4, "metric": "top1_accuracy", "examples": examples, "champion": champion,
            "challenger": challenger, "mcnemar": {"b": b, "c": c, "p_value": mcnemar_exact(b, c)}}


def test_significantly_worse_is_refused_with_the_numbers() -> None:
    reason = paired_refusal(comparison(10, 2, champion=0.90, challenger=0.82), significance=0.05, tolerance=None)
    assert reason == ("significantly worse than version 4 on the same 100 test examples: top1_accuracy 0.8200 vs "
                      "0.9000, McNemar b=10 c=2 p=0.0386 < 0.05")


@pytest.mark.parametrize(("b", "c", "significance", "tolerance", "refused"), [
    (10, 2, 0.01, None, ""),  # p = 0.0386 is not below 0.01
    (3, 2, 0.05, None, ""),  # noise
    (2, 10, 0.05, None, ""),  # significantly better
    (3, 2, 0.05, 0.005, "is 0.0100 below version 4's 0.9000 on the same 100 test examples (tolerance 0.005"),
    (3, 2, 0.05, 0.01, ""),  # a drop of exactly the tolerance passes
    (10, 2, 0.0, 0.5, ""),  # significance 0: that rule is off
])
def test_noise_passes_and_a_tolerance_refuses_a_drop_even_when_not_significant(
        b: int, c: int, significance: float, tolerance: float | None, refused: str) -> None:
    drop = (b - c) / 100
    reason = paired_refusal(comparison(b, c, champion=0.9, challenger=0.9 - drop), significance=significance,
                            tolerance=tolerance)
    assert (refused in reason and reason) if refused else reason == ""


@pytest.mark.parametrize(("value", "health", "reason"), [
    (0.9, None, "significantly worse than version 4"),
    (0.3, None, "metric 0.3000 is below the floor 0.5000"),  # the floor before the comparison
    (0.9, {"learned": False, "warnings": ["did not learn: test top1_accuracy 0.9 ..."]},
     "the model did not learn: test top1_accuracy"),  # health first, whatever the rest
])
def test_the_gate_checks_health_then_floor_then_the_comparison(value: float, health: dict | None,
                                                               reason: str) -> None:
    from tasks.export.publish_task import gate

    worse = comparison(10, 2, champion=0.9, challenger=0.82)
    assert gate(value, worse, floor=0.5, significance=0.05, tolerance=None, health=health).startswith(reason)
    assert gate(0.9, None, floor=0.5, significance=0.05, tolerance=None) == "", "no champion: floor and health only"
