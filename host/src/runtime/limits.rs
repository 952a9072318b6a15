//! Per-plugin resource limits and the store limiter that enforces memory.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How much a plugin may use per call. The defaults suit the default plugins with a
/// wide margin; an operator tightens or loosens them per plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    /// Wall-clock deadline for one call, host calls (HTTP, signing) included. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Linear memory a single instance may grow to. Default 64 MiB, at most
    /// [`super::MAX_PLUGIN_MEMORY`] (1 GiB).
    pub memory_bytes: usize,
    /// Instances of this plugin running at once; further calls queue. Default 4.
    pub max_instances: usize,
    /// Deadline for one outbound HTTP request, connect to last byte. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub http_timeout: Duration,
    /// Largest HTTP response body handed to the plugin. Default 4 MiB.
    pub max_response_bytes: usize,
    /// Largest HTTP request body a plugin may send. Default 8 MiB.
    pub max_request_bytes: usize,
    /// Bytes of stdout + stderr + log lines kept per call; the rest is dropped. Default 64 KiB.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            max_instances: 4,
            http_timeout: Duration::from_secs(10),
            max_response_bytes: 4 << 20,
            max_request_bytes: 8 << 20,
            max_log_bytes: 64 << 10,
        }
    }
}

/// Durations as `30s`, `500ms`, `2m` in manifests and on the command line.
mod humantime_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h` (one number, one unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} has no unit; expected e.g. 30s, 500ms, 2m"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} does not start with a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "duration {text:?} has unknown unit {unit:?}; expected ms, s, m or h"
        )),
    }
}

pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Parses `64MiB`, `512KiB`, `1GiB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("size {text:?} does not start with a whole number"))?;
    let factor = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "size {text:?} has unknown unit {unit:?}; expected KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Enforces the memory limit and remembers that it did, so a guest that dies because
/// an allocation failed is reported as out of memory rather than as a bare trap.
pub(crate) struct MemoryLimiter {
    pub limit: usize,
    pub refused: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a strategy needs a few thousand at most.
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_in_the_units_operators_write() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1TB").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn limits_deserialize_with_defaults_for_missing_fields() {
        let limits: Limits = serde_json::from_str(r#"{"timeout":"5s"}"#).unwrap();
        assert_eq!(limits.timeout, Duration::from_secs(5));
        assert_eq!(limits.memory_bytes, 64 << 20);
        assert_eq!(limits.max_instances, 4);
    }
}
