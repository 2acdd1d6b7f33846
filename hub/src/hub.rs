//! The running hub: its database handle, signing key, clock, randomness, policy cache and
//! counters, and the operations the HTTP layer (and the demo) call. Each operation takes
//! parsed input and returns a domain result; none knows about HTTP. Signature checks run in
//! `spawn_blocking`, never on the writer thread, one batch per core at a time, and a reply is
//! built only after the write behind it has committed. Agent requests are authenticated by signature, clock and a
//! bounded replay memory ([`crate::replay`]); a key rotation ([`Hub::rotate_key`]) switches the
//! key requests must be signed with. Start-up refuses a database that fails `quick_check`.

use std::path::Path;
use std::sync::Arc;

use ring::rand::SystemRandom;
use tokio::sync::Semaphore;
use tongbu_shared::KeyPair;
use tongbu_shared::checkpoint::LogProof;
use tongbu_shared::crypto::PublicKey;
use tongbu_shared::envelope::Envelope;
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::policy::PolicyDoc;
use tongbu_shared::protocol::{
    AgentRow, AgentState, BatchRequest, EnrollRequest, EnrollResponse, KeyRotated,
    PROTOCOL_VERSION, Receipt, RotateKeyRequest, Watermark,
};
use tongbu_shared::rules::Totals;
use tongbu_shared::signed::{Signed, SignedPayload};

use crate::admin::{self, AdminError, CountyAdded, IssuedToken, Secret};
use crate::auth::{self, AuthError, AuthHeaders};
use crate::clock::Clock;
use crate::db::Db;
use crate::enroll::{self, EnrollError};
use crate::ingest::{self, Applied, Contact, IngestError, KeyTables, VerifiedBatch};
use crate::keys::{self, KeyError};
use crate::ledger::{self, Judged};
use crate::log;
use crate::metrics::{Gauges, Metrics};
use crate::policy::{self, CurrentPolicy, PolicyAdminError, PolicyCache, PolicySet};
use crate::replay::ReplayGuard;
use crate::rotate::{self, AgentKeys, RotateError};
use crate::sequence::{self, Sequencer};
use crate::store::{
    self, AgentRecord, Role, SqliteStore, StoreError, StoredCheckpoint, StoredEnvelope,
    ViolationFilter, ViolationRow,
};

/// Who the in-process admin calls are recorded as in the audit log.
const LOCAL_ACTOR: &str = "local";

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot make the first policy version: {0}")]
    Policy(#[from] PolicyAdminError),
}

