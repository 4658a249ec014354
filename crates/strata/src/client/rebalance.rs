//! `strata pool rebalance NAME [--max-moves N] [--dry-run] [--no-wait]`: one rebalance round
//! of a pool (admin). Prints the moves and the pool's spread (the largest fill difference
//! between two devices of a class) before and after; a real round then waits, with a progress
//! bar, until every started move is done (its volume's copy is on the new device).

use anyhow::{bail, Result};
use serde_json::Value;
use strata_control::wire;

use super::{body, enc, Client, Output};

/// How long a wait may see no move finish before it gives up (the moves go on).
const STALL: std::time::Duration = std::time::Duration::from_secs(120);

impl Client {
    /// `strata pool rebalance NAME`.
    pub fn pool_rebalance(
        &self,
        name: &str,
        max_moves: Option<u64>,
        dry_run: bool,
        wait: bool,
    ) -> Result<()> {
        let b = wire::RebalancePool { max_moves, dry_run };
        let mut v = self.req(
            "POST",
            &format!("/v1/pools/{}/rebalance", enc(name)),
            body(&b),
        )?;
        if wait && !dry_run {
            self.wait_moves(&mut v)?;
        }
        if self.out != Output::Table {
            self.print(&v, &[])?;
            return failed_moves(&v);
        }
        outln!(
            "pool {}: {} move(s){}, spread {:.1}% -> {:.1}% ({})",
            name,
            v["moves"].as_array().map_or(0, Vec::len),
            if dry_run { " planned (dry run)" } else { "" },
            v["spread_before"].as_f64().unwrap_or(0.0) * 100.0,
            v["spread_after"].as_f64().unwrap_or(0.0) * 100.0,
            v["method"].as_str().unwrap_or("-"),
        );
        if v["moves"].as_array().is_some_and(|m| !m.is_empty()) {
            outln!("");
            self.print(
                &serde_json::json!({"items": v["moves"]}),
                &[
                    ("VOLUME", "name"),
                    ("TENANT", "tenant"),
                    ("FROM", "from"),
                    ("TO", "to"),
                    ("BYTES", "bytes:size"),
                    ("STATE", "state"),
                    ("ERROR", "error"),
                ],
            )?;
        }
        failed_moves(&v)
    }

    /// Waits until each started move's volume names its new device (its state then `moved`).
    fn wait_moves(&self, v: &mut Value) -> Result<()> {
        let Some(moves) = v["moves"].as_array_mut() else {
            return Ok(());
        };
        let total = moves.iter().filter(|m| m["state"] == "started").count() as u64;
        if total == 0 {
            return Ok(());
        }
        let bar = self.progress(total, "{msg} [{bar:40}] {pos}/{len} moves done");
        bar.set_message("moving copies".to_string());
        let (mut done, mut since) = (0, std::time::Instant::now());
        loop {
            let mut now = 0;
            for m in moves.iter_mut().filter(|m| m["state"] != "failed") {
                if m["state"] == "started" {
                    let id = m["volume"].as_str().unwrap_or_default();
                    let vol = self.req("GET", &format!("/v1/volumes/{}", enc(id)), None)?;
                    let on_new = vol["copies"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|d| d == &m["to"]));
                    if on_new {
                        m["state"] = "moved".into();
                    }
                }
                now += u64::from(m["state"] == "moved");
            }
            bar.set_position(now);
            if now == total {
                break;
            }
            if now != done {
                (done, since) = (now, std::time::Instant::now());
            } else if since.elapsed() > STALL {
                bar.finish_and_clear();
                bail!(
                    "busy: no move finished for {} s ({} of {total} done); they go on in the \
                     daemon (`strata events --kind volume`)",
                    STALL.as_secs(),
                    now
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        bar.finish_and_clear();
        Ok(())
    }
}

/// An error when a move of the round failed (the command then exits non-zero).
fn failed_moves(v: &Value) -> Result<()> {
    let failed = v["moves"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|x| x["state"] == "failed").count());
    if failed > 0 {
        bail!("{failed} move(s) failed; their volumes stay where they were");
    }
    Ok(())
}
