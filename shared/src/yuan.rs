//! Amounts written for people, in yuan (元) or ten-thousand yuan (万元), as decimal text, and
//! their exact value in whole fen. County spreadsheets say "1,234.50" (yuan); OCDS publishes
//! numbers of yuan; the ledger counts [`Fen`](crate::money::Fen). The conversion is done on the
//! digits, with integer arithmetic only: no float ever holds an amount, so "0.1" is exactly 10
//! fen and a value with more decimals than the unit allows (a third decimal of yuan) is refused
//! rather than rounded.
//!
//! Accepted text: an optional sign, digits, optionally grouped by thousands with `,` (every group
//! after the first exactly three digits, as spreadsheets format them), and optionally a point
//! followed by at least one digit. Nothing else: no exponent, no spaces inside, no currency sign
//! (callers strip what their format allows around the number).

use std::fmt;

/// The unit a decimal amount is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Whole fen (分): no decimals.
    Fen,
    /// Yuan (元): at most two decimals.
    Yuan,
    /// Ten thousand yuan (万元), as budgets are often written: at most six decimals.
    WanYuan,
}

impl Unit {
    /// How many decimals the unit allows (a finer digit would be a fraction of a fen).
    pub fn decimals(self) -> u32 {
        match self {
            Unit::Fen => 0,
            Unit::Yuan => 2,
            Unit::WanYuan => 6,
        }
    }

    /// The unit's name in the sentences of errors: "an amount in yuan".
    pub fn name(self) -> &'static str {
        match self {
            Unit::Fen => "fen",
            Unit::Yuan => "yuan",
            Unit::WanYuan => "10,000 yuan (万元)",
        }
    }
}

/// Why text is not an amount in a unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YuanError {
    /// Not a decimal number as written above (letters, misplaced separators, two points, …).
    #[error("is not an amount in {}", .0.name())]
    NotANumber(Unit),
    /// More decimals than the unit allows: a fraction of a fen.
    #[error("has more than {} decimal(s): amounts in {} are whole fen", .0.decimals(), .0.name())]
    TooManyDecimals(Unit),
    /// Too large for any amount.
    #[error("is too large")]
    TooLarge,
}

/// Parses `text` (see the module doc) as an amount in `unit`, in whole fen. The sign is kept:
/// whether a negative or zero amount is acceptable is the caller's rule.
pub fn parse(text: &str, unit: Unit) -> Result<i64, YuanError> {
    let not_a_number = YuanError::NotANumber(unit);
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = match rest.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (rest, None),
    };
    let whole = ungroup(whole).ok_or(not_a_number.clone())?;
    let fraction = match fraction {
        None => "",
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => f,
        Some(_) => return Err(not_a_number),
    };
    // Trailing zeros say nothing ("1.500" yuan is 150 fen), so they do not count as decimals.
    let fraction = fraction.trim_end_matches('0');
    let decimals = unit.decimals();
    if fraction.len() > decimals as usize {
        return Err(YuanError::TooManyDecimals(unit));
    }
    let scale = 10i64.pow(decimals);
    let mut value: i64 = 0;
    for b in whole.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or(YuanError::TooLarge)?;
    }
    let mut frac: i64 = 0;
    for i in 0..decimals as usize {
        let digit = fraction
            .as_bytes()
            .get(i)
            .map_or(0, |b| i64::from(b - b'0'));
        frac = frac * 10 + digit;
    }
    // A unit allows exactly as many decimals as it has fen digits (1 yuan = 10^2 fen, 1 万元 =
    // 10^6 fen), so the fen are the digits with the fraction padded to that many places.
    let fen = value
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac))
        .ok_or(YuanError::TooLarge)?;
    Ok(if negative { -fen } else { fen })
}

/// The digits of `whole` without thousands separators, if it is well formed: digits only, or
/// groups separated by `,` where every group after the first has exactly three digits and the
/// first has one to three.
fn ungroup(whole: &str) -> Option<String> {
    if whole.is_empty() {
        return None;
    }
    if !whole.contains(',') {
        return whole
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| whole.to_owned());
    }
    let mut groups = whole.split(',');
    let first = groups.next()?;
    if first.is_empty() || first.len() > 3 || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits = first.to_owned();
    for g in groups {
        if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.push_str(g);
    }
    Some(digits)
}

/// An amount of fen as a plain decimal number of yuan, built from the integer: whole yuan
/// without a point ("1234"), anything else with exactly two decimals ("1234.50", "0.05",
/// "-3.10"). The text is a valid JSON number and parses back, with [`parse`] in
/// [`Unit::Yuan`], to the same fen.
pub fn yuan_text(fen: i64) -> String {
    YuanText(fen).to_string()
}

