//! Calendar dates as records carry them: exactly `YYYY-MM-DD`, a real day of the Gregorian
//! calendar between 1990-01-01 and 2199-12-31. A `Date` value is always such a day.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::macros::format_description;

/// A calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(time::Date);

/// Why a string is not a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a date written YYYY-MM-DD between 1990-01-01 and 2199-12-31, got {0:?}")]
pub struct DateError(pub String);

const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]");

impl Date {
    pub fn parse(s: &str) -> Result<Date, DateError> {
        let err = || DateError(s.to_owned());
        if s.len() != 10 || !s.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let d = time::Date::parse(s, FORMAT).map_err(|_| err())?;
        if !(1990..=2199).contains(&d.year()) {
            return Err(err());
        }
        Ok(Date(d))
    }

    pub fn from_ymd(year: i32, month: u8, day: u8) -> Result<Date, DateError> {
        Date::parse(&format!("{year:04}-{month:02}-{day:02}"))
    }

    pub fn year(self) -> i32 {
        self.0.year()
    }

    /// Days since 1970-01-01 (for arithmetic such as "n days later").
    pub fn to_days(self) -> i64 {
        i64::from(self.0.to_julian_day()) - 2_440_588
    }

    /// The day `days` after this one, if it is still a valid record date.
    pub fn plus_days(self, days: i64) -> Option<Date> {
        let d = self.0.checked_add(time::Duration::days(days))?;
        (1990..=2199).contains(&d.year()).then_some(Date(d))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = (self.0.year(), u8::from(self.0.month()), self.0.day());
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_only_real_days() {
        assert_eq!(
            Date::parse("2024-02-29").map(|d| d.to_string()),
            Ok("2024-02-29".into())
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-5",
            "24-01-05",
            "2024/01/05",
            "2024-01-05T00:00",
            "",
            "+024-01-05",
            "1989-12-31",
            "2200-01-01",
            "２０２４-01-05",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn day_arithmetic() {
        let d = Date::parse("2024-12-31").unwrap();
        assert_eq!(
            d.plus_days(1).map(|d| d.to_string()),
            Some("2025-01-01".into())
        );
        assert!(Date::parse("1970-01-02").is_err());
        assert_eq!(Date::parse("1990-01-01").unwrap().to_days(), 7305);
    }

    proptest! {
        #[test]
        fn display_round_trips(y in 1990i32..2200, m in 1u8..=12, day in 1u8..=28) {
            let d = Date::from_ymd(y, m, day).unwrap();
            prop_assert_eq!(Date::parse(&d.to_string()), Ok(d));
        }

        #[test]
        fn parse_never_panics(s in ".{0,12}") {
            let _ = Date::parse(&s);
        }
    }
}
