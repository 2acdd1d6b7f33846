//! Excel workbooks (`.xlsx`) into a [`Table`], read with calamine: the first sheet unless
//! `--sheet` names one; the first non-blank row is the header; row numbers are the sheet's own
//! (what Excel shows). Numbers stay numbers (amounts are converted from their shortest decimal
//! form, see [`super::values::amount`]), date-formatted cells keep their serial day number, and
//! a cell holding an Excel error (`#REF!`, `#VALUE!`) is refused with its row and column.

use std::io::Cursor;

use calamine::{Data, Reader as _, Xlsx};

use super::table::{Row, Table};
use super::values::Cell;
use super::{ImportError, Problems, RowProblem};

/// Reads sheet `sheet` (default: the first) of the workbook in `bytes`.
pub fn read(bytes: &[u8], sheet: Option<&str>) -> Result<Table, ImportError> {
    let mut workbook = Xlsx::new(Cursor::new(bytes)).map_err(|e| {
        ImportError::File(format!(
            "not an Excel .xlsx workbook ({e}); for .xls files, save as .xlsx first"
        ))
    })?;
    let names = workbook.sheet_names();
    let name = match sheet {
        Some(wanted) => names
            .iter()
            .find(|n| n.as_str() == wanted)
            .cloned()
            .ok_or_else(|| {
                ImportError::File(format!(
                    "the workbook has no sheet {wanted:?}; its sheets are: {}",
                    names.join(", ")
                ))
            })?,
        None => names
            .first()
            .cloned()
            .ok_or_else(|| ImportError::File("the workbook has no sheets".into()))?,
    };
    let range = workbook
        .worksheet_range(&name)
        .map_err(|e| ImportError::File(format!("cannot read sheet {name:?}: {e}")))?;
    let first_row = range.start().map_or(0, |(row, _)| row as usize);
    let first_col = range.start().map_or(0, |(_, col)| col as usize);
    let mut table = Table {
        serial_dates: true,
        ..Table::default()
    };
    let mut problems = Problems::default();
    let mut header_seen = false;
    for (i, cells) in range.rows().enumerate() {
        let number = first_row + i + 1;
        // Columns left of the range's first are empty in every row: pad so that column
        // indexes are the sheet's.
        let mut row: Vec<Cell> = vec![Cell::Empty; first_col];
        for (j, data) in cells.iter().enumerate() {
            match cell(data) {
                Ok(c) => row.push(c),
                Err(e) => {
                    problems.push(RowProblem {
                        source: format!("row {number}"),
                        column: Some(column_name(first_col + j)),
                        message: e,
                    });
                    row.push(Cell::Empty);
                }
            }
        }
        if !header_seen {
            if row.iter().all(Cell::is_empty) {
                continue;
            }
            header_seen = true;
            table.headers = row.iter().map(|c| c.shown().trim().to_owned()).collect();
            continue;
        }
        table.rows.push(Row { number, cells: row });
    }
    problems.into_result()?;
    if !header_seen {
        return Err(ImportError::File(format!("sheet {name:?} is empty")));
    }
    Ok(table)
}

fn cell(data: &Data) -> Result<Cell, String> {
    Ok(match data {
        Data::Empty => Cell::Empty,
        Data::String(s) => Cell::Text(s.clone()),
        Data::Int(i) => Cell::Int(*i),
        Data::Float(f) => Cell::Number(*f),
        Data::Bool(b) => Cell::Bool(*b),
        Data::DateTime(d) => Cell::Serial(d.as_f64()),
        Data::DateTimeIso(s) | Data::DurationIso(s) => Cell::Text(s.clone()),
        Data::Error(e) => return Err(format!("the cell holds the Excel error {e}")),
    })
}

