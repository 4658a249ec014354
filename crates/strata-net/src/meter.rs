//! Meters (OpenFlow 1.3 style) and shared links: token-bucket rate caps and work-conserving
//! minimum guarantees, the engine half of bandwidth slices.
//!
//! A flow's `meter:N` action asks meter N whether the packet fits; a packet over the meter's
//! rate is dropped there (the rest of its action list does not run) and counted.
//!
//! ## Admission rule
//!
//! Every meter has a *cap* bucket (rate `rate_bps`, depth `burst`). A meter with a
//! [`Guarantee`] also has a *guaranteed* bucket (rate `min_bps`, the same depth) and names a
//! *link*: a shared capacity `C` with an *excess* bucket (rate `C`, depth `B_L`). A packet of
//! `L` bytes is admitted when its cap bucket holds `L` **and**
//! - (a) its guaranteed bucket holds `L`: admitted as guaranteed; both buckets lose `L`, and the
//!   link's excess bucket loses `L` too (it may go into debt, down to `-B_L`); or
//! - (b) otherwise the link's excess bucket holds `L`: admitted as excess; cap and excess
//!   buckets lose `L`.
//!
//! A meter without a guarantee only checks its cap. So the excess bucket refills at
//! `C − (guaranteed traffic actually admitted)`: a guarantee that is idle costs the link
//! nothing and its share is lent to whoever has excess demand (work-conserving), while a busy
//! guarantee is always admitted first, whatever the others do.
//!
//! ## Invariants
//!
//! - Cap: the bytes a meter admits over any interval of length `T` are at most
//!   `rate_bps·T/8 + burst` (the cap bucket never goes below zero and refills at `rate_bps`).
//!   Guarantees never break it: `min_bps ≤ rate_bps` is checked.
//! - Guarantee: a meter that keeps offering more than `min_bps` gets at least `min_bps` (minus
//!   one burst) whatever the other meters on its link do, because (a) does not depend on them.
//! - Booking: the guarantees of the meters on one link sum to at most its capacity
//!   (`set_meter` and `set_link` refuse otherwise), so under contention every guarantee can
//!   hold at once and the total admitted on a link over `T` stays within
//!   `C·T/8 + 2·B_L + Σ burst` (the debt floor bounds what guaranteed bursts can borrow).
//! - Time comes in as `now` only; a `now` earlier than the last one refills nothing. Token
//!   arithmetic is exact (integers in units of 10⁻⁹ bit), so no rounding drifts over hours.
//! - A peek ([`Meters::peek`], used by trace) computes the same verdict and changes nothing.
//!
//! Only traffic that passes a meter naming the link is accounted on it: the link models the
//! capacity the slices share (a port's or an uplink's), it does not watch the wire.

use std::collections::BTreeMap;
use std::time::Duration;

/// Bytes of the largest frame the switch meets (the parser refuses longer ones; a TSO frame
/// from a TAP is at most 64 KiB with its headers). A burst smaller than this would drop such a
/// frame always, so `set_meter` refuses it.
pub const MAX_FRAME_BYTES: u64 = 65_535;

/// Default burst: the bytes of this much time at the rate (TCP needs it: docs/net-engine.md,
/// "Meters and slices")...
pub const DEFAULT_BURST_TIME: Duration = Duration::from_millis(250);
/// ...and never less than this (two maximal TSO frames).
pub const DEFAULT_BURST_FLOOR: u64 = 128 * 1024;

/// Token units per bit: buckets count in 10⁻⁹ bit, so `rate_bps × elapsed_ns` is exact.
const UNITS_PER_BIT: i128 = 1_000_000_000;

/// The default burst of a rate: `max(rate × 250 ms, 128 KiB)` in bytes.
pub fn default_burst(rate_bps: u64) -> u64 {
    let t = (rate_bps as u128 * DEFAULT_BURST_TIME.as_nanos() / 8 / 1_000_000_000) as u64;
    t.max(DEFAULT_BURST_FLOOR)
}

