"""MkDocs hook: the site's home page is README.md, with its `docs/` links made relative to the site.

`docs/index.md` holds the marker line `<!-- readme -->`; the README stays the one source of the front page.
"""

from __future__ import annotations

from pathlib import Path

MARKER = "<!-- readme -->"
README = Path(__file__).resolve().parents[2] / "README.md"


def site_markdown(readme: str) -> str:
    """The README as a page of the site: links `](docs/x.md)` become `](x.md)`."""
    return readme.replace("](docs/", "](")


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (the MkDocs hook signature)
    return markdown.replace(MARKER, site_markdown(README.read_text())) if MARKER in markdown else markdown
