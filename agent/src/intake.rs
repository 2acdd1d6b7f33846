//! Intake: a submission (a JSON array of records, or one object per line) in; signed, stored
//! records out. A submission is taken whole or refused whole: one malformed record, one record
//! of another county or one oversized record stores nothing, and the refusal names the record,
//! its line and the field. Rules (rule codes) come later; for now `codes` is always empty.

use serde::Serialize;
use serde_json::value::RawValue;
use tongbu_shared::KeyPair;
use tongbu_shared::envelope::MAX_BODY_BYTES;
use tongbu_shared::ids::{Code, CountyCode};
use tongbu_shared::input::{InputError, InputRecord, parse_submission};
use tongbu_shared::record::Kind;

use crate::outbox::{NewRecord, Outbox, OutboxError};

/// One record as stored: what the submitter is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored {
    pub seq: u64,
    pub kind: Kind,
    pub id: Code,
    pub rev: u32,
    /// Rule codes the record breaks (stored anyway; the hub's outcome is authoritative).
    pub codes: Vec<String>,
}

/// Why a submission was refused: which record, line and field, and the whole message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The record's number in the submission, from 1 (none for a syntax error).
    pub record: Option<usize>,
    pub line: Option<usize>,
    pub field: Option<String>,
    /// A full, one-line description, e.g. ``record 3 (line 3): field `amount_fen`: must be …``.
    pub message: String,
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
    Refused(Finding),
    #[error("this agent is not enrolled yet: run `tongbu-agent enroll --hub URL --token T` first")]
    NotEnrolled,
    /// Storing failed; nothing was stored. The caller may retry.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
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
            field,
            message: e.to_string(),
        }
    }
}

/// What a check of a submission found: the number of records and any findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub records: usize,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Parses `input` and reports every problem that would make `submit` refuse it, storing
/// nothing. `county` is the agent's county when it is enrolled (records of another county are
/// findings then).
pub fn check(input: &[u8], county: Option<&CountyCode>) -> CheckReport {
    match parse_submission(input) {
        Err(e) => CheckReport {
            records: 0,
            findings: vec![Finding::from(e)],
        },
        Ok(records) => CheckReport {
            records: records.len(),
            findings: record_findings(input, &records, county),
        },
    }
}

/// Checks, signs and stores a whole submission, or refuses it and stores nothing. Returns the
/// stored records only after the transaction holding them has committed.
pub fn submit(
    outbox: &mut Outbox,
    key: &KeyPair,
    input: &[u8],
    now_ms: i64,
) -> Result<Vec<Stored>, IntakeError> {
    let enrollment = outbox.enrollment()?.ok_or(IntakeError::NotEnrolled)?;
    let records = parse_submission(input).map_err(|e| IntakeError::Refused(e.into()))?;
    if let Some(first) = record_findings(input, &records, Some(&enrollment.county))
        .into_iter()
        .next()
    {
        return Err(IntakeError::Refused(first));
    }
    let new: Vec<NewRecord<'_>> = records
        .iter()
        .map(|r| NewRecord {
            body: &r.bytes,
            kind: r.record.header.kind,
            id: &r.record.header.id,
            rev: r.record.header.rev,
        })
        .collect();
    let seqs = outbox.append(key, &enrollment.agent_id, &new, now_ms)?;
    Ok(seqs
        .into_iter()
        .zip(records)
        .map(|(seq, r)| Stored {
            seq,
            kind: r.record.header.kind,
            id: r.record.header.id,
            rev: r.record.header.rev,
            codes: Vec::new(),
        })
        .collect())
}

/// Problems of well-formed records that still make a submission unacceptable here: a county
/// other than the agent's, or a body too large to sign.
fn record_findings(
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
        let place = match line {
            Some(line) => format!("record {} (line {line})", i + 1),
            None => format!("record {}", i + 1),
        };
        let message = match field {
            Some(field) => format!("{place}: field `{field}`: {problem}"),
            None => format!("{place}: {problem}"),
        };
        findings.push(Finding {
            record: Some(i + 1),
            line,
            field: field.map(str::to_owned),
            message,
        });
    }
    findings
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
    raws.iter()
        .map(|raw| {
            let offset = (raw.get().as_ptr() as usize).saturating_sub(input.as_ptr() as usize);
            1 + input[..offset.min(input.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Enrollment;
    use crate::outbox::tests::{agent, body, key};

    fn enrolled_outbox(dir: &tempfile::TempDir) -> Outbox {
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        outbox
            .save_enrollment(&Enrollment {
                agent_id: agent(),
                county: CountyCode::parse("430112").unwrap(),
                county_name: "望城区".into(),
                hub_url: "http://127.0.0.1:1".into(),
                hub_public_key: KeyPair::from_seed(&[1; 32]).unwrap().public_key(),
                enrolled_at: "2026-11-27T06:48:33Z".into(),
            })
            .unwrap();
        outbox
    }

    fn lines(bodies: &[Vec<u8>]) -> Vec<u8> {
        bodies.join(&b'\n')
    }

    #[test]
    fn stores_a_whole_submission_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = enrolled_outbox(&dir);
        let stored = submit(&mut outbox, &key(), &lines(&[body(1), body(2)]), 5).unwrap();
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
        let mut outbox = enrolled_outbox(&dir);
        let bad = String::from_utf8(body(3))
            .unwrap()
            .replace("\"amount_fen\":100", "\"amount_fen\":0");
        let input = lines(&[body(1), body(2), bad.into_bytes()]);
        let Err(IntakeError::Refused(f)) = submit(&mut outbox, &key(), &input, 5) else {
            panic!("not refused")
        };
        assert_eq!((f.record, f.line), (Some(3), Some(3)));
        assert_eq!(f.field.as_deref(), Some("amount_fen"));
        assert!(
            f.message
                .starts_with("record 3 (line 3): field `amount_fen`"),
            "{f}"
        );
        assert_eq!(outbox.head().unwrap().seq, 0);
    }

    #[test]
    fn refuses_a_record_of_another_county() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = enrolled_outbox(&dir);
        let other = String::from_utf8(body(2))
            .unwrap()
            .replace("430112", "431281");
        let input = format!("[\n{},\n{}\n]", String::from_utf8(body(1)).unwrap(), other);
        let Err(IntakeError::Refused(f)) = submit(&mut outbox, &key(), input.as_bytes(), 5) else {
            panic!("not refused")
        };
        assert_eq!(f.record, Some(2));
        assert_eq!(f.line, Some(3));
        assert_eq!(f.field.as_deref(), Some("county"));
        assert!(f.message.contains("431281"), "{f}");
        assert_eq!(outbox.head().unwrap().seq, 0);

        let report = check(
            input.as_bytes(),
            Some(&CountyCode::parse("430112").unwrap()),
        );
        assert_eq!(report.records, 2);
        assert_eq!(report.findings, vec![f]);
        assert!(check(input.as_bytes(), None).ok());
    }

    #[test]
    fn refuses_when_not_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.db")).unwrap();
        assert!(matches!(
            submit(&mut outbox, &key(), &body(1), 5),
            Err(IntakeError::NotEnrolled)
        ));
    }

    #[test]
    fn reports_syntax_errors_with_their_line() {
        let report = check(b"{\"kind\":\"payment\"}\n{oops", None);
        assert!(!report.ok());
        assert_eq!(report.findings[0].line, Some(2));
        assert_eq!(report.findings[0].record, None);
    }
}