/// A minimum guarantee on a shared link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarantee {
    /// Bits per second always admitted (within the cap). 0: a best-effort slice of the link.
    pub min_bps: u64,
    /// The link (see [`Meters::set_link`]) whose spare capacity the meter may use beyond it.
    pub link: u32,
}

/// A meter's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterConfig {
    /// Cap, bits per second.
    pub rate_bps: u64,
    /// Bucket depth in bytes (None: [`default_burst`] of `rate_bps`).
    pub burst_bytes: Option<u64>,
    /// Minimum guarantee on a link, if any.
    pub guarantee: Option<Guarantee>,
}

impl MeterConfig {
    /// A cap of `rate_bps` with the default burst and no guarantee.
    pub fn cap(rate_bps: u64) -> Self {
        MeterConfig {
            rate_bps,
            burst_bytes: None,
            guarantee: None,
        }
    }
    /// With this burst.
    pub fn with_burst(mut self, bytes: u64) -> Self {
        self.burst_bytes = Some(bytes);
        self
    }
    /// With a guarantee of `min_bps` on `link`.
    pub fn with_guarantee(mut self, min_bps: u64, link: u32) -> Self {
        self.guarantee = Some(Guarantee { min_bps, link });
        self
    }
    /// The burst in effect.
    pub fn burst(&self) -> u64 {
        self.burst_bytes
            .unwrap_or_else(|| default_burst(self.rate_bps))
    }
}

/// Why a meter or link change was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeterError {
    /// A rate or capacity of 0.
    #[error("a meter rate or link capacity must be above 0 bit/s")]
    ZeroRate,
    /// A burst below [`MAX_FRAME_BYTES`].
    #[error("burst {0} bytes is below the largest frame ({MAX_FRAME_BYTES} bytes)")]
    BurstTooSmall(u64),
    /// `min_bps` above `rate_bps`.
    #[error("guarantee {min_bps} bit/s is above the cap {rate_bps} bit/s")]
    GuaranteeAboveCap {
        /// The guarantee.
        min_bps: u64,
        /// The cap.
        rate_bps: u64,
    },
    /// The guarantee names a link that does not exist.
    #[error("link {0} does not exist")]
    NoSuchLink(u32),
    /// The guarantees on the link would exceed its capacity.
    #[error("link {link}: guarantees of {booked} bit/s exceed its capacity of {capacity} bit/s")]
    Overbooked {
        /// The link.
        link: u32,
        /// Sum of the guarantees it would carry.
        booked: u128,
        /// Its capacity.
        capacity: u64,
    },
    /// A link still named by a meter.
    #[error("link {link} is used by meter {meter}")]
    LinkInUse {
        /// The link.
        link: u32,
        /// A meter naming it.
        meter: u32,
    },
}

impl MeterError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            MeterError::ZeroRate => "bad_meter_rate",
            MeterError::BurstTooSmall(_) => "meter_burst_too_small",
            MeterError::GuaranteeAboveCap { .. } => "guarantee_above_cap",
            MeterError::NoSuchLink(_) => "link_not_found",
            MeterError::Overbooked { .. } => "link_overbooked",
            MeterError::LinkInUse { .. } => "link_in_use",
        }
    }
}

/// What a meter decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterVerdict {
    /// Within the cap (a meter without a guarantee).
    Admit,
    /// Within the guarantee.
    Guaranteed,
    /// Beyond the guarantee, within the link's spare capacity and the cap.
    Excess,
    /// Over the cap.
    OverCap,
    /// Within the cap, but beyond the guarantee and the link has no spare capacity.
    NoExcess,
}

impl MeterVerdict {
    /// True if the packet goes on.
    pub fn admitted(self) -> bool {
        matches!(
            self,
            MeterVerdict::Admit | MeterVerdict::Guaranteed | MeterVerdict::Excess
        )
    }
    /// Short text for trace.
    pub fn text(self) -> &'static str {
        match self {
            MeterVerdict::Admit => "would admit",
            MeterVerdict::Guaranteed => "would admit (guaranteed)",
            MeterVerdict::Excess => "would admit (excess)",
            MeterVerdict::OverCap => "would drop (over cap)",
            MeterVerdict::NoExcess => "would drop (link has no spare capacity)",
        }
    }
}

