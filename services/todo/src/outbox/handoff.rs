//! What the writers of one service instance tell its relay: that events were committed, and,
//! for new todos' events, the events themselves, already leased to that relay.
//!
//! Why hand events over: a claimed event costs the database a claim (a scan of the queue and
//! a lease update) on top of the insert, the delete and the record of its publication; on
//! PostgreSQL under `make bench-write` the relay's share of the database held creates to ×0.4
//! of a bare insert, against ×0.77 with the relay off (docs/performance.md). A group commit
//! knows every event it writes, so it writes their queue rows leased to this instance's relay
//! and passes the events on once committed: the relay publishes them without a claim and
//! without reading them back.
//!
//! Why only new todos' events: a todo's first event is the oldest of its todo by construction,
//! so publishing it at once keeps per-todo order. Later events go through the claim, which
//! checks that nothing of their todo is still queued before them (`super::queue::claim`).
//!
//! The lease makes the hand-off safe with replicas: no other relay claims a leased row, and if
//! this instance dies before publishing, the lease runs out and another relay claims the
//! event, as it would a claimed one. Events are handed over only while the relay can publish
//! (not while the sidecar is unreachable, not after it stopped) and while it keeps up (at most
//! `capacity` waiting); otherwise their queue rows are written unleased and claimed as before.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use super::StoredEvent;

/// See the module documentation. Shared by an instance's writers and its relay.
#[derive(Debug, Default)]
pub struct Handoff {
    committed: Notify,
    /// Set when an event was queued that only a claim finds (written unleased, or released).
    claimable: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Who takes handed-over events, while anyone does.
    taker: Option<Taker>,
    /// False while the taker cannot publish (the sidecar is unreachable).
    accepting: bool,
    events: VecDeque<Handed>,
    /// The todos of events handed over and not finished yet (waiting or being published),
    /// and whether a later event of the todo was committed meanwhile: a claim that came for it
    /// then skipped it, since its todo had an earlier event queued, and once that one is
    /// published it needs another.
    in_flight: HashMap<Uuid, bool>,
}

#[derive(Debug)]
struct Taker {
    owner: Arc<str>,
    lease: Duration,
    capacity: usize,
}

/// The lease a batch of new events is written under: its queue rows' `lease_owner` and
/// `lease_expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: Arc<str>,
    pub until_ms: i64,
}

/// An event handed over, and until when its lease holds.
#[derive(Debug, Clone)]
pub struct Handed {
    pub event: StoredEvent,
    pub lease_until_ms: i64,
}

impl Handoff {
    /// Events of `todos` were committed that only a claim finds: asks the relay for one.
    pub fn claimable_committed(&self, todos: impl IntoIterator<Item = Uuid>) {
        {
            let mut state = self.lock();
            for todo in todos {
                if let Some(followed) = state.in_flight.get_mut(&todo) {
                    *followed = true;
                }
            }
        }
        self.ask_for_claim();
    }

    /// Asks the relay for a claim (and wakes it): something may wait that only a claim finds.
    pub fn ask_for_claim(&self) {
        self.claimable.store(true, Ordering::Release);
        self.committed.notify_one();
    }

    /// Resolves at the next commit or [`Handoff::ask_for_claim`] (or at once, if one came
    /// since the last wait and nobody took it).
    pub async fn wait_for_commit(&self) {
        self.committed.notified().await
    }

    /// True once after events were queued that only a claim finds.
    pub fn take_claimable(&self) -> bool {
        self.claimable.swap(false, Ordering::AcqRel)
    }

    /// Whether [`Handoff::take_claimable`] would be true now, leaving it so.
    pub fn claim_asked(&self) -> bool {
        self.claimable.load(Ordering::Acquire)
    }

    /// The lease to write `events` new events under, if they can be handed over: a relay takes
    /// them, it can publish, and fewer than its capacity are waiting.
    pub fn lease(&self, events: usize, now_ms: i64) -> Option<Lease> {
        let state = self.lock();
        let taker = state.taker.as_ref().filter(|_| state.accepting)?;
        (state.events.len() + events <= taker.capacity)
            .then(|| Lease { owner: taker.owner.clone(), until_ms: now_ms + taker.lease.as_millis() as i64 })
    }

