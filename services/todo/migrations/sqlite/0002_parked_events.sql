-- Events daprd refuses for good (a publishing scope forbids the topic, no such pub/sub
-- component) are parked instead of retried forever: the relay stops trying them, the todo's
-- later events keep waiting behind them (per-todo order), and an operator retries or discards
-- them once the configuration is fixed (docs/operations.md, "Parked events").
-- When the current run of such refusals began (epoch ms); a transient failure ends the run.
ALTER TABLE outbox_queue ADD COLUMN refused_since BIGINT;
-- When the event was parked (epoch ms), and why; the relay claims only unparked events.
ALTER TABLE outbox_queue ADD COLUMN parked_at BIGINT;
ALTER TABLE outbox_queue ADD COLUMN parked_reason TEXT;
-- An event an operator discarded: never published, kept in the history with this time.
ALTER TABLE outbox_events ADD COLUMN discarded_at TEXT;
