"""Prompt styles: which wording (domain templates or the user's own file) and whether the prompt
is wrapped in the model's chat template. A style is part of a run: trainers record it in
``final/prefrec_lm.json`` (``"prompt"``), and evaluate-lm, recommend and ``prefrec.load``
rebuild prompts from that record, so a run is always queried with the prompt it learned.

A template file holds one or more templates separated by a line ``---``; each uses
``{history}`` and ``{candidates}`` (titles joined with ``", "``), optionally ``{n}`` (number of
candidates), and ends with the cue ``Answer:`` (the answer ``" " + title`` follows it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from prefrec.config import Config
from prefrec.errors import ConfigError, DataError


class PromptConfig(Config):
    """``prompt:`` section of LM configs (and of a study's ``lm:``)."""

    domain: str | None = Field(None, description="movie, music, book, product, item (default: the dataset's)")
    template: str | None = Field(None, description="template file (one template per '---' block); "
                                 "overrides domain")
    chat_template: bool = Field(False, description="wrap every prompt in the tokenizer's chat template "
                                "(instruct models)")


@dataclass(frozen=True)
class PromptStyle:
    """Resolved wording: a name (domain or template file), its templates, and chat wrapping."""

    name: str
    templates: tuple[str, ...]
    chat_template: bool = False

    def to_meta(self) -> dict[str, Any]:
        return {"domain": self.name, "templates": list(self.templates), "chat_template": self.chat_template}

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> PromptStyle | None:
        """The style a run recorded; ``None`` for runs written before styles were recorded."""
        if not meta:
            return None
        temps = meta.get("templates")
        if temps:
            return cls(str(meta.get("domain", "custom")), tuple(temps), bool(meta.get("chat_template", False)))
        if meta.get("domain"):
            from prefrec.lm.prompts import TEMPLATES, resolve_domain

            d = resolve_domain(meta["domain"])
            return cls(d, TEMPLATES[d], bool(meta.get("chat_template", False)))
        return None


def read_template_file(path: str | Path) -> tuple[str, ...]:
    """Templates of a file (blocks separated by a line ``---``), each checked for its fields and cue."""
    from prefrec.lm.prompts import CUE

    p = Path(path)
    if not p.is_file():
        raise ConfigError("prompt template file not found", where=str(p), fix="check prompt.template")
    text = p.read_text(encoding="utf-8")
    blocks = [b.strip() for b in re.split(r"^\s*---\s*$", text, flags=re.M)]
    out = []
    line = 1
    for raw, b in zip(re.split(r"^\s*---\s*$", text, flags=re.M), blocks):
        loc = f"{p}, template starting near line {line}"
        line += raw.count("\n") + 1
        if not b:
            continue
        for field in ("{history}", "{candidates}"):
            if field not in b:
                raise ConfigError(f"the template lacks {field}", where=loc,
                                  fix="use {history} and {candidates} (and optionally {n}) in every template")
        if not b.endswith(CUE):
            raise ConfigError(f"the template does not end with {CUE!r}", where=loc,
                              fix=f"end every template with {CUE} (the answer follows it)")
        try:
            b.format(history="h", candidates="c", n=20)
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"the template has an unknown field or a stray brace ({e!r})", where=loc,
                              fix="only {history}, {candidates} and {n} are filled; write {{ and }} for braces") from None
        out.append(b)
    if not out:
        raise ConfigError("no templates in the file", where=str(p), fix="write one template per '---' block")
    return tuple(out)


def resolve_style(prompt: PromptConfig | dict | None = None, default_domain: str = "movies") -> PromptStyle:
    """The style for a config's ``prompt:`` section; ``default_domain`` is the dataset's."""
    from prefrec.lm.prompts import TEMPLATES, resolve_domain

    if isinstance(prompt, PromptStyle):
        return prompt
    if isinstance(prompt, dict):
        prompt = PromptConfig(**prompt)
    prompt = prompt or PromptConfig()
    if prompt.template:
        return PromptStyle(f"file:{Path(prompt.template).name}", read_template_file(prompt.template),
                           prompt.chat_template)
    d = resolve_domain(prompt.domain or default_domain)
    return PromptStyle(d, TEMPLATES[d], prompt.chat_template)


def chat_wrap(samples: list, tokenizer, style: PromptStyle | None) -> list:
    """Samples with prompts rendered through the tokenizer's chat template (one user turn, the
    generation prompt appended), when ``style.chat_template``; else unchanged."""
    from dataclasses import replace

    if style is None or not style.chat_template:
        return samples
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("prompt.chat_template is set but the tokenizer has no chat template",
                        where=getattr(tokenizer, "name_or_path", "tokenizer"),
                        fix="use an instruct model (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) or set "
                            "prompt.chat_template: false")
    out = []
    for s in samples:
        if s.extra.get("chat"):
            out.append(s)
            continue
        text = tokenizer.apply_chat_template([{"role": "user", "content": s.prompt}], tokenize=False,
                                             add_generation_prompt=True)
        out.append(replace(s, prompt=text, extra={**s.extra, "chat": True}))
    return out
