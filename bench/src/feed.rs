//! Simulated county agents for the benchmarks and the generator. Each one enrolls with a real
//! one-time token and proof of key possession, signs records into its own hash chain and sends
//! them as `BatchRequest`s: in process through [`Hub::ingest`] (the path an HTTP batch takes
//! once its signature headers are checked), or over the network to a running `tongbu-hub`
//! through `tongbu-agent`'s own [`HubClient`], so the requests are signed, sent and their
//! receipts verified exactly as the real agent does it. Nothing here goes around the hub's
//! checks, so what the hub stores (envelopes, ledger, held set, violations) is what a real hub
//! would hold.
//!
//! Like a real agent, it checks every receipt with the hub key it got at enrollment, sends
//! back the outcome cursor the last receipt gave it, and names in its heartbeat the size of
//! the last hub log checkpoint it verified (so the hub builds the same consistency proofs).

use std::sync::Arc;

use tongbu_agent::client::{Credentials, HubClient};
use tongbu_hub::Hub;
use tongbu_shared::crypto::Domain;
use tongbu_shared::protocol::{BatchRequest, EnrollRequest, EnrollResponse, Heartbeat, Receipt};
use tongbu_shared::signed::{Signed, enroll_proof_bytes};
use tongbu_shared::{AgentId, CountyCode, Digest, Envelope, KeyPair};

/// One simulated county agent: its key, chain head, outcome cursor and log size.
pub struct BenchAgent {
    pub id: AgentId,
    creds: Credentials,
    /// The last seq signed and its hash.
    head: u64,
    prev: Digest,
    cursor: u64,
    log_size: u64,
}

impl BenchAgent {
    /// Issues a token for `county` and enrolls a key made from `seed` with it, in process.
    pub async fn enroll(hub: &Hub, county: &CountyCode, seed: [u8; 32]) -> anyhow::Result<Self> {
        let token = hub.issue_token(county.clone(), 1).await?;
        let key = KeyPair::from_seed(&seed)?;
        let enrolled = hub
            .enroll(enroll_request(token.token.expose(), &key))
            .await?;
        Ok(BenchAgent::enrolled(key, enrolled))
    }

    /// Enrolls a key made from `seed` with `token` through `client` (a running hub).
    pub async fn enroll_over(
        client: &HubClient,
        token: &str,
        seed: [u8; 32],
    ) -> anyhow::Result<Self> {
        let key = KeyPair::from_seed(&seed)?;
        let enrolled = client.enroll(&enroll_request(token, &key)).await?;
        Ok(BenchAgent::enrolled(key, enrolled))
    }

    fn enrolled(key: KeyPair, enrolled: EnrollResponse) -> BenchAgent {
        BenchAgent {
            id: enrolled.agent_id.clone(),
            creds: Credentials {
                agent: enrolled.agent_id,
                key: Arc::new(key),
                hub_key: enrolled.hub_public_key,
            },
            head: 0,
            prev: Digest::GENESIS,
            cursor: 0,
            log_size: 0,
        }
    }

    /// Signs `bodies` onto the end of this agent's chain.
    pub fn sign<B: Into<Vec<u8>>>(&mut self, bodies: impl IntoIterator<Item = B>) -> Vec<Envelope> {
        bodies
            .into_iter()
            .map(|body| {
                self.head += 1;
                let e = Envelope::sign(
                    &self.creds.key,
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

    /// The batch carrying `envelopes` (the next ones of the chain, in order) and the
    /// heartbeat a real agent sends with it.
    fn batch(&self, envelopes: Vec<Envelope>) -> BatchRequest {
        let last = envelopes.last().map_or(self.head, |e| e.seq);
        BatchRequest {
            heartbeat: Heartbeat {
                head_seq: self.head,
                queue_depth: self.head.saturating_sub(last),
                agent_version: "bench".into(),
                last_error: None,
                outcome_cursor: self.cursor,
                log_size: self.log_size,
            },
            envelopes,
        }
    }

    /// Takes a verified receipt for a batch that ended at `last`: it must acknowledge the
    /// whole batch; its cursor and log size are sent back with the next batch.
    fn take(&mut self, receipt: Receipt, last: u64) -> anyhow::Result<Receipt> {
        anyhow::ensure!(
            receipt.acked_seq == last,
            "the hub acknowledged {} up to {}, not {last}",
            self.id,
            receipt.acked_seq
        );
        self.cursor = receipt.outcome_cursor;
        if let Some(log) = &receipt.log {
            let checkpoint = log
                .checkpoint
                .verify(&self.creds.hub_key)
                .map_err(|e| anyhow::anyhow!("checkpoint for {} does not verify: {e}", self.id))?;
            self.log_size = checkpoint.tree_size;
        }
        Ok(receipt)
    }

    /// Sends one batch in process and checks the hub's signed receipt: it must verify with
    /// the enrollment key and acknowledge the whole batch.
    pub async fn send(&mut self, hub: &Hub, envelopes: Vec<Envelope>) -> anyhow::Result<Receipt> {
        let last = envelopes.last().map_or(self.head, |e| e.seq);
        let read_id = self.id.clone();
        let agent = hub
            .db()
            .read(move |r| r.agent(&read_id))
            .await?
            .ok_or_else(|| anyhow::anyhow!("agent {} vanished", self.id))?;
        let signed: Signed<Receipt> = hub
            .ingest(agent, self.batch(envelopes))
            .await
            .map_err(|e| anyhow::anyhow!("the hub refused a batch of {}: {e}", self.id))?;
        let receipt = signed
            .verify(&self.creds.hub_key)
            .map_err(|e| anyhow::anyhow!("receipt for {} does not verify: {e}", self.id))?;
        self.take(receipt, last)
    }

    /// Sends one batch (empty: a heartbeat) to a running hub through `client`, signed as
    /// `tongbu-agent` signs it; the receipt is verified by the client, then checked here.
    pub async fn send_over(
        &mut self,
        client: &HubClient,
        envelopes: Vec<Envelope>,
    ) -> anyhow::Result<Receipt> {
        let last = envelopes.last().map_or(self.head, |e| e.seq);
        let receipt = client
            .send_batch(&self.creds, &self.batch(envelopes))
            .await?;
        self.take(receipt, last)
    }
}

/// The enrollment request for `token` with `key`, and its proof of possession.
fn enroll_request(token: &str, key: &KeyPair) -> EnrollRequest {
    let proof = key.sign(
        Domain::Enroll,
        &enroll_proof_bytes(token, &key.public_key()),
    );
    EnrollRequest {
        token: token.to_owned(),
        public_key: key.public_key(),
        proof,
        agent_version: "bench".into(),
        hostname: None,
    }
}
