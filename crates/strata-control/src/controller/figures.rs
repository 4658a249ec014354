//! Figures: a volume's live statistics and the Prometheus text exposition.
//!
//! # Invariants
//! - Figures are read from the engine's counters; nothing here changes state.
//! - Metrics are admin-only; a volume's statistics are visible to whoever sees the volume.

use super::auth::Principal;
use super::{Controller, DeviceView, PoolView};
use crate::error::ControlError;
use crate::model::*;

impl Controller {
    /// The pool's figures (admin: pools are the platform's).
    pub fn pool_info(&self, p: &Principal) -> Result<strata_block::PoolInfo, ControlError> {
        if p.role != Role::Admin {
            return Err(ControlError::forbidden("pools are visible to admins only"));
        }
        Ok(self.pool.info())
    }

    /// Live figures of a volume.
    pub fn volume_stats(&self, p: &Principal, id: &str) -> Result<serde_json::Value, ControlError> {
        Self::require(p, Role::Reader)?;
        let v = self.get_volume(p, id)?;
        let c = self.primary(&v)?;
        let io = c
            .pool
            .io(c.volume)
            .map_err(|e| ControlError::internal(e.to_string()))?;
        let l = io.live();
        let t = io.totals();
        Ok(serde_json::json!({
            "volume": v.id,
            "name": v.name,
            "window_seconds": l.window_secs,
            "iops": l.rates[0].iops,
            "throughput_bytes": l.rates[0].throughput,
            "iops_1s": l.rates[0].iops, "iops_10s": l.rates[1].iops, "iops_60s": l.rates[2].iops,
            "throughput_1s": l.rates[0].throughput,
            "throughput_10s": l.rates[1].throughput,
            "throughput_60s": l.rates[2].throughput,
            "latency_p50_us": l.p50_us,
            "latency_p99_us": l.p99_us,
            "qos": v.qos,
            "totals": {
                "reads": t.reads, "writes": t.writes,
                "read_bytes": t.read_bytes, "write_bytes": t.write_bytes,
                "throttled_us": t.throttled_us,
            },
        }))
    }

