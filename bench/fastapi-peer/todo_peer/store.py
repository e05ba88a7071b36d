"""The peer's database access: the todo service's own schema (its migration files, applied as
they are), creates, and the relay's claim / mark statements, which are those of
services/todo/src/outbox/queue.rs.

A create writes the todos row, its outbox_events row and its outbox_queue row in one
transaction of its own, committed before the request is answered: the peer issue 15 fixes.
PEER_GROUP_COMMIT=1 lets concurrent creates share the transaction instead (group commit, as the
Rust service does in services/todo/src/todos/group_commit.rs): a writer task takes whatever
creates are queued (up to 64), commits them together and answers each; a lone create is written
at once. It is there to show what the same technique gives Python.

SQLite (aiosqlite): one writer connection per process, its transactions taken in turn under an
asyncio.Lock (SQLite has one writer; the Rust service also writes through a single connection),
and a reader connection for the relay's reads. The pragmas are the Rust service's
(crates/service-kit/src/db/mod.rs): WAL, synchronous=NORMAL, busy_timeout=5000, foreign_keys.
A batch is one executemany per table and a commit.

PostgreSQL (asyncpg): a pool per process; asyncpg prepares and caches every statement. A batch
(or a lone create) is a single statement, data-modifying WITH clauses over unnest()ed arrays,
which PostgreSQL runs as one transaction: one round trip.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiosqlite
import asyncpg
import orjson

MIGRATIONS = Path(os.environ.get("MIGRATIONS_DIR", Path(__file__).resolve().parents[3] / "services/todo/migrations"))
POOL_SIZE = int(os.environ.get("DB_MAX_CONNECTIONS", "10"))

TODO_COLUMNS = "id, user_id, title, description, due_at, status, version, created_at, updated_at, completed_at"
EVENT_COLUMNS = (
    "event_id, todo_id, seq, event_type, topic, payload, created_at, traceparent, tracestate, "
    "correlation_id, causation_id"
)
# What the relay reads of a claimed event to build its CloudEvent.
CLAIMED_COLUMNS = (
    "e.event_id, e.todo_id, e.event_type, e.topic, e.payload, e.created_at, e.traceparent, e.tracestate, "
    "e.correlation_id, e.causation_id"
)


def _claimable(placeholder, lock: str) -> str:
    """The claim of queue.rs: the oldest queued event of each todo, due, not parked, not leased
    by a live relay; parameters now (ms), limit."""
    now, limit = placeholder(1), placeholder(2)
    return (
        "SELECT q.event_id FROM outbox_queue q "
        f"WHERE q.next_attempt_at <= {now} AND q.parked_at IS NULL "
        f"AND (q.lease_expires_at IS NULL OR q.lease_expires_at <= {now}) "
        "AND q.seq = (SELECT MIN(earlier.seq) FROM outbox_queue earlier WHERE earlier.todo_id = q.todo_id) "
        f"ORDER BY q.event_id LIMIT {limit}{lock}"
    )


def migration_files(dialect: str) -> list[Path]:
    files = sorted((MIGRATIONS / dialect).glob("*.sql"))
    if not files:
        raise RuntimeError(f"no migrations under {MIGRATIONS / dialect}")
    return files


def open_store(url: str) -> "SqliteStore | PostgresStore":
    if url.startswith(("postgres://", "postgresql://")):
        return PostgresStore(url)
    if url.startswith("sqlite:"):
        return SqliteStore(sqlite_path(url))
    raise ValueError("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")


def sqlite_path(url: str) -> str:
    """`sqlite:///abs/path.db`, `sqlite://rel.db` or `sqlite:rel.db`, query string ignored."""
    rest = url[len("sqlite:"):].split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[2:]
    return unquote(rest)


GROUP_COMMIT = os.environ.get("PEER_GROUP_COMMIT", "0") == "1"
MAX_BATCH = 64
# PostgreSQL: the queue is vacuumed every this many dequeued events, as the Rust relay does
# (services/todo/src/outbox/queue.rs `vacuum`: every event is inserted, leased and deleted, so
# dead row versions pile up far faster than autovacuum removes them, and every claim scans them).
VACUUM_AFTER_DEQUEUED = 2_000


class GroupCommit:
    """Creates queued for one writer task, committed together (see the module's doc)."""

    def __init__(self, write_batch):
        self._write_batch = write_batch
        self._queued: list[tuple[tuple, tuple, asyncio.Future]] = []
        self._writing = False

    async def create(self, todo: tuple, event: tuple) -> None:
        future = asyncio.get_running_loop().create_future()
        self._queued.append((todo, event, future))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._write())
        await future

    async def _write(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
                try:
                    await self._write_batch([(todo, event) for todo, event, _ in batch])
                    outcomes = [None] * len(batch)
                except Exception as error:  # noqa: BLE001 - each create gets its own answer
                    outcomes = [error] * len(batch)
                    if len(batch) > 1:
                        # Written one by one, the others still commit and the bad one fails alone.
                        outcomes = []
                        for todo, event, _ in batch:
                            try:
                                await self._write_batch([(todo, event)])
                                outcomes.append(None)
                            except Exception as alone:  # noqa: BLE001
                                outcomes.append(alone)
                for (_, _, future), outcome in zip(batch, outcomes):
                    if future.done():
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)
        finally:
            self._writing = False


