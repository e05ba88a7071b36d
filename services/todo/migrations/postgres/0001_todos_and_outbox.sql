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

-- The transactional outbox, and at the same time the append-only audit trail of every todo:
-- rows are written in the same transaction as the change and never deleted; the relay only
-- stamps published_at.
CREATE TABLE outbox_events (
    -- UUIDv7; becomes the CloudEvent id, so a re-published row is recognisable downstream.
    event_id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    todo_id          TEXT COLLATE "C" NOT NULL,
    -- The todo's version after the change: gives per-todo order.
    seq              BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    topic            TEXT NOT NULL,
    -- The CloudEvent `data` (JSON text).
    payload          TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    traceparent      TEXT,
    tracestate       TEXT,
    correlation_id   TEXT NOT NULL,
    causation_id     TEXT,
    -- NULL while pending: the relay's whole work queue is `published_at IS NULL`.
    published_at     TEXT,
    -- Relay bookkeeping: failed attempts, when the next one may run, the last error (for
    -- operators), and which relay instance holds the row and until when.
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    UNIQUE (todo_id, seq)
);

-- Partial indexes hold pending rows only, so finding work costs the same with a million
-- published rows as with none.
CREATE INDEX outbox_pending ON outbox_events (event_id) WHERE published_at IS NULL;
-- "Is an earlier event of this todo still pending?" (the per-todo ordering check).
CREATE INDEX outbox_pending_by_todo ON outbox_events (todo_id, seq) WHERE published_at IS NULL;

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
