"""The documentation's relative links stay inside the site (``mkdocs build --strict`` refuses a
link to a file outside ``docs/``, such as ``../README.md``; this check needs no build)."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: Pages ``docs/_scripts/gen_pages.py`` makes while the site builds.
GENERATED = ("changelog.md", "examples/")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """The page's Markdown link targets that are paths (no scheme, no bare anchor)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code: `flow[t](p[t])` is no link
    targets = [m.group(1).split("#")[0] for m in LINK.finditer(text)]
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_scan_sees_relative_links():
    assert "flow.md" in relative_links(DOCS / "cli.md")


def test_relative_links_point_at_pages_of_the_site():
    broken = {}
    for page in sorted(DOCS.rglob("*.md")):
        if "_scripts" in page.parts:
            continue
        for target in relative_links(page):
            resolved = (page.parent / target).resolve()
            inside = DOCS.resolve() in resolved.parents
            name = resolved.relative_to(DOCS.resolve()).as_posix() if inside else target
            if not inside or not (resolved.exists() or name.startswith(GENERATED)):
                broken.setdefault(str(page.relative_to(DOCS)), []).append(target)
    assert broken == {}
