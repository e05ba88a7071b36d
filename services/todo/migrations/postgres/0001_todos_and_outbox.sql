-- The todo service's schema, PostgreSQL flavour. It mirrors ../sqlite/0001_todos_and_outbox.sql
-- column for column: the service runs the same SQL text on both backends, so ids and timestamps
-- are text in both (canonical lowercase UUIDs; RFC 3339 UTC with microseconds, which sorts
-- correctly as text), and relay bookkeeping times are integer milliseconds since the epoch.

-- Current state of every live todo. A deleted todo's row is removed; its history stays in
-- outbox_events.
CREATE TABLE todos (
    -- UUIDv7: time-ordered, so `ORDER BY id DESC` is newest first and the id doubles as a
    -- stable keyset-pagination cursor.
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    user_id      TEXT COLLATE "C" NOT NULL,
    title        TEXT NOT NULL,
    description  TEXT,
    due_at       TEXT,
    status       TEXT NOT NULL CHECK (status IN ('open', 'completed')),
    -- Bumped by every change; the ETag, and the sequence number of the change's event.
    version      BIGINT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    completed_at TEXT
);

-- GET /todos?userId=…[&status=…] newest first.
CREATE INDEX todos_by_user ON todos (user_id, id);
CREATE INDEX todos_by_user_status ON todos (user_id, status, id);
CREATE INDEX todos_by_status ON todos (status, id);

-- The transactional outbox's events, and at the same time the append-only audit trail of every
-- todo: rows are written in the same transaction as the change and never deleted; the relay
-- only stamps published_at (and records failed attempts).
CREATE TABLE outbox_events (
    -- UUIDv7; becomes the CloudEvent id, so a re-published row is recognisable downstream.
    event_id       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    todo_id        TEXT COLLATE "C" NOT NULL,
    -- The todo's version after the change: gives per-todo order.
    seq            BIGINT NOT NULL,
    event_type     TEXT NOT NULL,
    topic          TEXT NOT NULL,
    -- The CloudEvent `data` (JSON text).
    payload        TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    traceparent    TEXT,
    tracestate     TEXT,
    correlation_id TEXT NOT NULL,
    causation_id   TEXT,
    -- NULL until the sidecar accepted the event.
    published_at   TEXT,
    -- Failed publish attempts and the last error, kept after publishing for operators.
    attempts       BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT,
    UNIQUE (todo_id, seq)
);

-- The relay's work queue: one row per event not yet published, deleted once it is. Written in
-- the same transaction as the event.
--
-- Why a table of its own rather than `outbox_events WHERE published_at IS NULL`: the claim
-- query joins pending events with each other (to find each todo's oldest). Over the big history
-- table PostgreSQL estimates the pending rows from statistics usually gathered while the queue
-- was empty, believes there is one, and picks nested loops that turn quadratic exactly when a
-- backlog builds up (measured: 280 ms per claim with 20,000 pending). A small table's estimate
-- follows its actual size, and the claim never touches the history.
CREATE TABLE outbox_queue (
    event_id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    todo_id          TEXT COLLATE "C" NOT NULL,
    seq              BIGINT NOT NULL,
    -- Scheduling: failed attempts so far (drives the backoff), when the next may run (epoch
    -- ms), and which relay instance holds the row and until when (epoch ms).
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    -- Also serves "is an earlier event of this todo still pending?" (the per-todo order check).
    UNIQUE (todo_id, seq)
);

-- Idempotency-Key support for POST /todos: the first response is stored with the key so a
-- retry replays it instead of creating a second todo.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    -- SHA-256 of the request (method, path, canonical JSON body): the same key with another
    -- body is a client bug and answers 422.
    request_hash    TEXT NOT NULL,
    response_status BIGINT NOT NULL,
    response_body   TEXT NOT NULL,
    todo_id         TEXT COLLATE "C" NOT NULL,
    created_at      TEXT NOT NULL
);

-- PostgreSQL compares text with the database collation by default; every id column above uses
-- "C" so that text order is byte order (which is what makes UUIDv7 ids sort by time) and
-- comparisons stay cheap.
