"""Prompts for LM recommendation: domain templates, LMSample building, context-length fitting.

Templates are our own wording (not S-DPO's/LLaRA's), several paraphrases per domain, with
three fixes over the peer prompts (research/lm_side.md §1.4): every template ends with the
cue ``Answer:`` (the SFT loss and the answer ``" " + title + EOS`` start right after it), the
candidate count is filled in (no "10 titles" above a list of 20), and no trailing space.

**Template choice** is deterministic: ``template_index(history, candidates, seed)`` hashes the
seed and the titles that appear in the prompt (history, then candidates, in order) with CRC32
and takes it modulo the number of templates. A case therefore gets the same template in every
epoch, in every process and whether it was built from item ids or imported from S-DPO JSON;
a different ``seed`` re-draws all templates. (S-DPO draws a template at random on every access,
which makes its test results depend on the RNG.)

History: the last :data:`MAX_HISTORY` (10) items, oldest first; history and candidates are
joined with ``", "``. Prompts that do not fit the model's context lose their oldest history
items first (:func:`fit_prompt`); the number dropped is stored in ``extra["truncated"]`` and
logged per dataset.

Invalid cases raise :class:`DataError` naming the case: empty history, duplicate candidate
ids, target not among the candidates (or ``target_pos`` not pointing at it), item ids outside
the catalog, empty titles. Two *different* items with the same title in one candidate list
(ML-100K has 18 duplicated titles) make the answer ambiguous: :func:`sample_from_case`
raises; :func:`lm_samples` skips such cases and logs how many.
"""

from __future__ import annotations

import logging
import random
import re
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from prefrec.errors import ConfigError, DataError
from prefrec.lm.samples import LMSample

log = logging.getLogger(__name__)

MAX_HISTORY = 10
N_CANDIDATES = 20
CUE = "Answer:"
SEP = ", "

# {history}, {candidates}: titles joined with ", "; {n}: number of candidates.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "movies": (
        "A viewer has recently watched these films, oldest first: {history}. "
        "Out of the {n} films below, pick the one they are most likely to watch next: {candidates}. "
        "Reply with the exact title. Answer:",
        "Watch history of a user: {history}. Which of these {n} movies should they see next? "
        "Options: {candidates}. Answer:",
        "You are a movie recommender. The user's last watched movies were {history}. "
        "Choose exactly one title from this list of {n} candidates: {candidates}. Answer:",
        "Given that someone enjoyed {history}, which movie from the following {n} would they "
        "pick next? {candidates}. Answer:",
        "Recently seen by the user (in order): {history}. Candidates ({n}): {candidates}. "
        "Name the single best next movie for this user. Answer:",
    ),
    "music": (
        "A listener has recently played music by these artists, oldest first: {history}. "
        "Out of the {n} artists below, pick the one they will most likely play next: {candidates}. "
        "Reply with the exact name. Answer:",
        "Listening history of a user: {history}. Which of these {n} artists should they hear next? "
        "Options: {candidates}. Answer:",
        "You are a music recommender. The user's latest artists were {history}. "
        "Choose exactly one artist from this list of {n} candidates: {candidates}. Answer:",
        "Given that someone listened to {history}, which artist from the following {n} would they "
        "play next? {candidates}. Answer:",
        "Recently played by the user (in order): {history}. Candidates ({n}): {candidates}. "
        "Name the single best next artist for this user. Answer:",
    ),
    "books": (
        "A reader has recently finished these books, oldest first: {history}. "
        "Out of the {n} books below, pick the one they are most likely to read next: {candidates}. "
        "Reply with the exact title. Answer:",
        "Reading history of a user: {history}. Which of these {n} books should they read next? "
        "Options: {candidates}. Answer:",
        "You are a book recommender. The user's last books were {history}. "
        "Choose exactly one title from this list of {n} candidates: {candidates}. Answer:",
        "Given that someone enjoyed reading {history}, which book from the following {n} would they "
        "pick up next? {candidates}. Answer:",
        "Recently read by the user (in order): {history}. Candidates ({n}): {candidates}. "
        "Name the single best next book for this user. Answer:",
    ),
    "products": (
        "A shopper has recently bought these products, oldest first: {history}. "
        "Out of the {n} products below, pick the one they are most likely to buy next: {candidates}. "
        "Reply with the exact product name. Answer:",
        "Purchase history of a customer: {history}. Which of these {n} products should they buy next? "
        "Options: {candidates}. Answer:",
        "You are a product recommender. The customer's last purchases were {history}. "
        "Choose exactly one product from this list of {n} candidates: {candidates}. Answer:",
        "Given that someone bought {history}, which product from the following {n} would they "
        "buy next? {candidates}. Answer:",
        "Recently bought by the customer (in order): {history}. Candidates ({n}): {candidates}. "
        "Name the single best next product for this customer. Answer:",
    ),
    "items": (
        "A user has recently interacted with these items, oldest first: {history}. "
        "Out of the {n} items below, pick the one they are most likely to choose next: {candidates}. "
        "Reply with the exact name. Answer:",
        "History of a user: {history}. Which of these {n} items should they get next? "
        "Options: {candidates}. Answer:",
        "You are a recommender. The user's latest items were {history}. "
        "Choose exactly one item from this list of {n} candidates: {candidates}. Answer:",
        "Given that someone chose {history}, which item from the following {n} would they "
        "choose next? {candidates}. Answer:",
        "Recent items of the user (in order): {history}. Candidates ({n}): {candidates}. "
        "Name the single best next item for this user. Answer:",
    ),
}
DOMAIN_ALIASES = {"movie": "movies", "film": "movies", "films": "movies", "artists": "music",
                  "artist": "music", "lastfm": "music", "book": "books", "goodreads": "books",
                  "product": "products", "amazon": "products", "shop": "products", "item": "items",
                  "generic": "items"}
