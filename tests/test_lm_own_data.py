"""LM recommenders on the user's own data: interaction logs (data cards, table?options), S-DPO
JSON families, Alpaca instruction files, prompt styles recorded in runs, IR-Benchmark archives
found by folder name. Readers are checked on small hand-made fixtures (valid and malformed)."""

from __future__ import annotations

import csv
import json
import sys
import types
import zipfile
from pathlib import Path

import pytest

from prefrec.cli import main
from prefrec.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "own-data"


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def small_log(tmp_path: Path, n_users: int = 10, per_user: int = 5, n_items: int = 40) -> tuple[Path, Path]:
    """Users u0..u9 each play items in a known time order, rows written in REVERSE time order
    (so row order differs from time order); catalog of ``n_items`` items with unique titles."""
    rows = []
    for u in range(n_users):
        items = [(u * 3 + k) % n_items for k in range(per_user)]
        for k in reversed(range(per_user)):
            rows.append([f"u{u}", f"i{items[k]}", f"2024-01-{k + 1:02d} 10:00:00", 5 - (k % 3)])
    log = write_csv(tmp_path / "plays.csv", ["who", "what", "when", "stars"], rows)
    cat = write_csv(tmp_path / "items.csv", ["iid", "name", "genre"],
                    [[f"i{i}", f"Song {i}", "pop" if i % 2 else "rock"] for i in range(n_items)])
    return log, cat


def card(tmp_path: Path, **kw) -> Path:
    data = {"log": "plays.csv", "columns": {"user": "who", "item": "what", "time": "when", "rating": "stars"},
            "catalog": "items.csv", "catalog_columns": {"item": "iid", "title": "name"}, "domain": "music", **kw}
    import yaml

    p = tmp_path / "card.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


# ----------------------------------------------------------------------------- logs
def test_log_cases_follow_time_windows_and_candidates(tmp_path):
    """Hand-computed reference: 10 users x 5 plays -> per user exactly the windows
    ([a,b,c] -> d) and ([a,b,c,d] -> e) in TIME order; 20 candidates outside the user's items."""
    from prefrec.lm.sources import case_source

    small_log(tmp_path)
    src = case_source(str(card(tmp_path)), seed=3)
    titles = src.catalog.titles
    got = set()
    for split in ("train", "val", "test"):
        for c in src.cases(split):
            h = [titles[i] for i in c.history]
            got.add((tuple(h), titles[c.target]))
            assert len(c.candidates) == 20 and c.candidates[c.target_pos] == c.target
            user_items = {titles[i] for i in c.history} | {titles[c.target]}
            own = [titles[i] for i in c.candidates if i != c.target]
            assert len(set(own)) == 19 and not set(own) & user_items
    want = set()
    for u in range(10):
        seq = [f"Song {(u * 3 + k) % 40}" for k in range(5)]
        want.add((tuple(seq[:3]), seq[3]))
        want.add((tuple(seq[:4]), seq[4]))
    assert got == want
    assert {len(src.cases(s)) for s in ("val", "test")} == {2}  # 1 user each (8:1:1), 2 windows


def test_card_query_string_and_plain_table_agree(tmp_path):
    from prefrec.lm.prompts import lm_samples

    log, cat = small_log(tmp_path)
    by_card = lm_samples(str(card(tmp_path)), "train", seed=1)
    q = (f"{log}?user=who&item=what&time=when&rating=stars&catalog={cat}&catalog_item=iid&catalog_title=name"
         "&domain=music")
    by_query = lm_samples(q, "train", seed=1)
    assert [s.prompt for s in by_card] == [s.prompt for s in by_query] and len(by_card) == 16
    assert "listener" in by_card[0].prompt or "music" in by_card[0].prompt or "artist" in by_card[0].prompt
    # the card's domain is overridden by an explicit prompt section
    books = lm_samples(str(card(tmp_path)), "train", seed=1, prompt={"domain": "book"})
    assert all("book" in s.prompt for s in books) and [s.target for s in books] == [s.target for s in by_card]


