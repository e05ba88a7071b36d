"""The peer's outbox relay: an asyncio task in every worker process. Woken by each commit of its
own process (an asyncio.Event) or every POLL_SECONDS for rows other processes wrote, it claims up
to BATCH_SIZE events (the head of each todo, leased so two workers never publish the same row
at once), publishes each topic's with Dapr's bulk publish API, one request per topic (split to
stay under 1 MiB), then stamps the published ones and removes them from the queue in one
transaction. A failed publish leaves its rows for a later round.

The CloudEvents are those of the Rust relay (services/todo/src/relay.rs `cloud_event`,
crates/dapr-events/src/cloudevent.rs and publish.rs), attribute for attribute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import datetime, timezone

import httpx
import orjson

from .validation import format_time

LOG = logging.getLogger("todo_peer.relay")

# The Rust relay's RELAY_LEASE_MS and RELAY_PUBLISH_TIMEOUT_MS. Its batch runs one round at a
# time here, so the Rust relay's largest (1000) rather than its default of 4 rounds of 500.
BATCH_SIZE = int(os.environ.get("RELAY_BATCH_SIZE", "1000"))
LEASE_MS = 30_000
PUBLISH_TIMEOUT_SECONDS = 5.0
# Shorter than the Rust relay's 1 s: with several worker processes, one process's rows wake only
# its own relay, and the others'.
POLL_SECONDS = float(os.environ.get("RELAY_POLL_INTERVAL_MS", "100")) / 1000
RETRY_AFTER_MS = 1_000
MAX_REQUEST_BYTES = 1024 * 1024
ENVELOPE_BYTES = 1024
SCHEMA_BASE_URI = "https://dapr-todo.example/schemas/events"
CLOUDEVENTS_JSON = "application/cloudevents+json"


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def cloud_event(row, source: str) -> dict:
    """A claimed row (store.CLAIMED_COLUMNS) as its CloudEvent; the stored payload goes out as
    it is (orjson.Fragment: no parse, no re-serialisation)."""
    event_id, todo_id, event_type, _topic, payload, created_at, traceparent, tracestate, correlation_id, causation_id = row
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": event_type,
        "subject": todo_id,
        "time": created_at,
        "datacontenttype": "application/json",
        "dataschema": f"{SCHEMA_BASE_URI}/{event_type}/v1.json",
        "data": orjson.Fragment(payload),
        "correlationid": correlation_id,
    }
    if causation_id is not None:
        event["causationid"] = causation_id
    if traceparent is not None:
        # daprd keeps traceparent only when traceid is there too (cloudevent.rs `with_trace`).
        event["traceparent"] = traceparent
        event["traceid"] = traceparent
    if tracestate is not None:
        event["tracestate"] = tracestate
    return event


class Relay:
    def __init__(self, store, client: httpx.AsyncClient, pubsub: str, source: str):
        self.store = store
        self.client = client
        self.pubsub = pubsub
        self.source = source
        self.owner = str(uuid.uuid4())
        self.wake = asyncio.Event()

    async def run(self) -> None:
        await self._wait_for_sidecar()
        while True:
            self.wake.clear()
            try:
                claimed = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                LOG.exception("relay round failed; retrying")
                claimed = 0
                await asyncio.sleep(RETRY_AFTER_MS / 1000)
            if claimed:
                continue  # more may be waiting
            try:
                await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)
            except asyncio.TimeoutError:
                pass

    async def _wait_for_sidecar(self) -> None:
        """daprd's outbound health, as the Rust relay waits for it before its first round."""
        while True:
            try:
                if (await self.client.get("/v1.0/healthz/outbound")).is_success:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)

    async def round(self) -> int:
        now = epoch_ms()
        rows = await self.store.claim(self.owner, now, now + LEASE_MS, BATCH_SIZE)
        if not rows:
            return 0
        # Rows are one per todo (the head of each), so no request holds two events of one todo.
        requests: list[tuple[str, list]] = []
        filling: dict[str, tuple[int, list]] = {}
        for row in rows:
            topic, size = row[3], len(row[4]) + ENVELOPE_BYTES
            used, chunk = filling.get(topic, (0, None))
            if chunk is None or used + size > MAX_REQUEST_BYTES:
                chunk, used = [], 0
                requests.append((topic, chunk))
            chunk.append(row)
            filling[topic] = (used + size, chunk)
        outcomes = await asyncio.gather(*(self._publish(topic, chunk) for topic, chunk in requests))
        published, failed, error = [], [], ""
        for ok, not_ok, why in outcomes:
            published += ok
            failed += not_ok
            error = why or error
        if published:
            await self.store.mark_published(published, format_time(datetime.now(timezone.utc)))
        if failed:
            LOG.warning("%d events not published (%s); retrying", len(failed), error)
            await self.store.mark_failed(failed, error, epoch_ms() + RETRY_AFTER_MS)
        return len(rows)

    async def _publish(self, topic: str, rows: list) -> tuple[list[str], list[str], str]:
        """One bulk publish: the ids published, the ids not, and why."""
        entries = [
            {
                "entryId": row[0],
                "event": cloud_event(row, self.source),
                "contentType": CLOUDEVENTS_JSON,
                "metadata": {"partitionKey": row[1]},
            }
            for row in rows
        ]
        ids = [row[0] for row in rows]
        try:
            response = await self.client.post(
                f"/v1.0-alpha1/publish/bulk/{self.pubsub}/{topic}",
                content=orjson.dumps(entries),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as error:
            return [], ids, f"{type(error).__name__}: {error}"
        if response.is_success:
            return ids, [], ""
        # daprd names the entries that failed; the others were published.
        try:
            failed = {entry["entryId"] for entry in orjson.loads(response.content).get("failedEntries") or []}
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            failed = set()
        why = f"daprd answered {response.status_code}: {response.text[:500]}"
        if not failed:
            return [], ids, why
        return [i for i in ids if i not in failed], [i for i in ids if i in failed], why