# words in a file name that give away the domain of imported records (S-DPO JSON)
_PATH_WORDS = (("music", ("lastfm", "music", "artist", "song", "spotify")),
               ("movies", ("movie", "movielens", "ml-100k", "ml-1m", "ml100k", "ml1m", "film", "netflix")),
               ("books", ("book", "goodreads")),
               ("products", ("amazon", "product", "beauty", "electronic", "health", "steam", "game", "toys")))
# dataset name -> (domain, loader kind)
DATASETS = {
    "ml-100k": "movies", "ml100k": "movies", "movielens": "movies", "llara-movielens": "movies",
    "llara-lastfm": "music", "lastfm": "music",
}


def resolve_domain(domain: str) -> str:
    if not isinstance(domain, str):  # a PromptStyle
        return domain.name
    d = DOMAIN_ALIASES.get(domain, domain)
    if d not in TEMPLATES:
        raise ConfigError(f"unknown prompt domain {domain!r}", where="domain",
                          fix=f"use one of {', '.join(TEMPLATES)}, or a template file (prompt.template)")
    return d


def templates_of(domain) -> tuple[str, ...]:
    """The templates of a domain name or of a :class:`prefrec.lm.styles.PromptStyle`."""
    if not isinstance(domain, str):
        return tuple(domain.templates)
    return TEMPLATES[resolve_domain(domain)]


def template_index(history: Sequence[str], candidates: Sequence[str], seed: int, n_templates: int) -> int:
    """Deterministic template choice from the seed and the titles shown (see module docstring)."""
    key = f"{seed}\x1e" + "\x1f".join(history) + "\x1e" + "\x1f".join(candidates)
    return zlib.crc32(key.encode("utf-8")) % n_templates


def build_prompt(history: Sequence[str], candidates: Sequence[str], domain: str = "movies", seed: int = 0,
                 template: int | None = None) -> str:
    """The prompt text for at most the last 10 history titles and the candidate titles."""
    history = list(history)[-MAX_HISTORY:]
    temps = templates_of(domain)
    k = template_index(history, candidates, seed, len(temps)) if template is None else template % len(temps)
    return temps[k].format(history=SEP.join(history), candidates=SEP.join(candidates), n=len(candidates))


def movie_title(raw: str) -> str:
    """MovieLens title the LLaRA way: trailing ``(year)`` removed, ``", The"``/``", A"``/``", An"``
    moved to the front (``"Usual Suspects, The (1995)"`` -> ``"The Usual Suspects"``)."""
    t = re.sub(r"\s*\(\d{4}\)\s*$", "", raw.strip())
    m = re.match(r"^(.*), (The|A|An)$", t)
    return f"{m.group(2)} {m.group(1)}" if m else t


def _check(history: Sequence[str], candidates: Sequence[str], target_index: int, where: str) -> None:
    if not history:
        raise DataError("empty history", where=where, fix="drop cases without history (S-DPO keeps 3+ items)")
    if not candidates:
        raise DataError("no candidates", where=where, fix="give the target and its negatives as candidates")
    if not 0 <= target_index < len(candidates):
        raise DataError(f"target index {target_index} outside the {len(candidates)} candidates", where=where,
                        fix="include the target among the candidates exactly once")
    for t in [*history, *candidates]:
        if not t or not t.strip():
            raise DataError("empty item title", where=where, fix="give every item a non-empty title")
    if len(set(candidates)) != len(candidates):
        dup = next(c for c in candidates if candidates.count(c) > 1)
        raise DataError(f"candidate title {dup!r} appears twice, so the answer is ambiguous", where=where,
                        fix="re-sample the negatives or make the titles unique")


