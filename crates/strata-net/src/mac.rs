//! MAC learning table: (isolation domain, MAC) -> port, with ageing and a size bound.
//!
//! Entries are keyed by the packet's isolation domain, so the same MAC in two tenants' networks
//! is two independent entries and learned forwarding can never cross domains. The table is
//! bounded: when full, new addresses are not learned (packets to them flood within their
//! domain, which is correct, only slower) and `refused` counts it — an address flood from one
//! port can not evict the established entries of others.

use std::collections::HashMap;
use std::time::Duration;

use crate::key::PortNo;
use crate::types::Domain;

/// Default ageing time (as the Linux bridge and OVS: 300 s).
pub const DEFAULT_MAC_AGEING: Duration = Duration::from_secs(300);
/// Default size bound.
pub const DEFAULT_MAC_CAPACITY: usize = 8192;

#[derive(Debug, Clone, Copy)]
struct Entry {
    port: PortNo,
    last_seen: Duration,
}

/// The learning table.
#[derive(Debug)]
pub struct MacTable {
    map: HashMap<(Option<Domain>, u64), Entry>,
    ageing: Duration,
    capacity: usize,
    /// Addresses not learned because the table was full.
    pub refused: u64,
    /// Entries moved to another port or removed (aged out, flushed): what can change where a
    /// learned destination goes, counted for [`crate::Switch::generation`].
    changes: u64,
}

impl MacTable {
    /// An empty table.
    pub fn new(ageing: Duration, capacity: usize) -> Self {
        MacTable {
            map: HashMap::with_capacity(capacity.min(65536)),
            ageing,
            capacity,
            refused: 0,
            changes: 0,
        }
    }

    /// Moves and removals so far (a new address or a refreshed one is not a change).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Records that `mac` was seen on `port` in `domain` at `now`. Multicast sources are
    /// never learned.
    pub fn learn(&mut self, domain: Option<Domain>, mac: u64, port: PortNo, now: Duration) {
        if mac & 0x0100_0000_0000 != 0 {
            return;
        }
        if let Some(e) = self.map.get_mut(&(domain, mac)) {
            if e.port != port {
                self.changes += 1;
            }
            e.port = port;
            e.last_seen = now;
            return;
        }
        if self.map.len() >= self.capacity {
            self.refused += 1;
            return;
        }
        self.map.insert(
            (domain, mac),
            Entry {
                port,
                last_seen: now,
            },
        );
    }

    /// Keeps `mac` learned on `port` as of `at` (packets the port layer forwarded without the
    /// engine, whose sources the engine would have learned): refreshes the entry if it is
    /// still on `port`, learns it again if it is gone, and leaves it alone if it has moved
    /// since (a move is newer than these packets).
    pub fn refresh(&mut self, domain: Option<Domain>, mac: u64, port: PortNo, at: Duration) {
        match self.map.get_mut(&(domain, mac)) {
            Some(e) if e.port == port => e.last_seen = e.last_seen.max(at),
            Some(_) => {}
            None => self.learn(domain, mac, port, at),
        }
    }

    /// The port `mac` was learned on in `domain`, unless aged out.
    pub fn lookup(&self, domain: Option<Domain>, mac: u64, now: Duration) -> Option<PortNo> {
        let e = self.map.get(&(domain, mac))?;
        (now.saturating_sub(e.last_seen) < self.ageing).then_some(e.port)
    }

    /// Removes aged entries.
    pub fn expire(&mut self, now: Duration) {
        let ageing = self.ageing;
        let before = self.map.len();
        self.map
            .retain(|_, e| now.saturating_sub(e.last_seen) < ageing);
        self.changes += (before - self.map.len()) as u64;
    }

    /// Forgets everything learned on `port` (port removed or moved to another domain).
    pub fn flush_port(&mut self, port: PortNo) {
        let before = self.map.len();
        self.map.retain(|_, e| e.port != port);
        self.changes += (before - self.map.len()) as u64;
    }

    /// Number of entries (including not yet expired stale ones).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All entries as (domain, mac, port, age).
    pub fn entries(&self, now: Duration) -> Vec<(Option<Domain>, u64, PortNo, Duration)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .map(|(&(d, m), e)| (d, m, e.port, now.saturating_sub(e.last_seen)))
            .collect();
        v.sort_by_key(|&(d, m, p, _)| (d, m, p));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_separate_and_entries_age() {
        let mut t = MacTable::new(Duration::from_secs(10), 4);
        let a = Some(Domain::Vni(100));
        let b = Some(Domain::Vni(200));
        t.learn(a, 0x0200_0000_0001, 1, Duration::ZERO);
        assert_eq!(
            t.lookup(a, 0x0200_0000_0001, Duration::from_secs(9)),
            Some(1)
        );
        assert_eq!(t.lookup(b, 0x0200_0000_0001, Duration::ZERO), None);
        assert_eq!(t.lookup(a, 0x0200_0000_0001, Duration::from_secs(10)), None);
        t.learn(a, 0x0100_0000_0001, 1, Duration::ZERO);
        assert_eq!(t.len(), 1, "multicast not learned");
    }
}
