"""The unit every LM stage consumes: one prompt with its candidates and its answer.

Built by :mod:`prefrec.lm.prompts` from a :class:`prefrec.data.sequences.SequenceCase`
(ids) or imported from S-DPO JSON records; SFT, preference training, generation and ranking
evaluation, NAPO and RecPO all read this one shape so they see identical test cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LMSample:
    """One LM recommendation case.

    ``candidates`` are titles (target included exactly once); ``target_index`` points at it.
    ``item_ids`` are the candidates' catalog indices when known (needed by NAPO/RecPO and
    popularity metrics). ``extra`` carries optional per-candidate data (ratings, steps, scores).
    """

    prompt: str
    history: list[str]
    candidates: list[str]
    target_index: int
    user: int | None = None
    history_ids: list[int] | None = None
    item_ids: list[int] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.candidates[self.target_index]
