//! Latency figures of tenant networks: the round-trip summary a port's figures carry, and
//! `POST /v1/networks/{id}/probe` (active probes from each port's gateway).
//!
//! Round trips are read from log-scale histograms (`strata_net::latency`): a quantile is the
//! upper bound of the power-of-two bucket of microseconds it falls in, never better than the
//! truth and less than twice it; a mean is exact.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::error::ControlError;

/// Most rounds one probe call sends (with the longest interval: a call of at most 5 s, well
/// under the CLI's request timeout and any client's response-time limit).
pub const PROBE_COUNT_MAX: u64 = 20;
/// Longest interval between rounds, milliseconds.
pub const PROBE_INTERVAL_MAX_MS: u64 = 200;

/// A round-trip summary (microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoundTrips {
    /// Samples.
    pub samples: u64,
    /// Mean (null without samples).
    pub mean_us: Option<u64>,
    /// Median, as the bound of its bucket (null without samples).
    pub p50_us: Option<u64>,
    /// 99th percentile, as the bound of its bucket (null without samples; the overflow
    /// bucket, over 16.7 s, reads as the largest u64).
    pub p99_us: Option<u64>,
}

impl From<&strata_net::latency::RttHistogram> for RoundTrips {
    fn from(h: &strata_net::latency::RttHistogram) -> Self {
        RoundTrips {
            samples: h.count,
            mean_us: h.mean_us(),
            p50_us: h.quantile_us(0.5),
            p99_us: h.quantile_us(0.99),
        }
    }
}

/// `POST /v1/networks/{id}/probe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeNetwork {
    /// Rounds (default 5): one echo request to each port per round.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = count)]
    pub count: Option<u64>,
    /// Milliseconds between rounds (default 100).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = interval)]
    pub interval_ms: Option<u64>,
}

fn count() -> utoipa::openapi::schema::Object {
    int(1, PROBE_COUNT_MAX, true)
}
fn interval() -> utoipa::openapi::schema::Object {
    int(10, PROBE_INTERVAL_MAX_MS, true)
}

impl Check for ProbeNetwork {
    fn check(&self) -> Result<(), ControlError> {
        if let Some(c) = self.count {
            check_int("count", c, 1, PROBE_COUNT_MAX)?;
        }
        if let Some(i) = self.interval_ms {
            check_int("interval_ms", i, 10, PROBE_INTERVAL_MAX_MS)?;
        }
        Ok(())
    }
}

/// One port's probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortProbeResult {
    /// Port name.
    pub port: String,
    /// Its address.
    pub ip: String,
    /// Probes sent.
    pub sent: u64,
    /// Answers taken.
    pub answered: u64,
    /// Lost, in parts per million of those sent (0 when none was sent).
    pub loss_ppm: u64,
    /// Round trips of the answers: switch to the port's endpoint and back.
    pub rtt: RoundTrips,
}

/// The answer to `POST /v1/networks/{id}/probe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkProbe {
    /// Network name or id as asked.
    pub network: String,
    /// Per port, by name.
    pub ports: Vec<PortProbeResult>,
}

impl From<crate::controller::PortProbe> for PortProbeResult {
    fn from(p: crate::controller::PortProbe) -> Self {
        let lost = p.sent.saturating_sub(p.answered);
        PortProbeResult {
            port: p.port,
            ip: p.ip.to_string(),
            sent: p.sent,
            answered: p.answered,
            loss_ppm: (lost * 1_000_000).checked_div(p.sent).unwrap_or(0),
            rtt: RoundTrips::from(&p.rtt),
        }
    }
}
