//! Flow syntax of connection tracking, both ways: the `ct_state` match value and the
//! `ct(...)` action arguments, in OVS's spelling.
//!
//! - `ct_state=+trk+est-rpl`: `+flag` must be set, `-flag` must be clear; flags are `new est
//!   rel rpl inv trk snat dnat`. A plain number (`ct_state=0x22` or `0x22/0x3f`) is taken too.
//! - `ct(commit,zone=N,table=T,exec(set_field:V[/M]->ct_mark),nat[(src=|dst=IP[-IP][:P[-P]])])`
//!   and `lb(id=N)` in place of `nat(...)`. Arguments may come in any order; the formatter
//!   prints them as `commit,zone,table,exec,nat|lb`, which the parser reads back to the same
//!   action.
//!
//! Errors are `(token, reason)` pairs that `syntax` turns into its typed errors, so this file
//! imports nothing from `syntax` (no import loop).

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::flow::{CtAction, CtNat, NatRange};
use crate::key::ct_state;

/// A syntax error: the offending text and why.
pub(crate) type CtErr = (String, &'static str);

fn num(s: &str, max: u64) -> Result<u64, CtErr> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse::<u64>(),
    }
    .map_err(|_| (s.to_string(), "not a number"))?;
    if v > max {
        return Err((s.to_string(), "out of range"));
    }
    Ok(v)
}

/// Splits at commas that are not inside parentheses.
pub(crate) fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `ct_state` value: flags (`+trk-inv`) or a number with an optional mask. Returns (value,
/// mask).
pub(crate) fn parse_ct_state(s: &str) -> Result<(u8, u8), CtErr> {
    if !s.starts_with(['+', '-']) {
        let (v, m) = match s.split_once('/') {
            Some((v, m)) => (num(v, 0xff)?, num(m, 0xff)?),
            None => (num(s, 0xff)?, 0xff),
        };
        return Ok((v as u8 & m as u8, m as u8));
    }
    let (mut v, mut m) = (0u8, 0u8);
    let mut rest = s;
    while !rest.is_empty() {
        let set = rest.starts_with('+');
        if !set && !rest.starts_with('-') {
            return Err((s.to_string(), "expected +flag or -flag"));
        }
        let body = &rest[1..];
        let end = body.find(['+', '-']).unwrap_or(body.len());
        let name = &body[..end];
        let bit = ct_state::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, b)| b)
            .ok_or_else(|| (name.to_string(), "unknown ct_state flag"))?;
        if m & bit != 0 {
            return Err((name.to_string(), "flag given twice"));
        }
        m |= bit;
        if set {
            v |= bit;
        }
        rest = &body[end..];
    }
    Ok((v, m))
}

/// `ct_state` in flag form (`+trk+est-rpl`), flags in [`ct_state::NAMES`] order.
pub(crate) fn format_ct_state(v: u8, m: u8) -> String {
    let mut out = String::new();
    for (name, bit) in ct_state::NAMES {
        if m & bit != 0 {
            out.push(if v & bit != 0 { '+' } else { '-' });
            out.push_str(name);
        }
    }
    out
}

fn parse_range(s: &str) -> Result<NatRange, CtErr> {
    let bad = |r| (s.to_string(), r);
    let (ips, ports) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip = |t: &str| {
        t.parse::<Ipv4Addr>()
            .map_err(|_| bad("not an IPv4 address"))
    };
    let (ip_lo, ip_hi) = match ips.split_once('-') {
        Some((a, b)) => (ip(a)?, ip(b)?),
        None => (ip(ips)?, ip(ips)?),
    };
    let (port_lo, port_hi) = match ports {
        None => (0, 0),
        Some(p) => {
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            let (a, b) = (num(a, 0xffff)? as u16, num(b, 0xffff)? as u16);
            if a == 0 {
                return Err(bad("port 0 is not usable"));
            }
            (a, b)
        }
    };
    Ok(NatRange {
        ip_lo,
        ip_hi,
        port_lo,
        port_hi,
    })
}

fn parse_exec(s: &str, ct: &mut CtAction) -> Result<(), CtErr> {
    for a in split_top(s) {
        let a = a.trim();
        let bad = |r| (a.to_string(), r);
        let f = a
            .strip_prefix("set_field:")
            .ok_or_else(|| bad("exec takes set_field:V[/M]->ct_mark"))?;
        let (v, field) = f
            .split_once("->")
            .ok_or_else(|| bad("expected V->ct_mark"))?;
        if field.trim() != "ct_mark" {
            return Err(bad("exec can only set ct_mark"));
        }
        let (v, m) = match v.split_once('/') {
            Some((v, m)) => (num(v, u32::MAX as u64)?, num(m, u32::MAX as u64)?),
            None => (num(v, u32::MAX as u64)?, u32::MAX as u64),
        };
        let (ov, om) = ct.mark.unwrap_or((0, 0));
        let (v, m) = (v as u32, m as u32);
        ct.mark = Some(((ov & !m) | (v & m), om | m));
    }
    Ok(())
}

