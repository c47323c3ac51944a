"""HR@1 and ValidRatio for generated answers (the S-DPO / LLaRA evaluation protocol).

The paper rule [CODE chenyuxin1999/S-DPO: evaluate_batch.py], applied to the generated
continuation only (the text after the prompt, special tokens skipped, stripped):

- candidate i **matches** iff its title is a case-sensitive substring of the text;
- the answer is **valid** iff exactly one candidate matches;
- it is a **hit** iff it is valid and the matching candidate is the target;
- ``HR@1 = hits / N`` and ``ValidRatio = valid / N``, both over ALL N cases (an invalid answer
  is a miss, not excluded).

Titles that contain other titles ("Heat" vs "Heat (1995)", "Alien" vs "Aliens"): under the paper
rule emitting the longer title matches both, so the answer is INVALID even when it names the
target exactly. 34 of 2,767 LastFM val cases have such a pair. We offer two rules:

- ``rule="paper"`` (default, comparable with published numbers): plain substring test per
  candidate, as above.
- ``rule="longest"``: a matched candidate is dropped when EVERY one of its occurrences in the
  text lies inside an occurrence of a longer matched candidate (same span or wider). So
  "Heat (1995)" alone -> only "Heat (1995)" matches -> valid; "Heat or Heat (1995)" -> "Heat"
  also occurs on its own -> both match -> invalid. Identical duplicate titles in one candidate
  list always both match (they cannot be told apart) -> invalid under either rule.

Pure Python, no torch: golden-tested in tests/test_metrics_generation.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prefrec.errors import DataError

MatchRule = Literal["paper", "longest"]
MATCH_RULES = ("paper", "longest")

__all__ = ["MATCH_RULES", "GenerationJudgement", "parse_generated", "judge_generated",
           "generation_metrics"]


def _occurrences(text: str, title: str) -> list[tuple[int, int]]:
    """All (start, end) spans of ``title`` in ``text``, overlapping ones included."""
    spans, i = [], text.find(title)
    while i != -1:
        spans.append((i, i + len(title)))
        i = text.find(title, i + 1)
    return spans


def parse_generated(text: str, candidates: Sequence[str], rule: MatchRule = "paper") -> list[int]:
    """Indices (ascending) of the candidates the generated ``text`` names, by ``rule``.

    ``text`` is the continuation only: passing prompt + continuation would match every
    history title that is also a candidate. See the module docstring for both rules.
    """
    if rule not in MATCH_RULES:
        raise DataError(f"unknown match rule {rule!r}", where="parse_generated",
                        fix=f"use one of {', '.join(MATCH_RULES)}")
    for i, t in enumerate(candidates):
        if not t:
            raise DataError(f"candidate {i} has an empty title (it would match every text)",
                            where="parse_generated", fix="give every item a non-empty title")
    spans = {i: _occurrences(text, t) for i, t in enumerate(candidates)}
    matched = [i for i, s in spans.items() if s]
    if rule == "paper" or len(matched) < 2:
        return matched
    keep = []
    for i in matched:
        covering = [(a, b) for j in matched if len(candidates[j]) > len(candidates[i])
                    for (a, b) in spans[j]]
        alone = any(not any(a <= s and e <= b for a, b in covering) for s, e in spans[i])
        if alone:
            keep.append(i)
    return keep


@dataclass(frozen=True)
class GenerationJudgement:
    """One case's verdict: matched candidates, validity, the predicted index (when valid), hit."""

    matched: tuple[int, ...]
    valid: bool
    prediction: int | None
    hit: bool


def judge_generated(text: str, candidates: Sequence[str], target_index: int,
                    rule: MatchRule = "paper") -> GenerationJudgement:
    """Apply the validity and hit rules to one generated continuation."""
    if not 0 <= target_index < len(candidates):
        raise DataError(f"target_index {target_index} outside 0..{len(candidates) - 1}",
                        where="judge_generated", fix="point target_index at one of the candidates")
    m = parse_generated(text, candidates, rule)
    valid = len(m) == 1
    pred = m[0] if valid else None
    return GenerationJudgement(tuple(m), valid, pred, valid and pred == target_index)


def generation_metrics(judgements: Iterable[GenerationJudgement]) -> dict[str, float]:
    """``HR@1 = hits/N``, ``ValidRatio = valid/N`` over all N cases, plus ``n``.

    An empty input gives ``n = 0`` and NaN rates (not 0: nothing was measured)."""
    js = list(judgements)
    n = len(js)
    if n == 0:
        return {"HR@1": float("nan"), "ValidRatio": float("nan"), "n": 0}
    return {"HR@1": sum(j.hit for j in js) / n, "ValidRatio": sum(j.valid for j in js) / n, "n": n}
