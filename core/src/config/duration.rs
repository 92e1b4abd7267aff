//! Durations written as text in the config: `250ms`, `2s`, `1m`, `1h`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read from text such as `250ms` or `2s`, with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigDuration(Duration);

impl ConfigDuration {
    /// Creates a duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// Returns the duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// Parses `text` as a whole number followed by `ms`, `s`, `m` or `h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let invalid = || {
            format!(
                "invalid duration {text:?}: expected a whole number and a unit, such as \"250ms\", \"2s\", \"1m\" or \"1h\""
            )
        };
        let value: u64 = number.parse().map_err(|_| invalid())?;
        let millis_per_unit = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        let millis = value.checked_mul(millis_per_unit).ok_or_else(invalid)?;
        Ok(Self::from_millis(millis))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis % 1_000 == 0 {
            write!(f, "{}s", millis / 1_000)
        } else {
            write!(f, "{millis}ms")
        }
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ConfigDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(ms|s|m|h)$",
            "description": "A whole number and a unit: ms, s, m or h, such as \"250ms\" or \"2s\"."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(
            ConfigDuration::parse("250ms").unwrap().get(),
            Duration::from_millis(250)
        );
        assert_eq!(
            ConfigDuration::parse("2s").unwrap().get(),
            Duration::from_secs(2)
        );
        assert_eq!(
            ConfigDuration::parse("3m").unwrap().get(),
            Duration::from_secs(180)
        );
        assert_eq!(
            ConfigDuration::parse("1h").unwrap().get(),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "5",
            "ms",
            "1.5s",
            "-1s",
            "2 s",
            "2sec",
            "99999999999999999999h",
        ] {
            assert!(ConfigDuration::parse(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn displays_round_trip() {
        for text in ["250ms", "2s", "1500ms"] {
            assert_eq!(ConfigDuration::parse(text).unwrap().to_string(), text);
        }
    }
}