def test_log_title_format_metadata_and_unknown_items(tmp_path, caplog):
    from prefrec.data.logs import parse_spec, read_log

    log, cat = small_log(tmp_path)
    write_csv(cat, ["iid", "name", "genre"], [[f"i{i}", f"Song {i}", "pop"] for i in range(30)])  # i30, i31 missing
    ds = read_log(parse_spec(str(card(tmp_path, title_format="{title} ({genre})", text_fields=["genre"]))))
    assert ds.catalog.titles[0] == "Song 0 (pop)" and set(ds.catalog.meta["genre"]) == {"pop"}
    assert "i30" not in set(ds.interactions.item_ids) and len(ds.catalog) == ds.interactions.n_items == 30
    assert len(ds.interactions) == 50 - 2  # the two plays of i30 and i31 (user u9) are dropped
    with pytest.raises(DataError, match="not in the catalog"):
        read_log(parse_spec(str(card(tmp_path, unknown_items="error"))))


@pytest.mark.parametrize("change,match,where", [
    ({"columns": {"user": "nobody", "item": "what"}}, "missing column 'nobody'", "plays.csv, line 1"),
    ({"catalog_columns": {"item": "iid", "title": "nope"}}, "missing catalog column 'nope'", "items.csv, line 1"),
    ({"columns": {"user": "who", "item": "what", "colour": "x"}}, "unknown column role", "card.yaml"),
    ({"catalog": None, "columns": {"user": "who", "item": "what"}}, "no item titles", "plays.csv"),
    ({"min_rating": 4, "columns": {"user": "who", "item": "what"}}, None, None),
    ({"title_format": "{title} {year}"}, "title_format", "items.csv, line 2"),
    ({"max_history": 2}, "min_history 3 > max_history 2", "card.yaml"),
])
def test_log_errors_name_file_line_and_fix(tmp_path, change, match, where):
    from prefrec.data.logs import parse_spec, read_log

    small_log(tmp_path)
    if match is None:  # min_rating with a rating column that is not mapped: guessed? no -> 'stars' is not guessed
        with pytest.raises(ConfigError, match="min_rating needs a rating column"):
            read_log(parse_spec(str(card(tmp_path, **change))))
        return
    with pytest.raises((DataError, ConfigError), match=match) as e:
        read_log(parse_spec(str(card(tmp_path, **change))))
    assert where in str(e.value.where) and e.value.fix


def test_catalog_duplicates_and_empty_titles_name_the_line(tmp_path):
    from prefrec.data.logs import parse_spec, read_log

    small_log(tmp_path)
    cat = tmp_path / "items.csv"
    write_csv(cat, ["iid", "name"], [["i0", "A"], ["i1", "B"], ["i0", "C"]])
    with pytest.raises(DataError, match="appears twice") as e:
        read_log(parse_spec(str(card(tmp_path))))
    assert "line 4" in e.value.where
    write_csv(cat, ["iid", "name"], [[f"i{i}", "" if i == 2 else f"S{i}"] for i in range(40)])
    with pytest.raises(DataError, match="empty title") as e:
        read_log(parse_spec(str(card(tmp_path))))
    assert "line 4" in e.value.where


def test_too_few_users_and_duplicate_titles_are_explained(tmp_path):
    from prefrec.lm.prompts import lm_samples

    small_log(tmp_path, n_users=3)
    with pytest.raises(DataError, match="only 6 items to sample 19 negatives") as e:
        lm_samples(str(card(tmp_path)), "test")
    assert "plays.csv" in e.value.where and "n_candidates" in e.value.fix
    with pytest.raises(DataError, match="test split has no cases"):
        lm_samples(str(card(tmp_path)) + "?n_candidates=5", "test")
    small_log(tmp_path)
    write_csv(tmp_path / "items.csv", ["iid", "name"], [[f"i{i}", "Same"] for i in range(40)])
    with pytest.raises(DataError, match="same title") as e:
        lm_samples(str(card(tmp_path, domain="item")) + "?n_candidates=5", "train", seed=7)
    assert "title_format" in e.value.fix


