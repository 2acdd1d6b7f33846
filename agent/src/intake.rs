//! Intake: a submission (a JSON array of records, or one object per line) in; signed, stored
//! records out, each with the rule codes the agent can check locally. A submission is taken
//! whole or refused whole: one malformed record, one record of another county or one
//! oversized record stores nothing, and the refusal names the record, its line and the field.
//! A well-formed record that breaks a rule is stored anyway (the hub's outcome is
//! authoritative) and the county hears its codes at once; only a strict submission is refused
//! for breaking a rule.
//!
//! Invariants: records are judged (see [`crate::rules`]) against the local view exactly as it
//! stands when they are appended: [`Intake`] appends only at the head it judged against, and
//! judges again if another writer got there first. Nothing is reported stored before the
//! transaction holding it commits. A full, read-only or failing disk rolls the transaction
//! back and is reported as such ([`IntakeError::is_unavailable`]); the intake takes
//! submissions again once the disk does.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::value::RawValue;
use tongbu_shared::KeyPair;
use tongbu_shared::envelope::MAX_BODY_BYTES;
use tongbu_shared::ids::{Code, CountyCode};
use tongbu_shared::input::{InputError, InputRecord, parse_submission};
use tongbu_shared::record::Kind;
use tongbu_shared::rules::{self, Severity};

use crate::clock::Clock;
use crate::outbox::{Enrollment, NewRecord, Outbox, OutboxError};
use crate::rules::{LocalView, PolicyInUse};

/// How often a submission is judged again when other writers keep appending first.
const MAX_APPEND_TRIES: usize = 5;

/// One record as stored: what the submitter is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored {
    pub seq: u64,
    pub kind: Kind,
    pub id: Code,
    pub rev: u32,
    /// Rule codes the record breaks, as far as the agent can tell (rejections and warnings;
    /// stored anyway: the hub's outcome is authoritative).
    pub codes: Vec<String>,
    /// The findings' sentences (`CODE: why; CODE: why`), when there are codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A problem with one submission: a malformed record (no `code`) or a rule the record breaks
/// (`code` set), with its record number, line and a whole one-line message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The record's number in the submission, from 1 (none for a syntax error).
    pub record: Option<usize>,
    pub line: Option<usize>,
    /// The record's id, when it was read.
    pub id: Option<String>,
    pub field: Option<String>,
    /// The rule code, for a rule finding.
    pub code: Option<String>,
    /// A full, one-line description, e.g. ``record 3 (line 3): field `amount_fen`: must be …``
    /// or `record 2 (line 2) C-001: BUDGET_EXCEEDED: …`.
    pub message: String,
    /// The rule's severity (none for a malformed record).
    #[serde(skip)]
    pub severity: Option<Severity>,
}

impl Finding {
    /// Whether this finding makes a strict submission fail (and `check` exit non-zero): a
    /// malformed record or a rule that rejects.
    pub fn refuses(&self) -> bool {
        self.severity.is_none_or(|s| s == Severity::Reject)
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The input is not acceptable; nothing was stored. The caller should fix the input.
    #[error("{0}")]
    Refused(Box<Finding>),
    /// A strict submission with records that break rules; nothing was stored. `offences` has
    /// one line per such record: `record 2 (line 2): BUDGET_EXCEEDED: …; DATE_ORDER: …`.
    #[error("refused (strict), nothing stored: {}", offences.join("; "))]
    BreaksRules {
        offences: Vec<String>,
        findings: Vec<Finding>,
    },
    #[error("this agent is not enrolled yet: run `tongbu-agent enroll --hub URL --token T` first")]
    NotEnrolled,
    /// Storing failed; nothing was stored. The caller may retry (see
    /// [`IntakeError::is_unavailable`]: a full or read-only disk).
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl IntakeError {
    /// The same failure, for another submission of a group that failed together: the kind
    /// (busy, unavailable, refused) is kept, so each submitter is answered alike.
    fn echo(&self) -> IntakeError {
        match self {
            IntakeError::Outbox(e) => IntakeError::Outbox(e.echo()),
            other => IntakeError::Outbox(OutboxError::Shared(other.to_string())),
        }
    }

    /// Whether storing failed because the disk is full, read-only or failing (nothing was
    /// stored; the same submission may succeed once space returns).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, IntakeError::Outbox(e) if e.is_unavailable())
    }
}

impl From<InputError> for Finding {
    fn from(e: InputError) -> Finding {
        let (record, line, field) = match &e {
            InputError::Record { index, line, error } => {
                (Some(*index), Some(*line), error.field.clone())
            }
            InputError::Syntax { line, .. } => (None, Some(*line), None),
            InputError::Empty | InputError::TooMany { .. } => (None, None, None),
        };
        Finding {
            record,
            line,
            id: None,
            field,
            code: None,
            message: e.to_string(),
            severity: None,
        }
    }
}

/// Whether a submission with rule findings is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Store every well-formed record and report its rule codes.
    Lenient,
    /// Refuse the whole submission if any record breaks a rule that rejects.
    Strict,
}