    /// Hands committed events over, written under `lease`. Gives them back when the relay
    /// stopped taking them since the lease was given: the caller then releases their leases.
    pub fn hand_over(&self, lease: &Lease, events: Vec<StoredEvent>) -> Result<(), Vec<StoredEvent>> {
        let mut state = self.lock();
        let taken = state.accepting && state.taker.as_ref().is_some_and(|taker| taker.owner == lease.owner);
        if !taken {
            return Err(events);
        }
        let until = lease.until_ms;
        for event in events {
            state.in_flight.insert(event.todo_id, false);
            state.events.push_back(Handed { event, lease_until_ms: until });
        }
        drop(state);
        self.committed.notify_one();
        Ok(())
    }

    /// Puts events taken but not published back in front (the round that took them failed
    /// before publishing). Dropped when the relay stopped: its leases are released then.
    pub fn give_back(&self, handed: Vec<Handed>) {
        let mut state = self.lock();
        if state.taker.is_some() {
            for one in handed.into_iter().rev() {
                state.events.push_front(one);
            }
        }
    }

    /// The relay is done with the handed-over events of `todos` (published, failed or
    /// released). True when a later event of one of them was committed meanwhile, so a claim
    /// is due.
    pub fn finished(&self, todos: impl IntoIterator<Item = Uuid>) -> bool {
        let mut state = self.lock();
        todos.into_iter().fold(false, |followed, todo| state.in_flight.remove(&todo).unwrap_or(false) | followed)
    }

    /// The relay `owner` takes events from now on, leased for `lease`, at most `capacity`
    /// waiting.
    pub fn open(&self, owner: &str, lease: Duration, capacity: usize) {
        let mut state = self.lock();
        state.taker = Some(Taker { owner: owner.into(), lease, capacity });
        state.accepting = true;
    }

    /// Up to `max` handed-over events, oldest first.
    pub fn take(&self, max: usize) -> Vec<Handed> {
        let mut state = self.lock();
        let count = max.min(state.events.len());
        state.events.drain(..count).collect()
    }

    /// The relay cannot publish for now: no more events are handed over, and those waiting are
    /// returned, for it to release.
    pub fn pause(&self) -> Vec<Handed> {
        let mut state = self.lock();
        state.accepting = false;
        let waiting: Vec<Handed> = state.events.drain(..).collect();
        for handed in &waiting {
            state.in_flight.remove(&handed.event.todo_id);
        }
        waiting
    }

    /// The relay can publish again.
    pub fn resume(&self) {
        let mut state = self.lock();
        state.accepting = state.taker.is_some();
    }

