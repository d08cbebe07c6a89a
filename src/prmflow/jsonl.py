"""JSON-lines files: every read error names the file, the line and the field."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable
from pathlib import Path


class RecordError(ValueError):
    """A bad record; the message is `file:line: field: problem`."""


def _has_type(value: object, expected: object) -> bool:
    """isinstance for a field's declared type, `list[str]` included; a bool is not an int."""
    if typing.get_origin(expected) is list:
        (item,) = typing.get_args(expected)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    return isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)  # type: ignore


def read_jsonl(path: str | Path, required: Iterable[str] = (), types: dict[str, object] | None = None) -> list[dict]:
    """The JSON objects of a JSON-lines file, blank lines skipped; each line must be UTF-8, an object, hold the
    `required` fields and give each field named in `types` a value of that type (`str`, `list[str]`, ...).

    Raises RecordError `file:line: field: problem` at the first bad line."""
    path, required = Path(path), tuple(required)
    rows = []
    with path.open("rb") as handle:
        for lineno, data in enumerate(handle, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise RecordError(f"{path}:{lineno}: not UTF-8: byte 0x{data[err.start]:02x} at column "
                                  f"{err.start + 1}") from None
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
            for field, expected in (types or {}).items():
                if field in row and not _has_type(row[field], expected):
                    name = expected.__name__ if isinstance(expected, type) else str(expected)
                    raise RecordError(f"{path}:{lineno}: {field}: expected {name}, got {type(row[field]).__name__} "
                                      f"{json.dumps(row[field])[:80]}")
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
    """Write atomically, as write_jsonl: a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
