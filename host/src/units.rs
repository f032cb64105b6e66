//! Human-friendly units in config files and flags: durations (`3s`, `500ms`, `1m`) and
//! byte sizes (`16MiB`, `512KiB`, `1048576`).

use std::time::Duration;

/// A value that is not a duration or size; carries the input and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} '{input}': expected {example}")]
pub struct UnitError {
    kind: &'static str,
    input: String,
    example: &'static str,
}

/// Parses a duration such as `3s`, `500ms` or `1m 30s`.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(input.trim()).map_err(|_| UnitError {
        kind: "duration",
        input: input.to_owned(),
        example: "a number with a unit, like 3s, 500ms or 1m",
    })
}

/// Binary size suffixes, longest first so `MiB` is tried before `B`.
const SIZE_SUFFIXES: [(&str, u64); 7] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

/// Parses a byte size such as `16MiB`, `512KiB`, `10MB` or a plain byte count.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let error = || UnitError {
        kind: "size",
        input: input.to_owned(),
        example: "a whole number of bytes or one with a unit, like 16MiB, 512KiB or 10MB",
    };
    let trimmed = input.trim();
    let (number, factor) = SIZE_SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| trimmed.strip_suffix(suffix).map(|n| (n.trim(), *factor)))
        .unwrap_or((trimmed, 1));
    let number: u64 = number.parse().map_err(|_| error())?;
    number.checked_mul(factor).ok_or_else(error)
}

/// A size for people: whole MiB as `64MiB`, anything else in bytes.
pub fn format_size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Serde adapter: a duration written as a string (`"3s"`).
pub mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde adapter: a size written as a string (`"16MiB"`) or a plain integer of bytes.
pub mod size {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(n),
            Raw::Text(text) => super::parse_size(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "3", "fast", "-1s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("16MiB", 16 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("10MB", 10_000_000),
            ("1048576", 1 << 20),
            ("64 MiB", 64 << 20),
            ("7B", 7),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_size(input), Ok(expected), "{input}");
        }
        for bad in [
            "",
            "MiB",
            "1.5MiB",
            "-1",
            "16TiB",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
    }
}