/// One meter's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterStats {
    /// Packets admitted.
    pub admitted_packets: u64,
    /// Bytes admitted.
    pub admitted_bytes: u64,
    /// Of the admitted bytes, those admitted within the guarantee.
    pub guaranteed_bytes: u64,
    /// Packets dropped.
    pub dropped_packets: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
}

/// A token bucket in units of 10⁻⁹ bit. `tokens` may be negative only for a link's excess
/// bucket (debt from guaranteed traffic), never below `-depth`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate_bps: i128,
    depth: i128,
    tokens: i128,
    last: Duration,
}

impl Bucket {
    /// A full bucket. Its time starts at zero: a full bucket stays full whatever time passes,
    /// so no `now` is needed to make one.
    fn full(rate_bps: u64, depth_bytes: u64) -> Self {
        let depth = depth_bytes as i128 * 8 * UNITS_PER_BIT;
        Bucket {
            rate_bps: rate_bps as i128,
            depth,
            tokens: depth,
            last: Duration::ZERO,
        }
    }
    /// Tokens at `now` (refill since `last`, up to the depth).
    fn level(&self, now: Duration) -> i128 {
        let dt = now.saturating_sub(self.last).as_nanos() as i128;
        // rate < 2^64 and dt < 2^64 ns (584 years): the product fits easily.
        (self.tokens + self.rate_bps * dt).min(self.depth)
    }
    fn refill(&mut self, now: Duration) {
        self.tokens = self.level(now);
        self.last = self.last.max(now);
    }
}

fn cost(len: u64) -> i128 {
    len as i128 * 8 * UNITS_PER_BIT
}

#[derive(Debug, Clone)]
struct Meter {
    cfg: MeterConfig,
    cap: Bucket,
    min: Option<Bucket>,
    stats: MeterStats,
}

#[derive(Debug, Clone)]
struct Link {
    capacity_bps: u64,
    excess: Bucket,
}

/// The meters and links of one switch.
#[derive(Debug, Clone, Default)]
pub struct Meters {
    meters: BTreeMap<u32, Meter>,
    links: BTreeMap<u32, Link>,
}

impl Meters {
    /// Sum of the guarantees on `link`, with meter `except` counted as `instead`.
    fn booked(&self, link: u32, except: Option<u32>, instead: u64) -> u128 {
        let others: u128 = self
            .meters
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .filter_map(|(_, m)| m.cfg.guarantee)
            .filter(|g| g.link == link)
            .map(|g| g.min_bps as u128)
            .sum();
        others + instead as u128
    }

    /// Creates or replaces meter `id`. A replaced meter keeps its counters and starts with full
    /// buckets.
    pub fn set_meter(&mut self, id: u32, cfg: MeterConfig) -> Result<(), MeterError> {
        if cfg.rate_bps == 0 {
            return Err(MeterError::ZeroRate);
        }
        let burst = cfg.burst();
        if burst < MAX_FRAME_BYTES {
            return Err(MeterError::BurstTooSmall(burst));
        }
        let min = match cfg.guarantee {
            None => None,
            Some(g) => {
                if g.min_bps > cfg.rate_bps {
                    return Err(MeterError::GuaranteeAboveCap {
                        min_bps: g.min_bps,
                        rate_bps: cfg.rate_bps,
                    });
                }
                let link = self
                    .links
                    .get(&g.link)
                    .ok_or(MeterError::NoSuchLink(g.link))?;
                let booked = self.booked(g.link, Some(id), g.min_bps);
                if booked > link.capacity_bps as u128 {
                    return Err(MeterError::Overbooked {
                        link: g.link,
                        booked,
                        capacity: link.capacity_bps,
                    });
                }
                let depth = if g.min_bps == 0 { 0 } else { burst };
                Some(Bucket::full(g.min_bps, depth))
            }
        };
        let stats = self.meters.get(&id).map(|m| m.stats).unwrap_or_default();
        self.meters.insert(
            id,
            Meter {
                cfg,
                cap: Bucket::full(cfg.rate_bps, burst),
                min,
                stats,
            },
        );
        Ok(())
    }

