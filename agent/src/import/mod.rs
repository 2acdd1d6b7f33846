//! `tongbu-agent import`: the formats county systems already export (CSV in UTF-8 or
//! GBK/GB18030, Excel workbooks, OCDS 1.1 release packages) turned into v1 records, which then
//! go through exactly the intake `submit` uses ([`crate::intake`]): checked, judged, signed and
//! stored all together, or refused with nothing stored.
//!
//! - [`csv`] and [`xlsx`] read a file into a [`table::Table`] (header row + data rows, each with
//!   the row number a spreadsheet shows); [`table`] turns rows into records by the column names
//!   ([`mapping`]: built-in Chinese and English header names, or a TOML mapping file) and the
//!   value conventions in [`values`] (amounts in yuan converted exactly, dates such as 2024/3/1);
//! - [`ocds`] maps an OCDS release package (planning.budget, contracts, transactions) to
//!   budget lines, contracts and payments.
//!
//! Invariants: a file converts whole or not at all: every problem of every row is collected
//! (up to [`MAX_PROBLEMS`]) and reported with its row (or OCDS path) and column, and then
//! nothing is stored. Records are produced in file order, so the seqs follow the rows. Money is
//! converted on decimal digits with integers only (`tongbu_shared::yuan`).

pub mod csv;
pub mod mapping;
pub mod ocds;
pub mod table;
pub mod values;
pub mod xlsx;

use std::fmt;

use tongbu_shared::ids::CountyCode;
use tongbu_shared::progress::Progress;
use tongbu_shared::record::Kind;

pub use mapping::Mapping;

/// Most problems reported for one file (the rest are counted).
pub const MAX_PROBLEMS: usize = 100;
/// Files with more rows than this show progress while they are converted.
pub const PROGRESS_ROWS: usize = 10_000;

/// The format of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
    Ocds,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "csv" => Ok(Format::Csv),
            "xlsx" => Ok(Format::Xlsx),
            "ocds" => Ok(Format::Ocds),
            other => Err(format!("{other:?}: the format must be csv, xlsx or ocds")),
        }
    }
}

/// The character encoding of a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// UTF-8 if the bytes are valid UTF-8, else GB18030 (which includes GBK).
    #[default]
    Auto,
    Utf8,
    Gbk,
    Gb18030,
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Encoding, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Encoding::Auto),
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "gbk" => Ok(Encoding::Gbk),
            "gb18030" => Ok(Encoding::Gb18030),
            other => Err(format!(
                "{other:?}: the encoding must be auto, utf-8, gbk or gb18030"
            )),
        }
    }
}

/// A record kind as `--kind` or a mapping names it, in English or Chinese.
pub fn parse_kind(s: &str) -> Result<Kind, String> {
    values::kind(s).ok_or_else(|| {
        format!("{s:?}: the kind must be budget_line, contract, payment or evaluation")
    })
}

/// How to read an import file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub mapping: Mapping,
    /// The kind of every row without a kind column (`--kind`; beats the mapping's).
    pub kind: Option<Kind>,
    pub encoding: Encoding,
    /// The workbook sheet to read (default: the first).
    pub sheet: Option<String>,
    /// The agent's county: the county of records that name none, and the only one allowed.
    pub county: Option<CountyCode>,
}

/// One record made from the file: where it came from and its exact JSON bytes.
#[derive(Debug, Clone)]
pub struct Converted {
    /// `row 17`, or for OCDS `release 2 (ocid …) contracts[0]`.
    pub source: String,
    pub bytes: Vec<u8>,
}

/// A whole file, converted.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub records: Vec<Converted>,
    /// Columns no field was read from (reported, so a misspelt header is noticed).
    pub ignored_columns: Vec<String>,
}

impl Conversion {
    /// The records as one submission for the intake: JSON Lines, record `n` on line `n`.
    pub fn submission(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.records.iter().map(|r| r.bytes.len() + 1).sum());
        for r in &self.records {
            out.extend_from_slice(&r.bytes);
            out.push(b'\n');
        }
        out
    }

    /// Where record `n` (1-based, as the intake counts) came from.
    pub fn source_of(&self, n: usize) -> Option<&str> {
        n.checked_sub(1)
            .and_then(|i| self.records.get(i))
            .map(|r| r.source.as_str())
    }

    /// An intake message about record `n` of [`Conversion::submission`]
    /// (`record 3 (line 3): …`) said about the row it came from (`row 17: …`).
    pub fn relabel(&self, message: &str) -> String {
        let Some(rest) = message.strip_prefix("record ") else {
            return message.to_owned();
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Some(source) = digits.parse().ok().and_then(|n| self.source_of(n)) else {
            return message.to_owned();
        };
        let place = format!("record {digits} (line {digits})");
        match message.strip_prefix(&place) {
            Some(tail) => format!("{source}{tail}"),
            None => message.to_owned(),
        }
    }
}