class _Creates:
    """What both stores share: a create goes to the group writer or is written alone."""

    group: GroupCommit

    async def _write_creates(self, creates: list[tuple[tuple, tuple]]) -> None:
        raise NotImplementedError

    async def create(self, todo: tuple, event: tuple) -> None:
        """The todos row, its event and its queue row, committed in one transaction."""
        if GROUP_COMMIT:
            await self.group.create(todo, event)
        else:
            await self._write_creates([(todo, event)])


class SqliteStore(_Creates):
    backend = "sqlite"

    def __init__(self, path: str):
        self.path = path
        self.writer: aiosqlite.Connection | None = None
        self.reader: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()
        self.group = GroupCommit(self._write_creates)

    async def _connect(self) -> aiosqlite.Connection:
        # The default isolation level: the first INSERT/UPDATE/DELETE opens a transaction that
        # commit() ends (one thread hop fewer than explicit BEGIN).
        conn = await aiosqlite.connect(self.path)
        await conn.executescript(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;"
        )
        return conn

    async def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.writer = await self._connect()
        await self._migrate()
        self.reader = await self._connect()

    async def _migrate(self) -> None:
        # Every worker process starts here. The schema goes in as one transaction that takes the
        # write lock first (BEGIN IMMEDIATE): a worker that loses the race waits for the winner's
        # commit (busy_timeout), then fails on the existing tables and finds the schema there.
        if await self._has_schema():
            return
        script = "".join(f.read_text() + "\n" for f in migration_files("sqlite"))
        async with self.lock:
            try:
                await self.writer.executescript(f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;")
            except sqlite3.OperationalError:
                if self.writer.in_transaction:
                    await self.writer.execute("ROLLBACK")
                if not await self._has_schema():
                    raise

    async def _has_schema(self) -> bool:
        rows = await self.writer.execute_fetchall(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'todos'"
        )
        return bool(rows)

    async def close(self) -> None:
        for conn in (self.reader, self.writer):
            if conn is not None:
                await conn.close()

    async def _write_creates(self, creates: list[tuple[tuple, tuple]]) -> None:
        async with self.lock:
            writer = self.writer
            try:
                if len(creates) == 1:
                    todo, event = creates[0]
                    await writer.execute(_SQLITE_INSERT_TODO, todo)
                    await writer.execute(_SQLITE_INSERT_EVENT, event)
                    await writer.execute(_SQLITE_INSERT_QUEUE, event[:3])
                else:
                    await writer.executemany(_SQLITE_INSERT_TODO, [todo for todo, _ in creates])
                    await writer.executemany(_SQLITE_INSERT_EVENT, [event for _, event in creates])
                    await writer.executemany(_SQLITE_INSERT_QUEUE, [event[:3] for _, event in creates])
                await writer.commit()
            except BaseException:
                await writer.rollback()
                raise

    async def claim(self, owner: str, now_ms: int, lease_until_ms: int, limit: int) -> list[tuple]:
        async with self.lock:
            try:
                claimed = await self.writer.execute_fetchall(_SQLITE_CLAIM, (now_ms, limit, owner, lease_until_ms))
                await self.writer.commit()
            except BaseException:
                await self.writer.rollback()
                raise
        if not claimed:
            return []
        ids = orjson.dumps([row[0] for row in claimed]).decode()
        return list(await self.reader.execute_fetchall(_SQLITE_CLAIMED_EVENTS, (ids,)))

    async def mark_published(self, event_ids: list[str], published_at: str) -> None:
        ids = orjson.dumps(event_ids).decode()
        await self._write(
            ("UPDATE outbox_events SET published_at = ? WHERE event_id IN (SELECT value FROM json_each(?))",
             (published_at, ids)),
            ("DELETE FROM outbox_queue WHERE event_id IN (SELECT value FROM json_each(?))", (ids,)),
        )

    async def mark_failed(self, event_ids: list[str], error: str, next_attempt_ms: int) -> None:
        ids = orjson.dumps(event_ids).decode()
        await self._write(
            ("UPDATE outbox_queue SET attempts = attempts + 1, next_attempt_at = ?, lease_owner = NULL, "
             "lease_expires_at = NULL WHERE event_id IN (SELECT value FROM json_each(?))", (next_attempt_ms, ids)),
            ("UPDATE outbox_events SET attempts = attempts + 1, last_error = ? "
             "WHERE event_id IN (SELECT value FROM json_each(?))", (error, ids)),
        )

    async def _write(self, *statements: tuple[str, tuple]) -> None:
        async with self.lock:
            try:
                for sql, parameters in statements:
                    await self.writer.execute(sql, parameters)
                await self.writer.commit()
            except BaseException:
                await self.writer.rollback()
                raise


_SQLITE_INSERT_TODO = f"INSERT INTO todos ({TODO_COLUMNS}) VALUES (?, ?, ?, ?, ?, 'open', 1, ?, ?, NULL)"
_SQLITE_INSERT_EVENT = f"INSERT INTO outbox_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SQLITE_INSERT_QUEUE = "INSERT INTO outbox_queue (event_id, todo_id, seq) VALUES (?, ?, ?)"
_SQLITE_CLAIM = (
    f"WITH claimable AS MATERIALIZED ({_claimable(lambda n: f'?{n}', '')}) "
    "UPDATE outbox_queue SET lease_owner = ?3, lease_expires_at = ?4 "
    "WHERE event_id IN (SELECT event_id FROM claimable) RETURNING event_id"
)
_SQLITE_CLAIMED_EVENTS = (
    f"SELECT {CLAIMED_COLUMNS} FROM outbox_events e WHERE e.event_id IN (SELECT value FROM json_each(?)) "
    "ORDER BY e.event_id"
)


class PostgresStore(_Creates):
    backend = "postgres"

    def __init__(self, url: str):
        self.url = url
        self.pool: asyncpg.Pool | None = None
        self.group = GroupCommit(self._write_creates)
        self._dequeued_since_vacuum = 0

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(self.url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        async with self.pool.acquire() as conn:
            # Every worker process starts here; the advisory lock lets one apply the schema.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7312001)")
                if await conn.fetchval("SELECT to_regclass('todos') IS NULL"):
                    for file in migration_files("postgres"):
                        await conn.execute(file.read_text())

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def _write_creates(self, creates: list[tuple[tuple, tuple]]) -> None:
        # One array per column: 7 of the todos, then 11 of the events.
        columns = [list(values) for values in zip(*(todo + event for todo, event in creates))]
        await self.pool.execute(_PG_CREATE, *columns)

    async def claim(self, owner: str, now_ms: int, lease_until_ms: int, limit: int) -> list:
        return await self.pool.fetch(_PG_CLAIM, now_ms, limit, owner, lease_until_ms)

    async def mark_published(self, event_ids: list[str], published_at: str) -> None:
        await self.pool.execute(_PG_MARK_PUBLISHED, published_at, event_ids)
        self._dequeued_since_vacuum += len(event_ids)
        if self._dequeued_since_vacuum >= VACUUM_AFTER_DEQUEUED:
            self._dequeued_since_vacuum = 0
            # SKIP_LOCKED: a vacuum already running (another worker's) is not waited for;
            # TRUNCATE false: no exclusive lock that would stall creates and claims.
            await self.pool.execute("VACUUM (SKIP_LOCKED, TRUNCATE false) outbox_queue")

    async def mark_failed(self, event_ids: list[str], error: str, next_attempt_ms: int) -> None:
        await self.pool.execute(_PG_MARK_FAILED, next_attempt_ms, error, event_ids)


# Parameters: one array per column, the todos' 7 (id, user_id, title, description, due_at,
# created_at, updated_at), then the events' 11 (EVENT_COLUMNS order).
_PG_CREATE = (
    f"WITH new_todos AS (INSERT INTO todos ({TODO_COLUMNS}) "
    "SELECT id, user_id, title, description, due_at, 'open', 1, created_at, updated_at, NULL "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) "
    "AS t (id, user_id, title, description, due_at, created_at, updated_at)), "
    f"new_events AS (INSERT INTO outbox_events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} "
    "FROM unnest($8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[], "
    f"$15::text[], $16::text[], $17::text[], $18::text[]) AS e ({EVENT_COLUMNS}) "
    "RETURNING event_id, todo_id, seq) "
    "INSERT INTO outbox_queue (event_id, todo_id, seq) SELECT event_id, todo_id, seq FROM new_events"
)
# The claim and the claimed events' data in one round trip.
_PG_CLAIM = (
    f"WITH claimable AS MATERIALIZED ({_claimable(lambda n: f'${n}', ' FOR UPDATE SKIP LOCKED')}), "
    "claimed AS (UPDATE outbox_queue SET lease_owner = $3, lease_expires_at = $4 "
    "WHERE event_id IN (SELECT event_id FROM claimable) RETURNING event_id) "
    f"SELECT {CLAIMED_COLUMNS} FROM outbox_events e JOIN claimed c ON c.event_id = e.event_id ORDER BY e.event_id"
)
_PG_MARK_PUBLISHED = (
    "WITH stamped AS (UPDATE outbox_events SET published_at = $1 WHERE event_id = ANY($2::text[])) "
    "DELETE FROM outbox_queue WHERE event_id = ANY($2::text[])"
)
_PG_MARK_FAILED = (
    "WITH noted AS (UPDATE outbox_events SET attempts = attempts + 1, last_error = $2 "
    "WHERE event_id = ANY($3::text[])) "
    "UPDATE outbox_queue SET attempts = attempts + 1, next_attempt_at = $1, lease_owner = NULL, "
    "lease_expires_at = NULL WHERE event_id = ANY($3::text[])"
)