def test_parquet_log_and_hf_folder(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prefrec.data.logs import parse_spec, read_log

    log, cat = small_log(tmp_path)
    rows = list(csv.DictReader(log.open()))
    tab = pa.table({k: [r[k] for r in rows] for k in rows[0]})
    pq.write_table(tab, tmp_path / "plays.parquet")
    from_csv = read_log(parse_spec(str(card(tmp_path))))
    from_pq = read_log(parse_spec(str(card(tmp_path, log="plays.parquet"))))
    assert from_pq.catalog.titles == from_csv.catalog.titles
    assert (from_pq.interactions.item == from_csv.interactions.item).all()
    # a `datasets` folder: without the package, a clear error; with it, read through Parquet
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="needs the `datasets` package") as e:
        read_log(parse_spec(str(card(tmp_path, log="hf"))))
    assert "pip install datasets" in e.value.fix

    class FakeDS:
        def to_parquet(self, out):
            pq.write_table(tab, out)

    fake = types.SimpleNamespace(load_from_disk=lambda p: FakeDS(), DatasetDict=dict,
                                 concatenate_datasets=lambda xs: xs[0])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    from_hf = read_log(parse_spec(str(card(tmp_path, log="hf"))))
    assert (from_hf.interactions.item == from_csv.interactions.item).all()


# ----------------------------------------------------------------------------- S-DPO JSON
def sdpo_family(folder: Path, stem: str = "lastfm") -> dict[str, Path]:
    """train/test S-DPO files over 30 titles; test titles reuse train's in another order."""
    titles = [f"Artist {i}" for i in range(30)]
    out = {}
    for split, n, off in (("train", 12, 0), ("test", 8, 7)):
        recs = []
        for k in range(n):
            hist = [titles[(off + k + j) % 30] for j in range(4)]
            cands = [titles[(off + k + 10 + j) % 30] for j in range(6)]
            recs.append({"historyList": "::".join(hist), "itemList": cands, "trueSelection": cands[k % 6]})
        out[split] = folder / f"{stem}-{split}.json"
        out[split].write_text(json.dumps(recs))
    return out


def test_sdpo_json_family_domain_and_baseline_cases(tmp_path):
    from prefrec.commands.baseline import lm_eval_cases, load_cases
    from prefrec.lm.prompts import lm_samples
    from prefrec.lm.sources import case_source

    files = sdpo_family(tmp_path)
    test = str(files["test"])
    src = case_source(test)
    assert set(src.splits) == {"train", "test"} and src.domain == "music"  # inferred from "lastfm"
    assert case_source(str(files["train"])).catalog.titles == src.catalog.titles  # one numbering
    samples = lm_samples(test, "test", limit=5, seed=2)
    assert all("artist" in s.prompt.lower() or "music" in s.prompt.lower() for s in samples)
    movie = lm_samples(test, "test", limit=5, seed=2, domain="movie")
    assert [s.target for s in movie] == [s.target for s in samples] and movie[0].prompt != samples[0].prompt
    with pytest.raises(DataError, match="no val file beside") as e:
        lm_samples(test, "val")
    assert "eval_limit: 0" in e.value.fix
    splits, n_items = load_cases(test, seed=2)
    assert n_items == 30 and splits["val"] == [] and len(splits["train"]) == 12 and len(splits["test"]) == 8
    chosen = lm_eval_cases(splits["test"], test, "test", 5, seed=2)
    assert [(c.user, c.target, c.candidates) for c in chosen] == \
        [(s.user, s.item_ids[s.target_index], tuple(s.item_ids)) for s in samples]


def test_round_trip_sdpo_json_baseline_and_evaluate_lm(tmp_path, capsys):
    """The S-DPO JSON evaluate-lm reads works in `prefrec baseline`, on identical cases."""
    files = sdpo_family(tmp_path)
    test = str(files["test"])
    assert main(["-q", "baseline", "--dataset", test, "--model", "popularity", "--limit", "5", "--seed", "2",
                 "--run-dir", str(tmp_path / "pop")]) == 0
    base = json.loads((tmp_path / "pop" / "results.json").read_text())
    from prefrec.models.lm import save_trained_lm, tiny_lm

    model, tok = tiny_lm(seed=1)
    save_trained_lm(model, tok, tmp_path / "tiny", base="tiny", lora=None)
    assert main(["-q", "evaluate-lm", "--checkpoint", str(tmp_path / "tiny"), "--dataset", test, "--limit", "5", "--seed", "2",
                 "--mode", "rank", "--out", str(tmp_path / "ev"), "--threads", "1"]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert base["metrics"]["n"] == ev["rank"]["n"] == 5
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions_rank.jsonl").read_text().splitlines()]
    from prefrec.commands.baseline import lm_eval_cases, load_cases

    splits, _ = load_cases(test, seed=2)
    cases = lm_eval_cases(splits["test"], test, "test", 5, seed=2)
    assert [p["target_index"] for p in preds] == [c.target_pos for c in cases]
    assert "popularity" in ev["rank"]  # item ids now exist for imported JSON too


# ----------------------------------------------------------------------------- Alpaca
def alpaca_file(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records, indent=1))
    return path


