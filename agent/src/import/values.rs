//! Cell values as county spreadsheets write them, turned into what a v1 record field holds:
//! dates in the ways Chinese finance systems write them (2024-03-01, 2024/3/1, 2024年3月1日,
//! Excel serial numbers), amounts in yuan, 万元 or fen (exactly, see `tongbu_shared::yuan`), and
//! the Chinese names of kinds, stages, procurement methods and grades. A value this module does
//! not recognise is passed on unchanged, so the record parser names what it expected.

use tongbu_shared::Date;
use tongbu_shared::record::Kind;
use tongbu_shared::yuan::{self, Unit};

/// One cell of a table, as the file gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Empty,
    Text(String),
    Int(i64),
    /// A number cell of a workbook (Excel keeps every number as a double).
    Number(f64),
    /// A workbook cell formatted as a date: its Excel serial day number.
    Serial(f64),
    Bool(bool),
}

impl Cell {
    /// The cell as the person who typed it would read it (for error messages).
    pub fn shown(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Number(f) | Cell::Serial(f) => f.to_string(),
            Cell::Bool(b) => b.to_string(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) => s.trim().is_empty(),
            _ => false,
        }
    }
}

/// The whole number a cell holds, if it is one (`92`, `"92"`, `92.0` from a workbook).
pub fn whole_number(cell: &Cell) -> Option<i64> {
    match cell {
        Cell::Int(i) => Some(*i),
        Cell::Number(f) => whole_f64(*f),
        Cell::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `f` as an i64 if it is a whole number well inside the range where doubles are exact.
fn whole_f64(f: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.is_finite() && f.fract() == 0.0 && f.abs() < EXACT {
        // In range and whole, so the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        Some(f as i64)
    } else {
        None
    }
}

/// The text of a cell that holds an identifier or free text: workbooks store a number typed
/// into an id column (a department code 101001) as a double, which is written back whole.
pub fn text(cell: &Cell) -> Result<String, String> {
    match cell {
        Cell::Text(s) => Ok(s.trim().to_owned()),
        Cell::Int(i) => Ok(i.to_string()),
        Cell::Number(f) => whole_f64(*f)
            .map(|i| i.to_string())
            .ok_or_else(|| format!("'{f}' is a number with a fraction, not a code or text")),
        Cell::Bool(b) => Ok(b.to_string()),
        Cell::Serial(_) => Err(format!("'{}' is a date, not a code or text", cell.shown())),
        Cell::Empty => Ok(String::new()),
    }
}

/// Parses an amount cell in `unit` into fen (sign kept; the record parser checks the range).
pub fn amount(cell: &Cell, unit: Unit) -> Result<i64, String> {
    let shown = cell.shown();
    let text = match cell {
        Cell::Text(s) => {
            let s = s.trim();
            let s = s
                .strip_prefix('¥')
                .or_else(|| s.strip_prefix('￥'))
                .unwrap_or(s);
            s.trim().to_owned()
        }
        Cell::Int(i) => i.to_string(),
        // A workbook's double, written as the shortest decimal that reads back as the same
        // double: what the person typed, for any amount of up to 15 significant digits. A
        // computed value such as 0.1 + 0.2 shows its extra digits and is refused below.
        Cell::Number(f) => f.to_string(),
        _ => return Err(format!("'{shown}' is not an amount in {}", unit.name())),
    };
    yuan::parse(&text, unit).map_err(|e| format!("'{shown}' {e}"))
}

/// Parses a date cell: text as [`date_text`] reads it, or a workbook's serial day number.
pub fn date(cell: &Cell, serials: bool) -> Result<String, String> {
    let bad = || {
        format!(
            "'{}' is not a date (write 2024-03-01, 2024/3/1 or 2024年3月1日)",
            cell.shown()
        )
    };
    let parsed = match cell {
        Cell::Text(s) => date_text(s.trim()),
        Cell::Serial(f) | Cell::Number(f) if serials => excel_serial(*f),
        _ => None,
    };
    parsed.map(|d| d.to_string()).ok_or_else(bad)
}

/// A date written `2024-03-01`, `2024/3/1`, `2024.3.1`, `2024年3月1日` or `20240301`, optionally
/// followed by a time of day (exports of date-time columns), which is ignored.
pub fn date_text(s: &str) -> Option<Date> {
    let s = s.trim();
    // Drop a time of day: "2024-03-01 00:00:00" or "2024-03-01T08:30".
    let day_part = match s.find([' ', 'T']) {
        Some(i) if is_time(s[i + 1..].trim()) => s[..i].trim(),
        _ => s,
    };
    let (y, m, d) = if day_part.len() == 8 && day_part.bytes().all(|b| b.is_ascii_digit()) {
        (&day_part[..4], &day_part[4..6], &day_part[6..])
    } else if let Some(rest) = day_part.strip_suffix('日') {
        let (y, rest) = rest.split_once('年')?;
        let (m, d) = rest.split_once('月')?;
        (y, m, d)
    } else {
        let sep = day_part.chars().find(|c| matches!(c, '-' | '/' | '.'))?;
        let mut parts = day_part.split(sep);
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        (y, m, d)
    };
    let number = |t: &str, max_len: usize| -> Option<u32> {
        let t = t.trim();
        if t.is_empty() || t.len() > max_len || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, m, d) = (number(y, 4)?, number(m, 2)?, number(d, 2)?);
    if y < 1000 {
        return None;
    }
    Date::from_ymd(
        i32::try_from(y).ok()?,
        u8::try_from(m).ok()?,
        u8::try_from(d).ok()?,
    )
    .ok()
}

fn is_time(s: &str) -> bool {
    let mut parts = s.split(':');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let (h, m) = (parts.next(), parts.next());
    if !ok(h) || !ok(m) {
        return false;
    }
    match parts.next() {
        None => true,
        Some(sec) => {
            let whole = sec.split('.').next();
            ok(whole) && parts.next().is_none()
        }
    }
}

/// The day of an Excel serial number in the 1900 date system (what every current workbook
/// uses): day 1 is 1900-01-01 and Excel counts a 1900-02-29 that never was, so from day 61 on
/// the serial is the number of days since 1899-12-30. Records date from 1990 on, far past that.
/// A time of day (the fraction) is ignored.
pub fn excel_serial(serial: f64) -> Option<Date> {
    if !serial.is_finite() || serial < 61.0 {
        return None;
    }
    let days = whole_f64(serial.floor())?;
    let epoch = Date::from_ymd(1990, 1, 1).ok()?;
    // 1990-01-01 is serial 32874.
    epoch.plus_days(days - 32_874)
}

/// The kind a cell names, in English or Chinese.
pub fn kind(s: &str) -> Option<Kind> {
    let s = s.trim();
    Kind::parse(s).or(match s {
        "预算指标" | "预算" | "指标" | "预算指标数据" => Some(Kind::BudgetLine),
        "合同" | "采购合同" | "政府采购合同" => Some(Kind::Contract),
        "支付" | "付款" | "国库支付" | "国库集中支付" => Some(Kind::Payment),
        "评价" | "绩效评价" => Some(Kind::Evaluation),
        _ => None,
    })
}

/// The v1 word for a Chinese value of an enumerated field (`stage`, `method`, `grade`,
/// `cancelled`), or the value itself when it is not one this module knows.
pub fn translate(field: &str, s: &str) -> String {
    let s = s.trim();
    let v1 = match (field, s) {
        ("stage", "编制" | "已编制" | "编制中") => "compiled",
        ("stage", "上报" | "已上报") => "reported",
        ("stage", "批复" | "已批复" | "批准" | "已批准" | "下达" | "已下达") => {
            "approved"
        }
        ("method", "公开招标") => "public_tender",
        ("method", "邀请招标") => "invitational_tender",
        ("method", "竞争性谈判") => "competitive_negotiation",
        ("method", "竞争性磋商") => "competitive_consultation",
        ("method", "单一来源" | "单一来源采购") => "single_source",
        ("method", "询价" | "询价采购") => "inquiry",
        ("method", "框架协议" | "框架协议采购") => "framework_agreement",
        ("grade", "优秀" | "优") => "excellent",
        ("grade", "良好" | "良") => "good",
        ("grade", "一般" | "合格" | "中") => "fair",
        ("grade", "差" | "较差" | "不合格") => "poor",
        _ => return s.to_owned(),
    };
    v1.to_owned()
}

/// A yes/no cell: true/false, 是/否, 1/0, y/n, yes/no (any case).
pub fn boolean(cell: &Cell) -> Option<bool> {
    match cell {
        Cell::Bool(b) => Some(*b),
        Cell::Int(1) => Some(true),
        Cell::Int(0) => Some(false),
        Cell::Number(f) if *f == 1.0 => Some(true),
        Cell::Number(f) if *f == 0.0 => Some(false),
        Cell::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "是" | "1" | "y" | "yes" | "已作废" | "作废" => Some(true),
            "false" | "否" | "0" | "n" | "no" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Option<String> {
        date_text(s).map(|d| d.to_string())
    }

    #[test]
    fn dates_as_counties_write_them() {
        for text in [
            "2024-03-01",
            "2024/3/1",
            "2024/03/01",
            "2024.3.1",
            "2024年3月1日",
            "2024年03月01日",
            "20240301",
            "2024-03-01 00:00:00",
            "2024-03-01T08:30",
            " 2024-3-1 ",
        ] {
            assert_eq!(day(text).as_deref(), Some("2024-03-01"), "{text}");
        }
        for bad in [
            "2024-02-30",
            "2024/13/1",
            "3/1/2024",
            "2024年3月",
            "24-3-1",
            "2024-03-01 noon",
            "2024-03",
            "",
            "1989-12-31",
            "2024-3-1-1",
        ] {
            assert_eq!(day(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn excel_serials() {
        assert_eq!(
            excel_serial(45352.0).map(|d| d.to_string()).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(
            excel_serial(45352.75).map(|d| d.to_string()).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(
            excel_serial(32874.0).map(|d| d.to_string()).as_deref(),
            Some("1990-01-01")
        );
        assert_eq!(excel_serial(10.0), None);
        assert_eq!(excel_serial(f64::NAN), None);
        assert_eq!(
            date(&Cell::Number(45352.0), false),
            Err("'45352' is not a date (write 2024-03-01, 2024/3/1 or 2024年3月1日)".to_owned())
        );
    }

    #[test]
    fn amounts_from_cells() {
        assert_eq!(
            amount(&Cell::Text("1,234.50".into()), Unit::Yuan),
            Ok(123_450)
        );
        assert_eq!(amount(&Cell::Text("￥0.1".into()), Unit::Yuan), Ok(10));
        assert_eq!(amount(&Cell::Number(1234.5), Unit::Yuan), Ok(123_450));
        assert_eq!(amount(&Cell::Number(0.1), Unit::Yuan), Ok(10));
        assert_eq!(amount(&Cell::Int(-5), Unit::Yuan), Ok(-500));
        assert_eq!(
            amount(&Cell::Text("12,3.4".into()), Unit::Yuan),
            Err("'12,3.4' is not an amount in yuan".to_owned())
        );
        assert_eq!(
            amount(&Cell::Number(0.1 + 0.2), Unit::Yuan),
            Err(
                "'0.30000000000000004' has more than 2 decimal(s): amounts in yuan are whole fen"
                    .to_owned()
            )
        );
        assert_eq!(amount(&Cell::Number(120.5), Unit::WanYuan), Ok(120_500_000));
    }

    #[test]
    fn texts_and_numbers() {
        assert_eq!(text(&Cell::Number(101001.0)), Ok("101001".to_owned()));
        assert!(text(&Cell::Number(1.5)).is_err());
        assert_eq!(whole_number(&Cell::Number(92.0)), Some(92));
        assert_eq!(whole_number(&Cell::Text(" 2024 ".into())), Some(2024));
        assert_eq!(whole_number(&Cell::Number(92.5)), None);
    }

    #[test]
    fn chinese_words() {
        assert_eq!(kind("合同"), Some(Kind::Contract));
        assert_eq!(kind("budget_line"), Some(Kind::BudgetLine));
        assert_eq!(kind("发票"), None);
        assert_eq!(translate("stage", "已批复"), "approved");
        assert_eq!(
            translate("method", "竞争性磋商"),
            "competitive_consultation"
        );
        assert_eq!(translate("grade", "良好"), "good");
        assert_eq!(translate("grade", "A"), "A");
        assert_eq!(boolean(&Cell::Text("是".into())), Some(true));
        assert_eq!(boolean(&Cell::Text("maybe".into())), None);
    }
}
