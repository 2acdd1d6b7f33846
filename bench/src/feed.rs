//! In-process county agents for the benchmarks and the generator. Each one enrolls with a
//! real one-time token and proof of key possession, signs records into its own hash chain and
//! sends them to a [`Hub`] as `BatchRequest`s through [`Hub::ingest`], the path an HTTP batch
//! takes once its signature headers are checked. Nothing here goes around the hub's checks, so
//! what the hub stores (envelopes, ledger, held set, violations) is what a real hub would hold.
//!
//! Like a real agent, it checks every receipt with the hub key it got at enrollment and sends
//! back the outcome cursor the last receipt gave it.

use tongbu_hub::Hub;
use tongbu_shared::crypto::Domain;
use tongbu_shared::protocol::{BatchRequest, EnrollRequest, Heartbeat, Receipt};
use tongbu_shared::signed::{Signed, enroll_proof_bytes};
use tongbu_shared::{AgentId, CountyCode, Digest, Envelope, KeyPair, PublicKey};

/// One simulated county agent: its key, chain head and outcome cursor.
pub struct BenchAgent {
    pub id: AgentId,
    key: KeyPair,
    hub_key: PublicKey,
    /// The last seq signed and its hash.
    head: u64,
    prev: Digest,
    cursor: u64,
}

impl BenchAgent {
    /// Issues a token for `county` and enrolls a key made from `seed` with it.
    pub async fn enroll(hub: &Hub, county: &CountyCode, seed: [u8; 32]) -> anyhow::Result<Self> {
        let token = hub.issue_token(county.clone(), 1).await?;
        let key = KeyPair::from_seed(&seed)?;
        let token = token.token.expose().to_owned();
        let proof = key.sign(
            Domain::Enroll,
            &enroll_proof_bytes(&token, &key.public_key()),
        );
        let enrolled = hub
            .enroll(EnrollRequest {
                token,
                public_key: key.public_key(),
                proof,
                agent_version: "bench".into(),
                hostname: None,
            })
            .await?;
        Ok(BenchAgent {
            id: enrolled.agent_id,
            key,
            hub_key: enrolled.hub_public_key,
            head: 0,
            prev: Digest::GENESIS,
            cursor: 0,
        })
    }

    /// Signs `bodies` onto the end of this agent's chain.
    pub fn sign<B: Into<Vec<u8>>>(&mut self, bodies: impl IntoIterator<Item = B>) -> Vec<Envelope> {
        bodies
            .into_iter()
            .map(|body| {
                self.head += 1;
                let e = Envelope::sign(
                    &self.key,
                    self.id.clone(),
                    self.head,
                    self.prev,
                    body.into(),
                );
                self.prev = e.hash();
                e
            })
            .collect()
    }

    /// Sends one batch (the next envelopes of the chain, in order) and checks the hub's signed
    /// receipt: it must verify with the enrollment key and acknowledge the whole batch.
    pub async fn send(&mut self, hub: &Hub, envelopes: Vec<Envelope>) -> anyhow::Result<Receipt> {
        let last = envelopes.last().map_or(0, |e| e.seq);
        let read_id = self.id.clone();
        let agent = hub
            .db()
            .read(move |r| r.agent(&read_id))
            .await?
            .ok_or_else(|| anyhow::anyhow!("agent {} vanished", self.id))?;
        let req = BatchRequest {
            heartbeat: Heartbeat {
                head_seq: self.head,
                queue_depth: self.head.saturating_sub(last),
                agent_version: "bench".into(),
                last_error: None,
                outcome_cursor: self.cursor,
                log_size: 0,
            },
            envelopes,
        };
        let signed: Signed<Receipt> = hub
            .ingest(agent, req)
            .await
            .map_err(|e| anyhow::anyhow!("the hub refused a batch of {}: {e}", self.id))?;
        let receipt = signed
            .verify(&self.hub_key)
            .map_err(|e| anyhow::anyhow!("receipt for {} does not verify: {e}", self.id))?;
        anyhow::ensure!(
            receipt.acked_seq == last,
            "the hub acknowledged {} up to {}, not {last}",
            self.id,
            receipt.acked_seq
        );
        self.cursor = receipt.outcome_cursor;
        Ok(receipt)
    }
}