/// Why a request's caller was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no agent {0} is enrolled")]
    UnknownAgent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cheap, cloneable handle to the running hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    key: Arc<KeyPair>,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    metrics: Metrics,
    policies: PolicyCache,
    replay: ReplayGuard,
    /// Batches whose signatures are being checked at once: one per core is all the CPU there
    /// is, and it bounds the memory (a batch's prepared key is ~0.7 MB).
    verifiers: Semaphore,
    /// Agent keys prepared for checking signatures, kept for their next batches.
    tables: Arc<KeyTables>,
    /// Each agent's batches in flight, kept in seq order on their way to the writer.
    sequencer: Sequencer,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("public_key", &self.inner.key.public_key())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Opens the hub's database and key in `data_dir` (creating both, and the directory, on
    /// first use), refusing a database that fails `PRAGMA quick_check`. Makes policy version 1 if there is none yet, and judges any records stored
    /// before the ledger existed, before anything else is served.
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<Hub, OpenError> {
        let mut writer = SqliteStore::open(data_dir)?;
        // A damaged file is refused before anything is read from it or written to it.
        writer.check_integrity(false)?;
        let rng = SystemRandom::new();
        let key = keys::load_or_create(data_dir, &rng)?;
        let now = clock.now_ms();
        store::write(&mut writer, |w| policy::ensure_initial(w, &key, now, "hub"))?;
        let policies = PolicyCache::default();
        loop {
            let judged = store::write(&mut writer, |w| {
                ledger::judge_unjudged(w, &policies, now, ledger::JUDGE_CHUNK)
            })?;
            if judged == 0 {
                break;
            }
            tracing::info!(records = judged, "judged records stored before the ledger");
        }
        loop {
            let added = store::write(&mut writer, log::catch_up)?;
            if added == 0 {
                break;
            }
            tracing::info!(records = added, "added records stored before the log to it");
        }
        let db = Db::start_sqlite(writer, data_dir)?;
        Ok(Hub {
            inner: Arc::new(Inner {
                db,
                key: Arc::new(key),
                clock,
                rng,
                metrics: Metrics::default(),
                policies,
                replay: ReplayGuard::default(),
                verifiers: Semaphore::new(
                    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
                ),
                tables: Arc::default(),
                sequencer: Sequencer::default(),
            }),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.inner.key.public_key()
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The hub's time (Unix milliseconds) from its injected clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The hub's randomness (for console sessions and tokens).
    pub(crate) fn rng(&self) -> &SystemRandom {
        &self.inner.rng
    }

    /// The hub's signing key (for policy versions set from the console).
    pub(crate) fn signing_key(&self) -> &KeyPair {
        &self.inner.key
    }

    fn sign<T: SignedPayload>(&self, value: &T) -> Result<Signed<T>, IngestError> {
        Signed::sign(&self.inner.key, value).map_err(|e| IngestError::Internal(e.to_string()))
    }

    // ---- agent-facing calls -------------------------------------------------------------

    /// Checks an agent request's signature headers against the enrolled key of `path_agent`
    /// and the hub's clock, then refuses a replay of a request already seen; returns the agent
    /// as stored.
    pub async fn authenticate(
        &self,
        path_agent: &str,
        headers: &AuthHeaders<'_>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<AgentRecord, AccessError> {
        let auth = auth::parse_request_auth(headers, path_agent)?;
        let id = auth.agent.clone();
        let agent = self
            .db()
            .read(move |r| r.agent(&id))
            .await?
            .ok_or_else(|| AccessError::UnknownAgent(path_agent.to_owned()))?;
        let now = self.now_ms();
        auth::verify_request(&auth, &agent.public_key, method, path_and_query, body, now)?;
        self.inner
            .replay
            .check(
                &auth.agent,
                &auth.nonce,
                auth.timestamp,
                now.div_euclid(1000),
            )
            .map_err(AuthError::from)?;
        Ok(agent)
    }

    /// Enrolls a new agent with a one-time token.
    pub async fn enroll(&self, req: EnrollRequest) -> Result<EnrollResponse, EnrollError> {
        enroll::check_proof(&req)?;
        let now = self.now_ms();
        let rng = self.inner.rng.clone();
        let enrolled = self
            .db()
            .write(move |w| enroll::apply(w, &req, now, &rng))
            .await?;
        tracing::info!(agent = %enrolled.agent_id, county = %enrolled.county, "agent enrolled");
        Ok(EnrollResponse {
            agent_id: enrolled.agent_id,
            county: enrolled.county,
            county_name: enrolled.county_name,
            hub_public_key: self.public_key(),
            protocol: PROTOCOL_VERSION,
        })
    }

    /// Takes in an authenticated agent's batch and answers with a signed receipt, given only
    /// once the batch is durably stored.
    pub async fn ingest(
        &self,
        agent: AgentRecord,
        batch: BatchRequest,
    ) -> Result<Signed<Receipt>, IngestError> {
        let metrics = &self.inner.metrics;
        let _timer = metrics.batch_received(batch.envelopes.len());
        let now = self.now_ms();
        let contact = Contact::with_heartbeat(now, &batch.heartbeat);
        let cursor = batch.heartbeat.outcome_cursor;
        let id = agent.id.clone();
        // Pipelined batches of one agent reach the writer in seq order (see `sequence`).
        let sequencer = &self.inner.sequencer;
        let ticket = batch
            .envelopes
            .first()
            .map(|e| sequencer.enter(&id, e.seq, agent.acked_seq));
        let verified = match self.verify(&agent, batch.envelopes).await {
            Ok(v) => v,
            Err(e) => {
                metrics.batch_refused();
                self.note(id, contact).await;
                return Err(e);
            }
        };
        if let Some(ticket) = &ticket
            && sequencer.wait_turn(ticket, sequence::MAX_WAIT).await
        {
            tracing::debug!(agent = %id, "an earlier batch of the agent did not arrive in time");
        }
        let policies = self.inner.policies.clone();
        let key = Arc::clone(&self.inner.key);
        let log_from = batch.heartbeat.log_size;
        // Shared with the writer so that the batch is freed here, not on the writer's time.
        let verified = Arc::new(verified);
        let shared = Arc::clone(&verified);
        let applied = self
            .db()
            .write(move |w| {
                let applied = ingest::apply(w, &policies, &shared, &contact, cursor)?;
                let sealed = match &applied {
                    Applied::Stored(_) => log::seal(w, &key, now)?,
                    Applied::Refused(_) => None,
                };
                Ok::<_, StoreError>((applied, sealed))
            })
            .await;
        match applied {
            Ok((Applied::Stored(stored), sealed)) => {
                sequencer.stored(&id, stored.acked_seq);
                metrics.envelopes_stored(stored.appended);
                metrics.judged(&stored.judged);
                let log = match sealed {
                    Some(at) => Some(self.log_proof(at, &id, stored.acked_seq, log_from).await?),
                    None => None,
                };
                if log.as_ref().map_or(0, |l| l.consistency_from) == 0 && log_from > 0 {
                    self.agent_holds_a_larger_log(&id, log_from, log.as_ref());
                }
                self.sign(&Receipt {
                    agent_id: id,
                    acked_seq: stored.acked_seq,
                    head_hash: stored.head_hash,
                    outcomes: stored.outcomes,
                    hub_time_ms: now,
                    updates: stored.updates,
                    outcome_cursor: stored.outcome_cursor,
                    policy_version: stored.policy_version,
                    log,
                })
            }
            Ok((Applied::Refused(e), _)) => {
                metrics.batch_refused();
                if matches!(e, IngestError::Equivocation { .. }) {
                    metrics.equivocation();
                }
                Err(e)
            }
            Err(e) => {
                metrics.batch_refused();
                Err(e.into())
            }
        }
    }

    /// The log proof for a receipt, built on a reader after the batch committed (the log
    /// never changes below a signed size).
    async fn log_proof(
        &self,
        at: StoredCheckpoint,
        agent: &AgentId,
        acked_seq: u64,
        from: u64,
    ) -> Result<LogProof, IngestError> {
        let agent = agent.clone();
        Ok(self
            .db()
            .read(move |r| log::proof(r, &at, &agent, acked_seq, from))
            .await?)
    }

    /// An agent verified a checkpoint larger than this hub's whole log: this database was
    /// restored from an older copy (or replaced). Said loudly and counted; the agent, which
    /// sees the smaller checkpoint, reports it too and re-sends what the hub lost.
    fn agent_holds_a_larger_log(&self, agent: &AgentId, held: u64, log: Option<&LogProof>) {
        let size = log
            .and_then(|l| l.checkpoint.verify(&self.public_key()).ok())
            .map_or(0, |c| c.tree_size);
        if held > size {
            self.inner.metrics.log_rollback_seen();
            tracing::error!(
                agent = %agent,
                agent_checkpoint = held,
                hub_log = size,
                "an agent holds a checkpoint of this hub's log larger than the log: the database was restored from an older copy or replaced; agents re-send what was lost"
            );
        }
    }

    async fn verify(
        &self,
        agent: &AgentRecord,
        envelopes: Vec<Envelope>,
    ) -> Result<VerifiedBatch, IngestError> {
        ingest::check_state(agent.state)?;
        let id = agent.id.clone();
        if envelopes.is_empty() {
            return ingest::verify(&agent.public_key.into(), &id, envelopes, &self.inner.tables);
        }
        // Envelopes signed before a key rotation verify with the key of their seq.
        let record = agent.clone();
        let keys = self.db().read(move |r| AgentKeys::of(r, &record)).await?;
        let _slot = self
            .inner
            .verifiers
            .acquire()
            .await
            .map_err(|e| IngestError::Internal(format!("signature check failed: {e}")))?;
        let tables = Arc::clone(&self.inner.tables);
        tokio::task::spawn_blocking(move || ingest::verify(&keys, &id, envelopes, &tables))
            .await
            .map_err(|e| IngestError::Internal(format!("signature check failed: {e}")))?
    }

    /// Replaces an authenticated agent's key (the request was signed by the current key) and
    /// answers with a signed confirmation once the change has committed. From then on only
    /// the new key is accepted for requests.
    pub async fn rotate_key(
        &self,
        agent: AgentRecord,
        req: RotateKeyRequest,
    ) -> Result<Signed<KeyRotated>, RotateError> {
        let old_key = agent.public_key;
        rotate::check_proof(&agent.id, &old_key, &req)?;
        let now = self.now_ms();
        let id = agent.id.clone();
        let new_key = req.new_public_key;
        let last_old_seq = req.last_old_seq;
        self.db()
            .write(move |w| rotate::apply(w, &id, &old_key, &req, now))
            .await?;
        tracing::info!(
            agent = %agent.id,
            old = %old_key.fingerprint(),
            new = %new_key.fingerprint(),
            last_old_seq,
            "agent key rotated"
        );
        Signed::sign(
            &self.inner.key,
            &KeyRotated {
                agent_id: agent.id,
                public_key: new_key,
                last_old_seq,
                hub_time_ms: now,
            },
        )
        .map_err(|e| RotateError::Store(StoreError::Backend(format!("cannot sign: {e}"))))
    }

    /// Notes that an authenticated agent made contact, when its request went no further.
    pub async fn note_contact(&self, agent: &AgentId) {
        self.note(agent.clone(), Contact::bare(self.now_ms())).await;
    }

    async fn note(&self, agent: AgentId, contact: Contact) {
        let res: Result<(), StoreError> = self
            .db()
            .write(move |w| ingest::note_contact(w, &agent, &contact))
            .await;
        if let Err(e) = res {
            // The request already failed for its own reason, which the caller reports.
            tracing::warn!(error = %e, "cannot note the agent's contact");
        }
    }

    /// What the hub holds of the agent's chain, signed. Quarantined agents may ask (so they
    /// can show why they are stuck); revoked ones may not.
    pub async fn watermark(&self, agent: AgentRecord) -> Result<Signed<Watermark>, IngestError> {
        let now = self.now_ms();
        let id = agent.id;
        let fresh = self
            .db()
            .write(move |w| {
                w.record_contact(&id, now, None)?;
                w.agent(&id)
            })
            .await?
            .ok_or(IngestError::UnknownAgent)?;
        if fresh.state == AgentState::Revoked {
            return Err(IngestError::AgentRevoked);
        }
        self.sign(&Watermark {
            agent_id: fresh.id,
            acked_seq: fresh.acked_seq,
            head_hash: fresh.head_hash,
            state: fresh.state,
            hub_time_ms: now,
        })
    }

    // ---- read API -----------------------------------------------------------------------

    /// The role of the API key in an `Authorization` header value.
    pub async fn check_api_key(&self, authorization: Option<&str>) -> Result<Role, AccessError> {
        let hash = auth::bearer_key_hash(authorization)?;
        let key = self.db().read(move |r| r.api_key(&hash)).await?;
        match key {
            Some(k) if k.revoked_at_ms.is_none() => Ok(k.role),
            _ => Err(AuthError::Unauthorized.into()),
        }
    }

    /// Every agent, ordered by county, then agent id.
    pub async fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let agents = self.db().read(|r| r.agents()).await?;
        Ok(agents.iter().map(admin::agent_row).collect())
    }

    pub async fn envelope(
        &self,
        agent: AgentId,
        seq: u64,
    ) -> Result<Option<StoredEnvelope>, StoreError> {
        self.db().read(move |r| r.envelope(&agent, seq)).await
    }

    /// Succeeds when the database answers a trivial query.
    pub async fn check_health(&self) -> Result<(), StoreError> {
        self.db().read(|r| r.ping()).await
    }

    /// The Prometheus exposition text.
    pub async fn metrics_text(&self) -> Result<String, StoreError> {
        let now = self.now_ms();
        let gauges = self
            .db()
            .read(move |r| {
                Ok::<_, StoreError>(Gauges::from_agents(
                    &r.agents()?,
                    now,
                    r.current_policy_version()?,
                    r.held_count()?,
                ))
            })
            .await?;
        Ok(self.inner.metrics.render(&gauges))
    }

    /// A county's ledger for one fiscal year, summed over catalogue codes (all zeros when
    /// nothing was recorded).
    pub async fn ledger(&self, county: CountyCode, year: i32) -> Result<Totals, StoreError> {
        self.db()
            .read(move |r| ledger::year_totals(r, &county, year))
            .await
    }

    /// Violations (and warnings) of a county, in the order their records arrived.
    pub async fn violations(
        &self,
        filter: ViolationFilter,
    ) -> Result<Vec<ViolationRow>, StoreError> {
        self.db().read(move |r| r.violations(&filter)).await
    }

    // ---- policy and the grace period ----------------------------------------------------

    /// The current policy version: its exact signed payload and signature.
    pub async fn current_policy(&self) -> Result<CurrentPolicy, PolicyAdminError> {
        self.db().read(|r| policy::current(r)).await
    }

    /// Makes `doc` the next policy version (signed by the hub, audited as `local`). Records
    /// that arrive after this returns are judged by it.
    pub async fn set_policy(&self, doc: PolicyDoc) -> Result<PolicySet, PolicyAdminError> {
        let now = self.now_ms();
        let hub = self.clone();
        self.db()
            .write(move |w| policy::set(w, &hub.inner.key, now, LOCAL_ACTOR, doc))
            .await
    }

    /// One expiry step at the clock's time: rejects records held longer than the current
    /// policy's grace period (`UNKNOWN_BUDGET_LINE` / `UNKNOWN_CONTRACT`) and what that
    /// releases. Returns the decisions made.
    pub async fn expire_once(&self) -> Result<Vec<Judged>, StoreError> {
        let now = self.now_ms();
        let policies = self.inner.policies.clone();
        let judged = self
            .db()
            .write(move |w| ledger::expire_once(w, &policies, now))
            .await?;
        self.inner.metrics.judged(&judged);
        if !judged.is_empty() {
            tracing::info!(
                records = judged.len(),
                "held records decided at the grace period"
            );
        }
        Ok(judged)
    }

    // ---- admin, in process (the demo) ---------------------------------------------------

    pub async fn add_county(
        &self,
        code: CountyCode,
        name: String,
    ) -> Result<CountyAdded, AdminError> {
        let now = self.now_ms();
        self.db()
            .write(move |w| admin::add_county(w, now, LOCAL_ACTOR, &code, &name))
            .await
    }

    pub async fn issue_token(
        &self,
        county: CountyCode,
        ttl_hours: u32,
    ) -> Result<IssuedToken, AdminError> {
        let now = self.now_ms();
        let rng = self.inner.rng.clone();
        self.db()
            .write(move |w| admin::issue_token(w, now, LOCAL_ACTOR, &rng, &county, ttl_hours))
            .await
    }

    pub async fn create_api_key(&self, role: Role) -> Result<Secret, AdminError> {
        let now = self.now_ms();
        let rng = self.inner.rng.clone();
        self.db()
            .write(move |w| admin::create_api_key(w, now, LOCAL_ACTOR, &rng, role))
            .await
    }
}
