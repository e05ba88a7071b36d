-- The bookkeeping every consumer keeps beside its own tables (service_kit::consumer), PostgreSQL
-- flavour; ../sqlite/0001_consumer_bookkeeping.sql is the same column for column. Consumers
-- run these migrations before their own (which start at version 2). Ids are canonical UUID text,
-- times RFC 3339 UTC text.

-- Exactly-once effects: (CloudEvent id, effect) written in the transaction of the effect, so a
-- redelivered, re-published or replayed event changes nothing.
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
    -- The original topic (replays go there).
    topic       TEXT NOT NULL,
    event_type  TEXT,
    reason      TEXT,
    -- The original CloudEvent as daprd forwarded it.
    envelope    TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    times_seen  BIGINT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('parked', 'replayed', 'discarded')),
    resolved_at TEXT,
    UNIQUE (event_id, topic)
);

CREATE INDEX dead_letters_by_status ON dead_letters (status, id);