struct YuanText(i64);

impl fmt::Display for YuanText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (yuan, fen) = (abs / 100, abs % 100);
        if fen == 0 {
            write!(f, "{sign}{yuan}")
        } else {
            write!(f, "{sign}{yuan}.{fen:02}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn yuan_to_fen_edge_cases() {
        let ok = [
            ("0.1", 10),
            ("0.01", 1),
            ("1234.50", 123_450),
            ("1,234.50", 123_450),
            ("1,234,567", 123_456_700),
            ("1234.5", 123_450),
            ("1.500", 150),
            ("-5", -500),
            ("+7.2", 720),
            ("0", 0),
            ("10000000000000", 1_000_000_000_000_000),
        ];
        for (text, fen) in ok {
            assert_eq!(parse(text, Unit::Yuan), Ok(fen), "{text}");
        }
        for bad in [
            "12,3.4",
            "1,23",
            "1234,567",
            ",123",
            "1,",
            "",
            "-",
            "1.",
            ".5",
            "1.2.3",
            "1e3",
            "1 234",
            "¥5",
            "abc",
            "1,234.5,0",
            "0x10",
            "１２",
        ] {
            assert_eq!(
                parse(bad, Unit::Yuan),
                Err(YuanError::NotANumber(Unit::Yuan)),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse("1.005", Unit::Yuan),
            Err(YuanError::TooManyDecimals(Unit::Yuan))
        );
        assert_eq!(
            parse("99999999999999999999", Unit::Yuan),
            Err(YuanError::TooLarge)
        );
        assert_eq!(
            parse("12,3.4", Unit::Yuan).unwrap_err().to_string(),
            "is not an amount in yuan"
        );
    }

    #[test]
    fn other_units() {
        assert_eq!(parse("120.5", Unit::WanYuan), Ok(120_500_000));
        assert_eq!(parse("0.000001", Unit::WanYuan), Ok(1));
        assert_eq!(
            parse("0.0000001", Unit::WanYuan),
            Err(YuanError::TooManyDecimals(Unit::WanYuan))
        );
        assert_eq!(parse("120000000", Unit::Fen), Ok(120_000_000));
        assert_eq!(parse("1.00", Unit::Fen), Ok(1));
        assert_eq!(
            parse("1.5", Unit::Fen),
            Err(YuanError::TooManyDecimals(Unit::Fen))
        );
    }

    #[test]
    fn yuan_text_is_exact() {
        assert_eq!(yuan_text(123_450), "1234.50");
        assert_eq!(yuan_text(120_000_000), "1200000");
        assert_eq!(yuan_text(5), "0.05");
        assert_eq!(yuan_text(-310), "-3.10");
        assert_eq!(yuan_text(0), "0");
        assert_eq!(yuan_text(i64::MIN), "-92233720368547758.08");
    }

    proptest! {
        #[test]
        fn fen_to_yuan_and_back(fen in any::<i64>().prop_filter("i64::MIN has no positive twin", |v| *v != i64::MIN)) {
            prop_assert_eq!(parse(&yuan_text(fen), Unit::Yuan), Ok(fen));
        }

        #[test]
        fn yuan_to_fen_and_back(yuan in 0i64..=10_000_000_000_000, cents in 0i64..100) {
            let text = format!("{yuan}.{cents:02}");
            let fen = parse(&text, Unit::Yuan).unwrap();
            prop_assert_eq!(fen, yuan * 100 + cents);
            prop_assert_eq!(parse(&yuan_text(fen), Unit::Yuan), Ok(fen));
        }

        #[test]
        fn grouped_and_plain_agree(fen in 0i64..=1_000_000_000_000_000) {
            let plain = yuan_text(fen);
            let (whole, frac) = plain.split_once('.').map_or((plain.as_str(), None), |(w, f)| (w, Some(f)));
            let mut grouped = String::new();
            for (i, ch) in whole.chars().enumerate() {
                if i > 0 && (whole.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(ch);
            }
            if let Some(f) = frac {
                grouped.push('.');
                grouped.push_str(f);
            }
            prop_assert_eq!(parse(&grouped, Unit::Yuan), Ok(fen));
        }

        #[test]
        fn parse_never_panics(s in "[-+0-9,.]{0,24}") {
            let _ = parse(&s, Unit::Yuan);
            let _ = parse(&s, Unit::WanYuan);
        }
    }
}