/// The letters Excel shows for a 0-based column index (0 → A, 26 → AA).
fn column_name(mut index: usize) -> String {
    let mut name = Vec::new();
    loop {
        name.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    name.reverse();
    String::from_utf8(name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

    fn workbook(build: impl FnOnce(&mut Workbook)) -> Vec<u8> {
        let mut wb = Workbook::new();
        build(&mut wb);
        wb.save_to_buffer().unwrap()
    }

    #[test]
    fn numbers_dates_and_sheets() {
        let bytes = workbook(|wb| {
            wb.add_worksheet().set_name("说明").unwrap();
            let ws = wb.add_worksheet().set_name("支付").unwrap();
            let date = Format::new().set_num_format("yyyy-mm-dd");
            ws.write(1, 1, "支付编号").unwrap();
            ws.write(1, 2, "金额").unwrap();
            ws.write(1, 3, "支付日期").unwrap();
            ws.write(3, 1, "P-1").unwrap();
            ws.write(3, 2, 1234.5).unwrap();
            ws.write_datetime_with_format(
                3,
                3,
                ExcelDateTime::from_ymd(2024, 3, 1).unwrap(),
                &date,
            )
            .unwrap();
        });
        let t = read(&bytes, Some("支付")).unwrap();
        assert_eq!(t.headers, vec!["", "支付编号", "金额", "支付日期"]);
        // The blank row 3 is kept (the conversion skips blank rows).
        assert_eq!(t.rows.len(), 2);
        assert!(t.rows[0].cells.iter().all(Cell::is_empty));
        assert_eq!(t.rows[1].number, 4);
        assert_eq!(t.rows[1].cells[2], Cell::Number(1234.5));
        assert_eq!(t.rows[1].cells[3], Cell::Serial(45352.0));

        let e = read(&bytes, None).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        let e = read(&bytes, Some("合同")).unwrap_err().to_string();
        assert!(e.contains("its sheets are: 说明, 支付"), "{e}");
        assert!(read(b"not a zip", None).is_err());
    }

    fn payments(second_amount: f64) -> Vec<u8> {
        workbook(|wb| {
            let ws = wb.add_worksheet();
            let date = Format::new().set_num_format("yyyy年m月d日");
            for (col, h) in [
                "支付编号",
                "合同编号",
                "支付金额（元）",
                "支付日期",
                "凭证号",
            ]
            .iter()
            .enumerate()
            {
                ws.write(0, u16::try_from(col).unwrap(), *h).unwrap();
            }
            ws.write(1, 0, "P-1").unwrap();
            ws.write(1, 1, "C-1").unwrap();
            ws.write(1, 2, 0.1).unwrap();
            ws.write_datetime_with_format(
                1,
                3,
                ExcelDateTime::from_ymd(2024, 4, 1).unwrap(),
                &date,
            )
            .unwrap();
            ws.write(1, 4, 20240001).unwrap();
            ws.write(2, 0, "P-2").unwrap();
            ws.write(2, 1, "C-1").unwrap();
            ws.write(2, 2, second_amount).unwrap();
            ws.write(2, 3, "2024/4/2").unwrap();
            ws.write(2, 4, "V").unwrap();
        })
    }

    #[test]
    fn a_sheet_of_payments_becomes_records() {
        use crate::import::{Options, convert};
        let opts = Options {
            kind: Some(tongbu_shared::record::Kind::Payment),
            county: Some(tongbu_shared::CountyCode::parse("430112").unwrap()),
            ..Options::default()
        };
        let xlsx = crate::import::Format::Xlsx;
        let c = convert(&payments(1234.5), xlsx, &opts).unwrap();
        let records: Vec<serde_json::Value> = c
            .records
            .iter()
            .map(|r| serde_json::from_slice(&r.bytes).unwrap())
            .collect();
        assert_eq!(records[0]["amount_fen"], 10);
        assert_eq!(records[0]["paid_on"], "2024-04-01");
        assert_eq!(records[0]["voucher_no"], "20240001");
        assert_eq!(records[1]["amount_fen"], 123_450);
        assert_eq!(records[1]["paid_on"], "2024-04-02");

        let e = convert(&payments(1.005), xlsx, &opts)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "row 3, column 支付金额（元）: '1.005' has more than 2 decimal(s): amounts in yuan are whole fen"
        );
    }

    #[test]
    fn column_letters() {
        assert_eq!(column_name(0), "A");
        assert_eq!(column_name(25), "Z");
        assert_eq!(column_name(26), "AA");
        assert_eq!(column_name(701), "ZZ");
        assert_eq!(column_name(702), "AAA");
    }
}