    /// Removes meter `id`; false if there was none. Flows naming it then drop
    /// (`meter_missing`).
    pub fn remove_meter(&mut self, id: u32) -> bool {
        self.meters.remove(&id).is_some()
    }

    /// A meter's configuration and counters.
    pub fn meter(&self, id: u32) -> Option<(MeterConfig, MeterStats)> {
        self.meters.get(&id).map(|m| (m.cfg, m.stats))
    }

    /// Every meter as (id, configuration, counters), by id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, MeterConfig, MeterStats)> + '_ {
        self.meters.iter().map(|(id, m)| (*id, m.cfg, m.stats))
    }

    /// Creates or resizes link `id` (its excess bucket starts full, depth
    /// [`default_burst`] of the capacity). Refused if the guarantees on it would not fit.
    pub fn set_link(&mut self, id: u32, capacity_bps: u64) -> Result<(), MeterError> {
        if capacity_bps == 0 {
            return Err(MeterError::ZeroRate);
        }
        let booked = self.booked(id, None, 0);
        if booked > capacity_bps as u128 {
            return Err(MeterError::Overbooked {
                link: id,
                booked,
                capacity: capacity_bps,
            });
        }
        self.links.insert(
            id,
            Link {
                capacity_bps,
                excess: Bucket::full(capacity_bps, default_burst(capacity_bps)),
            },
        );
        Ok(())
    }

    /// Removes link `id` (false if there was none); refused while a meter names it.
    pub fn remove_link(&mut self, id: u32) -> Result<bool, MeterError> {
        if let Some((m, _)) = self
            .meters
            .iter()
            .find(|(_, m)| m.cfg.guarantee.is_some_and(|g| g.link == id))
        {
            return Err(MeterError::LinkInUse {
                link: id,
                meter: *m,
            });
        }
        Ok(self.links.remove(&id).is_some())
    }

    /// Capacity of link `id`.
    pub fn link(&self, id: u32) -> Option<u64> {
        self.links.get(&id).map(|l| l.capacity_bps)
    }

    /// Runs a packet of `len` bytes through meter `id` at `now`, taking its tokens and counting
    /// it. None if there is no such meter.
    pub fn admit(&mut self, id: u32, len: u64, now: Duration) -> Option<MeterVerdict> {
        let m = self.meters.get_mut(&id)?;
        let link = m.cfg.guarantee.and_then(|g| self.links.get_mut(&g.link));
        let c = cost(len);
        m.cap.refill(now);
        let v = if m.cap.tokens < c {
            MeterVerdict::OverCap
        } else {
            match (m.min.as_mut(), link) {
                (Some(g), Some(l)) => {
                    g.refill(now);
                    l.excess.refill(now);
                    if g.tokens >= c {
                        g.tokens -= c;
                        l.excess.tokens = (l.excess.tokens - c).max(-l.excess.depth);
                        MeterVerdict::Guaranteed
                    } else if l.excess.tokens >= c {
                        l.excess.tokens -= c;
                        MeterVerdict::Excess
                    } else {
                        MeterVerdict::NoExcess
                    }
                }
                // A guarantee always has its link (set_meter and remove_link see to it).
                _ => MeterVerdict::Admit,
            }
        };
        let s = &mut m.stats;
        if v.admitted() {
            m.cap.tokens -= c;
            s.admitted_packets += 1;
            s.admitted_bytes += len;
            if v == MeterVerdict::Guaranteed {
                s.guaranteed_bytes += len;
            }
        } else {
            s.dropped_packets += 1;
            s.dropped_bytes += len;
        }
        Some(v)
    }

    /// The verdict [`Meters::admit`] would give, changing nothing.
    pub fn peek(&self, id: u32, len: u64, now: Duration) -> Option<MeterVerdict> {
        let mut copy = Meters::default();
        let m = self.meters.get(&id)?;
        copy.meters.insert(id, m.clone());
        if let Some(g) = m.cfg.guarantee {
            if let Some(l) = self.links.get(&g.link) {
                copy.links.insert(g.link, l.clone());
            }
        }
        copy.admit(id, len, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn default_burst_is_ten_milliseconds_with_a_floor() {
        assert_eq!(default_burst(1_000_000_000), 31_250_000);
        assert_eq!(default_burst(4_000_000), DEFAULT_BURST_FLOOR);
        const { assert!(DEFAULT_BURST_FLOOR >= MAX_FRAME_BYTES) };
    }

    #[test]
    fn bad_configs_are_refused_and_change_nothing() {
        let mut m = Meters::default();
        assert_eq!(
            m.set_meter(1, MeterConfig::cap(0)),
            Err(MeterError::ZeroRate)
        );
        assert_eq!(
            m.set_meter(1, MeterConfig::cap(1000).with_burst(1500))
                .unwrap_err()
                .code(),
            "meter_burst_too_small"
        );
        assert_eq!(
            m.set_meter(1, MeterConfig::cap(1000).with_guarantee(10, 7)),
            Err(MeterError::NoSuchLink(7))
        );
        m.set_link(7, 1000).unwrap();
        assert!(matches!(
            m.set_meter(1, MeterConfig::cap(100).with_guarantee(200, 7)),
            Err(MeterError::GuaranteeAboveCap { .. })
        ));
        m.set_meter(1, MeterConfig::cap(1000).with_guarantee(600, 7))
            .unwrap();
        assert!(matches!(
            m.set_meter(2, MeterConfig::cap(1000).with_guarantee(500, 7)),
            Err(MeterError::Overbooked { booked: 1100, .. })
        ));
        // Replacing meter 1's own guarantee is not double-counted.
        m.set_meter(1, MeterConfig::cap(1000).with_guarantee(900, 7))
            .unwrap();
        assert!(matches!(
            m.set_link(7, 800),
            Err(MeterError::Overbooked { .. })
        ));
        assert_eq!(m.link(7), Some(1000));
        assert_eq!(
            m.remove_link(7),
            Err(MeterError::LinkInUse { link: 7, meter: 1 })
        );
        assert!(m.meter(2).is_none());
        assert!(m.remove_meter(1));
        assert_eq!(m.remove_link(7), Ok(true));
    }

    #[test]
    fn a_full_bucket_passes_its_burst_then_the_rate() {
        let mut m = Meters::default();
        // 8 Mbit/s = 1,000 bytes per ms, burst 100,000 bytes.
        m.set_meter(1, MeterConfig::cap(8_000_000).with_burst(100_000))
            .unwrap();
        let t = Duration::ZERO;
        let mut n = 0;
        while m.admit(1, 1000, t).unwrap().admitted() {
            n += 1;
        }
        assert_eq!(n, 100, "the burst, exactly");
        assert_eq!(m.admit(1, 1000, t + MS / 2), Some(MeterVerdict::OverCap));
        assert_eq!(m.admit(1, 1000, t + MS), Some(MeterVerdict::Admit));
        assert_eq!(m.admit(1, 1, t + MS), Some(MeterVerdict::OverCap));
        // Time going backwards refills nothing.
        assert_eq!(m.admit(1, 1, Duration::ZERO), Some(MeterVerdict::OverCap));
        let (_, s) = m.meter(1).unwrap();
        assert_eq!(s.admitted_packets, 101);
        assert_eq!(s.admitted_bytes, 101_000);
        assert_eq!(s.dropped_packets, 4);
        assert_eq!(s.dropped_bytes, 2002);
    }

    #[test]
    fn peek_changes_nothing() {
        let mut m = Meters::default();
        m.set_link(1, 1_000_000_000).unwrap();
        m.set_meter(
            1,
            MeterConfig::cap(8_000_000)
                .with_burst(100_000)
                .with_guarantee(8_000_000, 1),
        )
        .unwrap();
        for _ in 0..200 {
            assert_eq!(
                m.peek(1, 1000, Duration::ZERO),
                Some(MeterVerdict::Guaranteed)
            );
        }
        assert_eq!(m.meter(1).unwrap().1, MeterStats::default());
        assert_eq!(m.peek(2, 1000, Duration::ZERO), None);
    }
}
