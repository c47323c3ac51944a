"""LM evaluation: generation + ranking on tiny models, files written, CLI end to end."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

pytest.importorskip("transformers")

from prefrec.lm.evaluate import evaluate_lm, evaluate_ranking, generate_answers  # noqa: E402
from prefrec.lm.samples import LMSample  # noqa: E402
from prefrec.lm.scoring import candidate_logps  # noqa: E402
from test_lm_scoring import tiny_model, tiny_tokenizer  # noqa: E402

TITLES = ["Heat (1995)", "Casino (1995)", "Fargo (1996)", "Star Wars (1977)", "Alien (1979)",
          "Toy Story (1995)", "Return of the Jedi (1983)"]


def make_samples(n: int = 5) -> list[LMSample]:
    out = []
    for i in range(n):
        cands = [TITLES[(i + j) % len(TITLES)] for j in range(6)]
        hist = TITLES[i % 3: i % 3 + 2 + i % 2]
        prompt = "The user watched " + ", ".join(hist) + ". Which one next? " + ", ".join(cands) + ". Answer:"
        out.append(LMSample(prompt=prompt, history=hist, candidates=cands, target_index=i % 6, user=i))
    return out


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_generation_batched_equals_single(tok):
    """Left padding + batching must not change greedy outputs."""
    model = tiny_model(len(tok))
    prompts = [s.prompt for s in make_samples(2)] + ["Hi"]
    batched = generate_answers(model, tok, prompts, max_new_tokens=4, batch_size=3)
    single = [generate_answers(model, tok, [p], max_new_tokens=4)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)


def test_ranking_matches_candidate_logps(tok):
    model = tiny_model(len(tok))
    samples = make_samples(5)
    m, rec = evaluate_ranking(model, tok, samples, batch_size=2)
    for s, r in zip(samples, rec):
        lp = candidate_logps(model, tok, [s.prompt], [s.candidates])[0]
        assert r["rank"] == int((lp >= lp[s.target_index]).sum())
        assert r["prediction"] == int(lp.argmax())
    assert m["n"] == 5 and 0 <= m["NDCG@5"] <= m["HR@5"] <= 1 and m["HR@1"] <= m["HR@5"] <= m["HR@10"]


class EchoTargetModel(torch.nn.Module):
    """Stub whose "generation" is a fixed answer per prompt: checks slicing, decoding, judging."""

    def __init__(self, tok, answers: dict[str, str]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.answers = tok, answers

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        rows = []
        for r in range(input_ids.shape[0]):
            prompt = self.tok.decode(input_ids[r][attention_mask[r].bool()], skip_special_tokens=True)
            ans = self.tok(" " + self.answers[prompt], add_special_tokens=False)["input_ids"]
            ans = (ans + [self.tok.eos_token_id] * max_new_tokens)[:max_new_tokens]
            rows.append(torch.cat([input_ids[r], torch.tensor(ans)]))
        return torch.stack(rows)


def test_generation_judging_with_stub(tok, tmp_path):
    samples = make_samples(4)
    answers = {samples[0].prompt: samples[0].target,                       # hit
               samples[1].prompt: samples[1].candidates[(samples[1].target_index + 1) % 6],  # valid miss
               samples[2].prompt: samples[2].candidates[0] + " or " + samples[2].candidates[1],  # invalid
               samples[3].prompt: "no idea"}                               # invalid
    res = evaluate_lm(EchoTargetModel(tok, answers), tok, samples, mode="generate", out_dir=tmp_path,
                      max_new_tokens=30)
    g = res["generate"]
    assert (g["HR@1"], g["ValidRatio"], g["n"]) == (0.25, 0.5, 4)
    lines = [json.loads(x) for x in (tmp_path / "predictions_generate.jsonl").read_text().splitlines()]
    assert [x["hit"] for x in lines] == [True, False, False, False]
    assert lines[0]["text"] == samples[0].target


def test_evaluate_both_writes_files(tok, tmp_path):
    model = tiny_model(len(tok))
    samples = make_samples(3)
    res = evaluate_lm(model, tok, samples, mode="both", out_dir=tmp_path, max_new_tokens=4,
                      meta={"checkpoint": "tiny"})
    assert set(res) == {"meta", "generate", "rank"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["rank"]["HR@1"] == res["rank"]["HR@1"] and saved["meta"]["checkpoint"] == "tiny"
    for mode in ("generate", "rank"):
        lines = (tmp_path / f"predictions_{mode}.jsonl").read_text().splitlines()
        assert [json.loads(x)["case"] for x in lines] == [0, 1, 2]
    assert not model.training


def test_cli_end_to_end(tok, tmp_path, monkeypatch, capsys):
    from prefrec import cli
    from prefrec.commands import evaluate_lm as cmd

    model = tiny_model(len(tok))
    seen = {}

    def fake_samples(dataset, split, data_dir=None, limit=None, seed=0, **prompt_options):
        seen.update(dataset=dataset, split=split, limit=limit)
        return make_samples(limit or 5)

    try:
        import prefrec.lm.prompts as prompts_mod
        monkeypatch.setattr(prompts_mod, "lm_samples", fake_samples)
    except ImportError:
        monkeypatch.setitem(sys.modules, "prefrec.lm.prompts", types.SimpleNamespace(lm_samples=fake_samples))
    monkeypatch.setattr(cmd, "load_model", lambda ckpt, device="cpu", dtype=None: (model, tok, "base"))
    out = tmp_path / "ev"
    rc = cli.main(["evaluate-lm", "--checkpoint", "tiny", "--dataset", "ml-100k", "--split", "test",
                   "--mode", "rank", "--limit", "3", "--out", str(out)])
    assert rc == 0
    assert seen == {"dataset": "ml-100k", "split": "test", "limit": 3}
    assert "HR@1=" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["rank"]["n"] == 3


def test_bad_mode(tok):
    from prefrec.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown mode"):
        evaluate_lm(tiny_model(len(tok)), tok, make_samples(1), mode="beam")
    with pytest.raises(ConfigError, match="no evaluation cases"):
        evaluate_lm(tiny_model(len(tok)), tok, [], mode="rank")


def test_cli_popularity_metrics(tok, tmp_path, monkeypatch, capsys):
    """evaluate-lm adds popularity-bias metrics of the top-1 item, with the baseline's training counts."""
    from dataclasses import replace

    from prefrec import cli
    from prefrec.commands import baseline
    from prefrec.commands import evaluate_lm as cmd
    from prefrec.data.sequences import SequenceCase

    model = tiny_model(len(tok))
    samples = [replace(s, item_ids=[TITLES.index(t) for t in s.candidates]) for s in make_samples(4)]
    import prefrec.lm.prompts as prompts_mod
    monkeypatch.setattr(prompts_mod, "lm_samples", lambda *a, **k: samples)
    monkeypatch.setattr(cmd, "load_model", lambda ckpt, device="cpu", dtype=None: (model, tok, "base"))
    train = [SequenceCase(user=u, history=(0, 1), target=2 + u, candidates=(), target_pos=-1) for u in range(3)]
    monkeypatch.setattr(baseline, "load_cases", lambda dataset, seed=0, data_dir=None:
                        ({"train": train, "val": [], "test": []}, len(TITLES)))
    out = tmp_path / "ev"
    assert cli.main(["evaluate-lm", "--checkpoint", "tiny", "--dataset", "ml-100k", "--mode", "rank",
                     "--out", str(out)]) == 0
    pop = json.loads((out / "metrics.json").read_text())["rank"]["popularity"]
    assert pop["cases"] == 4 and pop["ValidRatio"] == 1.0 and 0 <= pop["HeadShare@1"] <= 1
    assert "HeadShare@1=" in capsys.readouterr().out