/// Why a file was not imported; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file as a whole cannot be read: not the format, bad encoding, no header, an
    /// ambiguous or unknown column setup, a bad mapping file.
    #[error("{0}")]
    File(String),
    /// Rows that cannot become records: each named with its row and column.
    #[error("{}", Problems::describe(problems, *more))]
    Rows {
        problems: Vec<RowProblem>,
        /// Problems beyond [`MAX_PROBLEMS`], not listed.
        more: usize,
    },
}

/// One problem with one row (or OCDS object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// `row 17`, or the OCDS path.
    pub source: String,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{}, column {column}: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// Problems collected while converting a file, at most [`MAX_PROBLEMS`] kept.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<RowProblem>,
    more: usize,
}

impl Problems {
    pub(crate) fn push(&mut self, p: RowProblem) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }

    pub(crate) fn extend(&mut self, ps: impl IntoIterator<Item = RowProblem>) {
        for p in ps {
            self.push(p);
        }
    }

    pub(crate) fn into_result(self) -> Result<(), ImportError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(ImportError::Rows {
                problems: self.list,
                more: self.more,
            })
        }
    }

    fn describe(problems: &[RowProblem], more: usize) -> String {
        let mut out: Vec<String> = problems.iter().map(RowProblem::to_string).collect();
        if more > 0 {
            out.push(format!("… and {more} more problem(s)"));
        }
        out.join("\n")
    }
}

/// Converts a whole file; see the module doc. Shows progress on stderr for large files.
pub fn convert(input: &[u8], format: Format, opts: &Options) -> Result<Conversion, ImportError> {
    let table = match format {
        Format::Csv => csv::read(input, opts.encoding)?,
        Format::Xlsx => xlsx::read(input, opts.sheet.as_deref())?,
        Format::Ocds => {
            let records = ocds::convert(input, opts)?;
            return Ok(Conversion {
                records,
                ignored_columns: Vec::new(),
            });
        }
    };
    let progress = if table.rows.len() > PROGRESS_ROWS {
        let total = u64::try_from(table.rows.len()).ok();
        Progress::new("reading rows", total).unit("rows")
    } else {
        Progress::hidden()
    };
    let converted = table::convert(
        &table,
        &opts.mapping,
        opts.kind,
        opts.county.as_ref(),
        &progress,
    );
    progress.finish();
    let (records, ignored_columns) = converted?;
    Ok(Conversion {
        records,
        ignored_columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_messages_name_the_row() {
        let c = Conversion {
            records: vec![
                Converted {
                    source: "row 2".into(),
                    bytes: b"{}".to_vec(),
                },
                Converted {
                    source: "row 17".into(),
                    bytes: b"{}".to_vec(),
                },
            ],
            ignored_columns: Vec::new(),
        };
        assert_eq!(c.submission(), b"{}\n{}\n");
        assert_eq!(
            c.relabel("record 2 (line 2) C-1: BUDGET_EXCEEDED: too much"),
            "row 17 C-1: BUDGET_EXCEEDED: too much"
        );
        assert_eq!(c.relabel("record 9 (line 9): x"), "record 9 (line 9): x");
        assert_eq!(c.relabel("the disk is full"), "the disk is full");
    }

    #[test]
    fn a_large_file_converts_whole() {
        let mut csv = String::from("支付编号,合同编号,金额,支付日期,凭证号\n");
        let rows = PROGRESS_ROWS + 1;
        for i in 0..rows {
            csv.push_str(&format!("P-{i},C-1,{i}.01,2024-04-01,GK-{i}\n"));
        }
        let opts = Options {
            kind: Some(Kind::Payment),
            county: Some(CountyCode::parse("430112").unwrap()),
            ..Options::default()
        };
        let c = convert(csv.as_bytes(), Format::Csv, &opts).unwrap();
        assert_eq!(c.records.len(), rows);
        let last_row = format!("row {}", rows + 1);
        assert_eq!(c.source_of(rows), Some(last_row.as_str()));
        let last: serde_json::Value = serde_json::from_slice(&c.records[rows - 1].bytes).unwrap();
        assert_eq!(
            last["amount_fen"],
            i64::try_from(PROGRESS_ROWS).unwrap() * 100 + 1
        );
    }

    #[test]
    fn choices_parse() {
        assert_eq!("xlsx".parse::<Format>(), Ok(Format::Xlsx));
        assert!("xls".parse::<Format>().is_err());
        assert_eq!("GBK".parse::<Encoding>(), Ok(Encoding::Gbk));
        assert_eq!(parse_kind("支付"), Ok(Kind::Payment));
    }
}
