//! Value types shared by both binaries' settings, each parsed the same way from a flag, a
//! variable and the file.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A whole number in `MIN..=MAX` (counts, sizes, durations in a stated unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bounded<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    pub fn new(n: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&n) {
            Ok(Bounded(n))
        } else {
            Err(format!(
                "expected a whole number from {MIN} to {MAX}, got {n}"
            ))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Display for Bounded<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const MIN: u64, const MAX: u64> FromStr for Bounded<MIN, MAX> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let n = s
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("expected a whole number from {MIN} to {MAX}, got {s:?}"))?;
        Bounded::new(n)
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Whole<const MIN: u64, const MAX: u64>;

        impl<const MIN: u64, const MAX: u64> Visitor<'_> for Whole<MIN, MAX> {
            type Value = Bounded<MIN, MAX>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number from {MIN} to {MAX}")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Bounded::new(n).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                let n = u64::try_from(n).map_err(|_| {
                    E::custom(format!(
                        "expected a whole number from {MIN} to {MAX}, got {n}"
                    ))
                })?;
                Bounded::new(n).map_err(E::custom)
            }
        }

        d.deserialize_u64(Whole)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bounds_hold_from_text() {
        assert_eq!("1000".parse::<Bounded<1, 1000>>().unwrap().get(), 1000);
        assert!("0".parse::<Bounded<1, 1000>>().is_err());
        assert!("1001".parse::<Bounded<1, 1000>>().is_err());
        assert!("-1".parse::<Bounded<1, 1000>>().is_err());
        assert!("ten".parse::<Bounded<1, 1000>>().is_err());
    }
}
