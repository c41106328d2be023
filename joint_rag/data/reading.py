"""Reading text files for the data readers: UTF-8 (a byte-order mark dropped), JSON and JSONL,
and typed fields of JSON records. Every problem is one `DataError` naming the file and line
(and column, or record and field): a byte that is not UTF-8, malformed JSON, a missing field
(with every accepted name), a field of the wrong type.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from joint_rag.data.types import DataError


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected {what}")
    return path


def _not_utf8(path: Path, lineno: int, raw: bytes, start: int, column: int) -> DataError:
    return DataError(
        f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[start]:02x} at column {column}); "
        "re-save the file as UTF-8"
    )


def read_text(path: Path) -> str:
    """The whole file as UTF-8 text (a leading byte-order mark dropped).

    Raises:
        DataError: naming the file, line and column of the first byte that is not UTF-8.
    """
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        raise _not_utf8(
            path, raw.count(b"\n", 0, e.start) + 1, raw, e.start, e.start - line_start + 1
        ) from None


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text without its line end) for each line of a UTF-8 text file.

    Raises:
        DataError: naming the file, line and column of a byte that is not UTF-8.
    """
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, lineno, raw, e.start, e.start + 1) from None
            yield lineno, text.rstrip("\r\n")


def json_problem(e: json.JSONDecodeError) -> str:
    """``e``'s message and column, e.g. "Unterminated string starting at column 7"."""
    # some messages already end in "at" ("Unterminated string starting at", "Invalid control
    # character at"): do not write "at at column"
    return f"{e.msg.removesuffix(' at')} at column {e.colno}"


def read_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({json_problem(e)})") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSONL file.

    Raises:
        DataError: naming the file and line of a byte that is not UTF-8, a line that is not
            JSON, or a line that is not a JSON object.
    """
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({json_problem(e)})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def get_field(
    rec: Any,
    name: str | tuple[str, ...],
    where: str,
    kind: type | tuple[type, ...] = str,
    optional: bool = False,
) -> Any:
    """`rec[name]` checked for type; DataError naming `where` and the field otherwise.

    Args:
        rec: the record (a JSON object).
        name: the field, or several accepted names of it (the first present is read); a
            missing field's message names every accepted name ("missing field '_id' (or 'id')").
        where: file and line or record, for messages.
        kind: the expected type(s); an int is accepted for a str field (numeric ids).
        optional: return None instead of raising when the field is missing or null.
    """
    names = (name,) if isinstance(name, str) else tuple(name)
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    present = next((n for n in names if rec.get(n) is not None), None)
    if present is None:
        if optional:
            return None
        also = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
        raise DataError(f"{where}: missing field {names[0]!r}{also}")
    value = rec[present]
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # numeric ids are common in BEIR files
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {present!r} should be {expected}, got {type(value).__name__}")
    return value
