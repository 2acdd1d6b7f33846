//! Splitting what a county system hands over (a file, a request body) into records. Input is
//! either one JSON array of record objects or a sequence of objects (one per line, as JSON Lines,
//! though an object may span lines). Each record keeps its exact bytes, which become the signed
//! envelope body; errors name the record (1-based), its line and the field.

use std::fmt;

use serde_json::value::RawValue;

use crate::record::{Record, RecordError};

/// Most records one submission may hold (bounds memory and the size of one transaction).
pub const MAX_RECORDS_PER_SUBMISSION: usize = 200_000;

/// One record of a submission: its exact bytes and what they parse to.
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub bytes: Vec<u8>,
    pub record: Record,
}

/// Why a submission was refused; nothing of it may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// The input holds no record at all.
    Empty,
    /// The input is not a JSON array or a sequence of JSON objects.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// Record `index` (1-based), starting on `line`, is not well formed.
    Record {
        index: usize,
        line: usize,
        error: RecordError,
    },
    /// More than `MAX_RECORDS_PER_SUBMISSION` records.
    TooMany { limit: usize },
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Empty => f.write_str("the input holds no record"),
            InputError::Syntax {
                line,
                column,
                message,
            } => {
                write!(f, "line {line}, column {column}: not valid JSON: {message}")
            }
            InputError::Record { index, line, error } => {
                write!(f, "record {index} (line {line}): {error}")
            }
            InputError::TooMany { limit } => {
                write!(
                    f,
                    "the input holds more than {limit} records; split it into smaller files"
                )
            }
        }
    }
}

impl std::error::Error for InputError {}

fn line_of(input: &[u8], offset: usize) -> usize {
    1 + input[..offset.min(input.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The byte offset of `inner` within `outer` (both from the same buffer).
fn offset_in(outer: &[u8], inner: &str) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// Parses a whole submission. Either every record is well formed and all are returned in
/// order, or the first problem is returned.
pub fn parse_submission(input: &[u8]) -> Result<Vec<InputRecord>, InputError> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let first = input.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(InputError::Empty);
    };
    let syntax = |e: serde_json::Error| InputError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    let raws: Vec<&RawValue> = if input[first] == b'[' {
        let items: Vec<&RawValue> = serde_json::from_slice(input).map_err(syntax)?;
        items
    } else {
        let mut items = Vec::new();
        for item in serde_json::Deserializer::from_slice(input).into_iter::<&RawValue>() {
            items.push(item.map_err(syntax)?);
            if items.len() > MAX_RECORDS_PER_SUBMISSION {
                return Err(InputError::TooMany {
                    limit: MAX_RECORDS_PER_SUBMISSION,
                });
            }
        }
        items
    };
    if raws.is_empty() {
        return Err(InputError::Empty);
    }
    if raws.len() > MAX_RECORDS_PER_SUBMISSION {
        return Err(InputError::TooMany {
            limit: MAX_RECORDS_PER_SUBMISSION,
        });
    }
    raws.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let text = raw.get();
            let record = Record::parse(text.as_bytes()).map_err(|error| InputError::Record {
                index: i + 1,
                line: line_of(input, offset_in(input, text)),
                error,
            })?;
            Ok(InputRecord {
                bytes: text.as_bytes().to_vec(),
                record,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{"kind":"payment","id":"P-001","rev":1,"county":"430112","contract_id":"C-001","amount_fen":500,"paid_on":"2024-04-01","voucher_no":"V1"}"#;
    const B: &str = r#"{"kind":"payment","id":"P-002","rev":1,"county":"430112","contract_id":"C-001","amount_fen":700,"paid_on":"2024-04-02","voucher_no":"V2"}"#;

    #[test]
    fn json_lines_keep_exact_bytes() {
        let input = format!("{A}\n\n{B}\r\n");
        let recs = parse_submission(input.as_bytes()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].bytes, A.as_bytes());
        assert_eq!(recs[1].bytes, B.as_bytes());
    }

    #[test]
    fn arrays_and_single_objects() {
        let input = format!("\u{feff}[\n  {A},\n  {B}\n]");
        let recs = parse_submission(input.as_bytes()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].bytes, B.as_bytes());
        assert_eq!(parse_submission(A.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn errors_name_the_record_and_line() {
        let bad = B.replace("\"amount_fen\":700", "\"amount_fen\":0");
        let input = format!("{A}\n{A}\n{bad}\n");
        let e = parse_submission(input.as_bytes()).unwrap_err();
        assert!(
            matches!(
                &e,
                InputError::Record {
                    index: 3,
                    line: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("record 3 (line 3): field `amount_fen`"),
            "{e}"
        );

        let e = parse_submission(format!("{A}\n{{\"kind\":").as_bytes()).unwrap_err();
        assert!(matches!(e, InputError::Syntax { line: 2, .. }), "{e:?}");
        assert_eq!(parse_submission(b"  \n").unwrap_err(), InputError::Empty);
        assert_eq!(parse_submission(b"[]").unwrap_err(), InputError::Empty);
        assert!(matches!(
            parse_submission(b"[1]").unwrap_err(),
            InputError::Record { index: 1, .. }
        ));
    }
}
