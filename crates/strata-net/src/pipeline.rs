//! The multi-table pipeline: rules, counters, timeouts, translation, and the caches.
//!
//! Semantics (OpenFlow 1.3 as OVS implements `actions=`):
//! - A packet starts in table 0. In each table the highest-priority matching rule wins; among
//!   equal priorities the earlier-installed rule wins (deterministic where OpenFlow is not).
//! - The winner's actions apply in order; `goto_table:N` (last, N higher) continues in table N.
//! - A table miss ends the walk: no further actions, so a miss in table 0 drops the packet.
//!   Actions already applied by earlier tables (an `output` before the `goto_table`) stand.
//! - Adding a rule with the same table, match and priority as an existing one replaces it
//!   (counters restart), as `ovs-ofctl add-flow` does.
//!
//! Translation turns a key into a [`Translation`]: the flat list of actions (without gotos) the
//! packet gets, the rules it hit (for counters), and the mask of key bits consulted. Execution
//! of a translation is per packet and lives in [`crate::switch`].
//!
//! Cache invalidation ("what it must and nothing more"):
//! - Each megaflow remembers, per table visited, the key as that table saw it and the rule that
//!   won there. A new rule R (table t, priority p, match V/M) can only change a megaflow if the
//!   megaflow visited t, R would beat the winner there (p higher; equal priority loses to the
//!   older rule) and R's match overlaps the megaflow's region: `((key_in ^ V) & M & mask) == 0`
//!   word by word. Only those megaflows are removed.
//! - A removed (deleted, expired, replaced) rule invalidates exactly the megaflows that hit it:
//!   a rule that did not win for a megaflow cannot change its outcome by going away.
//! - EMC entries are never searched: they point at a megaflow slot and generation, and die with
//!   it.
//!
//! Conntrack: a `ct(...,table=T)` is an ordinary action of the translation (executed per
//! packet); the pass it starts is a separate classification of the key with `ct_*` filled in
//! and `recirc = T + 1`, cached on its own like any key. See docs/net-engine.md.
//!
//! Why this is sound: fields written by actions are added to the consulted mask in full, so for
//! every packet in a megaflow's region the key seen by each table agrees with the recorded
//! `key_in` on every bit of `mask`, and is free on the others.

use std::time::Duration;

use crate::cache::{Emc, MegaflowCache, MegaflowRef};
use crate::classifier::Classifier;
use crate::flow::{apply_to_key, Action, FlowRule, RuleError, MAX_TABLE};
use crate::key::{Field, FlowKey, KEY_WORDS};
pub use crate::types::{ClsEntry, RuleId, Translation, Visit};
use crate::types::{FlowFilter, FlowStats};

/// Cache configuration.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Use the exact-match cache.
    pub emc: bool,
    /// EMC entries (power of two).
    pub emc_entries: usize,
    /// Use the megaflow cache (without it, every packet takes the slow path).
    pub megaflow: bool,
    /// Maximum megaflows; beyond it new translations are not cached.
    pub max_megaflows: usize,
    /// Megaflows unused this long are evicted by [`Pipeline::expire`].
    pub megaflow_idle: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            emc: true,
            emc_entries: 8192,
            megaflow: true,
            max_megaflows: 65536,
            megaflow_idle: Duration::from_secs(10),
        }
    }
}

/// Cache and pipeline counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Lookups answered by the EMC.
    pub emc_hits: u64,
    /// Lookups answered by the megaflow cache.
    pub megaflow_hits: u64,
    /// Lookups that ran the full pipeline.
    pub misses: u64,
    /// Megaflows removed because a rule changed.
    pub invalidated: u64,
}

#[derive(Debug)]
struct RuleEntry {
    rule: FlowRule,
    seq: u64,
    created: Duration,
    last_used: Duration,
    n_packets: u64,
    n_bytes: u64,
}

/// An installed rule with its counters, as `dump-flows` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDump {
    /// Handle.
    pub id: RuleId,
    /// The rule.
    pub rule: FlowRule,
    /// Counters and age.
    pub stats: FlowStats,
}

