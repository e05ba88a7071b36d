-- When each event was published, in a table of its own instead of a `published_at` column of
-- outbox_events: the relay's mark of a published event becomes an append to a narrow table
-- instead of an update of the wide history row. The update wrote a new version of the whole
-- row (payload included) and left the old one dead in the history table, and whenever the page
-- had no room, an entry in each of its indexes too. Measured under `make bench-write`
-- (pg_stat_statements, about 100,000 events): marking cost 31 us, 455 bytes of WAL and 11.6
-- buffer visits per event as an update, 20 us, 280 bytes and 6.3 as an append
-- (docs/performance.md).
--
-- An event is published when it has a row here: the relay moves it from outbox_queue to here
-- in one statement. No foreign key to outbox_events: every mark would pay a probe of its
-- primary key for an id the relay just read from it.
CREATE TABLE outbox_published (
    event_id     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    -- When the sidecar accepted the event (its latest publish, when an operator re-queued it).
    published_at TEXT NOT NULL
);
INSERT INTO outbox_published (event_id, published_at)
SELECT event_id, published_at FROM outbox_events WHERE published_at IS NOT NULL;
-- outbox_events.published_at stays, unused by this release, until a later migration drops it:
-- during a rolling update the previous release's replicas still read it and stamp the events
-- they publish there (this release's history reads both, outbox::history; theirs shows what
-- this release published as unpublished until they are replaced).
--
-- The history's rows are now updated only when publishing fails (last_error, attempts) or an
-- operator discards an event: the room that 0003 kept on every page for the stamp is no longer used.
ALTER TABLE outbox_events RESET (fillfactor);
