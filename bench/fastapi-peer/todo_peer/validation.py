"""The body of `POST /todos`, checked as the Rust service checks it
(services/todo/src/todos/input.rs, services/todo/src/http/extract.rs): every invalid field is
reported, each named as the client wrote it.

Known differences, none of which the benchmark's requests touch: Python's datetime has no year
0 nor leap seconds, so `0000-…` and `…:60` due dates are refused here and accepted there; a
JSON object with a key given twice takes the last value here and is refused there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

MAX_USER_ID_CHARS = 64
MAX_TITLE_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000
FIELDS = ("userId", "title", "description", "dueAt")

_USER_ID = re.compile(r"[A-Za-z0-9._@-]+")
# Rust's `char::is_control`: the Unicode general category Cc.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The same, less the line breaks and tabs a description may hold.
_CONTROL_BUT_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# RFC 3339 date-time, as chrono's `parse_from_rfc3339` reads it.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


@dataclass(frozen=True)
class NewTodo:
    user_id: str
    title: str
    description: str | None
    # RFC 3339 UTC with microseconds, as stored.
    due_at: str | None


class Invalid(Exception):
    """The body's values are unacceptable (422), one (field, detail) pair per field."""

    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__(errors)
        self.errors = errors


def format_time(t: datetime) -> str:
    """`2026-11-22T10:00:00.123456Z`: fixed width, so stored times sort as text."""
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond:06d}Z"
    )


def validate_create(body: object) -> NewTodo:
    """A parsed JSON body as a NewTodo, or Invalid. Shape errors (not an object, an unknown
    field, a value of the wrong type) stop at the first, as serde does; value errors are all
    reported."""
    if not isinstance(body, dict):
        raise Invalid([("(body)", "must be a JSON object")])
    for key in body:
        if key not in FIELDS:
            expected = ", ".join(f"`{f}`" for f in FIELDS)
            raise Invalid([(key, f"unknown field `{key}`, expected one of {expected}")])
    for key in FIELDS:
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise Invalid([(key, f"invalid type: {_json_type(value)}, expected a string")])
    errors: list[tuple[str, str]] = []
    user_id = body.get("userId")
    if user_id is None:
        errors.append(("userId", "is required"))
    elif not 1 <= len(user_id) <= MAX_USER_ID_CHARS:
        errors.append(("userId", f"must be 1 to {MAX_USER_ID_CHARS} characters"))
    elif not _USER_ID.fullmatch(user_id):
        errors.append(("userId", "may contain only letters, digits and . _ @ -"))
    title = body.get("title")
    if title is None:
        errors.append(("title", "is required"))
    elif _CONTROL.search(title):
        errors.append(("title", "must not contain control characters"))
    else:
        title = title.strip()
        if not 1 <= len(title) <= MAX_TITLE_CHARS:
            errors.append(("title", f"must be 1 to {MAX_TITLE_CHARS} characters after trimming"))
    description = body.get("description")
    if description is not None:
        if len(description) > MAX_DESCRIPTION_CHARS:
            errors.append(("description", f"must be at most {MAX_DESCRIPTION_CHARS} characters"))
        elif _CONTROL_BUT_BREAKS.search(description):
            errors.append(
                ("description", "must not contain control characters other than line breaks and tabs")
            )
    due_at = body.get("dueAt")
    if due_at is not None:
        try:
            due_at = _parse_due_at(due_at)
        except ValueError as error:
            errors.append(("dueAt", str(error)))
    if errors:
        raise Invalid(errors)
    return NewTodo(user_id, title, description, due_at)


def _parse_due_at(text: str) -> str:
    """RFC 3339 with any offset, to UTC with microseconds (truncated); within years 0000-9999
    in UTC."""
    syntax = "must be an RFC 3339 date-time such as 2026-12-01T17:00:00Z"
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError(syntax)
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
        )
    except ValueError:
        raise ValueError(syntax) from None
    offset = timedelta()
    if not zulu:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(syntax)
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (1 if sign == "+" else -1)
    try:
        utc = (local - offset).replace(tzinfo=timezone.utc)
    except OverflowError:
        year_in_utc = 10000 if offset < timedelta() else -1
        raise ValueError(
            f"falls in year {year_in_utc} in UTC; timestamps must lie in years 0000 to 9999 in UTC"
        ) from None
    return format_time(utc)


def _json_type(value: object) -> str:
    # serde's words for what it found.
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, list):
        return "sequence"
    return "map"
