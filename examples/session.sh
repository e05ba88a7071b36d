#!/usr/bin/env bash
# A session against `make run`: create a todo, complete it, and see the notification and the
# analytics change. Needs curl; jq makes the output readable when it is installed.
set -euo pipefail

TODO=${TODO_URL:-http://127.0.0.1:8080}
NOTIFY=${NOTIFICATION_URL:-http://127.0.0.1:8081}
ANALYTICS=${ANALYTICS_URL:-http://127.0.0.1:8082}
ADMIN=${ADMIN_TOKEN:-dev-admin-token}
USER_ID=${USER_ID:-ada}
pretty() { if command -v jq >/dev/null 2>&1; then jq .; else cat; echo; fi; }

echo "== create a todo"
created=$(curl -sf "$TODO/todos" -H 'content-type: application/json' \
  -d "{\"userId\":\"$USER_ID\",\"title\":\"Write the release notes\",\"dueAt\":\"2026-12-01T17:00:00Z\"}")
echo "$created" | pretty
id=$(echo "$created" | sed -E 's/.*"id":"([^"]+)".*/\1/')

echo "== complete it (If-Match: the version we saw)"
curl -sf -X POST "$TODO/todos/$id/complete" -H 'If-Match: "1"' | pretty

echo "== its events, as the consumers received them"
curl -sf "$TODO/todos/$id/events" | pretty

# The events travel: outbox → relay → sidecar → Redis → sidecars → consumers. Wait for them.
for _ in $(seq 1 50); do
  curl -sf "$NOTIFY/notifications?userId=$USER_ID" | grep -q "Completed: Write the release notes" && break
  sleep 0.1
done
echo "== notifications for $USER_ID"
curl -sf "$NOTIFY/notifications?userId=$USER_ID" | pretty

echo "== analytics for $USER_ID, and today's counts"
curl -sf "$ANALYTICS/analytics/users/$USER_ID" | pretty
today=$(date -u +%F)
curl -sf "$ANALYTICS/analytics/daily?from=$today&to=$today" | pretty

echo "== dead letters waiting (admin API)"
curl -sf "$NOTIFY/admin/dead-letters?status=parked" -H "Authorization: Bearer $ADMIN" | pretty
