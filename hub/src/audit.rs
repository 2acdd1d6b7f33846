//! `tongbu-hub audit verify`: re-checks offline, from the database and the hub's public key
//! alone, everything the hub's word rests on — every envelope's signature (with the key of its
//! seq, across rotations), every agent's hash chain, every stored hash, the whole Merkle log
//! rebuilt from the envelopes and compared node by node (every node the log stores), every signed checkpoint's signature
//! and root, and each agent's acknowledged head. It reads only, in pages of one snapshot each,
//! so it may run beside a serving hub: it checks the log up to the size it found at the start.
//! It never stops at the first problem: it counts them all and names the first few.
//! [`verify_reporting`] shows its progress on stderr (`tongbu_shared::progress`).

use std::collections::HashMap;

use tongbu_shared::checkpoint::{self, Checkpoint};
use tongbu_shared::crypto::{Digest, PublicKey};
use tongbu_shared::envelope::Envelope;
use tongbu_shared::ids::AgentId;
use tongbu_shared::merkle::Frontier;

use crate::log;
use crate::rotate::AgentKeys;
use crate::store::{self, Store, StoreError, StoredCheckpoint, StoredEnvelope};

/// Envelopes read per snapshot.
const PAGE: usize = 4_000;
/// Problems named in the report (all are counted).
const NAMED_PROBLEMS: usize = 20;

/// What the audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub envelopes: u64,
    pub agents: u64,
    pub checkpoints: u64,
    pub tree_size: u64,
    pub root: Option<Digest>,
    pub problem_count: u64,
    /// The first problems found, in the order found.
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < NAMED_PROBLEMS {
            self.problems.push(text);
        }
    }
}

/// How far the audit has come: envelopes checked of the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// An agent's chain as the audit walks it.
struct Chain {
    keys: AgentKeys,
    seq: u64,
    hash: Digest,
    /// Its acknowledged head as the agents table says, at the start.
    acked_seq: u64,
    head_hash: Digest,
}