/// The pipeline: tables of rules plus caches.
#[derive(Debug)]
pub struct Pipeline {
    rules: Vec<Option<RuleEntry>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    tables: Vec<Classifier>,
    seq: u64,
    megaflows: MegaflowCache,
    emc: Emc,
    cfg: CacheConfig,
    scratch: Translation,
    stats: PipelineStats,
    next_deadline: Option<Duration>,
    next_sweep: Duration,
    /// Rule changes so far (added, removed, expired, replaced; caches flushed): part of the
    /// switch generation that a port layer carrying flows without the engine compares on.
    changes: u64,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new(CacheConfig::default())
    }
}

fn field_mask(f: Field) -> FlowKey {
    let mut m = FlowKey::ZERO;
    m.set(f, u64::MAX);
    match f {
        Field::Ipv6SrcHi => m.set(Field::Ipv6SrcLo, u64::MAX),
        Field::Ipv6DstHi => m.set(Field::Ipv6DstLo, u64::MAX),
        _ => {}
    }
    m
}

impl Pipeline {
    /// An empty pipeline (every table misses, so everything drops).
    pub fn new(cfg: CacheConfig) -> Self {
        Pipeline {
            rules: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            tables: (0..=MAX_TABLE).map(|_| Classifier::new()).collect(),
            seq: 0,
            megaflows: MegaflowCache::default(),
            emc: Emc::new(cfg.emc_entries),
            cfg,
            scratch: Translation::default(),
            stats: PipelineStats::default(),
            next_deadline: None,
            next_sweep: Duration::ZERO,
            changes: 0,
        }
    }

    /// How many rule changes there have been (see [`crate::Switch::generation`]).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Counts `packets` packets of `bytes` bytes in all, last seen at `last_used`, on every
    /// rule of `rules` that still exists: packets a port layer forwarded by a result of these
    /// rules without the engine (the veth fast path folds its counts back this way).
    pub fn credit(&mut self, rules: &[RuleId], packets: u64, bytes: u64, last_used: Duration) {
        for id in rules {
            if self.gens.get(id.slot as usize) != Some(&id.gen) {
                continue;
            }
            if let Some(Some(e)) = self.rules.get_mut(id.slot as usize) {
                e.n_packets += packets;
                e.n_bytes += bytes;
                e.last_used = e.last_used.max(last_used);
            }
        }
    }

    /// True if rule `id` exists and has an idle timeout.
    pub fn has_idle_timeout(&self, id: RuleId) -> bool {
        self.entry(id).is_some_and(|e| e.rule.idle_timeout != 0)
    }

    /// Counters.
    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Number of installed rules.
    pub fn n_rules(&self) -> usize {
        self.rules.iter().flatten().count()
    }

    /// Number of cached megaflows.
    pub fn n_megaflows(&self) -> usize {
        self.megaflows.len()
    }

    /// Number of distinct megaflow masks.
    pub fn n_megaflow_masks(&self) -> usize {
        self.megaflows.n_masks()
    }

    /// A table's classifier (for inspection).
    pub fn table(&self, t: u8) -> &Classifier {
        &self.tables[t.min(MAX_TABLE) as usize]
    }

    fn entry(&self, id: RuleId) -> Option<&RuleEntry> {
        if self.gens.get(id.slot as usize) != Some(&id.gen) {
            return None;
        }
        self.rules.get(id.slot as usize)?.as_ref()
    }

    /// The rule behind a handle.
    pub fn rule(&self, id: RuleId) -> Option<&FlowRule> {
        self.entry(id).map(|e| &e.rule)
    }

    /// (n_packets, n_bytes) of a rule.
    pub fn rule_counters(&self, id: RuleId) -> Option<(u64, u64)> {
        self.entry(id).map(|e| (e.n_packets, e.n_bytes))
    }

