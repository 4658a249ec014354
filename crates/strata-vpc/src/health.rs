//! The health checker of load-balancer backends, as a driven engine: the targets wanted and
//! the time go in, the probes due come out, probe results go in, up/down decisions come out.
//! It does no I/O; the daemon's thread (`strata/src/lbcheck.rs`) runs the probes (a TCP
//! connect or an HTTP GET, from the network's monitor namespace) and applies the decisions to
//! the switch (`set_lb_backend_up`).
//!
//! # Invariants
//! - A backend is `up` until `fall` consecutive probes fail, then `down` until `rise`
//!   consecutive probes succeed: a success resets the failure count and a failure the success
//!   count, so one flapping probe never moves it. Two states, so no transition table: a
//!   decision is emitted exactly when `up` flips.
//! - A backend has at most one probe in flight; the next is due `interval` after the last one
//!   started (a probe that outlives its timeout is the prober's failure to report, never a
//!   second probe).
//! - A target that leaves the wanted set is forgotten; one that comes back starts up again
//!   (the engine's group starts it up too, so the two agree).
//! - Changing a target's settings (interval, rise, fall, kind) keeps its state.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::model::{HealthCheck, HealthKind};

/// One probed backend: a listener's group and the backend's address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// The listener's group.
    pub group: u32,
    /// Backend address.
    pub ip: Ipv4Addr,
    /// Backend port.
    pub port: u16,
}

/// A probe to run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Whom.
    pub target: Target,
    /// How.
    pub kind: HealthKind,
    /// How long it may take.
    pub timeout: Duration,
}

/// A change of a backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whom.
    pub target: Target,
    /// Its new state.
    pub up: bool,
}

#[derive(Debug, Clone)]
struct State {
    check: HealthCheck,
    up: bool,
    successes: u32,
    failures: u32,
    due: Duration,
    in_flight: bool,
}

/// The checker.
#[derive(Debug, Default)]
pub struct Checker {
    targets: BTreeMap<Target, State>,
}

impl Checker {
    /// A checker with no targets.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// The targets to probe now, with their settings (`HealthKind::None` ones are dropped):
    /// new ones start up and are due at once, gone ones are forgotten.
    pub fn sync(&mut self, wanted: impl IntoIterator<Item = (Target, HealthCheck)>, now: Duration) {
        let mut next = BTreeMap::new();
        for (t, check) in wanted {
            if !check.active() {
                continue;
            }
            let st = match self.targets.remove(&t) {
                Some(mut s) => {
                    s.check = check;
                    s
                }
                None => State {
                    check,
                    up: true,
                    successes: 0,
                    failures: 0,
                    due: now,
                    in_flight: false,
                },
            };
            next.insert(t, st);
        }
        self.targets = next;
    }

    /// The probes due at `now`; each is in flight until its [`Checker::report`].
    pub fn due(&mut self, now: Duration) -> Vec<Probe> {
        let mut out = Vec::new();
        for (t, s) in &mut self.targets {
            if s.in_flight || s.due > now {
                continue;
            }
            s.in_flight = true;
            s.due = now + Duration::from_millis(u64::from(s.check.interval_ms));
            out.push(Probe {
                target: *t,
                kind: s.check.kind.clone(),
                timeout: Duration::from_millis(u64::from(s.check.timeout_ms)),
            });
        }
        out
    }

    /// A probe's result; the decision if the backend's state flips. A result for a target
    /// no longer wanted is ignored.
    pub fn report(&mut self, target: Target, ok: bool) -> Option<Decision> {
        let s = self.targets.get_mut(&target)?;
        s.in_flight = false;
        if ok {
            s.failures = 0;
            s.successes = s.successes.saturating_add(1);
            if !s.up && s.successes >= s.check.rise {
                s.up = true;
                return Some(Decision { target, up: true });
            }
        } else {
            s.successes = 0;
            s.failures = s.failures.saturating_add(1);
            if s.up && s.failures >= s.check.fall {
                s.up = false;
                return Some(Decision { target, up: false });
            }
        }
        None
    }

    /// A target's health (None: not probed).
    pub fn is_up(&self, target: &Target) -> Option<bool> {
        self.targets.get(target).map(|s| s.up)
    }

    /// The targets that are down.
    pub fn down(&self) -> Vec<Target> {
        self.targets
            .iter()
            .filter(|(_, s)| !s.up)
            .map(|(t, _)| *t)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u8) -> Target {
        Target {
            group: 1,
            ip: Ipv4Addr::new(10, 0, 0, n),
            port: 80,
        }
    }

    fn check() -> HealthCheck {
        let mut c = HealthCheck::none();
        c.kind = HealthKind::Tcp;
        c
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// With the defaults, a backend dead from time 0 is out by the second failed probe, at
    /// most `fall × interval` later (plus the prober's timeout): within 3 s.
    #[test]
    fn fall_failures_take_it_out_and_rise_successes_bring_it_back() {
        let mut c = Checker::new();
        c.sync([(t(1), check())], ms(0));
        let mut decisions = Vec::new();
        let mut at = 0;
        while at <= 10_000 {
            for p in c.due(ms(at)) {
                // Dead until 5 s, then alive.
                if let Some(d) = c.report(p.target, at >= 5_000) {
                    decisions.push((at, d.up));
                }
            }
            at += 100;
        }
        assert_eq!(decisions, vec![(1_000, false), (6_000, true)]);
        let out_after = decisions[0].0 + u64::from(HealthCheck::DEFAULT_TIMEOUT_MS);
        assert!(out_after <= 3_000, "{out_after}");
    }

    #[test]
    fn one_failure_among_successes_moves_nothing() {
        let mut c = Checker::new();
        c.sync([(t(1), check())], ms(0));
        for (i, ok) in [true, false, true, false, true].into_iter().enumerate() {
            let p = c.due(ms(i as u64 * 1000));
            assert_eq!(p.len(), 1);
            assert_eq!(c.report(p[0].target, ok), None);
        }
        assert_eq!(c.is_up(&t(1)), Some(true));
    }

    #[test]
    fn one_probe_in_flight_and_interval_between_starts() {
        let mut c = Checker::new();
        c.sync([(t(1), check()), (t(2), check())], ms(0));
        assert_eq!(c.due(ms(0)).len(), 2);
        // Nothing reported: nothing new, even after the interval.
        assert!(c.due(ms(5_000)).is_empty());
        c.report(t(1), true);
        assert_eq!(c.due(ms(5_000)).len(), 1);
        assert!(c.due(ms(5_500)).is_empty());
    }

    #[test]
    fn sync_keeps_state_forgets_the_gone_and_skips_unchecked() {
        let mut c = Checker::new();
        c.sync([(t(1), check())], ms(0));
        for at in [0, 1000] {
            let p = c.due(ms(at));
            c.report(p[0].target, false);
        }
        assert_eq!(c.down(), vec![t(1)]);
        let mut slower = check();
        slower.interval_ms = 5_000;
        c.sync([(t(1), slower), (t(2), HealthCheck::none())], ms(1500));
        assert_eq!(c.down(), vec![t(1)], "settings change keeps the state");
        assert_eq!(c.is_up(&t(2)), None, "kind none is not probed");
        c.sync([], ms(1600));
        assert_eq!(c.report(t(1), true), None);
        c.sync([(t(1), check())], ms(1700));
        assert_eq!(
            c.is_up(&t(1)),
            Some(true),
            "a target that comes back starts up"
        );
    }
}