    /// Prometheus text exposition of pool and volume figures (admin).
    pub fn metrics(&self, p: &Principal) -> Result<String, ControlError> {
        use std::fmt::Write;
        Self::require(p, Role::Admin)?;
        let mut o = String::new();
        let pools = self.list_pools(p)?;
        for (name, help, get) in [
            (
                "strata_pool_capacity_bytes",
                "Data capacity of the pool's devices.",
                (|v: &PoolView| v.capacity) as fn(&PoolView) -> u64,
            ),
            (
                "strata_pool_allocated_bytes",
                "Bytes referenced by volumes and snapshots on the pool's devices.",
                |v| v.allocated,
            ),
            (
                "strata_pool_free_bytes",
                "Bytes available for new data on the pool's devices.",
                |v| v.free,
            ),
            (
                "strata_pool_provisioned_bytes",
                "Sum of volume sizes, once per copy (thin).",
                |v| v.provisioned,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for pv in &pools {
                let _ = writeln!(o, "{name}{{pool=\"{}\"}} {}", pv.name, get(pv));
            }
        }
        self.device_metrics(&mut o, &pools);
        let figures = self.allocation_figures()?;
        let _ = writeln!(
            o,
            "# HELP strata_pool_allocated_ratio Sum of volume sizes (once per copy) over the \
             pool's allocation limit (capacity times overcommit; capacity when unlimited).\n\
             # TYPE strata_pool_allocated_ratio gauge"
        );
        for f in &figures {
            let _ = writeln!(
                o,
                "strata_pool_allocated_ratio{{pool=\"{}\"}} {}",
                f.pool, f.ratio
            );
        }
        let _ = writeln!(
            o,
            "# HELP strata_pool_overcommit_ratio Most the volumes may provision, as a multiple of \
             the capacity.\n# TYPE strata_pool_overcommit_ratio gauge"
        );
        for f in &figures {
            let over = f.overcommit.map_or("+Inf".to_string(), |r| r.to_string());
            let _ = writeln!(
                o,
                "strata_pool_overcommit_ratio{{pool=\"{}\"}} {over}",
                f.pool
            );
        }
        let _ = writeln!(
            o,
            "# HELP strata_pool_allocation_threshold_crossings_total Times the allocated ratio \
             passed a threshold (percent of the limit) upwards.\n\
             # TYPE strata_pool_allocation_threshold_crossings_total counter"
        );
        for f in &figures {
            for (t, n) in super::pools::THRESHOLDS.iter().zip(f.crossings) {
                let _ = writeln!(
                    o,
                    "strata_pool_allocation_threshold_crossings_total{{pool=\"{}\",threshold=\"{t}\"}} {n}",
                    f.pool
                );
            }
        }
        // A node's figures are its own volumes' (another node's copies are not here).
        let vols: Vec<Volume> = self
            .local_volumes()?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| v.state == VolumeState::Available)
            .collect();
        let mut ops = String::new();
        let mut bytes = String::new();
        let mut lat = String::new();
        let mut thr = String::new();
        for v in &vols {
            let Ok(c) = self.primary(v) else {
                continue;
            };
            let Ok(io) = c.pool.io(c.volume) else {
                continue;
            };
            let t = io.totals();
            let l = format!(
                "volume=\"{}\",name=\"{}\",tenant=\"{}\"",
                v.id, v.name, v.tenant
            );
            let _ = writeln!(
                ops,
                "strata_volume_ops_total{{{l},op=\"read\"}} {}",
                t.reads
            );
            let _ = writeln!(
                ops,
                "strata_volume_ops_total{{{l},op=\"write\"}} {}",
                t.writes
            );
            let _ = writeln!(
                bytes,
                "strata_volume_bytes_total{{{l},op=\"read\"}} {}",
                t.read_bytes
            );
            let _ = writeln!(
                bytes,
                "strata_volume_bytes_total{{{l},op=\"write\"}} {}",
                t.write_bytes
            );
            let mut acc = 0;
            for (b, n) in t
                .latency
                .iter()
                .enumerate()
                .take(strata_block::qos::LAT_BUCKETS - 1)
            {
                acc += n;
                let le = (1u64 << b) as f64 / 1e6;
                let _ = writeln!(
                    lat,
                    "strata_volume_latency_seconds_bucket{{{l},le=\"{le}\"}} {acc}"
                );
            }
            let count: u64 = t.latency.iter().sum();
            let _ = writeln!(
                lat,
                "strata_volume_latency_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                lat,
                "strata_volume_latency_seconds_sum{{{l}}} {}",
                t.latency_sum_us as f64 / 1e6
            );
            let _ = writeln!(lat, "strata_volume_latency_seconds_count{{{l}}} {count}");
            let _ = writeln!(
                thr,
                "strata_volume_throttled_seconds_total{{{l}}} {}",
                t.throttled_us as f64 / 1e6
            );
        }
        let _ = write!(o, "# HELP strata_volume_ops_total I/O requests served.\n# TYPE strata_volume_ops_total counter\n{ops}");
        let _ = write!(o, "# HELP strata_volume_bytes_total Bytes read or written.\n# TYPE strata_volume_bytes_total counter\n{bytes}");
        let _ = write!(o, "# HELP strata_volume_latency_seconds Request latency, admission wait included.\n# TYPE strata_volume_latency_seconds histogram\n{lat}");
        let _ = write!(o, "# HELP strata_volume_throttled_seconds_total Time requests waited for QoS admission.\n# TYPE strata_volume_throttled_seconds_total counter\n{thr}");
        let _ = writeln!(
            o,
            "# HELP strata_volume_copies Copies of the volume, by state (healthy: reachable \
             and in step; degraded volumes have fewer healthy copies than copies).\n\
             # TYPE strata_volume_copies gauge"
        );
        let mut resync = String::new();
        for v in &vols {
            for r in self.resync_state(v) {
                let l = format!(
                    "volume=\"{}\",copy=\"{}\",device=\"{}\"",
                    v.id, r.copy, r.device
                );
                let _ = writeln!(
                    resync,
                    "strata_volume_resync_bytes{{{l},state=\"done\"}} {}",
                    r.done
                );
                let _ = writeln!(
                    resync,
                    "strata_volume_resync_bytes{{{l},state=\"total\"}} {}",
                    r.total
                );
            }
        }
        let _ = write!(
            o,
            "# HELP strata_volume_resync_bytes Bytes of a copy being brought back (resync or \
             rebuild): copied so far and in all.\n# TYPE strata_volume_resync_bytes gauge\n{resync}"
        );
        for v in &vols {
            let h = self.volume_health(v);
            let l = format!(
                "volume=\"{}\",name=\"{}\",tenant=\"{}\"",
                v.id, v.name, v.tenant
            );
            let _ = writeln!(
                o,
                "strata_volume_copies{{{l},state=\"healthy\"}} {}",
                h.healthy
            );
            let _ = writeln!(
                o,
                "strata_volume_copies{{{l},state=\"total\"}} {}",
                h.copies
            );
        }
        self.scrub_and_node_metrics(&mut o, &pools);
        self.network_metrics(p, &mut o)?;
        self.lb_metrics(&mut o);
        Ok(o)
    }