def sample_from_case(case, catalog, *, domain: str = "movies", seed: int = 0, title_fn=None) -> LMSample:
    """Build an :class:`LMSample` (with prompt) from a ``SequenceCase`` and an ``ItemCatalog``.

    ``title_fn`` maps catalog titles to displayed titles (e.g. :func:`movie_title`).
    """
    where = f"case user={case.user} target={case.target}"
    cands = list(case.candidates)
    if case.target not in cands:
        raise DataError(f"target item {case.target} is not among the candidates", where=where,
                        fix="build candidates with prefrec.data.sequences.add_candidates")
    if len(set(cands)) != len(cands):
        dup = next(c for c in cands if cands.count(c) > 1)
        raise DataError(f"candidate item {dup} appears twice", where=where, fix="re-sample the negatives")
    if case.target_pos >= 0 and (case.target_pos >= len(cands) or cands[case.target_pos] != case.target):
        raise DataError(f"target_pos {case.target_pos} does not point at the target", where=where,
                        fix="set target_pos = candidates.index(target)")
    hist_ids = list(case.history)[-MAX_HISTORY:]
    n = len(catalog)
    for i in [*hist_ids, *cands]:
        if not 0 <= int(i) < n:
            raise DataError(f"item id {i} is not in the catalog ({n} items)", where=where,
                            fix="use the catalog of the dataset the cases were built from")
    fn = title_fn or (lambda s: s)
    history = [fn(catalog.title(i)) for i in hist_ids]
    titles = [fn(catalog.title(i)) for i in cands]
    target_index = cands.index(case.target)
    _check(history, titles, target_index, where)
    k = template_index(history, titles, seed, len(templates_of(domain)))
    return LMSample(prompt=build_prompt(history, titles, domain, seed, template=k), history=history,
                    candidates=titles, target_index=target_index, user=int(case.user),
                    history_ids=[int(i) for i in hist_ids], item_ids=[int(i) for i in cands],
                    extra={"truncated": 0, "template": k})


def with_prompt(sample: LMSample, *, domain: str = "movies", seed: int = 0) -> LMSample:
    """Fill the prompt of an imported sample (e.g. S-DPO JSON, ``prompt=""``) with the same rule
    as :func:`sample_from_case`, so both routes give identical prompts."""
    history = list(sample.history)[-MAX_HISTORY:]
    _check(history, sample.candidates, sample.target_index, str(sample.extra.get("source", "sample")))
    ids = sample.history_ids[-MAX_HISTORY:] if sample.history_ids else sample.history_ids
    k = template_index(history, sample.candidates, seed, len(templates_of(domain)))
    return replace(sample, prompt=build_prompt(history, sample.candidates, domain, seed, template=k),
                   history=history, history_ids=ids,
                   extra={**sample.extra, "truncated": sample.extra.get("truncated", 0), "template": k})


def fit_prompt(sample: LMSample, tokenizer, max_length: int, *, domain: str = "movies", seed: int = 0) -> LMSample:
    """Drop the oldest history items until prompt + the longest candidate answer (+EOS) fit in
    ``max_length`` tokens. The template stays the one chosen for the full history (the choice is
    made once, before truncation, so truncating never changes the wording)."""
    from prefrec.lm.tokens import encode_answer, encode_prompt

    longest = max(len(encode_answer(tokenizer, c)) for c in sample.candidates)
    temps = templates_of(domain)
    k = sample.extra.get("template")
    if k is None:
        k = template_index(sample.history, sample.candidates, seed, len(temps))
    history = list(sample.history)
    prompt = sample.prompt or build_prompt(history, sample.candidates, domain, seed, template=k)
    dropped = 0
    while len(encode_prompt(tokenizer, prompt)) + longest > max_length:
        if len(history) <= 1:
            raise DataError(f"the prompt does not fit in max_length={max_length} tokens even with one history "
                            "item", where=str(sample.extra.get("source", f"user {sample.user}")),
                            fix="raise max_length or use fewer/shorter candidates")
        history = history[1:]
        dropped += 1
        prompt = build_prompt(history, sample.candidates, domain, seed, template=k)
    if not dropped:
        return sample
    ids = sample.history_ids[dropped:] if sample.history_ids else sample.history_ids
    return replace(sample, prompt=prompt, history=history, history_ids=ids,
                   extra={**sample.extra, "truncated": sample.extra.get("truncated", 0) + dropped})