def test_alpaca_sft_and_preference_records(tmp_path):
    from prefrec.data.alpaca import alpaca_kind, read_alpaca
    from prefrec.lm.prompts import lm_samples

    sft = alpaca_file(tmp_path / "sft.json", [
        {"instruction": "Recommend a movie.", "input": "User watched: Heat, Alien.", "output": "Fargo"},
        {"instruction": "Pick one. Answer:", "output": "Toy Story", "system": "You recommend movies."}])
    s = read_alpaca(sft)
    assert s[0].prompt == "Recommend a movie.\nUser watched: Heat, Alien.\nAnswer:" and s[0].target == "Fargo"
    assert s[1].prompt == "You recommend movies.\nPick one. Answer:" and alpaca_kind(s) == "sft"
    pref = alpaca_file(tmp_path / "dpo-train.jsonl", [])
    pref.write_text("\n".join(json.dumps(r) for r in [
        {"instruction": "Next item?", "input": "h", "output": ["Fargo", "Heat"]},
        {"instruction": "Next item?", "input": "g", "chosen": "Alien", "rejected": "Heat"},
        {"instruction": "Next item?", "input": "k", "output": ["A", "B", "C"]}]))
    p = lm_samples(str(pref), "train")
    assert [x.candidates for x in p] == [["Fargo", "Heat"], ["Alien", "Heat"], ["A", "B", "C"]]
    assert all(x.target_index == 0 for x in p) and alpaca_kind(p) == "preference"


@pytest.mark.parametrize("record,match", [
    ({"input": "x", "output": "y"}, "missing 'instruction'"),
    ({"instruction": "x"}, "lacks 'output'"),
    ({"instruction": "x", "output": ["only"]}, "one answer"),
    ({"instruction": "x", "output": ["same", "same"]}, "identical"),
    ({"instruction": "x", "output": ["a", ""]}, "rejected answer #2 is empty"),
    ({"instruction": "x", "output": 3}, "'output' is a int"),
    ({"instruction": "x", "output": "y", "history": [["q", "a"]]}, "multi-turn"),
    (["not", "an", "object"], "not an object"),
])
def test_alpaca_malformed_records_name_file_record_and_fix(tmp_path, record, match):
    from prefrec.data.alpaca import read_alpaca

    f = alpaca_file(tmp_path / "bad.json", [{"instruction": "ok", "output": "fine"}, record])
    with pytest.raises(DataError, match=match) as e:
        read_alpaca(f)
    assert "bad.json" in e.value.where and "record 2" in e.value.where and e.value.fix


def test_alpaca_pairs_train_dpo_and_sft(tmp_path, capsys):
    import yaml

    recs = [{"instruction": f"User {k} watched Heat and Alien. Next?", "output": ["Fargo", f"Film {k}"]}
            for k in range(6)]
    f = alpaca_file(tmp_path / "pairs.json", recs)
    base = dict(model="tiny", dataset=str(f), max_steps=1, train_limit=4, eval_limit=0, plots=False,
                per_device_train_batch_size=2, lora_dropout=0.0)
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump({**base, "output_dir": str(tmp_path / "sft")}))
    assert main(["-q", "sft", "--config", str(tmp_path / "sft.yaml")]) == 0
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump({**base, "model": str(tmp_path / "sft"),
                                                       "output_dir": str(tmp_path / "dpo"),
                                                       "ref_cache_dir": str(tmp_path / "rc")}))
    assert main(["-q", "dpo", "--config", str(tmp_path / "dpo.yaml")]) == 0
    assert (tmp_path / "dpo" / "final").is_dir()
    (tmp_path / "sdpo.yaml").write_text(yaml.safe_dump({**base, "num_negatives": 3, "output_dir": str(tmp_path / "s")}))
    with pytest.raises(ConfigError, match="num_negatives <= 1"):
        from prefrec.commands.preference import load_command_config
        from prefrec.train.preference import train_preference

        train_preference(load_command_config("sdpo", str(tmp_path / "sdpo.yaml"), []))


