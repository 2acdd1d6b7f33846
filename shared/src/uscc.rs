//! The unified social credit code (统一社会信用代码, GB 32100-2015) that identifies a supplier:
//! 18 characters from `0123456789ABCDEFGHJKLMNPQRTUWXY` whose last character is a check
//! character over the first 17 (weights 3^(i-1) mod 31, check = (31 − Σ mod 31) mod 31).
//! A `Uscc` value always has a correct check character.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// A verified unified social credit code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Uscc(String);

/// Why a supplier code is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    #[error("must be 18 characters, got {0}")]
    Length(usize),
    #[error("character {position} ({found:?}) is not in the code alphabet 0-9 A-H J-N P-R T U W-Y")]
    Character { position: usize, found: char },
    #[error("check character is {found:?}, expected {expected:?}")]
    Check { found: char, expected: char },
}

fn value_of(b: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == b).map(|p| p as u32)
}

/// Computes the check character for the first 17 characters of a code.
pub fn check_character(first17: &[u8; 17]) -> Option<char> {
    let mut weight = 1u32;
    let mut sum = 0u32;
    for &b in first17 {
        sum += value_of(b)? * weight;
        weight = weight * 3 % 31;
    }
    let check = (31 - sum % 31) % 31;
    Some(char::from(ALPHABET[check as usize]))
}

impl Uscc {
    pub fn parse(s: &str) -> Result<Uscc, UsccError> {
        let chars = s.chars().count();
        if chars != 18 || s.len() != 18 {
            return Err(UsccError::Length(chars));
        }
        let bytes = s.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if value_of(b).is_none() {
                return Err(UsccError::Character {
                    position: i + 1,
                    found: char::from(b),
                });
            }
        }
        let mut first17 = [0u8; 17];
        first17.copy_from_slice(&bytes[..17]);
        let expected = check_character(&first17).ok_or(UsccError::Length(chars))?;
        let found = char::from(bytes[17]);
        if found != expected {
            return Err(UsccError::Check { found, expected });
        }
        Ok(Uscc(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Uscc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Uscc::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_real_codes_verify() {
        // Published codes of well-known organisations.
        for code in [
            "91350100M000100Y43",
            "91110000802100433B",
            "91440300708461136T",
        ] {
            assert_eq!(
                Uscc::parse(code).map(|u| u.to_string()),
                Ok(code.to_owned())
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(Uscc::parse("9135010"), Err(UsccError::Length(7)));
        assert_eq!(
            Uscc::parse("91350100M000100Y4I"),
            Err(UsccError::Character {
                position: 18,
                found: 'I'
            })
        );
        assert_eq!(
            Uscc::parse("91350100M000100Y44"),
            Err(UsccError::Check {
                found: '4',
                expected: '3'
            })
        );
        assert!(matches!(
            Uscc::parse("91350100M000100Y4三"),
            Err(UsccError::Length(18))
        ));
    }

    proptest! {
        #[test]
        fn any_body_with_its_check_character_verifies(body in "[0-9A-HJ-NP-RTUW-Y]{17}") {
            let mut first = [0u8; 17];
            first.copy_from_slice(body.as_bytes());
            let code = format!("{body}{}", check_character(&first).unwrap());
            prop_assert!(Uscc::parse(&code).is_ok());
        }

        #[test]
        fn a_single_changed_character_is_caught(body in "[0-9A-HJ-NP-RTUW-Y]{17}", pos in 0usize..18, delta in 1u32..31) {
            let mut first = [0u8; 17];
            first.copy_from_slice(body.as_bytes());
            let mut code: Vec<u8> = format!("{body}{}", check_character(&first).unwrap()).into_bytes();
            let v = value_of(code[pos]).unwrap();
            code[pos] = ALPHABET[((v + delta) % 31) as usize];
            prop_assert!(Uscc::parse(std::str::from_utf8(&code).unwrap()).is_err());
        }
    }
}
