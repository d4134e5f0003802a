//! The discrete-event core: a virtual clock and a time-ordered event queue.
//!
//! Events at equal times pop in the order they were scheduled (a sequence number
//! breaks ties), which together with seeded randomness makes a run a pure
//! function of its inputs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Scheduled<E> {
    at_s: f64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<E> Eq for Scheduled<E> {}
impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Scheduled<E> {
    // BinaryHeap is a max-heap: reverse so the earliest (then first scheduled) pops first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at_s
            .total_cmp(&self.at_s)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Virtual clock plus pending events. Time only moves forward: scheduling an
/// event in the past is a bug in the model and panics.
pub struct EventQueue<E> {
    now_s: f64,
    next_seq: u64,
    heap: BinaryHeap<Scheduled<E>>,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> EventQueue<E> {
    pub fn new() -> Self {
        EventQueue {
            now_s: 0.0,
            next_seq: 0,
            heap: BinaryHeap::new(),
        }
    }

    /// Current virtual time in seconds.
    pub fn now(&self) -> f64 {
        self.now_s
    }

    pub fn schedule_at(&mut self, at_s: f64, event: E) {
        assert!(
            at_s.is_finite() && at_s >= self.now_s,
            "event scheduled at {at_s} s, before now ({} s)",
            self.now_s
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Scheduled { at_s, seq, event });
    }

    pub fn schedule_in(&mut self, delay_s: f64, event: E) {
        self.schedule_at(self.now_s + delay_s.max(0.0), event);
    }

    /// Advances the clock to the next event and returns it with its time.
    pub fn pop(&mut self) -> Option<(f64, E)> {
        let next = self.heap.pop()?;
        debug_assert!(next.at_s >= self.now_s);
        self.now_s = next.at_s;
        Some((next.at_s, next.event))
    }

    pub fn peek_time(&self) -> Option<f64> {
        self.heap.peek().map(|s| s.at_s)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn pops_in_time_order_with_fifo_ties_and_monotone_clock() {
        let mut q = EventQueue::new();
        let mut rng = Rng::new(11);
        for i in 0..1000u32 {
            q.schedule_at((rng.below(50) as f64) * 0.01, i);
        }
        let mut last = (f64::NEG_INFINITY, 0u32);
        let mut n = 0;
        while let Some((t, e)) = q.pop() {
            assert!(t >= last.0, "clock went back: {t} < {}", last.0);
            assert_eq!(q.now(), t);
            if t == last.0 {
                assert!(e > last.1, "ties must pop in scheduling order");
            }
            // events scheduled while running land in the future
            if n < 200 {
                q.schedule_in(rng.f64() * 0.1, 10_000 + n);
            }
            last = (t, e);
            n += 1;
        }
        assert_eq!(n, 1200);
    }

    #[test]
    #[should_panic(expected = "before now")]
    fn scheduling_in_the_past_panics() {
        let mut q = EventQueue::new();
        q.schedule_at(1.0, ());
        q.pop();
        q.schedule_at(0.5, ());
    }
}
