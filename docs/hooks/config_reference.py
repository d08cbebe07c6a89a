"""MkDocs hook: the configuration reference, generated from the help text of `src/prmflow/sections.py` and `sections_evaluation.py`.

A page that holds the marker line `<!-- configuration-reference -->` gets it replaced by one table per
`params.yaml` section (key, default, rule or choices, help), read from the section dataclasses of
`prmflow.config.Params`, so the reference can never disagree with the code: it is never written by hand.
"""

from __future__ import annotations

import dataclasses
import json

MARKER = "<!-- configuration-reference -->"


def _default(f: dataclasses.Field) -> object:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: no pipes, no line breaks."""
    return text.replace("|", "\\|").replace("\n", " ")


def section_table(name: str, cls: type) -> str:
    """The markdown table of one section: `key | default | allowed | help` rows in declaration order."""
    rows = [f"## `{name}`", "", "| key | default | allowed | help |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        meta = f.metadata
        allowed = meta.get("rule") or (", ".join(map(str, meta["choices"])) if "choices" in meta else "")
        default = json.dumps(_default(f))
        rows.append(f"| `{name}.{f.name}` | `{_cell(default)}` | {_cell(allowed)} | {_cell(meta.get('help', ''))} |")
    return "\n".join(rows)


def reference_markdown() -> str:
    """Every section of `Params`, in the order of `params.yaml`."""
    from prmflow.config import Params

    return "\n\n".join(section_table(f.name, f.default_factory) for f in dataclasses.fields(Params))


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (the MkDocs hook signature)
    return markdown.replace(MARKER, reference_markdown()) if MARKER in markdown else markdown
