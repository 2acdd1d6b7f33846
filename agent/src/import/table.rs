//! Rows of a table (from a CSV file or a workbook sheet) into v1 records.
//!
//! For each row: its kind (a kind column, else `--kind`, else the mapping's `kind`), then each
//! field of that kind from the column that gives it (see [`super::mapping`]), else a mapping
//! constant, else a default (`rev` 1, `county` the agent's own). Each value is converted by its
//! field's type (amounts to fen exactly, dates to `YYYY-MM-DD`, Chinese words to v1 words), the
//! record is built as JSON and parsed by the same strict parser `submit` uses, and every
//! problem is reported against the row and column it came from.
//!
//! Invariants: blank rows are skipped; a row either becomes exactly one record or yields
//! problems; all rows are checked (up to [`super::MAX_PROBLEMS`] problems are kept) so the
//! person fixes the file once, not once per error.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tongbu_shared::ids::CountyCode;
use tongbu_shared::progress::Progress;
use tongbu_shared::record::{Kind, Record};

use super::mapping::{
    COMMON_FIELDS, Certainty, ColumnRule, FieldType, Mapping, Target, builtin_targets, field_type,
    normalize,
};
use super::values::{self, Cell};
use super::{Converted, ImportError, Problems, RowProblem};

/// A table: the header row's names and the data rows with their row numbers as a spreadsheet
/// shows them (the header is row 1 in a CSV file).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Row>,
    /// Whether number cells may be Excel serial dates (workbooks, not CSV).
    pub serial_dates: bool,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub number: usize,
    pub cells: Vec<Cell>,
}

/// Which columns give each field, for rows of one kind.
#[derive(Debug, Clone)]
struct Columns {
    /// field → the columns that give it (index, and the unit for an amount), the surest match
    /// first: a row takes the first whose cell is not empty (a sheet of several kinds may
    /// have 编号 for every row and 合同编号 only on contract rows).
    by_field: BTreeMap<&'static str, Vec<(usize, Target)>>,
}

/// What every row is read with: the columns for each kind, the defaults.
struct Reader<'a> {
    table: &'a Table,
    mapping: &'a Mapping,
    default_kind: Option<Kind>,
    county: Option<&'a CountyCode>,
    kind_column: Option<usize>,
    columns: BTreeMap<Kind, Result<Columns, String>>,
}

/// Converts every row of `table`. `kind` is `--kind`; `county` the agent's county (the default
/// for rows without one, and the only county a row may name).
pub fn convert(
    table: &Table,
    mapping: &Mapping,
    kind: Option<Kind>,
    county: Option<&CountyCode>,
    progress: &Progress,
) -> Result<(Vec<Converted>, Vec<String>), ImportError> {
    if table.headers.iter().all(|h| h.trim().is_empty()) {
        return Err(ImportError::File(
            "the file has no header row: its first row must name the columns".into(),
        ));
    }
    let kind_column = find_column(table, mapping, "kind")?;
    let default_kind = kind.or(mapping.kind);
    if kind_column.is_none() && default_kind.is_none() {
        return Err(ImportError::File(
            "which kind of record do the rows hold? Add a kind column (kind, 类型), pass --kind, or set `kind` in the mapping file".into(),
        ));
    }
    let columns = Kind::ALL
        .iter()
        .map(|k| (*k, columns_for(table, mapping, *k)))
        .collect();
    let reader = Reader {
        table,
        mapping,
        default_kind,
        county,
        kind_column,
        columns,
    };
    let mut problems = Problems::default();
    let mut records = Vec::with_capacity(table.rows.len());
    let mut used = vec![false; table.headers.len()];
    if let Some(i) = kind_column {
        used[i] = true;
    }
    for row in &table.rows {
        progress.inc(1);
        if row.cells.iter().all(Cell::is_empty) {
            continue;
        }
        match reader.row(row, &mut used) {
            Ok(bytes) => records.push(Converted {
                source: format!("row {}", row.number),
                bytes,
            }),
            Err(row_problems) => problems.extend(row_problems),
        }
    }
    problems.into_result()?;
    if records.is_empty() {
        return Err(ImportError::File("the file holds no rows of data".into()));
    }
    let ignored = table
        .headers
        .iter()
        .zip(&used)
        .filter(|(h, used)| !**used && !h.trim().is_empty())
        .map(|(h, _)| h.clone())
        .collect();
    Ok((records, ignored))
}

