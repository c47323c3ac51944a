"""Instruction-format import: Alpaca-style ``{instruction, input, output}`` records.

Why: LLaMA-Factory's Alpaca layout is how many recommendation fine-tuning sets ship (DMPO's
ML-1M data among them). Two kinds of records, in a JSON array or JSON Lines file:

* SFT pair: ``"output": "the answer"``;
* preference pair: ``"output": [chosen, rejected, ...]`` (LLaMA-Factory ``ranking`` data, DMPO
  with several rejected answers), or ``"chosen"`` / ``"rejected"`` keys.

Each record becomes one :class:`~prefrec.lm.samples.LMSample` whose candidates are the answers
(the chosen one first, ``target_index`` 0): SFT trains on the chosen answer, DPO/S-DPO take
their negatives from the rejected ones. The prompt is ``[system\\n]instruction[\\ninput]``
followed by ``\\nAnswer:`` unless it already ends with that cue (prefrec's prompt/answer
convention: the answer ``" " + text`` follows the cue). Records carry no item ids, so
instruction files serve ``sft`` and ``dpo``/``sdpo`` only, not baselines or NAPO/RecPO.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefrec.errors import DataError, where

ALPACA_FIX = ('each record is {"instruction": "...", "input": "..." (optional), "output": "answer"} '
              'or, for preference pairs, "output": ["chosen", "rejected"] (or "chosen"/"rejected" keys)')


def is_alpaca_file(path: str | Path) -> bool:
    """Whether a JSON/JSONL file holds instruction records (looks at its first 64 KiB)."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in (".json", ".jsonl"):
        return False
    with p.open("rb") as f:
        head = f.read(1 << 16).decode("utf-8", errors="replace")
    i, h = head.find('"instruction"'), head.find('"historyList"')
    return i >= 0 and (h < 0 or i < h)


def _text(rec: dict, key: str, loc: str, required: bool = True) -> str:
    v = rec.get(key, "")
    if v is None:
        v = ""
    if not isinstance(v, str):
        raise DataError(f"{key!r} is a {type(v).__name__}, not a string", where=loc, fix=ALPACA_FIX)
    if required and not v.strip():
        raise DataError(f"empty or missing {key!r}", where=loc, fix=ALPACA_FIX)
    return v


def _answers(rec: dict, loc: str) -> list[str]:
    if "chosen" in rec or "rejected" in rec:
        ans = [rec.get("chosen"), rec.get("rejected")]
        if "output" in rec and rec["output"] not in (None, "", []):
            raise DataError("record has both 'output' and 'chosen'/'rejected'", where=loc,
                            fix="keep one layout per record: output=[chosen, rejected] or chosen/rejected keys")
    elif "output" in rec:
        out = rec["output"]
        ans = [out] if isinstance(out, str) else out
        if not isinstance(ans, list):
            raise DataError(f"'output' is a {type(out).__name__}", where=loc, fix=ALPACA_FIX)
        if len(ans) == 1 and isinstance(out, list):
            raise DataError("'output' is a list with one answer (a preference pair needs chosen and rejected)",
                            where=loc, fix="give output as a string (SFT) or [chosen, rejected, ...] (preference)")
        if not ans:
            raise DataError("'output' is an empty list", where=loc, fix=ALPACA_FIX)
    else:
        raise DataError("record lacks 'output'", where=loc, fix=ALPACA_FIX)
    for k, a in enumerate(ans):
        if not isinstance(a, str) or not a.strip():
            which = "chosen" if k == 0 else "rejected"
            raise DataError(f"the {which} answer #{k + 1} is {'empty' if isinstance(a, str) else type(a).__name__}",
                            where=loc, fix="every answer is a non-empty string")
    if len(set(a.strip() for a in ans)) != len(ans):
        raise DataError("the chosen and a rejected answer are identical" if ans.count(ans[0]) > 1
                        else "two rejected answers are identical", where=loc,
                        fix="drop the record or give distinct answers (a pair needs a difference to learn from)")
    return [a.strip() for a in ans]


def alpaca_prompt(system: str, instruction: str, inp: str) -> str:
    """``[system\\n]instruction[\\ninput]\\nAnswer:`` (the cue kept once if the text ends with it)."""
    from prefrec.lm.prompts import CUE

    text = "\n".join(t.strip() for t in (system, instruction, inp) if t and t.strip())
    return text if text.endswith(CUE) else f"{text}\n{CUE}"


def read_alpaca(path: str | Path) -> list:
    """Instruction records -> ``list[LMSample]`` (chosen answer first); errors name the record."""
    from prefrec.data.readers import _json_records
    from prefrec.lm.samples import LMSample

    p = Path(path)
    out = []
    for n, (line, rec) in enumerate(_json_records(p), 1):
        loc = f"{where(p, line)}, record {n}"
        if not isinstance(rec, dict):
            raise DataError(f"record is a {type(rec).__name__}, not an object", where=loc, fix=ALPACA_FIX)
        hist = rec.get("history")
        if hist:
            raise DataError("multi-turn 'history' is not supported", where=loc,
                            fix="fold earlier turns into 'instruction'/'input', or drop the 'history' key")
        instruction = _text(rec, "instruction", loc)
        prompt = alpaca_prompt(_text(rec, "system", loc, False), instruction, _text(rec, "input", loc, False))
        answers = _answers(rec, loc)
        out.append(LMSample(prompt=prompt, history=[], candidates=answers, target_index=0,
                            extra={"source": loc, "format": "alpaca"}))
    if not out:
        raise DataError("no records", where=str(p), fix=ALPACA_FIX)
    return out


def alpaca_kind(samples: list[Any]) -> str:
    """``"sft"`` when every record has one answer, ``"preference"`` when every one has 2+, else mixed."""
    n = {len(s.candidates) > 1 for s in samples}
    return "preference" if n == {True} else ("sft" if n == {False} else "mixed")
