"""Golden tests for the generated-answer rules (HR@1, ValidRatio; paper vs longest-match)."""

from __future__ import annotations

import pytest

from prefrec.errors import DataError
from prefrec.metrics.generation import generation_metrics, judge_generated, parse_generated

CANDS = ["Heat", "Heat (1995)", "Casino (1995)", "Alien", "Aliens (1986)", "Fargo"]


@pytest.mark.parametrize("text,paper,longest", [
    ("Casino (1995)", [2], [2]),                         # plain single match
    (" Casino (1995)\nThe user", [2], [2]),              # trailing text is fine
    ("I recommend Fargo.", [5], [5]),
    ("Heat (1995)", [0, 1], [1]),                        # contained title: paper -> invalid
    ("Heat", [0], [0]),
    ("Heat or Heat (1995)", [0, 1], [0, 1]),             # "Heat" also stands alone
    ("Aliens (1986)", [3, 4], [4]),                      # "Alien" inside "Aliens (1986)"
    ("Aliens", [3], [3]),                                # prefix of a title is not the title
    ("casino (1995)", [], []),                           # case-sensitive, as in the paper
    ("", [], []),
    ("Fargo, Casino (1995)", [2, 5], [2, 5]),            # two titles -> invalid
])
def test_parse_rules(text, paper, longest):
    assert parse_generated(text, CANDS) == paper
    assert parse_generated(text, CANDS, rule="paper") == paper
    assert parse_generated(text, CANDS, rule="longest") == longest


def test_duplicate_titles_always_ambiguous():
    assert parse_generated("Heat", ["Heat", "Heat"], rule="longest") == [0, 1]


def test_judge_and_metrics_golden():
    cases = [("Casino (1995)", 2), ("Casino (1995)", 5), ("Heat (1995)", 1), ("nothing", 0)]
    paper = [judge_generated(t, CANDS, y) for t, y in cases]
    assert [(j.valid, j.prediction, j.hit) for j in paper] == [
        (True, 2, True), (True, 2, False), (False, None, False), (False, None, False)]
    assert generation_metrics(paper) == {"HR@1": 0.25, "ValidRatio": 0.5, "n": 4}
    longest = [judge_generated(t, CANDS, y, rule="longest") for t, y in cases]
    assert generation_metrics(longest) == {"HR@1": 0.5, "ValidRatio": 0.75, "n": 4}


def test_empty_metrics_are_nan():
    m = generation_metrics([])
    assert m["n"] == 0 and m["HR@1"] != m["HR@1"]


def test_errors():
    with pytest.raises(DataError, match="empty title"):
        parse_generated("x", ["a", ""])
    with pytest.raises(DataError, match="unknown match rule"):
        parse_generated("x", ["a"], rule="fuzzy")
    with pytest.raises(DataError, match="target_index"):
        judge_generated("a", ["a"], 3)