/// Runs the audit against `store` with the hub's public key `hub_key`, calling `progress`
/// after each page.
pub fn verify(
    store: &mut dyn Store,
    hub_key: &PublicKey,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, StoreError> {
    let (size, mut chains) = store::read(store, |r| {
        let size = r.log_size()?;
        let mut chains = HashMap::new();
        for agent in r.agents()? {
            let keys = AgentKeys::of(r, &agent)?;
            chains.insert(
                agent.id.clone(),
                Chain {
                    keys,
                    seq: 0,
                    hash: Digest::GENESIS,
                    acked_seq: agent.acked_seq,
                    head_hash: agent.head_hash,
                },
            );
        }
        Ok::<_, StoreError>((size, chains))
    })?;
    let mut report = Report {
        envelopes: 0,
        agents: chains.len() as u64,
        checkpoints: 0,
        tree_size: size,
        root: None,
        problem_count: 0,
        problems: Vec::new(),
    };
    let mut frontier = Frontier::new();
    let mut next_checkpoint = next_checkpoints(store, 0)?;
    // Checkpoints are checked as the rebuilt tree reaches their size; the empty tree has none.
    let mut arrival = 0u64;
    while arrival < size {
        let limit = PAGE.min(usize::try_from(size - arrival).unwrap_or(PAGE));
        let (page, stored_nodes) = store::read(store, |r| {
            let page = r.envelopes_by_arrival(arrival, limit)?;
            // The nodes the rebuilt tree will produce for this page, read in the same snapshot.
            let mut probe = frontier.clone();
            let mut nodes = Vec::with_capacity(page.len() * 2);
            for e in &page {
                for (level, idx, _) in probe.push(checkpoint::leaf_hash(&e.agent, e.seq, &e.hash).0)
                {
                    nodes.push(r.log_node(level, idx)?);
                }
            }
            Ok::<_, StoreError>((page, nodes))
        })?;
        if page.is_empty() {
            report.problem(format!(
                "the log holds {size} entries but envelopes stop at arrival {arrival}"
            ));
            break;
        }
        let bad_sigs = check_signatures(&page, &chains);
        let mut stored_nodes = stored_nodes.into_iter();
        for (i, e) in page.iter().enumerate() {
            arrival += 1;
            if e.arrival != Some(arrival) {
                report.problem(format!(
                    "{} seq {}: arrival {:?} where {arrival} was expected",
                    e.agent, e.seq, e.arrival
                ));
            }
            check_chain(&mut report, &mut chains, e, bad_sigs.contains(&i));
            let leaf = checkpoint::leaf_hash(&e.agent, e.seq, &e.hash);
            for (level, idx, hash) in frontier.push(leaf.0) {
                match stored_nodes.next().flatten() {
                    Some(s) if s.0 == hash => {}
                    Some(_) => report.problem(format!(
                        "log node (level {level}, index {idx}) differs from the one rebuilt from the envelopes"
                    )),
                    // Lower levels are recomputed from the envelopes, not stored (older
                    // hubs stored them; those rows are compared above).
                    None if level < log::STORED_FROM_LEVEL => {}
                    None => report.problem(format!(
                        "log node (level {level}, index {idx}) is missing"
                    )),
                }
            }
            report.envelopes += 1;
            while let Some(cp) = next_checkpoint.first() {
                if cp.checkpoint.tree_size > frontier.size() {
                    break;
                }
                check_checkpoint(&mut report, cp, hub_key, &frontier);
                next_checkpoint.remove(0);
                if next_checkpoint.is_empty() {
                    next_checkpoint = next_checkpoints(store, frontier.size())?;
                }
            }
        }
        progress(Progress {
            done: report.envelopes,
            total: size,
        });
    }
    // Checkpoints beyond the log's size were signed over entries that are not there.
    let beyond = store::read(store, |r| r.log_checkpoint(None))?;
    if let Some(last) = beyond {
        if last.checkpoint.tree_size > size {
            report.problem(format!(
                "a checkpoint of {} entries was signed but the log holds {size}",
                last.checkpoint.tree_size
            ));
        }
    }
    for (agent, chain) in &chains {
        if chain.acked_seq > chain.seq {
            report.problem(format!(
                "{agent}: acknowledged through seq {} but the log holds only {}",
                chain.acked_seq, chain.seq
            ));
        } else if chain.acked_seq == chain.seq && chain.hash != chain.head_hash {
            report.problem(format!(
                "{agent}: the acknowledged head hash differs from the stored chain's"
            ));
        }
    }
    report.root = (size > 0).then(|| Digest(frontier.root()));
    Ok(report)
}

/// [`verify`], showing the envelopes checked on stderr: a bar on a terminal, otherwise a line
/// every few seconds and one at the end.
pub fn verify_reporting(store: &mut dyn Store, hub_key: &PublicKey) -> Result<Report, StoreError> {
    // The total is known once the audit has read the log's size, at its first page.
    let mut shown: Option<tongbu_shared::progress::Progress> = None;
    let report = verify(store, hub_key, &mut |p| {
        shown
            .get_or_insert_with(|| {
                tongbu_shared::progress::Progress::new("audit", Some(p.total)).unit("envelopes")
            })
            .set(p.done);
    });
    if let Some(shown) = shown {
        shown.finish();
    }
    report
}

fn next_checkpoints(
    store: &mut dyn Store,
    after: u64,
) -> Result<Vec<StoredCheckpoint>, StoreError> {
    store::read(store, |r| r.log_checkpoints_after(after, 512))
}

/// The indexes in `page` of envelopes whose signature does not verify with their agent's key
/// for that seq (unknown agents are reported by the chain check). Spread over the cores.
fn check_signatures(page: &[StoredEnvelope], chains: &HashMap<AgentId, Chain>) -> Vec<usize> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = page.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = page
            .chunks(per)
            .enumerate()
            .map(|(c, chunk)| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| {
                            chains.get(&e.agent).is_some_and(|chain| {
                                envelope_of(e).verify(chain.keys.for_seq(e.seq)).is_err()
                            })
                        })
                        .map(|(i, _)| c * per + i)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn envelope_of(e: &StoredEnvelope) -> Envelope {
    Envelope {
        agent: e.agent.clone(),
        seq: e.seq,
        prev: e.prev,
        body: e.body.clone(),
        sig: e.sig,
    }
}

fn check_chain(
    report: &mut Report,
    chains: &mut HashMap<AgentId, Chain>,
    e: &StoredEnvelope,
    bad_signature: bool,
) {
    let name = format!("{} seq {}", e.agent, e.seq);
    let Some(chain) = chains.get_mut(&e.agent) else {
        report.problem(format!("{name}: no such agent is enrolled"));
        return;
    };
    if bad_signature {
        report.problem(format!("{name}: the signature does not verify"));
    }
    if e.seq != chain.seq + 1 {
        report.problem(format!("{name}: follows seq {} in the log", chain.seq));
    }
    if e.prev != chain.hash {
        report.problem(format!(
            "{name}: prev does not link to the previous envelope's hash"
        ));
    }
    if envelope_of(e).hash() != e.hash {
        report.problem(format!(
            "{name}: the stored hash is not the envelope's hash"
        ));
    }
    chain.seq = e.seq;
    chain.hash = e.hash;
}

fn check_checkpoint(
    report: &mut Report,
    cp: &StoredCheckpoint,
    hub_key: &PublicKey,
    frontier: &Frontier,
) {
    let size = cp.checkpoint.tree_size;
    report.checkpoints += 1;
    match cp.signed.verify(hub_key) {
        Err(e) => report.problem(format!("checkpoint of {size} entries: {e}")),
        Ok(signed) if signed != cp.checkpoint => report.problem(format!(
            "checkpoint of {size} entries: the signed text differs from the stored columns"
        )),
        Ok(Checkpoint { root, .. }) if root.0 != frontier.root() => report.problem(format!(
            "checkpoint of {size} entries: its root is not the root rebuilt from the envelopes"
        )),
        Ok(_) => {}
    }
}
