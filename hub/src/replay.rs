//! Replay protection for signed agent requests: the (agent, nonce) pairs the hub has accepted
//! within the clock-skew window, in memory. A request older than the window is refused by the
//! clock check anyway, so a pair is forgotten once its timestamp falls out of the window.
//!
//! Invariants: memory is bounded by [`ReplayGuard::new`]'s cap on entries; a pair seen within
//! the window is always refused a second time. When the map is full the busiest agent (the one
//! holding the most entries) pays: its own new requests are refused with a retryable error,
//! and a request from another agent evicts the busiest agent's oldest entry. Evicting would let
//! that nonce be replayed, so the busiest agent's *floor* rises to the evicted timestamp, and
//! every request of that agent at or below its floor is refused (retryably: a fresh request
//! carries a later timestamp). Pure bookkeeping over the caller's time; no clock is read here.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use tongbu_shared::ids::AgentId;
use tongbu_shared::protocol::MAX_CLOCK_SKEW_SECS;

/// How many (agent, nonce) pairs the hub remembers at most, by default. At 32-hex nonces this
/// is some tens of megabytes at worst.
pub const DEFAULT_MAX_ENTRIES: usize = 200_000;

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The same agent already sent this nonce within the window.
    #[error("this request (agent and nonce) was already received; a replay is refused")]
    Replayed,
    /// The hub's memory of recent requests is full and this agent sends the most: retry later.
    #[error(
        "the hub is receiving more signed requests than it can remember, most of them from this agent; retry later"
    )]
    Busy,
}

/// The memory of recently seen requests; cheap to share behind the hub's `Arc`.
#[derive(Debug)]
pub struct ReplayGuard {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    max_entries: usize,
    seen: HashSet<(AgentId, String)>,
    /// The same pairs ordered by request timestamp, for pruning and eviction.
    by_time: BTreeSet<(i64, AgentId, String)>,
    per_agent: HashMap<AgentId, usize>,
    /// Per agent, the highest timestamp of an entry evicted early (see the module doc).
    floors: HashMap<AgentId, i64>,
}

impl ReplayGuard {
    /// A guard that remembers at most `max_entries` pairs (at least one).
    pub fn new(max_entries: usize) -> ReplayGuard {
        ReplayGuard {
            state: Mutex::new(State {
                max_entries: max_entries.max(1),
                seen: HashSet::new(),
                by_time: BTreeSet::new(),
                per_agent: HashMap::new(),
                floors: HashMap::new(),
            }),
        }
    }

    /// Records `(agent, nonce)` of a request signed at `timestamp` (Unix seconds), the hub's
    /// time being `now_secs`; refuses a pair already seen. Call it only for requests whose
    /// signature and timestamp have been checked, so strangers cannot fill the memory.
    pub fn check(
        &self,
        agent: &AgentId,
        nonce: &str,
        timestamp: i64,
        now_secs: i64,
    ) -> Result<(), ReplayError> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.prune(now_secs.saturating_sub(MAX_CLOCK_SKEW_SECS));
        let key = (agent.clone(), nonce.to_owned());
        if s.seen.contains(&key) {
            return Err(ReplayError::Replayed);
        }
        if s.floors.get(agent).is_some_and(|floor| timestamp <= *floor) {
            return Err(ReplayError::Busy);
        }
        if s.seen.len() >= s.max_entries {
            let busiest = s.busiest().ok_or(ReplayError::Busy)?;
            if busiest == *agent {
                return Err(ReplayError::Busy);
            }
            s.evict_oldest_of(&busiest);
            if s.seen.len() >= s.max_entries {
                return Err(ReplayError::Busy);
            }
        }
        s.by_time.insert((timestamp, key.0.clone(), key.1.clone()));
        *s.per_agent.entry(key.0.clone()).or_insert(0) += 1;
        s.seen.insert(key);
        Ok(())
    }

    /// How many pairs are remembered now.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ReplayGuard {
    fn default() -> ReplayGuard {
        ReplayGuard::new(DEFAULT_MAX_ENTRIES)
    }
}

