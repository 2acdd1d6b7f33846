//! CSV files into a [`Table`]. County finance systems export CSV in UTF-8 (often with a byte
//! order mark, for Excel) or in GBK/GB18030; `auto` takes UTF-8 when the bytes are valid UTF-8
//! and GB18030 (a superset of GBK) otherwise. Bytes that are not valid in the chosen encoding
//! are refused (never replaced), naming the line. Fields are separated by commas, or by tabs
//! when the header row has tabs and no commas; quoting and embedded newlines follow RFC 4180
//! (the `csv` crate). The first non-blank row is the header; a row's number is the line of the
//! file it starts on, which is the row a spreadsheet shows for it.

use ::csv::ReaderBuilder;
use encoding_rs::{GB18030, GBK};

use super::table::{Row, Table};
use super::values::Cell;
use super::{Encoding, ImportError};

/// Decodes `bytes` as `encoding` into text, without a byte order mark.
pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<String, ImportError> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        // A UTF-8 byte order mark settles it, whatever was asked.
        return utf8(rest);
    }
    match encoding {
        Encoding::Utf8 => utf8(bytes),
        Encoding::Auto => match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => gb(bytes, GB18030, "GB18030"),
        },
        Encoding::Gbk => gb(bytes, GBK, "GBK"),
        Encoding::Gb18030 => gb(bytes, GB18030, "GB18030"),
    }
}

fn line_at(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

fn utf8(bytes: &[u8]) -> Result<String, ImportError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        ImportError::File(format!(
            "line {}: the file is not valid UTF-8 (byte {at}); if it came from a Chinese finance system it is probably GBK: use --encoding gbk or auto",
            line_at(bytes, at)
        ))
    })
}

fn gb(
    bytes: &[u8],
    encoding: &'static encoding_rs::Encoding,
    name: &str,
) -> Result<String, ImportError> {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(bytes.len() * 3 / 2 + 16);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut out, true);
    match result {
        encoding_rs::DecoderResult::InputEmpty => Ok(out),
        encoding_rs::DecoderResult::Malformed(_, _) => Err(ImportError::File(format!(
            "line {}: the file is not valid {name} (byte {}); name its encoding with --encoding",
            line_at(bytes, read),
            read.saturating_sub(1)
        ))),
        // `out` was sized for the worst case; a decoder that still wants room is a bug
        // (reported, never a panic).
        encoding_rs::DecoderResult::OutputFull => Err(ImportError::File(format!(
            "cannot decode the file as {name}: output buffer too small"
        ))),
    }
}

/// Reads a CSV file into a table.
pub fn read(bytes: &[u8], encoding: Encoding) -> Result<Table, ImportError> {
    let text = decode(bytes, encoding)?;
    let first_line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let delimiter = if first_line.contains('\t') && !first_line.contains(',') {
        b'\t'
    } else {
        b','
    };
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut table = Table::default();
    let mut header_seen = false;
    // (byte offset, line number at that offset)
    let mut counted: (usize, usize) = (0, 1);
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            ImportError::File(format!("line {line}: not valid CSV: {e}"))
        })?;
        // The line the record starts on: the row a spreadsheet or an editor shows for it
        // (blank lines count; a quoted cell spanning lines makes the next rows start later).
        // (The reader's own line count does not see the blank lines it skips, so the line is
        // counted from the record's byte offset, past any blank lines in front of it.)
        let start = record
            .position()
            .and_then(|p| usize::try_from(p.byte()).ok())
            .unwrap_or(0)
            .min(text.len());
        let skipped = text[start..]
            .bytes()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        // Lines are counted onwards from the previous record (records only move forward).
        let offset = (start + skipped).max(counted.0);
        counted.1 += text.as_bytes()[counted.0..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        counted.0 = offset;
        let number = counted.1;
        let cells: Vec<String> = record.iter().map(str::to_owned).collect();
        if !header_seen {
            if cells.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            header_seen = true;
            table.headers = cells.iter().map(|c| c.trim().to_owned()).collect();
            continue;
        }
        table.rows.push(Row {
            number,
            cells: cells
                .into_iter()
                .map(|c| {
                    if c.trim().is_empty() {
                        Cell::Empty
                    } else {
                        Cell::Text(c)
                    }
                })
                .collect(),
        });
    }
    if !header_seen {
        return Err(ImportError::File("the file is empty".into()));
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "支付编号,合同编号,金额(元),支付日期,凭证号\n";

    #[test]
    fn utf8_with_and_without_a_bom() {
        let text = format!("{HEADER}P-1,C-1,\"1,234.50\",2024/4/1,GK-1\n");
        for bytes in [
            text.as_bytes().to_vec(),
            [b"\xEF\xBB\xBF".as_slice(), text.as_bytes()].concat(),
        ] {
            let t = read(&bytes, Encoding::Auto).unwrap();
            assert_eq!(t.headers[0], "支付编号");
            assert_eq!(t.rows.len(), 1);
            assert_eq!(t.rows[0].number, 2);
            assert_eq!(t.rows[0].cells[2], Cell::Text("1,234.50".into()));
        }
    }

    #[test]
    fn gbk_bytes() {
        let text = format!("{HEADER}P-1,C-1,5,2024年4月1日,国库-1\n");
        let (gbk, _, unmappable) = GBK.encode(&text);
        assert!(!unmappable);
        assert!(
            std::str::from_utf8(&gbk).is_err(),
            "the test needs non-UTF-8 bytes"
        );
        for encoding in [Encoding::Auto, Encoding::Gbk, Encoding::Gb18030] {
            let t = read(&gbk, encoding).unwrap();
            assert_eq!(t.headers[2], "金额(元)");
            assert_eq!(t.rows[0].cells[3], Cell::Text("2024年4月1日".into()));
            assert_eq!(t.rows[0].cells[4], Cell::Text("国库-1".into()));
        }
        let e = read(&gbk, Encoding::Utf8).unwrap_err().to_string();
        assert!(e.starts_with("line 1: the file is not valid UTF-8"), "{e}");
    }

    #[test]
    fn invalid_gb18030_is_refused_not_replaced() {
        let bytes = b"a,b\n\x81\x20,x\n";
        let e = read(bytes, Encoding::Gb18030).unwrap_err().to_string();
        assert!(
            e.starts_with("line 2: the file is not valid GB18030"),
            "{e}"
        );
    }

    #[test]
    fn blank_rows_tabs_and_embedded_newlines() {
        let text = "\n\na\tb\nx\ty\n\n\"two\nlines\"\tz\n";
        let t = read(text.as_bytes(), Encoding::Auto).unwrap();
        assert_eq!(t.headers, vec!["a", "b"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!((t.rows[0].number, t.rows[1].number), (4, 6));
        assert_eq!(t.rows[1].cells[0], Cell::Text("two\nlines".into()));
        assert!(read(b"", Encoding::Auto).is_err());
    }
}
