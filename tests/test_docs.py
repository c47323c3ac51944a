"""The documentation stays in step with the code.

(a) every ``prefrec`` subcommand registered in the parser has a section in docs/cli.md (a new
    command without regenerated docs fails here: run ``python docs/gen_cli.py``);
(b) every relative link in README.md and docs/*.md points to a file that exists.

Help *texts* are deliberately not compared: they change often and cli.md is regenerated.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"




def test_every_command_has_a_cli_md_section(load_script):
    gen = load_script(DOCS / "gen_cli.py", "gen_cli")
    names = gen.command_names()
    assert "train-cf" in names and "data stats" in names  # the walk sees nested commands
    have = gen.documented((DOCS / "cli.md").read_text(encoding="utf-8"))
    missing = [n for n in names if n not in have]
    assert not missing, (f"docs/cli.md has no section for: {', '.join(missing)}. "
                         "Regenerate it with `python docs/gen_cli.py`.")


def test_section_check_can_fail(tmp_path, load_script):
    """The check above is not vacuous: a cli.md without some command's section is caught."""
    gen = load_script(DOCS / "gen_cli.py", "gen_cli")
    text = gen.render()
    first = gen.command_names()[0]
    pruned = re.sub(rf"^## `prefrec {re.escape(first)}`\s*$", "## (removed)", text, flags=re.M)
    assert first in gen.documented(text)
    assert first not in gen.documented(pruned)
    out = tmp_path / "cli.md"
    out.write_text(pruned, encoding="utf-8")
    assert gen.main(["--check", "--out", str(out)]) == 1


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def relative_links(md: Path) -> list[str]:
    """Link targets of a Markdown file that are relative paths (no URL scheme, no pure anchor);
    links inside code blocks and inline code are not links."""
    text = CODE_BLOCK.sub("", md.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub("", text)
    out = []
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        out.append(target)
    return out


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def test_link_parser_sees_links(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("see [a](a.md), [b](sub/b.md#part), [web](https://x.org), [top](#top), ![img](p.png)\n"
                  "```\n[not](code.md)\n```\n`[nor](inline.md)`\n", encoding="utf-8")
    assert relative_links(md) == ["a.md", "sub/b.md#part", "p.png"]


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(md):
    broken = []
    for target in relative_links(md):
        path = target.split("#", 1)[0]
        if path and not (md.parent / path).exists():
            broken.append(target)
    assert not broken, f"{md.relative_to(REPO)} links to missing files: {', '.join(broken)}"
