//! Wall-clock instants as milliseconds since the Unix epoch: what the
//! persisted record stores, so deadlines survive a restart of the
//! controller. The core never reads the clock: every instant it knows was
//! handed to it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serialized as RFC 3339 (UTC, milliseconds), in the state file and on
/// /status alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        let at = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
        let since = at.duration_since(UNIX_EPOCH).map_err(serde::de::Error::custom)?;
        Ok(Timestamp(since.as_millis() as u64))
    }
}

impl Timestamp {
    /// The instant `at`, as the shell reads it from the system clock.
    pub fn from_system(at: SystemTime) -> Timestamp {
        Timestamp(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64)
    }

    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// How long from `now` until `self`, zero when it has passed.
    pub fn remaining(self, now: Timestamp) -> Duration {
        Duration::from_millis(self.millis_since(now))
    }

    /// Parses RFC 3339 (any fraction of a second), as Docker writes it.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let at = humantime::parse_rfc3339_weak(text).ok()?;
        Some(Timestamp(at.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64))
    }

    /// RFC 3339 in UTC, to the millisecond.
    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.0)).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_format() {
        let t = Timestamp(1_700_000_000_123);
        assert_eq!(t.rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(t.plus(Duration::from_secs(2)).millis_since(t), 2000);
        assert_eq!(t.millis_since(t.plus(Duration::from_secs(1))), 0);
        assert_eq!(t.plus(Duration::from_millis(5)).remaining(t), Duration::from_millis(5));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
