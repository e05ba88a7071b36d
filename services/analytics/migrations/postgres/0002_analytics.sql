-- The analytics service's own tables, PostgreSQL flavour; ../sqlite/0002_analytics.sql is the
-- same column for column. Version 1 is the consumer bookkeeping every consumer shares
-- (crates/service-kit/migrations). Ids are canonical lowercase UUID text and times RFC 3339 UTC
-- text with microseconds (they sort as text; the first ten characters are the UTC date).

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