/// The column the mapping or a built-in name gives `field` (for any kind), if one does.
fn find_column(
    table: &Table,
    mapping: &Mapping,
    field: &str,
) -> Result<Option<usize>, ImportError> {
    let mut found: Option<(usize, Certainty)> = None;
    for (i, header) in table.headers.iter().enumerate() {
        let h = normalize(header);
        let certainty = match mapping.columns.get(&h) {
            Some(ColumnRule::Target(t)) if t.field == field => Certainty::Mapped,
            Some(_) => continue,
            None => match Kind::ALL
                .iter()
                .filter_map(|k| builtin_targets(&h, *k))
                .find(|(t, _)| t.field == field)
            {
                Some((_, c)) => c,
                None => continue,
            },
        };
        match found {
            Some((j, c)) if c == certainty => {
                return Err(ImportError::File(format!(
                    "columns {} and {} both give `{field}`; name the one to use in the mapping file",
                    table.headers[j], header
                )));
            }
            Some((_, c)) if c > certainty => {}
            _ => found = Some((i, certainty)),
        }
    }
    Ok(found.map(|(i, _)| i))
}

/// The columns that give the fields of `kind`; an error if two give one field equally well.
fn columns_for(table: &Table, mapping: &Mapping, kind: Kind) -> Result<Columns, String> {
    let mut found: BTreeMap<&'static str, Vec<(usize, Target, Certainty)>> = BTreeMap::new();
    let fields = kind.field_names();
    for (i, header) in table.headers.iter().enumerate() {
        let h = normalize(header);
        let (target, certainty) = match mapping.columns.get(&h) {
            Some(ColumnRule::Ignore) => continue,
            Some(ColumnRule::Target(t)) => (*t, Certainty::Mapped),
            None => match builtin_targets(&h, kind) {
                Some(found) => found,
                None => continue,
            },
        };
        if target.field == "kind"
            || !(COMMON_FIELDS.contains(&target.field) || fields.contains(&target.field))
        {
            continue;
        }
        let candidates = found.entry(target.field).or_default();
        if let Some((j, _, _)) = candidates.iter().find(|(_, _, c)| *c == certainty) {
            return Err(format!(
                "columns {} and {header} both give `{}` of {kind} rows; name the one to use in the mapping file",
                table.headers[*j], target.field
            ));
        }
        candidates.push((i, target, certainty));
    }
    Ok(Columns {
        by_field: found
            .into_iter()
            .map(|(f, mut candidates)| {
                candidates.sort_by_key(|c| std::cmp::Reverse(c.2));
                (f, candidates.into_iter().map(|(i, t, _)| (i, t)).collect())
            })
            .collect(),
    })
}

/// Where a field's value came from, to name it in an error.
#[derive(Debug, Clone)]
enum Origin {
    Column(String),
    Constant,
    Default,
}

