//! Keeps an agent's pipelined batches in seq order on their way to the writer.
//!
//! An agent catching up sends its next batch before the receipt for the last one has come
//! back (two requests in flight, on two connections), so that the hub checks the signatures
//! of one batch while it writes the one before. The two requests may reach the writer in
//! either order; the one that continues the other must go second, or it finds a gap in the
//! chain. Each batch takes a [`Ticket`] when it arrives and, once its signatures are checked,
//! waits its turn ([`Sequencer::wait_turn`]): while the hub has not yet stored the seq before
//! its first and an earlier batch of the same agent is still being handled, it waits (at most
//! [`MAX_WAIT`]) for that one to finish.
//!
//! Invariants: this only orders, it never decides — a batch that finds no earlier batch in
//! flight, or waits in vain, goes on to the writer exactly as it would have without the
//! sequencer (and a gap is refused there, with the watermark, as always); a ticket is given
//! back when it is dropped, whatever happened to its batch; the table holds only agents with
//! a batch in flight.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tongbu_shared::ids::AgentId;

/// The longest a batch waits for an earlier batch of its agent.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// The batches in flight, by agent.
#[derive(Debug, Default)]
pub struct Sequencer {
    agents: Mutex<HashMap<AgentId, Flights>>,
    /// Woken whenever a batch is stored or a ticket is given back.
    changed: Notify,
}

#[derive(Debug)]
struct Flights {
    /// The highest seq the hub is known to have stored for the agent.
    acked: u64,
    /// The first seq of each batch in flight (one entry per ticket).
    firsts: Vec<u64>,
}

/// One batch's place among its agent's batches in flight; given back on drop.
#[derive(Debug)]
pub struct Ticket<'a> {
    sequencer: &'a Sequencer,
    agent: AgentId,
    first: u64,
}

impl Sequencer {
    /// Registers a batch of `agent` starting at seq `first`; `acked` is what the hub held for
    /// the agent when the request was authenticated (a later store only raises it).
    pub fn enter(&self, agent: &AgentId, first: u64, acked: u64) -> Ticket<'_> {
        let mut agents = self.lock();
        let flights = agents.entry(agent.clone()).or_insert(Flights {
            acked,
            firsts: Vec::new(),
        });
        flights.acked = flights.acked.max(acked);
        flights.firsts.push(first);
        Ticket {
            sequencer: self,
            agent: agent.clone(),
            first,
        }
    }

    /// Notes that the hub has stored the agent's chain up to `acked`.
    pub fn stored(&self, agent: &AgentId, acked: u64) {
        if let Some(flights) = self.lock().get_mut(agent) {
            flights.acked = flights.acked.max(acked);
        }
        self.changed.notify_waiters();
    }

    /// Waits until the batch of `ticket` continues what the hub has stored, or no earlier
    /// batch of its agent is in flight, or `limit` has passed. Returns whether it waited in
    /// vain (the caller goes on either way).
    pub async fn wait_turn(&self, ticket: &Ticket<'_>, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change between the look and the wait wakes it.
            notified.as_mut().enable();
            if !self.must_wait(ticket) {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return true;
            }
        }
    }

    fn must_wait(&self, ticket: &Ticket<'_>) -> bool {
        let agents = self.lock();
        let Some(flights) = agents.get(&ticket.agent) else {
            return false;
        };
        ticket.first > flights.acked.saturating_add(1)
            && flights.firsts.iter().any(|&f| f < ticket.first)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Flights>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        {
            let mut agents = self.sequencer.lock();
            if let Some(flights) = agents.get_mut(&self.agent) {
                if let Some(at) = flights.firsts.iter().position(|&f| f == self.first) {
                    flights.firsts.swap_remove(at);
                }
                if flights.firsts.is_empty() {
                    agents.remove(&self.agent);
                }
            }
        }
        self.sequencer.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(n: u8) -> AgentId {
        AgentId::parse(&format!("430112-0000000{n}")).unwrap()
    }

    #[tokio::test]
    async fn a_batch_that_continues_the_stored_chain_never_waits() {
        let s = Sequencer::default();
        let a = s.enter(&agent(1), 11, 10);
        let _b = s.enter(&agent(1), 1, 0);
        assert!(!s.wait_turn(&a, Duration::ZERO).await);
        // Nothing earlier in flight: go on, the writer judges the gap.
        let lone = s.enter(&agent(2), 50, 10);
        assert!(!s.wait_turn(&lone, Duration::ZERO).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_later_batch_waits_for_the_earlier_one_to_be_stored() {
        let s = Sequencer::default();
        let first = s.enter(&agent(1), 1, 0);
        let second = s.enter(&agent(1), 501, 0);
        let order = Mutex::new(Vec::new());
        let wait = async {
            let in_vain = s.wait_turn(&second, MAX_WAIT).await;
            order.lock().unwrap().push("second");
            in_vain
        };
        let store = async {
            tokio::task::yield_now().await;
            order.lock().unwrap().push("first");
            s.stored(&agent(1), 500);
        };
        let (in_vain, ()) = tokio::join!(wait, store);
        assert!(!in_vain);
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
        drop(first);
        drop(second);
        assert!(s.lock().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_earlier_batch_lets_the_later_one_go_on() {
        let s = Sequencer::default();
        let first = s.enter(&agent(1), 1, 0);
        let second = s.enter(&agent(1), 501, 0);
        let wait = s.wait_turn(&second, MAX_WAIT);
        tokio::pin!(wait);
        assert!(futures_poll_once(wait.as_mut()).await.is_none());
        drop(first);
        assert!(!wait.await);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_bounded() {
        let s = Sequencer::default();
        let _first = s.enter(&agent(1), 1, 0);
        let second = s.enter(&agent(1), 501, 0);
        let started = tokio::time::Instant::now();
        assert!(s.wait_turn(&second, Duration::from_secs(3)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    /// Polls `f` once: its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