/// What a check of a submission found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub records: usize,
    /// Malformed records (then nothing else is checked), or rule findings in record order.
    pub findings: Vec<Finding>,
    /// The policy the rules were checked with.
    pub policy: PolicyInUse,
}

impl CheckReport {
    /// No finding that would refuse the submission or reject a record (warnings are fine).
    pub fn ok(&self) -> bool {
        !self.findings.iter().any(Finding::refuses)
    }

    /// How many records have a finding that refuses or rejects.
    pub fn refused_records(&self) -> usize {
        self.count_records(Finding::refuses)
    }

    /// How many records have warnings and nothing worse.
    pub fn warned_records(&self) -> usize {
        let refused: std::collections::BTreeSet<Option<usize>> = self
            .findings
            .iter()
            .filter(|f| f.refuses())
            .map(|f| f.record)
            .collect();
        self.count_records(|f| !f.refuses() && !refused.contains(&f.record))
    }

    fn count_records(&self, pred: impl Fn(&Finding) -> bool) -> usize {
        let mut records: Vec<Option<usize>> = self
            .findings
            .iter()
            .filter(|f| pred(f))
            .map(|f| f.record)
            .collect();
        records.dedup();
        records.len()
    }
}

/// Parses `input` and reports every problem that would make `submit` refuse it and every rule
/// a record breaks as far as `view` can tell, storing nothing. `county` is the agent's county
/// when it is enrolled (records of another county are malformed then). `view` is left holding
/// the records as if stored: pass a copy, or a view built for this check alone.
pub fn check(view: &mut LocalView, county: Option<&CountyCode>, input: &[u8]) -> CheckReport {
    let policy = view.policy().clone();
    let records = match parse_submission(input) {
        Err(e) => {
            return CheckReport {
                records: 0,
                findings: vec![Finding::from(e)],
                policy,
            };
        }
        Ok(records) => records,
    };
    let malformed = format_findings(input, &records, county);
    let findings = if malformed.is_empty() {
        rule_findings(input, &records, view)
    } else {
        malformed
    };
    CheckReport {
        records: records.len(),
        findings,
        policy,
    }
}

/// Takes submissions for one enrolled agent: owns an outbox connection and the local view of
/// the rules, kept in step with that outbox after each append.
#[derive(Debug)]
pub struct Intake {
    outbox: Outbox,
    key: Arc<KeyPair>,
    enrollment: Enrollment,
    /// Built on first use; dropped whenever it may no longer match the outbox.
    view: Option<LocalView>,
}