def fit_prompts(samples: list[LMSample], tokenizer, max_length: int, *, domain: str = "movies",
                seed: int = 0) -> list[LMSample]:
    """:func:`fit_prompt` over a list; logs how many prompts lost how many history items."""
    out = [fit_prompt(s, tokenizer, max_length, domain=domain, seed=seed) for s in samples]
    cut = [s.extra.get("truncated", 0) for s in out]
    n_cut = sum(1 for c in cut if c)
    if n_cut:
        log.warning("%d of %d prompts exceeded max_length=%d: dropped %d oldest history items in total",
                    n_cut, len(out), max_length, sum(cut))
    return out


# ----------------------------------------------------------------------------- datasets
def dataset_domain(dataset: str) -> str:
    """The prompt domain of a dataset when the config names none (:mod:`prefrec.lm.sources`)."""
    from prefrec.lm.sources import dataset_domain as _dd

    return _dd(dataset)


def _subsample(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices kept by ``limit``: a seeded uniform sample, in original order (a plain prefix
    would keep only the first few users)."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(f"limit:{seed}").sample(range(n), limit))


def style_for(dataset: str, prompt=None, domain: str | None = None):
    """The :class:`~prefrec.lm.styles.PromptStyle` of a command: its ``prompt:`` section (or a
    recorded style), else ``domain``, else the dataset's own domain."""
    from prefrec.lm.styles import PromptConfig, PromptStyle, resolve_style

    if isinstance(prompt, PromptStyle):
        return prompt
    if isinstance(prompt, dict):
        prompt = PromptConfig(**prompt)
    if domain is not None and not isinstance(domain, str):
        return domain  # already a style
    if domain is not None and (prompt is None or (prompt.domain is None and prompt.template is None)):
        prompt = PromptConfig(domain=domain, chat_template=bool(prompt and prompt.chat_template))
    return resolve_style(prompt, dataset_domain(dataset))


def lm_samples(dataset: str, split: str, *, data_dir=None, limit: int | None = None, seed: int = 0,
               domain: str | None = None, prompt=None) -> list[LMSample]:
    """Prompted samples of one split, from any case source (:mod:`prefrec.lm.sources`).

    ``dataset``: ``ml-100k`` (LLaRA-style: users split 8:1:1 with ``seed``, sliding windows,
    20 candidates; titles via :func:`movie_title`), ``llara-lastfm`` (S-DPO's exact candidate
    lists; train/val/test), ``llara-movielens`` (val/test), an S-DPO JSON file or folder, an
    interaction log (data card, ``table?user=..``, CSV/Parquet/HF folder), or an Alpaca-style
    instruction file (:mod:`prefrec.data.alpaca`; prompts as written, no template).
    ``seed`` chooses templates (and the split of logs and ML-100K); ``limit`` keeps a seeded
    subsample. ``prompt`` (a ``prompt:`` section or recorded style) or ``domain`` choose the
    wording; default: the dataset's domain.
    """
    from prefrec.data import alpaca
    from prefrec.lm.sources import case_source, is_json_source, json_split_file

    if is_json_source(dataset):
        p = Path(dataset).expanduser()
        if not p.exists():
            raise DataError("no such JSON file or folder", where=dataset,
                            fix="give a JSON file of records with historyList, itemList, trueSelection")
        f = json_split_file(p, split)
        if alpaca.is_alpaca_file(f):
            raw = alpaca.read_alpaca(f)
            return [raw[i] for i in _subsample(len(raw), limit, seed)]
    src = case_source(dataset, data_dir, seed)
    style = style_for(dataset, prompt, domain)
    cases = src.cases(split)
    out, skipped = [], 0
    for i in _subsample(len(cases), limit, seed):
        try:
            out.append(sample_from_case(cases[i], src.catalog, domain=style, seed=seed, title_fn=src.title_fn))
        except DataError as e:
            if "appears twice" not in e.what:
                raise
            skipped += 1
    if skipped and not out:
        raise DataError(f"all {skipped} cases of {split!r} have two candidates with the same title", where=dataset,
                        fix="make the titles unique, e.g. title_format: '{title} by {artist}' in the data card")
    if skipped:
        (log.warning if skipped * 10 > skipped + len(out) else log.info)(
            "%s/%s: skipped %d of %d cases whose candidates share a title", dataset, split, skipped,
            skipped + len(out))
    return out
