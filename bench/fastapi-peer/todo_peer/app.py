"""`POST /todos` of the todo service, written as a Python engineer would write it for speed with
FastAPI: async all the way, pooled connections, statements prepared by the driver, orjson,
a relay publishing in bulk. A comparison peer for `make bench-write PEER=1`, nothing more.

Run: `uvicorn todo_peer.app:app --app-dir bench/fastapi-peer [--workers N]`, configured by
DATABASE_URL (sqlite:///path or postgres://...), DAPR_HTTP_PORT (default 3500) and PUBSUB_NAME
(default pubsub); APP_ID (default todo) is the CloudEvent source, RELAY_ENABLED=false turns the
relay off.

What a create does is what the Rust service's does (services/todo/src/http/todos.rs `create`,
todos/commands.rs, outbox/mod.rs): validate (422 with an RFC 9457 problem naming each field),
then the todos row, its `todos.task.created` event and its queue row in one transaction (shared
with concurrent creates, as the Rust service's group commit does: store.py), then 201 with the
todo, `Location`, `ETag` and the correlation id. Not here: Idempotency-Key, the
other routes, metrics and tracing spans (a W3C `traceparent` sent by the client is stored with
the event, as the Rust service's span would carry it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from http import HTTPStatus

import asyncpg
import httpx
import orjson
import uuid_utils
from fastapi import FastAPI, Request
from fastapi.responses import Response

from .relay import Relay
from .store import open_store
from .validation import Invalid, format_time, validate_create

LOG = logging.getLogger("todo_peer")

MAX_BODY_BYTES = 64 * 1024
EVENT_TYPE = "todos.task.created"
# The topic is the event type's own name (crates/dapr-events/src/catalog.rs).
TOPIC = EVENT_TYPE
PROBLEM_BASE = "https://dapr-todo.example/problems/"
# Ids we take from headers (http/headers.rs): 1 to 128 visible ASCII characters.
_USABLE_ID = re.compile(r"[!-~]{1,128}")
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


class State:
    store = None
    relay: Relay | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI):
    store = open_store(os.environ["DATABASE_URL"])
    await store.open()
    State.store = store
    port = os.environ.get("DAPR_HTTP_PORT", "3500")
    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        timeout=5.0,
        trust_env=False,
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
    )
    task = None
    if os.environ.get("RELAY_ENABLED", "true").lower() != "false":
        State.relay = Relay(store, client, os.environ.get("PUBSUB_NAME", "pubsub"), os.environ.get("APP_ID", "todo"))
        task = asyncio.create_task(State.relay.run())
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        await store.close()


app = FastAPI(lifespan=lifespan, title="todo (FastAPI comparison peer)")


@app.get("/healthz")
async def healthz() -> Response:
    # The pid tells the benchmark which worker answered: it waits until it has seen each one.
    return Response(orjson.dumps({"status": "ok", "pid": os.getpid()}), media_type="application/json")


@app.post("/todos")
async def create_todo(request: Request) -> Response:
    headers = request.headers
    correlation_id = _usable(headers.get("x-correlation-id")) or _usable(headers.get("x-request-id"))
    correlation_id = correlation_id or str(uuid.uuid4())
    echo = {"x-correlation-id": correlation_id}
    content_type = headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        detail = (
            f"Content-Type must be application/json, not {content_type!r}"
            if content_type
            else "Content-Type must be application/json (it is missing)"
        )
        return problem(415, "unsupported-media-type", detail, [("Content-Type", detail)], echo)
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return _too_large(echo)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _too_large(echo)
    if not body.strip():
        return problem(400, "bad-request", "the request body is empty; expected a JSON object", None, echo)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return problem(400, "bad-request", f"malformed JSON: {error}", None, echo)
    try:
        new = validate_create(parsed)
    except Invalid as invalid:
        detail = "The request body has invalid fields; see `errors`."
        return problem(422, "validation-failed", detail, invalid.errors, echo)

    now = format_time(datetime.now(timezone.utc))
    todo_id, event_id = str(uuid_utils.uuid7()), str(uuid_utils.uuid7())
    todo = {
        "id": todo_id,
        "userId": new.user_id,
        "title": new.title,
        "description": new.description,
        "dueAt": new.due_at,
        "status": "open",
        "version": 1,
        "createdAt": now,
        "updatedAt": now,
        "completedAt": None,
    }
    # The event's data: the todo as it stands (TodoEventData), todoId first.
    payload = orjson.dumps({"todoId": todo_id, **{k: v for k, v in todo.items() if k != "id"}}).decode()
    traceparent = headers.get("traceparent")
    if traceparent is not None and not _TRACEPARENT.fullmatch(traceparent):
        traceparent = None
    tracestate = headers.get("tracestate") if traceparent else None
    causation_id = _usable(headers.get("x-causation-id"))
    try:
        await State.store.create(
            (todo_id, new.user_id, new.title, new.description, new.due_at, now, now),
            (event_id, todo_id, 1, EVENT_TYPE, TOPIC, payload, now, traceparent, tracestate, correlation_id,
             causation_id),
        )
    except (sqlite3.OperationalError, asyncpg.PostgresConnectionError, asyncpg.TooManyConnectionsError, OSError):
        LOG.warning("database unavailable", exc_info=True)
        return problem(503, "database-unavailable", "The database is unavailable; retry later.", None, echo)
    if State.relay is not None:
        State.relay.wake.set()
    return Response(
        orjson.dumps(todo),
        status_code=201,
        media_type="application/json",
        headers={"location": f"/todos/{todo_id}", "etag": '"1"', **echo},
    )


def _usable(value: str | None) -> str | None:
    return value if value is not None and _USABLE_ID.fullmatch(value) else None


def _too_large(echo: dict) -> Response:
    return problem(413, "payload-too-large", f"The request body must not exceed {MAX_BODY_BYTES} bytes.", None, echo)


def problem(status: int, kind: str, detail: str, errors, headers: dict) -> Response:
    """An RFC 9457 problem, as crates/service-kit/src/problem.rs writes it."""
    body = {"type": PROBLEM_BASE + kind, "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    if errors:
        body["errors"] = [{"field": field, "detail": text} for field, text in errors]
    return Response(orjson.dumps(body), status_code=status, media_type="application/problem+json", headers=headers)