    /// The relay stopped: nothing is handed over any more. What still waits is dropped: the
    /// relay releases every lease it holds once stopped (`queue::release_leases`).
    pub fn close(&self) {
        let mut state = self.lock();
        state.taker = None;
        state.accepting = false;
        state.in_flight.clear();
        state.events.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the hand-off is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn event() -> StoredEvent {
        StoredEvent {
            event_id: Uuid::now_v7(),
            todo_id: Uuid::now_v7(),
            seq: 1,
            event_type: "todo.created".into(),
            topic: "todos.task.created".into(),
            payload: "{}".into(),
            created_at: Utc::now(),
            traceparent: None,
            tracestate: None,
            correlation_id: "c".into(),
            causation_id: None,
            published_at: None,
            discarded_at: None,
            attempts: 0,
            refused: false,
        }
    }

    #[test]
    fn nothing_is_leased_until_a_relay_takes_events() {
        let handoff = Handoff::default();
        assert_eq!(handoff.lease(1, 0), None);
        handoff.open("relay-1", Duration::from_secs(30), 3);
        assert_eq!(handoff.lease(3, 1_000), Some(Lease { owner: "relay-1".into(), until_ms: 31_000 }));
        assert_eq!(handoff.lease(4, 1_000), None, "over capacity");
    }

    #[test]
    fn a_full_hand_off_leases_nothing_until_the_relay_takes_some() {
        let handoff = Handoff::default();
        handoff.open("relay-1", Duration::from_secs(30), 2);
        let lease = handoff.lease(2, 0).unwrap();
        handoff.hand_over(&lease, vec![event(), event()]).unwrap();
        assert_eq!(handoff.lease(1, 0), None);
        let taken = handoff.take(1);
        assert_eq!((taken.len(), taken[0].lease_until_ms), (1, 30_000));
        assert!(handoff.lease(1, 0).is_some());
    }

    #[test]
    fn events_are_given_back_once_the_relay_paused_or_stopped() {
        let handoff = Handoff::default();
        handoff.open("relay-1", Duration::from_secs(30), 10);
        let lease = handoff.lease(1, 0).unwrap();
        let waiting = event();
        handoff.hand_over(&lease, vec![waiting.clone()]).unwrap();
        let paused = handoff.pause();
        assert_eq!(paused.iter().map(|h| h.event.event_id).collect::<Vec<_>>(), vec![waiting.event_id]);
        assert_eq!(handoff.lease(1, 0), None, "nothing is leased while paused");
        assert!(handoff.hand_over(&lease, vec![event()]).is_err(), "a lease given before the pause is refused");
        handoff.resume();
        handoff.hand_over(&lease, vec![event()]).unwrap();
        handoff.close();
        assert!(handoff.take(10).is_empty(), "closing drops what waits");
        assert!(handoff.hand_over(&lease, vec![event()]).is_err());
        handoff.resume();
        assert_eq!(handoff.lease(1, 0), None, "a closed hand-off stays closed");
    }

    #[test]
    fn a_claim_is_asked_for_once_per_claimable_commit() {
        let handoff = Handoff::default();
        handoff.open("relay-1", Duration::from_secs(30), 10);
        handoff.hand_over(&handoff.lease(1, 0).unwrap(), vec![event()]).unwrap();
        assert!(!handoff.take_claimable(), "handed-over events need no claim");
        handoff.claimable_committed([Uuid::now_v7()]);
        assert!(handoff.take_claimable());
        assert!(!handoff.take_claimable());
    }

    #[test]
    fn a_todo_changed_while_its_first_event_is_in_flight_asks_for_a_claim_when_done() {
        let handoff = Handoff::default();
        handoff.open("relay-1", Duration::from_secs(30), 10);
        let (followed, alone) = (event(), event());
        handoff.hand_over(&handoff.lease(2, 0).unwrap(), vec![followed.clone(), alone.clone()]).unwrap();
        let taken = handoff.take(10);
        handoff.claimable_committed([followed.todo_id]);
        assert!(!handoff.finished([alone.todo_id]), "nothing followed it");
        assert!(handoff.finished([followed.todo_id]), "its todo's next event waits for a claim");
        assert!(!handoff.finished([followed.todo_id]), "asked once");
        handoff.give_back(taken);
        assert_eq!(handoff.take(10).len(), 2, "given back in front");
    }

    #[test]
    fn events_given_back_go_first_in_their_order_unless_the_relay_stopped() {
        let handoff = Handoff::default();
        handoff.open("relay-1", Duration::from_secs(30), 10);
        let (first, second, later) = (event(), event(), event());
        handoff.hand_over(&handoff.lease(2, 0).unwrap(), vec![first.clone(), second.clone()]).unwrap();
        let taken = handoff.take(10);
        handoff.hand_over(&handoff.lease(1, 0).unwrap(), vec![later.clone()]).unwrap();
        handoff.give_back(taken);
        let order: Vec<Uuid> = handoff.take(10).iter().map(|h| h.event.event_id).collect();
        assert_eq!(order, [first.event_id, second.event_id, later.event_id]);

        let lease = handoff.lease(1, 0).unwrap();
        handoff.hand_over(&lease, vec![event()]).unwrap();
        let taken = handoff.take(10);
        handoff.close();
        handoff.give_back(taken);
        assert!(handoff.take(10).is_empty(), "a stopped relay releases its leases instead");
    }
}
