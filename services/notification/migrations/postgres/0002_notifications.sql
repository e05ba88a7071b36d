-- The notification service's own tables, PostgreSQL flavour; ../sqlite/0002_notifications.sql is the
-- same column for column. Version 1 is the consumer bookkeeping every consumer shares
-- (crates/service-kit/migrations). Ids are canonical lowercase UUID text and times RFC 3339 UTC
-- text with microseconds (they sort as text; the first ten characters are the UTC date).

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
