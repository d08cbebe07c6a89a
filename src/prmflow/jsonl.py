"""JSON-lines files: every read error names the file, the line and the field."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


class RecordError(ValueError):
    """A bad record; the message is `file:line: field: problem`."""


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    path, required = Path(path), tuple(required)
    rows = []
    with path.open() as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}:{lineno}: not valid JSON: {err.msg} (column {err.colno})") from None
            if not isinstance(row, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [field for field in required if field not in row]
            if missing:
                raise RecordError(f"{path}:{lineno}: {missing[0]}: missing required field")
            rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write atomically (temp file + rename) so an interrupted stage never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def write_json(path: str | Path, payload: object) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
