-- The notification service's schema, PostgreSQL flavour; ../sqlite/0001_notifications.sql is the
-- same column for column. As in every service: ids are canonical lowercase UUID text and times
-- RFC 3339 UTC text with microseconds (sorts correctly as text), so one SQL text serves both.

-- In-app notifications, one per todo event worth telling a user about.
CREATE TABLE notifications (
    -- UUIDv7 stamped with the time the change happened (not when it arrived), so newest-first
    -- order is right even when deliveries arrive out of order; also the paging cursor.
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    todo_id     TEXT NOT NULL,
    -- The CloudEvent that caused it: one notification per event, whatever the redeliveries.
    event_id    TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('created', 'completed')),
    title       TEXT NOT NULL,
    message     TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    read_at     TEXT
);

-- GET /notifications?userId=…[&unread=true] newest first.
CREATE INDEX notifications_by_user ON notifications (user_id, id);
CREATE INDEX notifications_unread_by_user ON notifications (user_id, id) WHERE read_at IS NULL;

-- Exactly-once effects: (CloudEvent id, effect) written in the transaction of the effect. The
-- effects here are `notification.inapp` (the row above) and `notification.webhook` (the call).
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
