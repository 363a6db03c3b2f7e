//! What the apiserver should show of the events and what it has been told: a repeat of an event
//! raises its count, and an event whose post failed (the apiserver away) stays due, to be posted
//! with its count so far once the apiserver answers, so an outage loses no event. Pure: the
//! posting loop in `events` does the calls.

use super::PodEvent;
use k8s_openapi::jiff::Timestamp;
use std::collections::{HashMap, VecDeque};

/// An event's aggregation key: (object uid, reason, message).
pub type Key = (String, &'static str, String);

pub struct Entry {
    /// The Event object's name, fixed at the first occurrence so a retried create finds it.
    pub name: String,
    pub event: PodEvent,
    pub first: Timestamp,
    pub last: Timestamp,
    pub count: i32,
    /// Whether the Event object exists in the apiserver (then a repeat is a count patch).
    pub created: bool,
    due: bool,
}

#[derive(Default)]
pub struct Aggregates {
    entries: HashMap<Key, Entry>,
    /// Keys whose count the apiserver does not have yet, oldest first.
    due: VecDeque<Key>,
}

impl Aggregates {
    pub fn record(&mut self, event: PodEvent, now: Timestamp) {
        let key = (event.pod.uid.clone().unwrap_or_default(), event.reason, event.message.clone());
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            name: format!("{}.{:x}", event.pod.name.clone().unwrap_or_default(), now.as_nanosecond()),
            event,
            first: now,
            last: now,
            count: 0,
            created: false,
            due: false,
        });
        entry.count += 1;
        entry.last = now;
        if !entry.due {
            entry.due = true;
            self.due.push_back(key);
        }
    }

    /// The oldest event the apiserver is behind on.
    pub fn next_due(&self) -> Option<(&Key, &Entry)> {
        let key = self.due.front()?;
        Some((key, &self.entries[key]))
    }

    /// The apiserver refused the oldest due event for good (a 4xx): it is not retried, but a
    /// repeat makes it due again.
    pub fn refused(&mut self) {
        let Some(key) = self.due.pop_front() else { return };
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.due = false;
        }
    }

    /// The apiserver has the oldest due event with `count`. A repeat recorded since keeps it due.
    pub fn settle(&mut self, count: i32) {
        let Some(key) = self.due.pop_front() else { return };
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.created = true;
            entry.due = entry.count > count;
            if entry.due {
                self.due.push_back(key);
            }
        }
    }

    pub fn due_len(&self) -> usize {
        self.due.len()
    }

    /// Bounded memory: past `max` entries, the settled ones are forgotten (a repeat starts a new
    /// Event object), and past `max` due ones, the oldest are dropped.
    pub fn bound(&mut self, max: usize) {
        if self.entries.len() <= max {
            return;
        }
        self.entries.retain(|_, e| e.due);
        while self.due.len() > max {
            if let Some(key) = self.due.pop_front() {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;
    use k8s_openapi::api::core::v1::ObjectReference;

    fn event(uid: &str, reason: &'static str) -> PodEvent {
        let pod = ObjectReference { name: Some(format!("pod-{uid}")), uid: Some(uid.into()), ..Default::default() };
        PodEvent { pod, kind: Kind::Normal, reason, message: format!("{reason} container main") }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn repeats_raise_one_count_and_stay_due_until_posted() {
        let mut a = Aggregates::default();
        a.record(event("u1", "Started"), at(0));
        a.record(event("u1", "Started"), at(5));
        assert_eq!(a.due_len(), 1);
        let (_, e) = a.next_due().unwrap();
        assert_eq!((e.count, e.created, e.first, e.last), (2, false, at(0), at(5)));
        a.settle(2);
        assert!(a.next_due().is_none());
        a.record(event("u1", "Started"), at(9));
        let (_, e) = a.next_due().unwrap();
        assert_eq!((e.count, e.created), (3, true), "a repeat after the post is a patch of the count");
    }

    #[test]
    fn events_recorded_while_the_apiserver_is_away_are_all_due_in_order() {
        let mut a = Aggregates::default();
        // Nothing settles during the outage: every occurrence is kept, none is lost.
        for i in 0..10 {
            a.record(event("u1", "Started"), at(i));
            a.record(event("u1", "BackOff"), at(i));
        }
        a.record(event("u2", "Killing"), at(20));
        let mut posted = Vec::new();
        while let Some((key, e)) = a.next_due() {
            posted.push((key.1, e.count));
            let count = e.count;
            a.settle(count);
        }
        assert_eq!(posted, [("Started", 10), ("BackOff", 10), ("Killing", 1)]);
    }

    #[test]
    fn a_repeat_during_the_post_keeps_the_event_due() {
        let mut a = Aggregates::default();
        a.record(event("u1", "BackOff"), at(0));
        let count = a.next_due().unwrap().1.count;
        a.record(event("u1", "BackOff"), at(1)); // while the post was on its way
        a.settle(count);
        assert_eq!(a.next_due().map(|(_, e)| e.count), Some(2));
    }

    #[test]
    fn a_refused_event_is_not_retried_until_it_happens_again() {
        let mut a = Aggregates::default();
        a.record(event("u1", "Started"), at(0));
        a.refused();
        assert!(a.next_due().is_none());
        a.record(event("u1", "Started"), at(1));
        assert_eq!(a.next_due().map(|(_, e)| (e.count, e.created)), Some((2, false)));
    }

    #[test]
    fn memory_is_bounded_keeping_what_is_due() {
        let mut a = Aggregates::default();
        for i in 0..5 {
            a.record(event(&format!("u{i}"), "Started"), at(i));
            let count = a.next_due().unwrap().1.count;
            a.settle(count);
        }
        a.record(event("late", "Started"), at(9));
        a.bound(3);
        assert_eq!(a.entries.len(), 1);
        assert_eq!(a.next_due().unwrap().0 .0, "late");
        for i in 0..5 {
            a.record(event(&format!("d{i}"), "Started"), at(10 + i));
        }
        a.bound(3);
        assert_eq!(a.due_len(), 3, "the oldest due events are dropped past the bound");
        assert_eq!(a.next_due().unwrap().0 .0, "d2");
    }
}
