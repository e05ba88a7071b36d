-- When each event was published, in a table of its own instead of a `published_at` column of
-- outbox_events; the same columns as ../postgres/0004_outbox_published.sql, which says why.
-- An event is published when it has a row here; the relay moves it from outbox_queue to here
-- in one transaction.
CREATE TABLE outbox_published (
    event_id     TEXT PRIMARY KEY NOT NULL,
    -- When the sidecar accepted the event (its latest publish, when an operator re-queued it).
    published_at TEXT NOT NULL
-- One b-tree keyed by the id instead of a rowid table and an index on the id: a mark is one
-- insert, at the b-tree's right edge (ids are time-ordered).
) WITHOUT ROWID;
INSERT INTO outbox_published (event_id, published_at)
SELECT event_id, published_at FROM outbox_events WHERE published_at IS NOT NULL;
-- outbox_events.published_at stays until a later migration drops it, as on PostgreSQL.