# ----------------------------------------------------------------------------- prompt styles
def test_template_file_checks(tmp_path):
    from prefrec.lm.styles import read_template_file, resolve_style

    good = tmp_path / "t.txt"
    good.write_text("Seen: {history}.\nPick from {n}: {candidates}. Answer:\n---\nH={history} C={candidates} Answer:\n")
    style = resolve_style({"template": str(good)})
    assert len(style.templates) == 2 and style.name == "file:t.txt"
    for text, match in (("Seen {history}. Answer:", r"lacks \{candidates\}"),
                        ("{history} {candidates}", "does not end with 'Answer:'"),
                        ("{history} {candidates} {user} Answer:", "unknown field")):
        good.write_text(text)
        with pytest.raises(ConfigError, match=match):
            read_template_file(good)


def test_run_on_a_csv_log_is_evaluated_and_served_with_its_own_template(tmp_path, capsys):
    """SFT (tiny model) on the shipped example log with a custom template file; evaluate-lm and
    recommend / prefrec.load rebuild exactly that template from the run folder."""
    import yaml

    import prefrec
    from prefrec.lm.prompts import lm_samples

    tmpl = tmp_path / "prompt.txt"
    tmpl.write_text("Songs so far: {history}. Which of these {n} comes next? {candidates}. Answer:")
    cfg = dict(model="tiny", dataset=str(EXAMPLE / "card.yaml"), output_dir=str(tmp_path / "sft"), max_steps=2,
               train_limit=8, eval_limit=4, per_device_train_batch_size=4, plots=False,
               prompt={"template": str(tmpl)})
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "sft", "--config", str(tmp_path / "sft.yaml")]) == 0
    tmpl.write_text("CHANGED {history} {candidates} Answer:")  # the run keeps the wording it trained with
    assert main(["-q", "evaluate-lm", "--checkpoint", str(tmp_path / "sft"), "--limit", "3", "--mode", "rank",
                 "--threads", "1"]) == 0
    out = tmp_path / "sft" / "eval-card-test"
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["rank"]["n"] == 3
    recs = [json.loads(x) for x in (out / "predictions_rank.jsonl").read_text().splitlines()]
    want = lm_samples(str(EXAMPLE / "card.yaml"), "test", limit=3, seed=0)
    assert [r["target"] for r in recs] == [w.target for w in want]
    run_meta = json.loads((tmp_path / "sft" / "final" / "prefrec_lm.json").read_text())
    assert run_meta["prompt"]["templates"] == [
        "Songs so far: {history}. Which of these {n} comes next? {candidates}. Answer:"]
    assert run_meta["dataset"] == str(EXAMPLE / "card.yaml") and run_meta["seed"] == 0
    rec = prefrec.load(tmp_path / "sft")
    p = rec.prompt(["Night Swim by Neon Drift", "Long Road by Glass Circuit"], ["A", "B"])
    assert p.startswith("Songs so far: Night Swim by Neon Drift, Long Road by Glass Circuit. Which of these 2")
    capsys.readouterr()
    assert main(["-q", "recommend", "--run", str(tmp_path / "sft"), "--history", "Night Swim by Neon Drift",
                 "--candidates", "Paper Boats by Neon Drift", "Silver Rain by Old Kettle", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2] and rows == rec.recommend(
        history=["Night Swim by Neon Drift"], candidates=["Paper Boats by Neon Drift", "Silver Rain by Old Kettle"])


def test_chat_template_needs_a_chat_tokenizer():
    from prefrec.lm.samples import LMSample
    from prefrec.lm.styles import chat_wrap, resolve_style

    style = resolve_style({"domain": "music", "chat_template": True})
    s = [LMSample(prompt="P Answer:", history=["a"], candidates=["b"], target_index=0)]

    class Plain:
        chat_template = None
        name_or_path = "plain"

    with pytest.raises(DataError, match="no chat template"):
        chat_wrap(s, Plain(), style)

    class Chat:
        chat_template = "x"

        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return f"<user>{msgs[0]['content']}</user><assistant>"

    (w,) = chat_wrap(s, Chat(), style)
    assert w.prompt == "<user>P Answer:</user><assistant>" and chat_wrap([w], Chat(), style)[0].prompt == w.prompt


# ----------------------------------------------------------------------------- datasets by name
def write_proc_zip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("user_list.tsv", "org_id\tproc_id\nA\t0\nB\t1\n")
        z.writestr("item_list.tsv", "org_id\tproc_id\nx\t0\ny\t1\nz\t2\n")
        z.writestr("train.tsv", "user_procid\titem_procid\n0\t0\n0\t1\n1\t2\n")
        z.writestr("test.tsv", "user_procid\titem_procid\n0\t2\n1\t0\n")
    return path


def test_irbench_archive_found_by_folder_name(tmp_path):
    from prefrec.data.registry import dataset_known, load_dataset

    write_proc_zip(tmp_path / "ir-benchmark" / "iid" / "amazon2014-movie" / "proc.zip")
    write_proc_zip(tmp_path / "mine" / "deep" / "shop-x" / "proc.zip")
    ds = load_dataset("amazon2014-movie", tmp_path)
    assert ds.name == "amazon2014-movie" and len(ds.splits["test"]) == 2
    assert load_dataset("shop-x", tmp_path).interactions.n_items == 3 and dataset_known("shop-x", tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset("amazon2014-movi", tmp_path)
    assert "proc.zip" in e.value.fix and "a path to a file or folder" in e.value.fix and "data card" in e.value.fix


def test_mapping_on_the_command_line_for_data_stats_and_cf(tmp_path, capsys):
    """`table?user=..` maps columns for every command that takes a dataset, CF ones included
    (no titles needed there)."""
    from prefrec.data.registry import load_dataset

    log, _ = small_log(tmp_path)
    assert main(["-q", "data", "stats", f"{log}?user=who&item=what&time=when", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["users"] == 10 and st["interactions"] == 50 and "time_range" in st
    ds = load_dataset(f"{log}?user=who&item=what")
    assert ds.catalog is None and ds.interactions.n_items == 32
    with pytest.raises(ConfigError, match="unknown log option 'usr'"):
        load_dataset(f"{log}?usr=who")


def test_example_study_plans_every_stage_on_the_card():
    from prefrec.experiment import load_experiment, plan

    exp = load_experiment(EXAMPLE / "study.yaml")
    stages = plan(exp)
    assert [s.label for s in stages] == ["lm-base", "sft", "sdpo"]
    assert all(s.config.prompt.domain == "music" for s in stages[1:])
    assert stages[0].config["prompt"] == {"domain": "music"}


def test_napo_and_recpo_train_on_a_log(tmp_path):
    """NAPO (with a SASRec baseline run on the same card and seed) and RecPO (ratings x recency
    from the log) take a data card like any dataset."""
    from prefrec.models.lm import save_trained_lm, tiny_lm

    model, tok = tiny_lm(seed=2)
    save_trained_lm(model, tok, tmp_path / "start" / "final", base="tiny", lora=None)
    card_ = str(EXAMPLE / "card.yaml")
    assert main(["-q", "baseline", "--dataset", card_, "--model", "sasrec", "--epochs", "1",
                 "--run-dir", str(tmp_path / "sasrec")]) == 0
    common = [f"model={tmp_path / 'start'}", f"dataset={card_}", "max_steps=1", "train_limit=4", "eval_limit=2",
              "per_device_train_batch_size=2", "plots=false", f"ref_cache_dir={tmp_path / 'rc'}", "threads=1"]
    assert main(["-q", "napo", f"output_dir={tmp_path / 'napo'}", f"napo.sasrec={tmp_path / 'sasrec'}", *common]) == 0
    assert main(["-q", "recpo", f"output_dir={tmp_path / 'recpo'}", *common]) == 0
    for run in ("napo", "recpo"):
        meta = json.loads((tmp_path / run / "final" / "prefrec_lm.json").read_text())
        assert meta["dataset"] == card_ and meta["prompt"]["domain"] == "music"