    /// Installs a rule (replacing one with the same table, match and priority).
    pub fn add_rule(&mut self, rule: FlowRule, now: Duration) -> Result<RuleId, RuleError> {
        rule.validate()?;
        let dup = self.tables[rule.table as usize].find_exact(&rule.matches, rule.priority);
        if let Some(old) = dup {
            self.remove_rule(old);
        }
        let seq = self.seq;
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.rules.push(None);
                self.gens.push(0);
                (self.rules.len() - 1) as u32
            }
        };
        let id = RuleId {
            slot,
            gen: self.gens[slot as usize],
        };
        let cls = ClsEntry {
            id,
            priority: rule.priority,
            seq,
        };
        self.tables[rule.table as usize].insert(&rule.matches, cls);
        self.invalidate_for_new(&rule, &cls);
        self.changes += 1;
        if let Some(d) = deadline(&rule, now, now) {
            self.next_deadline = Some(self.next_deadline.map_or(d, |x| x.min(d)));
        }
        self.rules[slot as usize] = Some(RuleEntry {
            rule,
            seq,
            created: now,
            last_used: now,
            n_packets: 0,
            n_bytes: 0,
        });
        Ok(id)
    }

    fn invalidate_for_new(&mut self, rule: &FlowRule, cls: &ClsEntry) {
        let (v, m) = (&rule.matches.value, &rule.matches.mask);
        let n = self.megaflows.remove_if(|mf| {
            mf.trans.visits.iter().any(|vis| {
                if vis.table != rule.table {
                    return false;
                }
                if let Some(h) = vis.hit {
                    if !cls.beats(&h) {
                        return false;
                    }
                }
                (0..KEY_WORDS).all(|i| (vis.key_in.w[i] ^ v.w[i]) & m.w[i] & mf.mask.w[i] == 0)
            })
        });
        self.stats.invalidated += n as u64;
    }

    /// Removes a rule; returns it, or `None` if the handle is stale.
    pub fn remove_rule(&mut self, id: RuleId) -> Option<FlowRule> {
        self.entry(id)?;
        let e = self.rules[id.slot as usize].take()?;
        self.changes += 1;
        self.gens[id.slot as usize] = self.gens[id.slot as usize].wrapping_add(1);
        self.free.push(id.slot);
        self.tables[e.rule.table as usize].remove(&e.rule.matches, id);
        let n = self.megaflows.remove_if(|mf| mf.trans.hits.contains(&id));
        self.stats.invalidated += n as u64;
        Some(e.rule)
    }

    /// Removes the rules selected by a filter (OVS del-flows semantics: non-strict removes rules
    /// whose match is at least as specific as the filter; strict needs equal match and
    /// priority). Returns how many were removed.
    pub fn remove_matching(&mut self, f: &FlowFilter, strict: bool) -> usize {
        let ids: Vec<RuleId> = self
            .iter_ids()
            .filter(|&id| {
                let Some(e) = self.entry(id) else {
                    return false;
                };
                let r = &e.rule;
                f.table.is_none_or(|t| t == r.table)
                    && f.cookie.is_none_or(|c| c == r.cookie)
                    && if strict {
                        r.matches == f.matches && f.priority.is_none_or(|p| p == r.priority)
                    } else {
                        r.matches.is_covered_by(&f.matches)
                    }
            })
            .collect();
        for &id in &ids {
            self.remove_rule(id);
        }
        ids.len()
    }

    fn iter_ids(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.rules.iter().enumerate().filter_map(|(i, e)| {
            e.as_ref().map(|_| RuleId {
                slot: i as u32,
                gen: self.gens[i],
            })
        })
    }

    /// All rules with counters, ordered by table, then priority (high first), then age.
    pub fn dump(&self, now: Duration) -> Vec<FlowDump> {
        let mut v: Vec<(&RuleEntry, RuleId)> = self
            .iter_ids()
            .filter_map(|id| self.entry(id).map(|e| (e, id)))
            .collect();
        v.sort_by_key(|(e, _)| (e.rule.table, std::cmp::Reverse(e.rule.priority), e.seq));
        v.into_iter()
            .map(|(e, id)| FlowDump {
                id,
                rule: e.rule.clone(),
                stats: FlowStats {
                    n_packets: e.n_packets,
                    n_bytes: e.n_bytes,
                    duration: now.saturating_sub(e.created),
                },
            })
            .collect()
    }

    /// Runs the pipeline for `key` without touching caches or counters (the slow path, also
    /// used by `trace`).
    pub fn translate(&self, key: &FlowKey) -> Translation {
        let mut t = Translation::default();
        self.translate_into(key, &mut t);
        t
    }

    fn translate_into(&self, key: &FlowKey, t: &mut Translation) {
        t.ops.clear();
        t.hits.clear();
        t.visits.clear();
        // A recirculated pass starts at its table; every pass consults `recirc` in full, so a
        // cached pass is found again only by packets on the same pass.
        t.mask = field_mask(Field::Recirc);
        let mut k = *key;
        let mut table = key.get(Field::Recirc).saturating_sub(1) as u8;
        loop {
            let hit = self.tables[table as usize].lookup(&k, &mut t.mask);
            t.visits.push(Visit {
                table,
                key_in: k,
                hit,
            });
            let Some(cls) = hit else { break };
            let Some(e) = self.entry(cls.id) else { break };
            t.hits.push(cls.id);
            let mut next = None;
            for a in &e.rule.actions {
                if let Action::GotoTable(n) = *a {
                    next = Some(n);
                    continue;
                }
                if let Some(f) = apply_to_key(a, &mut k) {
                    t.mask.or_assign(&field_mask(f));
                }
                t.ops.push(a.clone());
            }
            match next {
                Some(n) if n > table => table = n,
                _ => break,
            }
        }
    }

    /// The fast path: find the translation for `key` through EMC, megaflows, or the slow path,
    /// and count the packet (`bytes` long) on every rule it hits.
    ///
    /// No allocation happens unless the slow path runs.
    #[inline]
    pub fn classify(&mut self, key: &FlowKey, bytes: u64, now: Duration) -> &Translation {
        let r = self.lookup_ref(key, now);
        let trans: &Translation = match r.and_then(|r| self.megaflows.get(r)) {
            Some(mf) => &mf.trans,
            None => &self.scratch,
        };
        for id in &trans.hits {
            if self.gens.get(id.slot as usize) == Some(&id.gen) {
                if let Some(Some(e)) = self.rules.get_mut(id.slot as usize) {
                    e.n_packets += 1;
                    e.n_bytes += bytes;
                    e.last_used = now;
                }
            }
        }
        trans
    }

    /// Lookup without counting (what the benchmark measures): returns the megaflow reference,
    /// or `None` if the translation is only in the scratch slot (caches off or full).
    #[inline]
    pub fn lookup_ref(&mut self, key: &FlowKey, now: Duration) -> Option<MegaflowRef> {
        let h = if self.cfg.emc { key.hash_all() } else { 0 };
        if self.cfg.emc {
            if let Some(r) = self.emc.lookup(h, key) {
                if let Some(mf) = self.megaflows.get_mut(r) {
                    mf.last_used = now;
                    self.stats.emc_hits += 1;
                    return Some(r);
                }
            }
        }
        if self.cfg.megaflow {
            if let Some(r) = self.megaflows.lookup(key) {
                if let Some(mf) = self.megaflows.get_mut(r) {
                    mf.last_used = now;
                }
                self.stats.megaflow_hits += 1;
                if self.cfg.emc {
                    self.emc.insert(h, key, r);
                }
                return Some(r);
            }
        }
        self.stats.misses += 1;
        let mut t = std::mem::take(&mut self.scratch);
        self.translate_into(key, &mut t);
        if self.cfg.megaflow && self.megaflows.len() < self.cfg.max_megaflows {
            let r = self.megaflows.insert(key, t, now);
            if self.cfg.emc {
                self.emc.insert(h, key, r);
            }
            Some(r)
        } else {
            self.scratch = t;
            None
        }
    }

    /// Earliest time a rule may expire (a lower bound), if any rule has a timeout.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.next_deadline
    }

    /// Removes rules whose idle or hard timeout has passed at `now` (a rule with
    /// `hard_timeout=60` installed at t=0 is gone at t=60 exactly), and megaflows idle longer
    /// than the configured limit. Returns the removed rules.
    pub fn expire(&mut self, now: Duration) -> Vec<FlowRule> {
        let mut gone = Vec::new();
        let due = self.next_deadline.is_some_and(|d| now >= d);
        if due {
            let mut next: Option<Duration> = None;
            let ids: Vec<RuleId> = self.iter_ids().collect();
            for id in ids {
                let Some(e) = self.entry(id) else { continue };
                match deadline(&e.rule, e.created, e.last_used) {
                    Some(d) if now >= d => {
                        if let Some(r) = self.remove_rule(id) {
                            gone.push(r);
                        }
                    }
                    Some(d) => next = Some(next.map_or(d, |x| x.min(d))),
                    None => {}
                }
            }
            self.next_deadline = next;
        }
        if now >= self.next_sweep {
            let idle = self.cfg.megaflow_idle;
            self.megaflows
                .remove_if(|mf| now.saturating_sub(mf.last_used) >= idle);
            self.next_sweep = now + Duration::from_secs(1);
        }
        gone
    }

    /// Drops every cached megaflow and EMC entry (used when something outside the rules that
    /// translations depend on changes; rule changes never need it).
    pub fn flush_caches(&mut self) {
        self.changes += 1;
        self.megaflows.clear();
        self.emc.clear();
    }
}

