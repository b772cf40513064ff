"""Read user data files (CSV, JSONL, JSON) into rows, with one-line errors for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mosr.errors import MosrError

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".json")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise MosrError(f"data file not found: {path}")
    if not path.is_file():
        raise MosrError(f"not a file: {path}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise MosrError(
            f"{path} is not valid UTF-8 (byte {error.start}): re-save it as UTF-8"
        ) from None


def read_records(path: str | Path) -> list[dict]:
    """Read a CSV (with a header row), JSONL or JSON list of objects into a list of dicts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise MosrError(f"unsupported file type {suffix or '(none)'} for {path}: use .csv, .jsonl or .json")
    text = _read_text(path)

    if suffix == ".csv":
        try:
            rows = [dict(row) for row in csv.DictReader(text.splitlines(keepends=True), strict=True)]
        except csv.Error as error:
            raise MosrError(f"{path} is not a valid CSV file: {error}") from None
    elif suffix == ".jsonl":
        rows = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise MosrError(f"{path}, line {line_number}: invalid JSON ({error.msg})") from None
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise MosrError(f"{path}: invalid JSON ({error.msg} at line {error.lineno})") from None
        if isinstance(rows, dict):
            raise MosrError(f"{path}: expected a JSON list of objects, found an object")

    if any(not isinstance(row, dict) for row in rows):
        raise MosrError(f"{path}: every row must be an object with named fields")
    return rows


def column_values(rows: list[dict], column: str, path: str | Path) -> list[str]:
    """Return one column as strings; a missing column or an empty file is an error."""
    if not rows:
        raise MosrError(f"{path} contains no rows")
    missing = [index for index, row in enumerate(rows) if column not in row]
    if missing:
        available = ", ".join(sorted(rows[missing[0]].keys())) or "none"
        raise MosrError(
            f"{path} has no column {column!r} (row {missing[0] + 1}; available columns: {available})"
        )
    values = []
    for index, row in enumerate(rows):
        value = row[column]
        if value is None:
            raise MosrError(f"{path}, row {index + 1}: column {column!r} is empty")
        values.append(str(value))
    return values
