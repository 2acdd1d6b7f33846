//! Money as whole fen (分). `Fen` is an `i64` newtype with checked arithmetic only; a record's
//! amount is always in `1..=MAX_AMOUNT` (10^15 fen), so any sum of up to ~9,000 amounts fits in
//! an `i64` and every overflow is reported instead of wrapping. There is no float anywhere here.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest amount one record may carry: 10^15 fen (10 trillion yuan).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// An amount of money in fen. Totals may be zero; a record's amount is parsed with
/// [`Fen::parse_amount`], which demands `1..=MAX_AMOUNT`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fen(i64);

/// Why a number is not a record amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a whole number of fen from 1 to 10^15, got {0}")]
pub struct AmountError(pub String);

impl Fen {
    pub const ZERO: Fen = Fen(0);

    /// Parses a record amount: whole fen in `1..=MAX_AMOUNT`.
    pub fn parse_amount(value: i64) -> Result<Fen, AmountError> {
        if (1..=MAX_AMOUNT).contains(&value) {
            Ok(Fen(value))
        } else {
            Err(AmountError(value.to_string()))
        }
    }

    /// Wraps a stored total (which may be zero). Negative totals never occur; callers that
    /// read a total from storage use this and get `None` for a corrupt value.
    pub fn from_total(value: i64) -> Option<Fen> {
        (value >= 0).then_some(Fen(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    /// Subtracts, refusing to go below zero.
    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).filter(|v| *v >= 0).map(Fen)
    }
}

impl fmt::Display for Fen {
    /// Shows yuan with two decimals and thousands separators, e.g. `1,200,000.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yuan = self.0 / 100;
        let fen = (self.0 % 100).abs();
        let digits = yuan.unsigned_abs().to_string();
        let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(ch);
        }
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}{grouped}.{fen:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_are_bounded() {
        assert!(Fen::parse_amount(0).is_err());
        assert!(Fen::parse_amount(-5).is_err());
        assert!(Fen::parse_amount(MAX_AMOUNT + 1).is_err());
        assert_eq!(Fen::parse_amount(1).map(Fen::get), Ok(1));
        assert_eq!(Fen::parse_amount(MAX_AMOUNT).map(Fen::get), Ok(MAX_AMOUNT));
    }

    #[test]
    fn display_groups_thousands() {
        assert_eq!(Fen(120_000_000).to_string(), "1,200,000.00");
        assert_eq!(Fen(5).to_string(), "0.05");
        assert_eq!(Fen(100_099).to_string(), "1,000.99");
    }

    #[test]
    fn arithmetic_never_wraps() {
        assert_eq!(Fen(i64::MAX).checked_add(Fen(1)), None);
        assert_eq!(Fen(3).checked_sub(Fen(4)), None);
        assert_eq!(Fen(4).checked_sub(Fen(4)), Some(Fen::ZERO));
    }

    proptest! {
        #[test]
        fn add_then_sub_round_trips(a in 1..=MAX_AMOUNT, b in 1..=MAX_AMOUNT) {
            let (a, b) = (Fen::parse_amount(a).unwrap(), Fen::parse_amount(b).unwrap());
            let sum = a.checked_add(b).unwrap();
            prop_assert_eq!(sum.checked_sub(b), Some(a));
            prop_assert!(sum > a && sum > b);
        }

        #[test]
        fn only_in_range_parses(v in any::<i64>()) {
            prop_assert_eq!(Fen::parse_amount(v).is_ok(), (1..=MAX_AMOUNT).contains(&v));
        }
    }
}