impl Intake {
    /// An intake for the enrolled agent whose outbox this is.
    pub fn new(outbox: Outbox, key: Arc<KeyPair>) -> Result<Intake, IntakeError> {
        let enrollment = outbox.enrollment()?.ok_or(IntakeError::NotEnrolled)?;
        Ok(Intake {
            outbox,
            key,
            enrollment,
            view: None,
        })
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn enrollment(&self) -> &Enrollment {
        &self.enrollment
    }

    /// Checks, judges, signs and stores a whole submission, or refuses it and stores nothing.
    /// Returns the stored records, with their rule codes, only after the transaction holding
    /// them has committed.
    pub fn submit(
        &mut self,
        input: &[u8],
        strictness: Strictness,
        now_ms: i64,
    ) -> Result<Vec<Stored>, IntakeError> {
        self.submit_group(&[(input, strictness)], now_ms)
            .pop()
            .unwrap_or_else(|| Err(OutboxError::Task("no result for the submission".into()).into()))
    }

    /// Group commit: takes several submissions in one transaction, so they share one fsync.
    /// Each is still all or nothing on its own: one refused (malformed, or breaking a rule under
    /// [`Strictness::Strict`]) stores nothing of it and does not affect the others, which are
    /// judged in order, each against the records before it. If storing fails (a full disk),
    /// nothing of the group is stored and every submission gets the error. Results come back
    /// in order, only after the commit.
    pub fn submit_group(
        &mut self,
        submissions: &[(&[u8], Strictness)],
        now_ms: i64,
    ) -> Vec<Result<Vec<Stored>, IntakeError>> {
        let county = self.enrollment.county.clone();
        let prepared: Vec<Result<Vec<InputRecord>, IntakeError>> = submissions
            .iter()
            .map(|(input, _)| prepare(input, &county))
            .collect();
        if prepared.iter().all(Result::is_err) {
            return prepared
                .into_iter()
                .map(|p| p.map(|_| Vec::new()))
                .collect();
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let mut view = match self.take_view() {
                Ok(v) => v,
                Err(e) => return echo_to_all(prepared, &e.into()),
            };
            let expected_head = view.through_seq();
            let agent = &self.enrollment.agent_id;
            let lenient_only = prepared
                .iter()
                .zip(submissions)
                .all(|(p, (_, strictness))| p.is_err() || *strictness == Strictness::Lenient);
            let mut view_sound = true;
            let (judged, refused, appended) = if lenient_only {
                // Nothing can be refused for its rules: judge on one thread while the
                // records are signed and stored on others (the findings are only reported).
                let news: Vec<Vec<NewRecord<'_>>> = prepared
                    .iter()
                    .filter_map(|p| p.as_ref().ok().map(|r| r.iter().map(new_record).collect()))
                    .collect();
                let groups: Vec<&[NewRecord<'_>]> = news.iter().map(Vec::as_slice).collect();
                let (key, outbox, view) = (&self.key, &mut self.outbox, &mut view);
                let (judging, appended) = std::thread::scope(|scope| {
                    let judging = scope.spawn(|| {
                        prepared
                            .iter()
                            .map(|p| p.as_ref().ok().map(|records| view.judge(records)))
                            .collect::<Vec<_>>()
                    });
                    let appended = outbox.append_groups(key, agent, expected_head, &groups, now_ms);
                    (judging.join(), appended)
                });
                let judged = judging.unwrap_or_else(|_| {
                    // The rules failed (a bug): the records are stored all the same, their
                    // findings unknown; the view is rebuilt on next use.
                    tracing::error!("judging a submission failed; its rule codes are not reported");
                    view_sound = false;
                    prepared
                        .iter()
                        .map(|p| p.as_ref().ok().map(|r| vec![Vec::new(); r.len()]))
                        .collect()
                });
                let refused = prepared.iter().map(|_| None).collect();
                (judged, refused, appended)
            } else {
                // Judge in order; a strict submission that breaks a rule is refused here and
                // leaves the view as it was.
                let mut judged: Vec<Option<Vec<Vec<rules::Finding>>>> = Vec::new();
                let mut refused: Vec<Option<IntakeError>> = Vec::new();
                for (i, records) in prepared.iter().enumerate() {
                    let Ok(records) = records else {
                        judged.push(None);
                        refused.push(None);
                        continue;
                    };
                    let (input, strictness) = submissions[i];
                    match strictness {
                        Strictness::Lenient => {
                            judged.push(Some(view.judge(records)));
                            refused.push(None);
                        }
                        Strictness::Strict => {
                            let mut trial = view.clone();
                            let findings = trial.judge(records);
                            if findings
                                .iter()
                                .flatten()
                                .any(|f| f.rule.severity() == Severity::Reject)
                            {
                                let findings = rule_findings_from(input, records, &findings);
                                judged.push(None);
                                refused.push(Some(IntakeError::BreaksRules {
                                    offences: offences(&findings),
                                    findings,
                                }));
                            } else {
                                view = trial;
                                judged.push(Some(findings));
                                refused.push(None);
                            }
                        }
                    }
                }
                let news: Vec<Vec<NewRecord<'_>>> = prepared
                    .iter()
                    .zip(&judged)
                    .filter_map(|(records, j)| match (records, j) {
                        (Ok(records), Some(_)) => Some(records.iter().map(new_record).collect()),
                        _ => None,
                    })
                    .collect();
                let groups: Vec<&[NewRecord<'_>]> = news.iter().map(Vec::as_slice).collect();
                let appended =
                    self.outbox
                        .append_groups(&self.key, agent, expected_head, &groups, now_ms);
                (judged, refused, appended)
            };
            // The view now holds the records; it goes back only once they are stored.
            match appended {
                Ok(seqs) => {
                    if let Some(&last) = seqs.iter().flatten().last() {
                        view.stored(last);
                    }
                    self.view = view_sound.then_some(view);
                    let mut seqs = seqs.into_iter();
                    return prepared
                        .into_iter()
                        .zip(judged)
                        .zip(refused)
                        .map(|((records, judged), refused)| {
                            let records = records?;
                            if let Some(e) = refused {
                                return Err(e);
                            }
                            let (Some(judged), Some(seqs)) = (judged, seqs.next()) else {
                                return Err(OutboxError::Task(
                                    "a submission lost its place".into(),
                                )
                                .into());
                            };
                            Ok(seqs
                                .into_iter()
                                .zip(records)
                                .zip(judged)
                                .map(|((seq, r), findings)| stored(seq, r, &findings))
                                .collect())
                        })
                        .collect();
                }
                // Another writer appended first: judge again against the chain it left.
                Err(OutboxError::HeadMoved { .. }) if tries < MAX_APPEND_TRIES => continue,
                Err(OutboxError::HeadMoved { .. }) => {
                    return echo_to_all(prepared, &OutboxError::Busy.into());
                }
                Err(e) => return echo_to_all(prepared, &e.into()),
            }
        }
    }

    /// Reports what `submit` would say of `input`, storing nothing.
    pub fn check(&mut self, input: &[u8]) -> Result<CheckReport, IntakeError> {
        let view = self.take_view()?;
        let mut trial = view.clone();
        self.view = Some(view);
        Ok(check(&mut trial, Some(&self.enrollment.county), input))
    }

    /// The local view, up to date with the outbox (built, caught up or rebuilt as needed).
    fn take_view(&mut self) -> Result<LocalView, OutboxError> {
        let agent = &self.enrollment.agent_id;
        let hub_key = &self.enrollment.hub_public_key;
        match self.view.take() {
            Some(mut view) if view.follows_policy_of(&self.outbox)? => {
                view.catch_up(&self.outbox)?;
                Ok(view)
            }
            _ => LocalView::load(&self.outbox, agent, hub_key),
        }
    }
}

/// Parses a submission and refuses it, naming the first problem, when a record is malformed,
/// of another county or too large.
fn prepare(input: &[u8], county: &CountyCode) -> Result<Vec<InputRecord>, IntakeError> {
    let records = parse_submission(input).map_err(|e| IntakeError::Refused(Box::new(e.into())))?;
    if let Some(first) = format_findings(input, &records, Some(county))
        .into_iter()
        .next()
    {
        return Err(IntakeError::Refused(Box::new(first)));
    }
    Ok(records)
}

fn new_record(r: &InputRecord) -> NewRecord<'_> {
    NewRecord {
        body: &r.bytes,
        kind: r.record.header.kind,
        id: &r.record.header.id,
        rev: r.record.header.rev,
    }
}

/// Every submission that was not refused gets (a copy of) `e`: nothing of the group was
/// stored.
fn echo_to_all(
    prepared: Vec<Result<Vec<InputRecord>, IntakeError>>,
    e: &IntakeError,
) -> Vec<Result<Vec<Stored>, IntakeError>> {
    prepared
        .into_iter()
        .map(|p| match p {
            Err(refused) => Err(refused),
            Ok(_) => Err(e.echo()),
        })
        .collect()
}

fn stored(seq: u64, r: InputRecord, findings: &[rules::Finding]) -> Stored {
    let codes: Vec<String> = findings.iter().map(|f| f.rule.code().to_owned()).collect();
    let detail = (!findings.is_empty()).then(|| describe(findings.iter()));
    Stored {
        seq,
        kind: r.record.header.kind,
        id: r.record.header.id,
        rev: r.record.header.rev,
        codes,
        detail,
    }
}

/// `CODE: why; CODE: why`.
fn describe<'a>(findings: impl Iterator<Item = &'a rules::Finding>) -> String {
    findings
        .map(|f| format!("{}: {}", f.rule.code(), f.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One line per record a strict submission is refused for, naming its number, line and the
/// codes that reject it: `record 2 (line 2): BUDGET_EXCEEDED: …; DATE_ORDER: …`.
fn offences(findings: &[Finding]) -> Vec<String> {
    let mut out: Vec<(Option<usize>, String)> = Vec::new();
    for f in findings.iter().filter(|f| f.refuses()) {
        let why = format!(
            "{}: {}",
            f.code.as_deref().unwrap_or_default(),
            rule_detail(f)
        );
        match out.last_mut() {
            Some((record, text)) if *record == f.record => {
                text.push_str("; ");
                text.push_str(&why);
            }
            _ => out.push((f.record, format!("{}: {why}", place(f.record, f.line)))),
        }
    }
    out.into_iter().map(|(_, text)| text).collect()
}

/// The sentence of a rule finding (its message after the code).
fn rule_detail(f: &Finding) -> &str {
    let code = f.code.as_deref().unwrap_or_default();
    f.message
        .split_once(&format!("{code}: "))
        .map_or(f.message.as_str(), |(_, detail)| detail)
}

fn place(record: Option<usize>, line: Option<usize>) -> String {
    match (record, line) {
        (Some(r), Some(l)) => format!("record {r} (line {l})"),
        (Some(r), None) => format!("record {r}"),
        (None, Some(l)) => format!("line {l}"),
        (None, None) => "the input".to_owned(),
    }
}

/// Judges `records` with `view` and turns what it finds into findings naming record and line.
fn rule_findings(input: &[u8], records: &[InputRecord], view: &mut LocalView) -> Vec<Finding> {
    let judged = view.judge(records);
    rule_findings_from(input, records, &judged)
}

fn rule_findings_from(
    input: &[u8],
    records: &[InputRecord],
    judged: &[Vec<rules::Finding>],
) -> Vec<Finding> {
    if judged.iter().all(Vec::is_empty) {
        return Vec::new();
    }
    let lines = record_lines(input);
    let mut out = Vec::new();
    for (i, (r, findings)) in records.iter().zip(judged).enumerate() {
        let line = lines.get(i).copied();
        let id = r.record.header.id.as_str();
        for f in findings {
            out.push(Finding {
                record: Some(i + 1),
                line,
                id: Some(id.to_owned()),
                field: None,
                code: Some(f.rule.code().to_owned()),
                message: format!(
                    "{} {id}: {}: {}",
                    place(Some(i + 1), line),
                    f.rule.code(),
                    f.detail
                ),
                severity: Some(f.rule.severity()),
            });
        }
    }
    out
}

/// Problems of well-formed records that still make a submission unacceptable here: a county
/// other than the agent's, or a body too large to sign.
fn format_findings(
    input: &[u8],
    records: &[InputRecord],
    county: Option<&CountyCode>,
) -> Vec<Finding> {
    let mut lines: Option<Vec<usize>> = None;
    let mut findings = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let (field, problem) = if let Some(own) = county.filter(|c| **c != r.record.header.county) {
            (
                Some("county"),
                format!(
                    "must be this agent's county {own}, got \"{}\"",
                    r.record.header.county
                ),
            )
        } else if r.bytes.len() > MAX_BODY_BYTES {
            (
                None,
                format!(
                    "the record is {} bytes, more than the limit of {MAX_BODY_BYTES}",
                    r.bytes.len()
                ),
            )
        } else {
            continue;
        };
        let lines = lines.get_or_insert_with(|| record_lines(input));
        let line = lines.get(i).copied();
        let place = place(Some(i + 1), line);
        let message = match field {
            Some(field) => format!("{place}: field `{field}`: {problem}"),
            None => format!("{place}: {problem}"),
        };
        findings.push(Finding {
            record: Some(i + 1),
            line,
            id: Some(r.record.header.id.to_string()),
            field: field.map(str::to_owned),
            code: None,
            message,
            severity: None,
        });
    }
    findings
}

/// An [`Intake`] used from async code: each call runs on tokio's blocking pool (SQLite and
/// the rules are blocking work), one at a time. [`SharedIntake::submit`] group-commits:
/// submissions that arrive while a commit is under way wait and are then stored together in
/// one transaction (one fsync), so concurrent submitters share the disk's flushes; each is
/// still answered only after its own records are durable.
#[derive(Debug, Clone)]
pub struct SharedIntake {
    intake: Arc<Mutex<Intake>>,
    queue: Arc<Mutex<Queue>>,
}

/// At most this many submissions share one commit.
pub const MAX_GROUP: usize = 256;
/// At most this many bytes of submissions share one commit (a larger one commits alone).
pub const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

type Reply = tokio::sync::oneshot::Sender<Result<Vec<Stored>, IntakeError>>;

/// Submissions waiting for the next group commit, and whether a committer is running. Its
/// length is bounded by the submitters waiting (one per open intake request).
#[derive(Debug, Default)]
struct Queue {
    waiting: std::collections::VecDeque<(Vec<u8>, Strictness, Reply)>,
    committing: bool,
    /// Submissions taken, and group commits made, since start.
    submitted: u64,
    commits: u64,
}

impl SharedIntake {
    pub fn new(intake: Intake) -> SharedIntake {
        SharedIntake {
            intake: Arc::new(Mutex::new(intake)),
            queue: Arc::default(),
        }
    }

    pub async fn call<R, F>(&self, f: F) -> Result<R, IntakeError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Intake) -> Result<R, IntakeError> + Send + 'static,
    {
        let inner = Arc::clone(&self.intake);
        tokio::task::spawn_blocking(move || {
            // A panic mid-call leaves no half-written SQLite transaction and at worst a view
            // taken out (rebuilt on next use), so a poisoned lock still guards a sound intake.
            let mut intake = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut intake)
        })
        .await
        .map_err(|e| IntakeError::Outbox(OutboxError::Task(e.to_string())))?
    }

    /// How many group commits stored the submissions taken so far (fewer than the
    /// submissions when submitters shared commits).
    pub fn commits(&self) -> u64 {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .commits
    }

    /// Stores a submission (see [`Intake::submit`]) in the next group commit; answers once it
    /// is durable, or with why it was refused.
    pub async fn submit(
        &self,
        input: Vec<u8>,
        strictness: Strictness,
        clock: Arc<dyn Clock>,
    ) -> Result<Vec<Stored>, IntakeError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lead = {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.waiting.push_back((input, strictness, reply));
            q.submitted += 1;
            !std::mem::replace(&mut q.committing, true)
        };
        if lead {
            tokio::spawn(self.clone().commit_waiting(clock));
        }
        answer.await.map_err(|_| {
            IntakeError::Outbox(OutboxError::Task("the group commit stopped".into()))
        })?
    }

