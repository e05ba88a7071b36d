-- The analytics service's schema, PostgreSQL flavour; ../sqlite/0001_analytics.sql is the same
-- column for column. Ids are canonical lowercase UUID text and times RFC 3339 UTC text with
-- microseconds (they sort as text, and their first ten characters are the UTC date).

-- Every todo event this service consumed, as delivered, never changed or pruned: the source of
-- truth the projection below is rebuilt from (POST /admin/projections/rebuild).
CREATE TABLE event_log (
    event_id    TEXT PRIMARY KEY NOT NULL,
    todo_id     TEXT NOT NULL,
    version     BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    received_at TEXT NOT NULL
);

-- The projection: each todo's latest known state. Events carry the whole todo after the change,
-- so the highest version wins whatever the arrival order: a late older event changes nothing,
-- and a missing intermediate event is superseded by the next one.
CREATE TABLE todo_states (
    todo_id      TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    version      BIGINT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'completed')),
    created_at   TEXT NOT NULL,
    completed_at TEXT,
    deleted_at   TEXT
);

CREATE INDEX todo_states_by_user ON todo_states (user_id);
CREATE INDEX todo_states_by_created ON todo_states (created_at);
CREATE INDEX todo_states_by_completed ON todo_states (completed_at);

-- Exactly-once: (CloudEvent id, `analytics`) written with the effect.
CREATE TABLE processed_events (
    event_id     TEXT NOT NULL,
    consumer     TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (event_id, consumer)
);

-- Why the last delivery of an event failed (RETRY or DROP), so its dead letter can say.
CREATE TABLE delivery_failures (
    event_id  TEXT PRIMARY KEY NOT NULL,
    reason    TEXT NOT NULL,
    failed_at TEXT NOT NULL
);

-- What arrived on this service's dead-letter topics; operators list, replay or discard them.
CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY NOT NULL,
    event_id    TEXT NOT NULL,
    topic       TEXT NOT NULL,
    event_type  TEXT,
    reason      TEXT,
    envelope    TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    times_seen  BIGINT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('parked', 'replayed', 'discarded')),
    resolved_at TEXT,
    UNIQUE (event_id, topic)
);

CREATE INDEX dead_letters_by_status ON dead_letters (status, id);
