"""The README and docs/ link only to files (and headings) that exist inside the repo.

Docs rot quietly: a file is renamed, a heading reworded, and a link points at nothing. This
reads every Markdown file a reader starts from and checks each relative link as GitHub would
resolve it: the path from the linking file, the `#fragment` against the target's headings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced blocks and code spans, where a `[x](y)` is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base, n = slug(heading), 0
        while (anchor := base if n == 0 else f"{base}-{n}") in found:
            n += 1
        found.add(anchor)
    return found


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text(encoding="utf-8")))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_the_docs_are_there() -> None:
    assert (ROOT / "docs" / "README.md").exists()
    assert len(DOCS) > 5
    assert all(doc.exists() for doc in DOCS), [str(d) for d in DOCS if not d.exists()]


def broken_links(doc: Path, root: Path) -> list[str]:
    broken = []
    for target in relative_links(doc):
        file_part, _, fragment = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.is_relative_to(root):
            broken.append(f"{target}: outside the repo; bring what it says into docs/")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.relative_to(root)}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = broken_links(doc, ROOT)
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_doc_is_in_the_index() -> None:
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    missing = [
        p.name
        for p in (ROOT / "docs").glob("*.md")
        if p.name != "README.md" and f"]({p.name})" not in index
    ]
    assert not missing, f"docs/README.md does not link {missing}"


def test_the_module_map_names_every_module_and_only_those() -> None:
    """docs/architecture.md has one row per module of router/: a new, moved or removed module
    shows up here until the map says so."""
    rows = re.findall(
        r"^\| `([^`]+\.py)` \|", (ROOT / "docs" / "architecture.md").read_text("utf-8"), re.M
    )
    modules = [str(p.relative_to(ROOT / "router")) for p in (ROOT / "router").rglob("*.py")]
    assert sorted(rows) == sorted(set(rows)), "a module is mapped twice"
    assert set(rows) == set(modules), (
        f"not in docs/architecture.md: {sorted(set(modules) - set(rows))}; "
        f"mapped but gone: {sorted(set(rows) - set(modules))}"
    )


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    """The checks above can fail: a missing file, a missing heading, a link out of the repo."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.md").write_text("# Title\n\n## Sub part: `x`\n\n## Title\n", encoding="utf-8")
    doc = repo / "b.md"
    doc.write_text(
        "[ok](a.md#sub-part-x) [ok](a.md#title-1) [gone](c.md) [no heading](a.md#nope)\n"
        "[out](../shared/DESIGN.md) `[code](c.md)` [web](https://example.com)\n"
        "```\n[fenced](c.md)\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "DESIGN.md").write_text("# Design\n", encoding="utf-8")
    assert broken_links(doc, repo) == [
        "c.md: no such file",
        "a.md#nope: no heading #nope in a.md",
        "../shared/DESIGN.md: outside the repo; bring what it says into docs/",
    ]