impl State {
    /// Forgets every pair (and floor) with a timestamp before `oldest_allowed`: a request that
    /// old is refused by the clock check.
    fn prune(&mut self, oldest_allowed: i64) {
        while let Some(first) = self.by_time.first() {
            if first.0 >= oldest_allowed {
                break;
            }
            if let Some((_, agent, nonce)) = self.by_time.pop_first() {
                self.forget(agent, nonce);
            }
        }
        self.floors.retain(|_, floor| *floor >= oldest_allowed);
    }

    fn forget(&mut self, agent: AgentId, nonce: String) {
        if let Some(n) = self.per_agent.get_mut(&agent) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_agent.remove(&agent);
            }
        }
        self.seen.remove(&(agent, nonce));
    }

    fn busiest(&self) -> Option<AgentId> {
        self.per_agent
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(agent, _)| agent.clone())
    }

    fn evict_oldest_of(&mut self, agent: &AgentId) {
        let oldest = self.by_time.iter().find(|(_, a, _)| a == agent).cloned();
        if let Some(entry) = oldest {
            self.by_time.remove(&entry);
            let (ts, agent, nonce) = entry;
            let floor = self.floors.entry(agent.clone()).or_insert(ts);
            *floor = (*floor).max(ts);
            self.forget(agent, nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_762_113;

    fn agent(n: u32) -> AgentId {
        AgentId::parse(&format!("430112-{n:08x}")).unwrap()
    }

    #[test]
    fn the_same_request_twice_is_refused() {
        let g = ReplayGuard::default();
        assert_eq!(g.check(&agent(1), "00ff00ff00ff00ff", NOW, NOW), Ok(()));
        assert_eq!(
            g.check(&agent(1), "00ff00ff00ff00ff", NOW, NOW + 10),
            Err(ReplayError::Replayed)
        );
        // Another nonce, or the same nonce from another agent, is a different request.
        assert_eq!(g.check(&agent(1), "00ff00ff00ff00fe", NOW, NOW), Ok(()));
        assert_eq!(g.check(&agent(2), "00ff00ff00ff00ff", NOW, NOW), Ok(()));
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn pairs_older_than_the_window_are_forgotten() {
        let g = ReplayGuard::default();
        g.check(&agent(1), "aa", NOW, NOW).unwrap();
        g.check(&agent(1), "bb", NOW + 100, NOW + 100).unwrap();
        // Still inside the window: remembered.
        assert_eq!(
            g.check(&agent(1), "aa", NOW, NOW + MAX_CLOCK_SKEW_SECS),
            Err(ReplayError::Replayed)
        );
        // One second later the first pair has left the window (the clock check refuses it).
        g.check(&agent(1), "cc", NOW + 301, NOW + MAX_CLOCK_SKEW_SECS + 1)
            .unwrap();
        assert_eq!(g.len(), 2);
        g.check(&agent(2), "dd", NOW + 10_000, NOW + 10_000)
            .unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_full_memory_refuses_the_busiest_agent_and_never_grows() {
        let g = ReplayGuard::new(4);
        for (i, n) in ["a1", "a2", "a3"].iter().enumerate() {
            g.check(&agent(1), n, NOW + i as i64, NOW).unwrap();
        }
        g.check(&agent(2), "b1", NOW, NOW).unwrap();
        assert_eq!(g.len(), 4);
        // The busiest agent is told to come back later.
        assert_eq!(g.check(&agent(1), "a4", NOW, NOW), Err(ReplayError::Busy));
        // Another agent still gets in, at the busiest agent's expense.
        assert_eq!(g.check(&agent(3), "c1", NOW, NOW), Ok(()));
        assert_eq!(g.len(), 4);
        // The evicted pair (a1, at NOW) cannot be replayed: it is below agent 1's floor.
        assert_eq!(g.check(&agent(1), "a1", NOW, NOW), Err(ReplayError::Busy));
        // Replays of remembered pairs are still replays.
        assert_eq!(
            g.check(&agent(1), "a2", NOW + 1, NOW),
            Err(ReplayError::Replayed)
        );
        // Once the window passes, everything is forgotten and agent 1 is welcome again.
        let later = NOW + 1000;
        assert_eq!(g.check(&agent(1), "a5", later, later), Ok(()));
        assert_eq!(g.len(), 1);
    }
}