impl<'a> Reader<'a> {
    fn row(&self, row: &Row, used: &mut [bool]) -> Result<Vec<u8>, Vec<RowProblem>> {
        let at = |column: Option<&str>, message: String| RowProblem {
            source: format!("row {}", row.number),
            column: column.map(str::to_owned),
            message,
        };
        let cell = |i: usize| row.cells.get(i).unwrap_or(&Cell::Empty);

        let kind_cell = self.kind_column.map(cell).filter(|c| !c.is_empty());
        let kind = match kind_cell {
            Some(c) => {
                let column = self.kind_column.map(|i| self.table.headers[i].as_str());
                let text = values::text(c).map_err(|e| vec![at(column, e)])?;
                let word = self.mapping.word("kind", &text);
                values::kind(word).ok_or_else(|| {
                    vec![at(
                        column,
                        format!(
                            "'{text}' is not a kind of record (budget_line, contract, payment, evaluation, or 预算指标, 合同, 支付, 绩效评价)"
                        ),
                    )]
                })?
            }
            None => self.default_kind.ok_or_else(|| {
                vec![at(
                    None,
                    "the kind cell is empty and no --kind or mapping `kind` says what the row is"
                        .into(),
                )]
            })?,
        };
        let columns = match &self.columns[&kind] {
            Ok(c) => c,
            Err(e) => return Err(vec![at(None, e.clone())]),
        };

        let mut json = Map::new();
        let mut origins: BTreeMap<&'static str, Origin> = BTreeMap::new();
        let mut problems = Vec::new();
        json.insert("kind".into(), kind.as_str().into());
        for field in COMMON_FIELDS
            .iter()
            .chain(kind.field_names())
            .filter(|f| **f != "kind")
        {
            let candidates = columns.by_field.get(field).map_or(&[][..], Vec::as_slice);
            for (i, _) in candidates {
                used[*i] = true;
            }
            let from_column = candidates.iter().find(|(i, _)| !cell(*i).is_empty());
            let (value, origin) = if let Some((i, target)) = from_column {
                used[*i] = true;
                let header = &self.table.headers[*i];
                match self.value(field, cell(*i), target.unit) {
                    Ok(v) => (Ok(v), Origin::Column(header.clone())),
                    Err(e) => {
                        problems.push(at(Some(header), e));
                        continue;
                    }
                }
            } else {
                match self.constant(field) {
                    Some(v) => v,
                    None => continue,
                }
            };
            match value {
                Ok(v) => {
                    json.insert((*field).to_owned(), v);
                    origins.insert(field, origin);
                }
                Err(e) => problems.push(at(None, format!("mapping constant `{field}`: {e}"))),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        if let (Some(own), Some(Value::String(named))) = (self.county, json.get("county"))
            && named != own.as_str()
        {
            let column = match origins.get("county") {
                Some(Origin::Column(c)) => Some(c.as_str()),
                _ => None,
            };
            return Err(vec![at(
                column,
                format!("county {named} is not this agent's county {own}"),
            )]);
        }

        let bytes = Value::Object(json).to_string().into_bytes();
        match Record::parse(&bytes) {
            Ok(_) => Ok(bytes),
            Err(e) => {
                let field = e.field.as_deref().unwrap_or_default();
                let problem = match (e.field.as_deref(), origins.get(field)) {
                    (Some(f), Some(Origin::Column(c))) => {
                        return Err(vec![at(Some(c), format!("`{f}` {}", e.problem))]);
                    }
                    (Some(f), Some(Origin::Constant)) => {
                        format!("mapping constant `{f}` {}", e.problem)
                    }
                    (Some(f), Some(Origin::Default)) => format!("`{f}` {}", e.problem),
                    (Some(f), None) if e.problem.starts_with("is missing") => format!(
                        "`{f}` {}: no column gives it (or its cell is empty); name the column in a mapping file or give a constant",
                        e.problem
                    ),
                    _ => e.to_string(),
                };
                Err(vec![at(None, problem)])
            }
        }
    }

    /// A mapping constant for `field`, or a default, as JSON.
    fn constant(&self, field: &str) -> Option<(Result<Value, String>, Origin)> {
        if let Some(v) = self.mapping.constants.get(field) {
            let cell = match v {
                toml::Value::String(s) => Cell::Text(s.clone()),
                toml::Value::Integer(i) => Cell::Int(*i),
                toml::Value::Boolean(b) => Cell::Bool(*b),
                _ => Cell::Empty,
            };
            let unit = (field == "amount_fen").then_some(tongbu_shared::yuan::Unit::Fen);
            return Some((self.value(field, &cell, unit), Origin::Constant));
        }
        match (field, self.county) {
            ("rev", _) => Some((Ok(1.into()), Origin::Default)),
            ("county", Some(c)) => Some((Ok(c.as_str().into()), Origin::Default)),
            _ => None,
        }
    }

    /// One cell as the JSON value of `field`.
    fn value(
        &self,
        field: &str,
        cell: &Cell,
        unit: Option<tongbu_shared::yuan::Unit>,
    ) -> Result<Value, String> {
        match field_type(field) {
            FieldType::Text => values::text(cell).map(Value::from),
            FieldType::Int => values::whole_number(cell)
                .map(Value::from)
                .ok_or_else(|| format!("'{}' is not a whole number", cell.shown())),
            FieldType::Bool => {
                let translated = match cell {
                    Cell::Text(s) => Cell::Text(self.mapping.word(field, s).to_owned()),
                    other => other.clone(),
                };
                values::boolean(&translated)
                    .map(Value::from)
                    .ok_or_else(|| {
                        format!("'{}' is not yes or no (是/否, true/false)", cell.shown())
                    })
            }
            FieldType::Date => values::date(cell, self.table.serial_dates).map(Value::from),
            FieldType::Amount => {
                let unit = unit.unwrap_or(tongbu_shared::yuan::Unit::Yuan);
                let fen = values::amount(cell, unit)?;
                if fen <= 0 {
                    return Err(format!("'{}' is not an amount above zero", cell.shown()));
                }
                if fen > tongbu_shared::money::MAX_AMOUNT {
                    return Err(format!(
                        "'{}' is more than the largest amount, 10^15 fen (10 trillion yuan)",
                        cell.shown()
                    ));
                }
                Ok(fen.into())
            }
            FieldType::Choice => {
                let text = values::text(cell)?;
                Ok(values::translate(field, self.mapping.word(field, &text)).into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::{MAX_PROBLEMS, RowProblem};

    fn table(headers: &[&str], rows: &[&[&str]]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: rows
                .iter()
                .enumerate()
                .map(|(i, r)| Row {
                    number: i + 2,
                    cells: r
                        .iter()
                        .map(|c| {
                            if c.is_empty() {
                                Cell::Empty
                            } else {
                                Cell::Text((*c).to_owned())
                            }
                        })
                        .collect(),
                })
                .collect(),
            serial_dates: false,
        }
    }

    fn county() -> CountyCode {
        CountyCode::parse("430112").unwrap()
    }

    fn run(t: &Table, mapping: &Mapping, kind: Option<Kind>) -> Result<Vec<Value>, ImportError> {
        let own = county();
        convert(t, mapping, kind, Some(&own), &Progress::hidden()).map(|(records, _)| {
            records
                .iter()
                .map(|r| serde_json::from_slice(&r.bytes).unwrap())
                .collect()
        })
    }

    fn problems(e: ImportError) -> Vec<String> {
        match e {
            ImportError::Rows { problems, .. } => {
                problems.iter().map(RowProblem::to_string).collect()
            }
            other => panic!("not row problems: {other}"),
        }
    }

    const PAYMENT_HEADERS: &[&str] = &[
        "支付编号",
        "合同编号",
        "金额(元)",
        "支付日期",
        "凭证号",
        "经办人",
    ];

    #[test]
    fn chinese_headers_become_a_payment() {
        let t = table(
            PAYMENT_HEADERS,
            &[
                &["P-1", "C-1", "1,234.50", "2024/4/1", "GK-1", "张三"],
                &[""; 6],
            ],
        );
        let records = run(&t, &Mapping::default(), Some(Kind::Payment)).unwrap();
        assert_eq!(
            records,
            vec![serde_json::json!({
                "kind": "payment", "id": "P-1", "rev": 1, "county": "430112",
                "contract_id": "C-1", "amount_fen": 123450, "paid_on": "2024-04-01",
                "voucher_no": "GK-1"
            })]
        );
        let own = county();
        let (_, ignored) = convert(
            &t,
            &Mapping::default(),
            Some(Kind::Payment),
            Some(&own),
            &Progress::hidden(),
        )
        .unwrap();
        assert_eq!(ignored, vec!["经办人".to_owned()]);
    }

    #[test]
    fn every_row_error_is_named() {
        let t = table(
            PAYMENT_HEADERS,
            &[
                &["P-1", "C-1", "12,3.4", "2024-04-01", "GK-1", ""],
                &["P-2", "C-1", "10.005", "2024-02-30", "GK-2", ""],
                &["P-3", "C-1", "-5", "2024-04-01", "GK-3", ""],
                &["P-4", "C-1", "0.1", "2024-04-01", "", ""],
                &["P 5", "C-1", "0.1", "2024-04-01", "GK-5", ""],
            ],
        );
        let got = problems(run(&t, &Mapping::default(), Some(Kind::Payment)).unwrap_err());
        assert_eq!(
            got,
            vec![
                "row 2, column 金额(元): '12,3.4' is not an amount in yuan",
                "row 3, column 金额(元): '10.005' has more than 2 decimal(s): amounts in yuan are whole fen",
                "row 3, column 支付日期: '2024-02-30' is not a date (write 2024-03-01, 2024/3/1 or 2024年3月1日)",
                "row 4, column 金额(元): '-5' is not an amount above zero",
                "row 5: `voucher_no` is missing: no column gives it (or its cell is empty); name the column in a mapping file or give a constant",
                "row 6, column 支付编号: `id` must be 1-64 characters of letters, digits, '.', '_' or '-', got \"P 5\"",
            ]
        );
    }

    #[test]
    fn mixed_kinds_by_a_kind_column() {
        let t = table(
            &[
                "类型",
                "编号",
                "指标编号",
                "合同编号",
                "部门",
                "年度",
                "目录编码",
                "金额",
                "阶段",
                "批复日期",
                "统一社会信用代码",
                "供应商",
                "采购方式",
                "签订日期",
            ],
            &[
                &[
                    "预算指标",
                    "BL-1",
                    "",
                    "",
                    "101001",
                    "2024",
                    "A0501",
                    "1,200,000",
                    "已批复",
                    "2024年1月15日",
                    "",
                    "",
                    "",
                    "",
                ],
                &[
                    "合同",
                    "C-1",
                    "BL-1",
                    "",
                    "",
                    "",
                    "A0501",
                    "1000000.00",
                    "",
                    "",
                    "91350100M000100Y43",
                    "红色管家",
                    "公开招标",
                    "2024-03-01",
                ],
            ],
        );
        let records = run(&t, &Mapping::default(), None).unwrap();
        assert_eq!(records[0]["kind"], "budget_line");
        assert_eq!(records[0]["id"], "BL-1");
        assert_eq!(records[0]["amount_fen"], 120_000_000);
        assert_eq!(records[0]["stage"], "approved");
        assert_eq!(records[0]["approved_on"], "2024-01-15");
        assert_eq!(records[1]["kind"], "contract");
        assert_eq!(records[1]["id"], "C-1");
        assert_eq!(records[1]["budget_line_id"], "BL-1");
        assert_eq!(records[1]["method"], "public_tender");
    }

    #[test]
    fn a_mapping_names_columns_and_constants() {
        let mapping = Mapping::parse(
            r#"
            kind = "payment"
            [columns]
            "流水号" = "id"
            "合同" = "contract_id"
            "实付" = "amount_fen"
            "日期" = "paid_on"
            [constants]
            voucher_no = "GK-2024"
            "#,
        )
        .unwrap();
        let t = table(
            &["流水号", "合同", "实付", "日期"],
            &[&["P-1", "C-1", "500", "2024-04-01"]],
        );
        let records = run(&t, &mapping, None).unwrap();
        assert_eq!(records[0]["amount_fen"], 500);
        assert_eq!(records[0]["voucher_no"], "GK-2024");
    }

    #[test]
    fn another_county_and_missing_kind_are_refused() {
        let t = table(
            &["区县", "支付编号", "合同编号", "金额", "支付日期", "凭证号"],
            &[&["431281", "P-1", "C-1", "5", "2024-04-01", "V"]],
        );
        assert_eq!(
            problems(run(&t, &Mapping::default(), Some(Kind::Payment)).unwrap_err()),
            vec!["row 2, column 区县: county 431281 is not this agent's county 430112"]
        );
        let e = run(&t, &Mapping::default(), None).unwrap_err();
        assert!(e.to_string().contains("which kind of record"), "{e}");
    }

    #[test]
    fn ambiguous_columns_are_named() {
        let t = table(
            &[
                "金额",
                "合同金额",
                "支付编号",
                "合同编号",
                "支付日期",
                "凭证号",
            ],
            &[&["5", "5", "P-1", "C-1", "2024-04-01", "V"]],
        );
        let got = problems(run(&t, &Mapping::default(), Some(Kind::Payment)).unwrap_err());
        assert_eq!(
            got,
            vec![
                "row 2: columns 金额 and 合同金额 both give `amount_fen` of payment rows; name the one to use in the mapping file"
            ]
        );
    }

    #[test]
    fn problems_are_capped() {
        let rows: Vec<Vec<&str>> = (0..MAX_PROBLEMS + 7)
            .map(|_| vec!["P-1", "C-1", "x", "2024-04-01", "V", ""])
            .collect();
        let rows: Vec<&[&str]> = rows.iter().map(Vec::as_slice).collect();
        let t = table(PAYMENT_HEADERS, &rows);
        match run(&t, &Mapping::default(), Some(Kind::Payment)).unwrap_err() {
            ImportError::Rows { problems, more } => {
                assert_eq!(problems.len(), MAX_PROBLEMS);
                assert_eq!(more, 7);
            }
            other => panic!("{other}"),
        }
    }
}