fn deadline(r: &FlowRule, created: Duration, last_used: Duration) -> Option<Duration> {
    let hard = (r.hard_timeout != 0).then(|| created + Duration::from_secs(r.hard_timeout as u64));
    let idle =
        (r.idle_timeout != 0).then(|| last_used + Duration::from_secs(r.idle_timeout as u64));
    match (hard, idle) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse_flow;

    fn key(port: u32, tp_dst: u16) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set(Field::InPort, port as u64);
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 6);
        k.set(Field::TpDst, tp_dst as u64);
        k
    }

    #[test]
    fn goto_and_miss() {
        let mut p = Pipeline::default();
        let t0 = Duration::ZERO;
        p.add_rule(
            parse_flow("in_port=1,actions=output:9,goto_table:3", None).unwrap(),
            t0,
        )
        .unwrap();
        p.add_rule(
            parse_flow("table=3,tcp,tp_dst=80,actions=output:2", None).unwrap(),
            t0,
        )
        .unwrap();
        let t = p.translate(&key(1, 80));
        assert_eq!(t.ops, vec![Action::Output(9), Action::Output(2)]);
        let t = p.translate(&key(1, 81));
        assert_eq!(
            t.ops,
            vec![Action::Output(9)],
            "miss in table 3 keeps earlier output"
        );
        assert_eq!(t.visits.len(), 2);
        assert!(p.translate(&key(2, 80)).ops.is_empty());
    }

    #[test]
    fn add_flow_replaces_identical() {
        let mut p = Pipeline::default();
        let t0 = Duration::ZERO;
        p.add_rule(parse_flow("priority=5,actions=output:1", None).unwrap(), t0)
            .unwrap();
        p.add_rule(parse_flow("priority=5,actions=output:2", None).unwrap(), t0)
            .unwrap();
        assert_eq!(p.n_rules(), 1);
        assert_eq!(p.translate(&key(1, 1)).ops, vec![Action::Output(2)]);
    }

    #[test]
    fn unrelated_megaflows_survive_rule_add() {
        let mut p = Pipeline::default();
        let t0 = Duration::ZERO;
        p.add_rule(parse_flow("priority=1,actions=output:1", None).unwrap(), t0)
            .unwrap();
        p.add_rule(
            parse_flow("priority=10,in_port=5,actions=output:5", None).unwrap(),
            t0,
        )
        .unwrap();
        p.lookup_ref(&key(1, 80), t0);
        p.lookup_ref(&key(5, 80), t0);
        assert_eq!(p.n_megaflows(), 2);
        // Overlaps in_port=1's megaflow only.
        p.add_rule(
            parse_flow("priority=20,in_port=1,tcp,actions=drop", None).unwrap(),
            t0,
        )
        .unwrap();
        assert_eq!(p.n_megaflows(), 1);
        assert!(p.classify(&key(1, 80), 60, t0).ops.is_empty());
    }
}