    /// Per pool, what its last finished scrub found; per node (declared ones for planning
    /// excluded), whether its daemon is up and whether it is cordoned.
    fn scrub_and_node_metrics(&self, o: &mut String, pools: &[PoolView]) {
        use std::fmt::Write;
        let scrubs: Vec<super::ScrubView> = pools
            .iter()
            .filter_map(|p| self.last_scrub(&p.name).ok().flatten())
            .filter(|s| s.finished.is_some())
            .collect();
        type Get = fn(&super::ScrubView) -> u64;
        let rows: [(&str, &str, Get); 3] = [
            (
                "strata_pool_scrub_bad_blocks",
                "Blocks the pool's last finished scrub found failing verification.",
                |s| s.bad_blocks,
            ),
            (
                "strata_pool_scrub_unrepaired_blocks",
                "Of those, blocks no good copy could repair (their data is lost).",
                |s| s.bad_blocks.saturating_sub(s.repaired),
            ),
            (
                "strata_pool_scrub_last_finished_timestamp_seconds",
                "When the pool's last scrub finished, seconds since the epoch.",
                |s| s.finished.unwrap_or(0),
            ),
        ];
        for (name, help, get) in rows {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for s in &scrubs {
                let _ = writeln!(o, "{name}{{pool=\"{}\"}} {}", s.pool, get(s));
            }
        }
        let local = self.local_node();
        let nodes: Vec<super::NodeRecord> = self.node_records().unwrap_or_default();
        let _ = writeln!(
            o,
            "# HELP strata_node_up 1 when the node's daemon is up (this daemon's node; on a \
             shared store, another node whose alive key, kept on its lease, exists), 0 otherwise.\n\
             # TYPE strata_node_up gauge"
        );
        for n in nodes.iter().filter(|n| !n.hypothetical) {
            let up =
                local.as_deref() == Some(n.node.name.as_str()) || self.node_is_up(&n.node.name);
            let _ = writeln!(
                o,
                "strata_node_up{{node=\"{}\"}} {}",
                n.node.name,
                u8::from(up)
            );
        }
        let _ = writeln!(
            o,
            "# HELP strata_node_cordoned 1 when the node is cordoned (no new jobs).\n\
             # TYPE strata_node_cordoned gauge"
        );
        for n in nodes.iter().filter(|n| !n.hypothetical) {
            let _ = writeln!(
                o,
                "strata_node_cordoned{{node=\"{}\"}} {}",
                n.node.name,
                u8::from(n.node.cordoned)
            );
        }
    }

    /// Per device: health (1 when healthy), capacity, allocation and the error counts.
    fn device_metrics(&self, o: &mut String, pools: &[PoolView]) {
        use std::fmt::Write;
        type Get = fn(&DeviceView) -> u64;
        let rows: [(&str, &str, &str, Get); 7] = [
            (
                "strata_device_healthy",
                "1 when the device is usable, 0 when faulted or missing.",
                "gauge",
                |d| u64::from(d.health == "healthy"),
            ),
            (
                "strata_device_capacity_bytes",
                "Data capacity of the device.",
                "gauge",
                |d| d.capacity,
            ),
            (
                "strata_device_allocated_bytes",
                "Bytes in use on the device.",
                "gauge",
                |d| d.allocated,
            ),
            (
                "strata_device_read_errors_total",
                "Reads of the device that failed.",
                "counter",
                |d| d.counters.read_errors,
            ),
            (
                "strata_device_write_errors_total",
                "Writes and flushes of the device that failed.",
                "counter",
                |d| d.counters.write_errors,
            ),
            (
                "strata_device_checksum_errors_total",
                "Blocks read from the device that failed their checksum.",
                "counter",
                |d| d.counters.checksum_errors,
            ),
            (
                "strata_device_repaired_blocks_total",
                "Blocks of the device rewritten from another copy.",
                "counter",
                |d| d.counters.repaired,
            ),
        ];
        for (name, help, kind, get) in rows {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for p in pools {
                for d in &p.devices {
                    let _ = writeln!(
                        o,
                        "{name}{{pool=\"{}\",device=\"{}\",class=\"{}\"}} {}",
                        p.name,
                        d.record.id,
                        d.record.class,
                        get(d)
                    );
                }
            }
        }
    }
}
