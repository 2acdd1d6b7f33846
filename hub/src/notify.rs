//! systemd notifications for `tongbu-hub serve`: `READY=1` once the listener is bound, a
//! `STATUS=` line with the agents and records the hub holds, `WATCHDOG=1` while the database
//! answers, `STOPPING=1` when shutdown begins. The loop itself is
//! [`tongbu_agent::notify::keep_alive`] (the binary links the agent library for its demo).
//!
//! Invariants: nothing happens without `NOTIFY_SOCKET`. A ping is sent only after a read
//! through the reader pool and a no-op job through the single writer both answered within half
//! the watchdog interval: a hub whose writer thread hangs stops pinging and systemd restarts it.

use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::watch;
use tongbu_agent::notify::{self, Health, Note, Pacing};
use tongbu_hub::hub::Hub;
use tongbu_hub::store::StoreError;
use tongbu_shared::protocol::AgentState;

/// Tells systemd the hub is ready (its listener is bound at `addr`) and keeps it informed;
/// returns `shutdown` wrapped so that `STOPPING=1` is sent, and the keep-alive task stopped,
/// as soon as it completes. Call it inside the runtime, after the READY line.
pub fn serving(
    hub: &Hub,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    if notify::enabled() {
        notify::send(&[Note::Ready, Note::Status(format!("serving on {addr}"))]);
        let hub = hub.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            notify::keep_alive(|| check(hub.clone(), addr), Pacing::from_env(), stopped).await;
        });
    }
    async move {
        shutdown.await;
        notify::send(&[Note::Stopping]);
        let _ = stop_tx.send(true);
    }
}

/// The hub's health: the reader pool answers a small read, and the writer thread runs a no-op
/// job (it answers only after every write queued before it).
async fn check(hub: Hub, addr: SocketAddr) -> Health {
    let (agents, records) = hub
        .db()
        .read(|r| Ok::<_, StoreError>((r.agent_state_counts()?, r.last_arrival()?)))
        .await
        .map_err(|e| format!("the database cannot be read: {e}"))?;
    hub.db()
        .flush()
        .await
        .map_err(|e| format!("the database writer does not answer: {e}"))?;
    Ok(status_line(addr, &agents, records))
}

fn status_line(addr: SocketAddr, agents: &[(AgentState, u64)], records: u64) -> String {
    let count = |state: AgentState| {
        agents
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let all: u64 = agents.iter().map(|(_, n)| n).sum();
    format!(
        "serving on {addr}; {all} agents ({} active, {} quarantined, {} revoked); {records} records",
        count(AgentState::Active),
        count(AgentState::Quarantined),
        count(AgentState::Revoked),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_agents_by_state() {
        let addr = SocketAddr::from(([0, 0, 0, 0], 8440));
        let line = status_line(
            addr,
            &[(AgentState::Active, 3), (AgentState::Quarantined, 1)],
            1234,
        );
        assert_eq!(
            line,
            "serving on 0.0.0.0:8440; 4 agents (3 active, 1 quarantined, 0 revoked); 1234 records"
        );
    }
}
