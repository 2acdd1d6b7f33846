//! Identifier newtypes, parsed once at the edge. A `CountyCode` is a 6-digit GB/T 2260
//! division code; a `Code` (record ids, catalogue codes, department codes) is 1–64 characters
//! of ASCII letters, digits, `.`, `_` and `-`; an `AgentId` is `<county>-<8 lowercase hex>` as
//! the hub assigns it. Holding one of these types means the string was checked.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid identifier; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $check:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                $check(s).map(|()| Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A county-level administrative division code (GB/T 2260), e.g. `430112` (望城区).
    CountyCode,
    check_county
);
string_newtype!(
    /// A record id, catalogue code or department code: 1–64 of `[A-Za-z0-9._-]`.
    Code,
    check_code
);
string_newtype!(
    /// An agent's id as assigned by the hub at enrollment: `<county>-<8 lowercase hex>`.
    AgentId,
    check_agent_id
);

fn check_county(s: &str) -> Result<(), IdError> {
    if s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0') {
        Ok(())
    } else {
        Err(IdError(format!(
            "must be a 6-digit county code such as 430112, got {s:?}"
        )))
    }
}

fn check_code(s: &str) -> Result<(), IdError> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdError(format!(
            "must be 1-64 characters of letters, digits, '.', '_' or '-', got {s:?}"
        )))
    }
}

fn check_agent_id(s: &str) -> Result<(), IdError> {
    let ok = s.len() == 15
        && s.is_ascii()
        && check_county(&s[..6]).is_ok()
        && s.as_bytes()[6] == b'-'
        && s[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdError(format!(
            "must be an agent id such as 430112-3f9a0c1d, got {s:?}"
        )))
    }
}

impl AgentId {
    /// Builds the id the hub assigns: the county plus four random bytes in hex.
    pub fn new(county: &CountyCode, random: [u8; 4]) -> AgentId {
        AgentId(format!("{county}-{}", hex::encode(random)))
    }

    /// The county this agent belongs to (the id's first six characters).
    pub fn county(&self) -> CountyCode {
        CountyCode(self.0[..6].to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn county_codes() {
        assert!(CountyCode::parse("430112").is_ok());
        assert!(CountyCode::parse("431281").is_ok());
        for bad in ["", "43011", "4301123", "43011a", "030112", " 430112"] {
            assert!(CountyCode::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn codes() {
        assert!(Code::parse("BL-2024.001_a").is_ok());
        assert!(Code::parse(&"x".repeat(64)).is_ok());
        for bad in ["", "a b", "合同1", "a/b", &"x".repeat(65)] {
            assert!(Code::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn agent_ids() {
        let county = CountyCode::parse("430112").unwrap();
        let id = AgentId::new(&county, [0x3f, 0x9a, 0x0c, 0x1d]);
        assert_eq!(id.as_str(), "430112-3f9a0c1d");
        assert_eq!(AgentId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(id.county(), county);
        for bad in [
            "430112-3F9A0C1D",
            "430112_3f9a0c1d",
            "430112-3f9a0c1",
            "43011-23f9a0c1d",
        ] {
            assert!(AgentId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn code_accepts_exactly_its_alphabet(s in "[A-Za-z0-9._-]{1,64}") {
            prop_assert!(Code::parse(&s).is_ok());
        }

        #[test]
        fn code_parse_never_panics(s in ".*") {
            let _ = Code::parse(&s);
            let _ = CountyCode::parse(&s);
            let _ = AgentId::parse(&s);
        }
    }
}
