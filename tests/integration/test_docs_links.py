"""Every relative link in the README and the docs resolves: the file or folder exists, and a
`#fragment` names a heading of the page it points to, slugged as GitHub slugs headings."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")),
         REPO / "topologies" / "README.md", REPO / "bench" / "README.md"]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.M)


def _prose(path: Path) -> str:
    """The page without its fenced blocks (whose `#` lines are comments, not headings)."""
    return FENCE.sub("", path.read_text())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped but - and _, spaces to -."""
    text = heading.replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(_prose(path)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def _links():
    for page in PAGES:
        for target in LINK.findall(CODE.sub("", _prose(page))):
            if re.match(r"[a-z]+:", target):
                continue            # https:, mailto:
            yield pytest.param(page, target, id=f"{page.relative_to(REPO)}: {target}")


CASES = list(_links())


def test_slug_follows_github():
    assert slug("Expert parallelism (`--ep`, `--expert-tp`)") == "expert-parallelism---ep---expert-tp"
    assert slug("Which layout? `tpsim search`") == "which-layout-tpsim-search"


def test_the_pages_have_links():
    assert len(CASES) >= 50


@pytest.mark.parametrize("page, target", CASES)
def test_relative_link_resolves(page, target):
    path, _, fragment = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{page.name}: {target}: no such file"
    assert REPO.resolve() in dest.parents or dest == REPO.resolve(), f"{target} leaves the repository"
    if fragment:
        assert dest.suffix == ".md", f"{page.name}: {target}: an anchor into a page that is not markdown"
        assert fragment in anchors(dest), f"{page.name}: {target}: no heading with that anchor"