/// The arguments of `ct(...)` (the text between the parentheses).
pub(crate) fn parse_ct(args: &str) -> Result<CtAction, CtErr> {
    let mut ct = CtAction::default();
    let mut seen: Vec<&str> = Vec::new();
    for a in split_top(args) {
        let a = a.trim();
        if a.is_empty() {
            continue;
        }
        let (name, inner) = match a.split_once('(') {
            Some((n, r)) => (
                n,
                Some(
                    r.strip_suffix(')')
                        .ok_or_else(|| (a.to_string(), "unbalanced parentheses"))?,
                ),
            ),
            None => (a.split_once('=').map_or(a, |(n, _)| n), None),
        };
        let key = if name == "lb" { "nat" } else { name };
        if seen.contains(&key) {
            return Err((a.to_string(), "given twice (or nat with lb)"));
        }
        seen.push(key);
        let val = a.split_once('=').map(|(_, v)| v.trim());
        match (name, inner) {
            ("commit", None) if val.is_none() => ct.commit = true,
            ("zone", None) => {
                ct.zone = num(val.ok_or((a.to_string(), "zone needs a value"))?, 0xffff)? as u16
            }
            ("table", None) => {
                ct.table = Some(num(val.ok_or((a.to_string(), "table needs a value"))?, 254)? as u8)
            }
            ("nat", None) if val.is_none() => ct.nat = Some(CtNat::Existing),
            ("nat", Some(r)) => {
                let (kind, range) = r
                    .split_once('=')
                    .ok_or((a.to_string(), "expected nat(src=...) or nat(dst=...)"))?;
                let range = parse_range(range.trim())?;
                ct.nat = Some(match kind.trim() {
                    "src" => CtNat::Src(range),
                    "dst" => CtNat::Dst(range),
                    _ => return Err((a.to_string(), "expected nat(src=...) or nat(dst=...)")),
                });
            }
            ("lb", Some(r)) => {
                let id = r
                    .trim()
                    .strip_prefix("id=")
                    .ok_or((a.to_string(), "expected lb(id=N)"))?;
                ct.nat = Some(CtNat::Lb(num(id, u32::MAX as u64)? as u32));
            }
            ("exec", Some(r)) => parse_exec(r, &mut ct)?,
            _ => return Err((a.to_string(), "unknown ct argument")),
        }
    }
    Ok(ct)
}

fn fmt_range(out: &mut String, r: &NatRange) {
    let _ = write!(out, "{}", r.ip_lo);
    if r.ip_hi != r.ip_lo {
        let _ = write!(out, "-{}", r.ip_hi);
    }
    if r.port_lo != 0 {
        let _ = write!(out, ":{}", r.port_lo);
        if r.port_hi != r.port_lo {
            let _ = write!(out, "-{}", r.port_hi);
        }
    }
}

/// `ct(...)` as the parser reads it back.
pub(crate) fn format_ct(out: &mut String, ct: &CtAction) {
    let mut args: Vec<String> = Vec::new();
    if ct.commit {
        args.push("commit".into());
    }
    args.push(format!("zone={}", ct.zone));
    if let Some(t) = ct.table {
        args.push(format!("table={t}"));
    }
    if let Some((v, m)) = ct.mark {
        args.push(if m == u32::MAX {
            format!("exec(set_field:{v:#x}->ct_mark)")
        } else {
            format!("exec(set_field:{v:#x}/{m:#x}->ct_mark)")
        });
    }
    match ct.nat {
        None => {}
        Some(CtNat::Existing) => args.push("nat".into()),
        Some(CtNat::Src(r)) | Some(CtNat::Dst(r)) => {
            let mut s = String::from(if matches!(ct.nat, Some(CtNat::Src(_))) {
                "nat(src="
            } else {
                "nat(dst="
            });
            fmt_range(&mut s, &r);
            s.push(')');
            args.push(s);
        }
        Some(CtNat::Lb(id)) => args.push(format!("lb(id={id})")),
    }
    let _ = write!(out, "ct({})", args.join(","));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_state_flags_both_ways() {
        let (v, m) = parse_ct_state("+trk+est-rpl").unwrap();
        assert_eq!(m, ct_state::TRK | ct_state::EST | ct_state::RPL);
        assert_eq!(v, ct_state::TRK | ct_state::EST);
        assert_eq!(format_ct_state(v, m), "+est-rpl+trk");
        assert_eq!(parse_ct_state("-trk").unwrap(), (0, ct_state::TRK));
        assert_eq!(parse_ct_state("0x22/0x3f").unwrap(), (0x22, 0x3f));
        assert!(parse_ct_state("+trk+bogus").is_err());
        assert!(parse_ct_state("+trk-trk").is_err());
        assert!(parse_ct_state("trk").is_err());
    }

    #[test]
    fn ct_arguments_parse_and_print_back() {
        for text in [
            "ct(commit,zone=1,table=2)",
            "ct(zone=7,table=0)",
            "ct(commit,zone=1,exec(set_field:0x5->ct_mark))",
            "ct(commit,zone=1,exec(set_field:0x5/0xff->ct_mark))",
            "ct(commit,zone=3,table=4,nat(src=10.0.0.1-10.0.0.3:1000-2000))",
            "ct(commit,zone=3,table=4,nat(dst=10.0.0.9:80))",
            "ct(commit,zone=3,nat(dst=10.0.0.9))",
            "ct(zone=3,table=4,nat)",
            "ct(commit,zone=3,table=4,lb(id=12))",
        ] {
            let inner = &text[3..text.len() - 1];
            let ct = parse_ct(inner).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            let mut out = String::new();
            format_ct(&mut out, &ct);
            assert_eq!(out, text);
        }
        let ct = parse_ct("table=2,zone=9,commit").unwrap();
        assert_eq!(
            ct,
            CtAction {
                commit: true,
                zone: 9,
                table: Some(2),
                ..Default::default()
            }
        );
        for bad in [
            "zone=70000",
            "table=255",
            "commit,commit",
            "nat,lb(id=1)",
            "nat(src=10.0.0.1:0)",
            "nat(foo=1.2.3.4)",
            "exec(set_field:1->reg0)",
            "frobnicate",
            "nat(src=10.0.0.1",
        ] {
            assert!(parse_ct(bad).is_err(), "{bad}");
        }
    }
}