    /// Commits what waits, group after group, until nothing does.
    async fn commit_waiting(self, clock: Arc<dyn Clock>) {
        loop {
            let group: Vec<(Vec<u8>, Strictness, Reply)> = {
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                let mut bytes = 0;
                let mut take = 0;
                for (input, _, _) in q.waiting.iter().take(MAX_GROUP) {
                    if take > 0 && bytes + input.len() > MAX_GROUP_BYTES {
                        break;
                    }
                    bytes += input.len();
                    take += 1;
                }
                if take == 0 {
                    q.committing = false;
                    return;
                }
                q.commits += 1;
                q.waiting.drain(..take).collect()
            };
            let (inputs, replies): (Vec<_>, Vec<_>) = group
                .into_iter()
                .map(|(input, strictness, reply)| ((input, strictness), reply))
                .unzip();
            let now = clock.now_ms();
            let results = self
                .call(move |intake| {
                    let subs: Vec<(&[u8], Strictness)> =
                        inputs.iter().map(|(b, s)| (b.as_slice(), *s)).collect();
                    Ok(intake.submit_group(&subs, now))
                })
                .await;
            match results {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        // A submitter that went away no longer needs its answer.
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.echo()));
                    }
                }
            }
        }
    }
}

/// The line each record of an already parsed submission starts on (only needed to explain a
/// refusal, so it splits the input a second time rather than burden the common path).
fn record_lines(input: &[u8]) -> Vec<usize> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let is_array = input
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let raws: Vec<&RawValue> = if is_array {
        serde_json::from_slice(input).unwrap_or_default()
    } else {
        serde_json::Deserializer::from_slice(input)
            .into_iter::<&RawValue>()
            .map_while(Result::ok)
            .collect()
    };
    // One pass over the input: the records come in order, so each count goes on from the
    // last (counting from the start for each would be quadratic in the file's size).
    let (mut line, mut counted) = (1, 0);
    raws.iter()
        .map(|raw| {
            let offset = (raw.get().as_ptr() as usize)
                .saturating_sub(input.as_ptr() as usize)
                .min(input.len());
            if offset > counted {
                line += input[counted..offset]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                counted = offset;
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_name_the_line_each_record_starts_on() {
        let lines = b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":\n3}\n{\"d\":4}";
        assert_eq!(record_lines(lines), [1, 3, 4, 6]);
        let array = b"\xEF\xBB\xBF[\n{\"a\":1},\n\n{\"b\":2}]";
        assert_eq!(record_lines(array), [2, 4]);
    }
    use crate::outbox::tests::{agent, body, key};

    fn enrolled_outbox(dir: &tempfile::TempDir) -> Outbox {
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox
            .save_enrollment(&Enrollment {
                agent_id: agent(),
                county: CountyCode::parse("430112").unwrap(),
                county_name: "望城区".into(),
                hub_url: crate::tls::HubUrl::plain("http://127.0.0.1:1").unwrap(),
                hub_public_key: KeyPair::from_seed(&[1; 32]).unwrap().public_key(),
                enrolled_at: "2026-11-27T06:48:33Z".into(),
            })
            .unwrap();
        outbox
    }

    fn intake(dir: &tempfile::TempDir) -> Intake {
        Intake::new(enrolled_outbox(dir), Arc::new(key())).unwrap()
    }

    fn lines(bodies: &[Vec<u8>]) -> Vec<u8> {
        bodies.join(&b'\n')
    }

    fn line(id: &str, amount: i64) -> Vec<u8> {
        format!(
            r#"{{"kind":"budget_line","id":"{id}","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":{amount},"stage":"approved","approved_on":"2024-01-15"}}"#
        )
        .into_bytes()
    }

    fn contract(id: &str, line: &str, amount: i64, signed_on: &str) -> Vec<u8> {
        format!(
            r#"{{"kind":"contract","id":"{id}","rev":1,"county":"430112","budget_line_id":"{line}","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":{amount},"signed_on":"{signed_on}"}}"#
        )
        .into_bytes()
    }

    fn codes(stored: &[Stored]) -> Vec<String> {
        stored.iter().map(|s| s.codes.join(",")).collect()
    }

    #[test]
    fn stores_a_whole_submission_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(&dir);
        let stored = intake
            .submit(&lines(&[body(1), body(2)]), Strictness::Lenient, 5)
            .unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!((stored[0].seq, stored[1].seq), (1, 2));
        assert_eq!(stored[1].id.as_str(), "P-2");
        assert_eq!(stored[0].kind, Kind::Payment);
        let json = serde_json::to_value(&stored[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq":1,"kind":"payment","id":"P-1","rev":1,"codes":[]})
        );
    }

    #[test]
    fn refuses_a_malformed_record_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(&dir);
        let bad = String::from_utf8(body(3))
            .unwrap()
            .replace("\"amount_fen\":100", "\"amount_fen\":0");
        let input = lines(&[body(1), body(2), bad.into_bytes()]);
        let Err(IntakeError::Refused(f)) = intake.submit(&input, Strictness::Lenient, 5) else {
            panic!("not refused")
        };
        assert_eq!((f.record, f.line), (Some(3), Some(3)));
        assert_eq!(f.field.as_deref(), Some("amount_fen"));
        assert!(
            f.message
                .starts_with("record 3 (line 3): field `amount_fen`"),
            "{f}"
        );
        assert_eq!(intake.outbox().head().unwrap().seq, 0);
    }

    #[test]
    fn refuses_a_record_of_another_county() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(&dir);
        let other = String::from_utf8(body(2))
            .unwrap()
            .replace("430112", "431281");
        let input = format!("[\n{},\n{}\n]", String::from_utf8(body(1)).unwrap(), other);
        let Err(IntakeError::Refused(f)) = intake.submit(input.as_bytes(), Strictness::Lenient, 5)
        else {
            panic!("not refused")
        };
        assert_eq!(f.record, Some(2));
        assert_eq!(f.line, Some(3));
        assert_eq!(f.field.as_deref(), Some("county"));
        assert_eq!(f.id.as_deref(), Some("P-2"));
        assert!(f.message.contains("431281"), "{f}");
        assert_eq!(intake.outbox().head().unwrap().seq, 0);

        let report = intake.check(input.as_bytes()).unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(report.findings, vec![*f]);
        assert!(!report.ok());
        assert!(check(&mut LocalView::empty(None), None, input.as_bytes()).ok());
    }

    #[test]
    fn refuses_when_not_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        assert!(matches!(
            Intake::new(outbox, Arc::new(key())),
            Err(IntakeError::NotEnrolled)
        ));
    }

    #[test]
    fn reports_syntax_errors_with_their_line() {
        let report = check(
            &mut LocalView::empty(None),
            None,
            b"{\"kind\":\"payment\"}\n{oops",
        );
        assert!(!report.ok());
        assert_eq!(report.findings[0].line, Some(2));
        assert_eq!(report.findings[0].record, None);
    }

    #[test]
    fn records_that_break_rules_are_stored_with_their_codes() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(&dir);
        let input = lines(&[
            line("BL-1", 100),
            contract("C-1", "BL-1", 200, "2024-03-01"),
        ]);
        let stored = intake.submit(&input, Strictness::Lenient, 5).unwrap();
        assert_eq!(codes(&stored), ["", "BUDGET_EXCEEDED"]);
        let detail = stored[1].detail.as_deref().unwrap();
        assert!(detail.starts_with("BUDGET_EXCEEDED: 200 fen"), "{detail}");
        assert_eq!(intake.outbox().head().unwrap().seq, 2);

        // The view stays in step: the next submission is judged against both.
        let stored = intake
            .submit(
                &contract("C-2", "BL-1", 100, "2023-12-01"),
                Strictness::Lenient,
                6,
            )
            .unwrap();
        assert_eq!(codes(&stored), ["YEAR_MISMATCH,DATE_ORDER"]);
    }

    #[test]
    fn a_strict_submission_that_breaks_a_rule_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(&dir);
        let input = lines(&[
            line("BL-1", 100),
            contract("C-1", "BL-1", 200, "2024-03-01"),
            contract("C-2", "BL-1", 50, "2024-01-01"),
        ]);
        let Err(IntakeError::BreaksRules { offences, findings }) =
            intake.submit(&input, Strictness::Strict, 5)
        else {
            panic!("not refused")
        };
        assert_eq!(findings.len(), 2);
        assert_eq!(offences.len(), 2);
        assert!(
            offences[0].starts_with("record 2 (line 2): BUDGET_EXCEEDED: 200 fen"),
            "{offences:?}"
        );
        assert!(
            offences[1].starts_with("record 3 (line 3): DATE_ORDER: signed_on"),
            "{offences:?}"
        );
        assert_eq!(intake.outbox().head().unwrap().seq, 0);

        // The same file without the offending records is stored, strict or not.
        let ok = lines(&[line("BL-1", 100), contract("C-1", "BL-1", 80, "2024-03-01")]);
        let stored = intake.submit(&ok, Strictness::Strict, 6).unwrap();
        assert_eq!(codes(&stored), ["", ""]);
        let report = intake
            .check(&contract("C-3", "BL-1", 30, "2024-03-02"))
            .unwrap();
        assert!(!report.ok());
        assert_eq!(report.refused_records(), 1);
        assert_eq!(
            report.findings[0].message,
            format!(
                "record 1 (line 1) C-3: BUDGET_EXCEEDED: {}",
                report.findings[0]
                    .message
                    .split_once("BUDGET_EXCEEDED: ")
                    .unwrap()
                    .1
            )
        );
        assert_eq!(intake.outbox().head().unwrap().seq, 2);
    }

    #[test]
    fn a_group_commit_keeps_each_submission_whole_and_judged_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(&dir);
        let budget = line("BL-1", 100);
        let malformed = b"{\"kind\":\"budget_line\"}".to_vec();
        let too_much = contract("C-1", "BL-1", 90, "2024-03-01");
        let strict_over = lines(&[line("BL-2", 10), contract("C-2", "BL-1", 20, "2024-03-02")]);
        let fits = contract("C-3", "BL-1", 10, "2024-03-03");
        let results = intake.submit_group(
            &[
                (&budget, Strictness::Lenient),
                (&malformed, Strictness::Lenient),
                (&too_much, Strictness::Lenient),
                // Refused whole: C-2 would exceed BL-1 after C-1; BL-2 is not stored either.
                (&strict_over, Strictness::Strict),
                (&fits, Strictness::Strict),
            ],
            7,
        );
        assert_eq!(results.len(), 5);
        let seqs = |r: &Result<Vec<Stored>, IntakeError>| -> Vec<u64> {
            r.as_ref().unwrap().iter().map(|s| s.seq).collect()
        };
        assert_eq!(seqs(&results[0]), [1]);
        assert!(matches!(results[1], Err(IntakeError::Refused(_))));
        assert_eq!(seqs(&results[2]), [2]);
        assert!(matches!(results[3], Err(IntakeError::BreaksRules { .. })));
        assert_eq!(seqs(&results[4]), [3]);
        assert_eq!(intake.outbox().head().unwrap().seq, 3);
        // The view followed the group: BL-1 has 0 fen left.
        let report = intake
            .check(&contract("C-4", "BL-1", 1, "2024-03-04"))
            .unwrap();
        assert_eq!(report.findings[0].code.as_deref(), Some("BUDGET_EXCEEDED"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submitters_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let shared = SharedIntake::new(intake(&dir));
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::ManualClock::new(9));
        // Hold the intake while 64 submitters queue up: they can only share one or two
        // commits.
        let held = Arc::clone(&shared.intake);
        let (locked_tx, locked) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        locked.recv().unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let shared = shared.clone();
                let clock = Arc::clone(&clock);
                tokio::spawn(async move {
                    shared
                        .submit(line(&format!("BL-{i}"), 100), Strictness::Lenient, clock)
                        .await
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shared.queue.lock().unwrap().submitted < 64 {
            assert!(
                std::time::Instant::now() < deadline,
                "submitters did not queue"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();
        holder.join().unwrap();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.extend(t.await.unwrap().unwrap().into_iter().map(|s| s.seq));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=64).collect::<Vec<u64>>());
        assert!(shared.commits() <= 2, "{} commits", shared.commits());
        assert!(!shared.queue.lock().unwrap().committing);
    }

    #[test]
    fn another_writer_appending_first_is_seen_before_judging() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(&dir);
        intake
            .submit(&line("BL-1", 100), Strictness::Lenient, 5)
            .unwrap();
        // Another process (say the CLI) stores a contract on the line.
        let mut other = Intake::new(
            Outbox::open(&dir.path().join("outbox.db")).unwrap(),
            Arc::new(key()),
        )
        .unwrap();
        other
            .submit(
                &contract("C-1", "BL-1", 90, "2024-03-01"),
                Strictness::Lenient,
                6,
            )
            .unwrap();
        let stored = intake
            .submit(
                &contract("C-2", "BL-1", 20, "2024-03-01"),
                Strictness::Lenient,
                7,
            )
            .unwrap();
        assert_eq!(stored[0].seq, 3);
        assert_eq!(codes(&stored), ["BUDGET_EXCEEDED"]);
    }

    #[test]
    fn a_policy_cached_meanwhile_is_used_at_once() {
        use tongbu_shared::policy::{PolicyBundle, default_policy};
        use tongbu_shared::signed::Signed;

        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(&dir);
        let negative = String::from_utf8(line("BL-9", 100))
            .unwrap()
            .replace("A0501", "N0201");
        let report = intake.check(negative.as_bytes()).unwrap();
        assert!(report.ok(), "{:?}", report.findings);
        assert_eq!(report.policy, PolicyInUse::NoneCached);

        // The sync loop caches the hub's policy through its own connection.
        let hub = KeyPair::from_seed(&[1; 32]).unwrap();
        let signed = Signed::sign(&hub, &PolicyBundle::new(1, 0, default_policy())).unwrap();
        Outbox::open(&dir.path().join("outbox.db"))
            .unwrap()
            .save_policy(&crate::outbox::StoredPolicy {
                version: 1,
                payload: signed.payload_bytes().to_vec(),
                sig: signed.signature().0.to_vec(),
                fetched_at_ms: 1,
            })
            .unwrap();
        let report = intake.check(negative.as_bytes()).unwrap();
        assert_eq!(report.policy, PolicyInUse::Cached(1));
        let codes: Vec<&str> = report
            .findings
            .iter()
            .filter_map(|f| f.code.as_deref())
            .collect();
        assert_eq!(codes, ["NOT_IN_CATALOGUE", "NEGATIVE_LIST"]);
    }
}
