//! Adaptive polling of a connection that waits for its client's next request.
//!
//! A client with one request in flight (queue depth 1) sends the next one a few
//! microseconds after our reply, while waking a thread that went to sleep in `epoll`
//! costs tens of microseconds on a virtual machine (the idle vCPU halts and must be
//! woken through the hypervisor): measured here, 4 KiB reads at depth 1 went from 17k/s
//! to 50k/s when the CPU was kept busy. So an idle connection first asks the socket
//! without waiting, for a short budget, before it sleeps; the budget follows what
//! waiting turned out to cost, as qemu's adaptive polling does: it grows while requests
//! arrive within [`MAX_POLL`] and shrinks to nothing when the client goes quiet, so idle
//! clients cost no CPU. Only clients that send one request at a time are polled: one
//! that keeps many in flight sends the next while we answer, and while we sleep its
//! requests gather into a batch that one read takes in (polling would take them one by
//! one: 4 KiB reads at depth 32 went from 145k/s to 105k/s). Which kind a client is
//! shows after a sleep: one request waiting, or several. Polled rounds tell nothing (a
//! poll takes the first request that arrives), so every [`PROBE_EVERY`]th round sleeps
//! to look again. Pure bookkeeping here; the connection does the reading.

use std::time::Duration;

/// Longest a connection polls before it sleeps.
pub(crate) const MAX_POLL: Duration = Duration::from_micros(64);
/// The budget a growing poll starts from.
const START: Duration = Duration::from_micros(4);

/// Rounds between two that sleep to see whether the client sends batches.
pub(crate) const PROBE_EVERY: u32 = 64;

/// Whether and how long an idle connection polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PollBudget {
    budget: Duration,
    /// The last round that slept ended with several requests waiting.
    batches: bool,
    /// The last round polled (so its request count says nothing).
    polled: bool,
    rounds: u32,
}

impl PollBudget {
    pub(crate) fn new() -> PollBudget {
        PollBudget {
            budget: MAX_POLL,
            batches: false,
            polled: false,
            rounds: 0,
        }
    }

    /// The connection is idle again after parsing `parsed` requests since it was last:
    /// how long to poll now (zero: sleep at once).
    pub(crate) fn idle(&mut self, parsed: usize) -> Duration {
        if !self.polled && parsed > 0 {
            self.batches = parsed > 1;
        }
        self.rounds = self.rounds.wrapping_add(1);
        let probe = self.rounds.is_multiple_of(PROBE_EVERY);
        self.polled = !self.batches && !probe && !self.budget.is_zero();
        if self.polled {
            self.budget
        } else {
            Duration::ZERO
        }
    }

    /// The client's next bytes arrived `waited` after the connection went idle (polling
    /// included): had polling lasted that long it would have caught them, so poll longer
    /// if that is within [`MAX_POLL`], else shorter.
    pub(crate) fn waited(&mut self, waited: Duration) {
        self.budget = if waited <= MAX_POLL {
            (self.budget * 2).clamp(START, MAX_POLL)
        } else if self.budget > START {
            self.budget / 2
        } else {
            Duration::ZERO
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clients_that_send_one_request_at_a_time_are_polled() {
        let mut p = PollBudget::new();
        assert_eq!(p.idle(0), MAX_POLL);
        // Polled rounds say nothing about batching, whatever they parsed.
        assert_eq!(p.idle(5), MAX_POLL);
        // A probing round sleeps; it finds a batch: no more polling.
        let mut slept = 0;
        while p.idle(1) == MAX_POLL {
            slept += 1;
        }
        assert_eq!(slept, PROBE_EVERY - 3);
        assert_eq!(p.idle(4), Duration::ZERO);
        assert_eq!(p.idle(3), Duration::ZERO);
        // One request after a sleep: polling again.
        assert_eq!(p.idle(1), MAX_POLL);
    }

    #[test]
    fn budget_grows_with_quick_clients_and_stops_for_quiet_ones() {
        let mut p = PollBudget::new();
        assert_eq!(p.budget, MAX_POLL);
        // A quiet client: the budget halves down to nothing.
        for _ in 0..10 {
            p.waited(Duration::from_millis(5));
        }
        assert_eq!(p.budget, Duration::ZERO);
        // Requests coming quickly again (noticed after sleeping): it grows back.
        p.waited(Duration::from_micros(20));
        assert_eq!(p.budget, START);
        for _ in 0..10 {
            p.waited(Duration::from_micros(20));
        }
        assert_eq!(p.budget, MAX_POLL);
    }
}
