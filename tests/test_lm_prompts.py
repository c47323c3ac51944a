"""Prompts: templates, deterministic choice, case -> LMSample, S-DPO JSON parity, truncation, tokens."""

from __future__ import annotations

import json
import logging

import pytest

from prefrec.data.interactions import ItemCatalog
from prefrec.data.sequences import SequenceCase
from prefrec.errors import DataError
from prefrec.lm.prompts import (CUE, TEMPLATES, build_prompt, fit_prompts, lm_samples, movie_title,
                                sample_from_case, template_index, with_prompt)
from prefrec.lm.tokens import encode_answer, encode_prompt, prepare_tokenizer

CAT = ItemCatalog(titles=[f"Item {i}" for i in range(30)] + ["Dup", "Dup"])


def case(history=(1, 2, 3), target=4, cands=(5, 4, 6, 7), user=0, pos=None):
    cands = tuple(cands)
    return SequenceCase(user=user, history=tuple(history), target=target, candidates=cands,
                        target_pos=cands.index(target) if pos is None and target in cands else (pos or -1))


@pytest.fixture(scope="module")
def tok():
    from prefrec.models.lm import load_tokenizer

    return load_tokenizer()


def test_templates_end_with_cue_and_have_fields():
    for dom, temps in TEMPLATES.items():
        assert len(temps) >= 4, dom
        assert len(set(temps)) == len(temps)
        for t in temps:
            assert t.endswith(CUE) and not t.endswith(" ")
            assert "{history}" in t and "{candidates}" in t and "{n}" in t


def test_prompt_contents_and_count():
    s = sample_from_case(case(), CAT, domain="movies")
    assert "Item 1, Item 2, Item 3" in s.prompt
    assert "Item 5, Item 4, Item 6, Item 7" in s.prompt and " 4 " in s.prompt
    assert s.target == "Item 4" and s.target_index == 1 and s.item_ids == [5, 4, 6, 7]
    assert s.prompt.endswith("Answer:")


def test_history_capped_at_ten_most_recent():
    s = sample_from_case(case(history=range(10, 25), target=4, cands=(4, 5)), CAT)
    assert s.history == [f"Item {i}" for i in range(15, 25)] and s.history_ids == list(range(15, 25))
    assert "Item 14," not in s.prompt


def test_template_choice_deterministic_and_seeded():
    h, c = ["a", "b"], ["x", "y", "z"]
    assert build_prompt(h, c, "music", seed=1) == build_prompt(h, c, "music", seed=1)
    picks = {template_index([f"h{i}"], c, 0, 5) for i in range(50)}
    assert len(picks) == 5  # all templates get used
    by_seed = [template_index(h, c, s, 5) for s in range(20)]
    assert len(set(by_seed)) > 1


@pytest.mark.parametrize("bad,msg", [
    (case(history=()), "empty history"),
    (case(cands=(5, 6, 7)), "not among the candidates"),
    (case(cands=(5, 4, 4, 7), pos=1), "appears twice"),
    (case(cands=(5, 4, 99)), "not in the catalog"),
    (case(cands=(30, 4, 31)), "appears twice"),  # two items, one title
    (SequenceCase(user=0, history=(1,), target=4, candidates=(4, 5), target_pos=1), "target_pos"),
])
def test_bad_cases_raise(bad, msg):
    with pytest.raises(DataError, match=msg):
        sample_from_case(bad, CAT)


def test_movie_title():
    assert movie_title("Usual Suspects, The (1995)") == "The Usual Suspects"
    assert movie_title("Toy Story (1995)") == "Toy Story"
    assert movie_title("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)") == \
        "Shanghai Triad (Yao a yao yao dao waipo qiao)"
    assert movie_title("Apt Pupil") == "Apt Pupil"


def test_sdpo_json_import_gives_identical_prompts(tmp_path):
    from prefrec.data.readers import read_sdpo_json

    cases = [case(history=range(i, i + 3 + i % 9), target=20 + i % 5, cands=(20 + i % 5, 27, 28, 29), user=i)
             for i in range(12)]
    built = [sample_from_case(c, CAT, domain="music", seed=7) for c in cases]
    recs = [{"historyList": "::".join(s.history), "itemList": s.candidates, "trueSelection": s.target}
            for s in built]
    f = tmp_path / "val.json"
    f.write_text(json.dumps(recs))
    imported = [with_prompt(s, domain="music", seed=7) for s in read_sdpo_json(f)]
    assert [s.prompt for s in imported] == [s.prompt for s in built]
    assert [s.target_index for s in imported] == [s.target_index for s in built]
    via_api = lm_samples(str(f), "val", domain="music", seed=7)
    assert [s.prompt for s in via_api] == [s.prompt for s in built]


def test_fit_prompts_drops_oldest_history_first(tok, caplog):
    s = sample_from_case(case(history=range(0, 10), target=4, cands=(4, 11, 12)), CAT)
    full = len(encode_prompt(tok, s.prompt)) + max(len(encode_answer(tok, c)) for c in s.candidates)
    with caplog.at_level(logging.WARNING, logger="prefrec.lm.prompts"):
        (cut,) = fit_prompts([s], tok, full - 5)
    assert cut.extra["truncated"] >= 1
    assert cut.history == s.history[cut.extra["truncated"]:]
    assert cut.history_ids == s.history_ids[cut.extra["truncated"]:]
    assert cut.prompt.split(":")[0] == s.prompt.split(":")[0]  # same template wording
    assert len(encode_prompt(tok, cut.prompt)) + len(encode_answer(tok, "Item 11")) <= full - 5
    assert "exceeded max_length" in caplog.text
    (same,) = fit_prompts([s], tok, full)
    assert same.prompt == s.prompt and same.extra["truncated"] == 0
    with pytest.raises(DataError, match="does not fit"):
        fit_prompts([s], tok, 10)


def test_answer_tokens_and_padding(tok):
    prepare_tokenizer(tok)
    assert tok.pad_token_id is not None and tok.padding_side == "right"
    ids = encode_answer(tok, "Toy Story")
    assert ids[-1] == tok.eos_token_id and tok.decode(ids[:-1]) == " Toy Story"
    assert encode_answer(tok, "Toy Story", eos=False) == ids[:-1]
    with pytest.raises(DataError):
        encode_answer(tok, "  ")
    batch = tok(["a b c d", "a"], padding=True)
    assert batch["input_ids"][1][-1] == tok.pad_token_id and batch["attention_mask"][1][-1] == 0


def test_real_lastfm_samples(data_dir):
    val = lm_samples("llara-lastfm", "val", data_dir=data_dir, limit=40, seed=0)
    assert len(val) == 40
    for s in val:
        assert len(s.candidates) == 20 and s.candidates.count(s.target) == 1
        assert 3 <= len(s.history) <= 10 and s.prompt.endswith("Answer:")
        assert ", ".join(s.candidates) in s.prompt
    again = lm_samples("llara-lastfm", "val", data_dir=data_dir, limit=40, seed=0)
    assert [s.prompt for s in again] == [s.prompt for s in val]


def test_real_ml100k_samples(data_dir):
    tr = lm_samples("ml-100k", "train", data_dir=data_dir, limit=30, seed=0)
    te = lm_samples("ml-100k", "test", data_dir=data_dir, limit=30, seed=0)
    assert len(tr) == 30 and len(te) == 30
    assert not {s.user for s in tr} & {s.user for s in te}  # users split
    assert all("(19" not in s.target for s in tr)  # years removed
