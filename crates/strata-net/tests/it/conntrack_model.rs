//! Model test: the TCP tracker against a reference written separately, over random segment
//! sequences from both sides of one connection.
//!
//! The reference keeps sequence numbers as absolute `i64` offsets from each side's ISN (the
//! tracker sees them as `u32` modulo 2^32, with ISNs near the wrap), states as a handful of
//! facts (which SYNs were seen, who answered, FINs sent and acknowledged, a RST) from which the
//! state is derived, and the window rules as plain inequalities. Segments are mostly sane
//! (sequence at the sender's end, ack at the peer's end, data within the window the peer
//! allowed) with some far out of the window, some with a bad ack and some with impossible flags,
//! so every state and every rejection is reached. Every segment goes through the byte builder
//! and the parser first.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use proptest::prelude::*;
use strata_net::conntrack::{ConnProto, Conntrack, CtMark, CtState, Dir, InvalidReason, TcpState};
use strata_net::l4::tcp_flags::{ACK, FIN, RST, SYN};

use crate::ct_util::{ip, parse, tcp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syn,
    SynAck,
    Ack,
    Fin,
    Rst,
    BadFlags,
}

#[derive(Debug, Clone)]
struct Op {
    side: usize,
    kind: Kind,
    len: i64,
    seq_off: i64,
    ack_off: i64,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..2usize,
        prop_oneof![
            2 => Just(Kind::Syn),
            2 => Just(Kind::SynAck),
            8 => Just(Kind::Ack),
            3 => Just(Kind::Fin),
            1 => Just(Kind::Rst),
            1 => Just(Kind::BadFlags),
        ],
        0..3000i64,
        // Sequence: at the sender's end, far ahead, far behind, or a retransmission of old data.
        prop_oneof![
            12 => Just(0i64),
            1 => Just(1i64 << 30),
            1 => Just(-(1i64 << 30)),
            2 => (1..100_000i64).prop_map(|k| -k),
        ],
        // Ack: the peer's end, beyond anything sent, or an old ack.
        prop_oneof![12 => Just(0i64), 1 => Just(1i64 << 30), 2 => (1..100_000i64).prop_map(|k| -k)],
    )
        .prop_map(|(side, kind, len, seq_off, ack_off)| Op {
            side,
            kind,
            len,
            seq_off,
            ack_off,
        })
}

#[derive(Debug, Clone, Copy, Default)]
struct Side {
    isn: i64,
    end: i64,
    maxend: i64,
    maxwin: i64,
    scale: u32,
    fin_end: Option<i64>,
    fin_acked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exp {
    /// A verdict for a connection that exists (or `New` without an entry).
    State(CtState),
    Invalid(InvalidReason),
    /// A SYN that opens (no connection, or a finished one): New, then committed.
    Opens,
}

#[derive(Debug, Clone)]
struct Reference {
    exists: bool,
    orig: usize,
    s: [Side; 2],
    synack_by: Option<usize>,
    simultaneous: bool,
    established: bool,
    rst: bool,
    replied: bool,
    win: [i64; 2],
    ws: [Option<u8>; 2],
}

impl Reference {
    fn state(&self) -> TcpState {
        let [a, b] = self.s;
        if self.rst {
            return TcpState::Close;
        }
        match (a.fin_end.is_some(), b.fin_end.is_some()) {
            (true, true) if a.fin_acked && b.fin_acked => return TcpState::TimeWait,
            (true, true) => return TcpState::LastAck,
            (true, false) => {
                return if a.fin_acked {
                    TcpState::CloseWait
                } else {
                    TcpState::FinWait
                }
            }
            (false, true) => {
                return if b.fin_acked {
                    TcpState::CloseWait
                } else {
                    TcpState::FinWait
                }
            }
            _ => {}
        }
        if self.established {
            TcpState::Established
        } else if self.synack_by.is_some() {
            TcpState::SynRecv
        } else if self.s[1 - self.orig].maxwin > 0 {
            TcpState::SynSent2
        } else {
            TcpState::SynSent
        }
    }

    fn init_side(&self, d: usize, seq: i64) -> Side {
        Side {
            isn: seq,
            end: seq + 1,
            maxend: seq + 1,
            maxwin: self.win[d].max(1),
            ..Side::default()
        }
    }

    fn open(&mut self, d: usize, seq: i64) {
        self.exists = true;
        self.orig = d;
        self.s = [Side::default(); 2];
        self.s[d] = self.init_side(d, seq);
        self.synack_by = None;
        self.simultaneous = false;
        self.established = false;
        self.rst = false;
        self.replied = false;
    }

    /// What the tracker must answer for a segment, and the reference's new facts.
    fn expect(&mut self, d: usize, kind: Kind, seq: i64, ack: i64, len: i64) -> Exp {
        if !self.exists {
            return match kind {
                Kind::Syn => Exp::Opens,
                Kind::BadFlags => Exp::Invalid(InvalidReason::TcpFlags),
                _ => Exp::Invalid(InvalidReason::NoConnection),
            };
        }
        if kind == Kind::BadFlags {
            return Exp::Invalid(InvalidReason::TcpFlags);
        }
        let st = self.state();
        use TcpState::*;
        let from_orig = d == self.orig;
        let legal = match kind {
            Kind::Syn if matches!(st, TimeWait | Close) => return Exp::Opens,
            Kind::Syn => {
                matches!(st, SynSent | SynSent2) || (st == SynRecv && self.synack_by != Some(d))
            }
            Kind::SynAck => match st {
                SynSent => !from_orig,
                SynSent2 => true,
                SynRecv => self.synack_by == Some(d) || self.simultaneous,
                Established => self.synack_by == Some(d),
                _ => false,
            },
            Kind::Ack | Kind::Fin => !matches!(st, SynSent | SynSent2 | Close),
            Kind::Rst => true,
            Kind::BadFlags => unreachable!(),
        };
        if !legal {
            return Exp::Invalid(InvalidReason::TcpState);
        }
        let mut n = self.clone();
        let p = 1 - d;
        let syn = matches!(kind, Kind::Syn | Kind::SynAck);
        let seg_end = seq + len + syn as i64 + (kind == Kind::Fin) as i64;
        let win = if syn {
            n.win[d]
        } else {
            n.win[d] << n.s[d].scale
        };
        let has_ack = kind != Kind::Syn;
        if n.s[d].maxwin == 0 {
            if kind == Kind::Rst {
                if ack != n.s[p].end {
                    return Exp::Invalid(InvalidReason::TcpWindow);
                }
            } else {
                n.s[d] = n.init_side(d, seq);
                if let (Some(a), Some(b)) = (n.ws[0], n.ws[1]) {
                    n.s[0].scale = a as u32;
                    n.s[1].scale = b as u32;
                }
                if kind == Kind::SynAck {
                    if ack != n.s[p].end {
                        return Exp::Invalid(InvalidReason::TcpWindow);
                    }
                    n.s[p].maxend = n.s[p].maxend.max(ack + n.win[d]);
                    n.synack_by = Some(d);
                } else {
                    n.simultaneous = true;
                }
            }
        } else if kind == Kind::Syn && st == SynSent {
            n.s[d] = n.init_side(d, seq);
        } else {
            let (sd, sp) = (n.s[d], n.s[p]);
            let ack_v = if has_ack { ack } else { sp.end };
            let ok = seq <= sd.maxend
                && seg_end >= sd.end - sp.maxwin
                && (sp.maxwin == 0 || (ack_v <= sp.end && ack_v >= sp.end - sd.maxwin.max(66_000)));
            if !ok {
                return Exp::Invalid(InvalidReason::TcpWindow);
            }
            if kind == Kind::SynAck && st == SynSent2 {
                n.synack_by = Some(d);
            }
            n.s[d].maxwin = sd.maxwin.max(win);
            n.s[d].end = sd.end.max(seg_end);
            if has_ack && sp.maxwin > 0 {
                n.s[p].maxend = sp.maxend.max(ack + win);
            }
        }
        if kind == Kind::Fin && n.s[d].fin_end.is_none() {
            n.s[d].fin_end = Some(seg_end);
        }
        if has_ack && kind != Kind::Rst {
            if let Some(fe) = n.s[p].fin_end {
                if ack >= fe {
                    n.s[p].fin_acked = true;
                }
            }
        }
        if kind == Kind::Rst {
            n.rst = true;
        }
        if st == SynRecv && self.synack_by != Some(d) && matches!(kind, Kind::Ack | Kind::SynAck) {
            n.established = true;
        }
        if !from_orig {
            n.replied = true;
        }
        *self = n;
        Exp::State(if self.replied {
            CtState::Established
        } else {
            CtState::New
        })
    }
}

fn wire(isn: u32, abs: i64) -> u32 {
    (isn as i64 + abs).rem_euclid(1 << 32) as u32
}

fn run(
    isn: [u32; 2],
    win: [i64; 2],
    ws: [Option<u8>; 2],
    ops: &[Op],
) -> Result<Vec<TcpState>, TestCaseError> {
    let addr = [
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    ];
    let port = [1111u16, 2222];
    let mut ct = Conntrack::default();
    let mut m = Reference {
        exists: false,
        orig: 0,
        s: [Side::default(); 2],
        synack_by: None,
        simultaneous: false,
        established: false,
        rst: false,
        replied: false,
        win,
        ws,
    };
    let mut seen = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        let (d, p) = (o.side, 1 - o.side);
        let syn = matches!(o.kind, Kind::Syn | Kind::SynAck);
        let base = if syn { m.s[d].isn } else { m.s[d].end };
        let seq = base + o.seq_off;
        let room = if m.s[d].maxwin > 0 && m.s[p].maxwin > 0 {
            (m.s[d].maxend - m.s[d].end).max(0)
        } else {
            0
        };
        let len = if o.kind == Kind::Ack {
            o.len.min(room)
        } else {
            0
        };
        let ack = if o.kind == Kind::Syn {
            0
        } else {
            m.s[p].end + o.ack_off
        };
        let flags = match o.kind {
            Kind::Syn => SYN,
            Kind::SynAck => SYN | ACK,
            Kind::Ack => ACK,
            Kind::Fin => FIN | ACK,
            Kind::Rst => RST | ACK,
            Kind::BadFlags if i % 2 == 0 => SYN | FIN,
            Kind::BadFlags => 0,
        };
        let opts: Vec<u8> = match (syn, ws[d]) {
            (true, Some(s)) => vec![1, 3, 3, s],
            _ => vec![],
        };
        let l4 = tcp(
            port[d],
            port[p],
            wire(isn[d], seq),
            wire(isn[p], ack),
            flags,
            win[d] as u16,
            &opts,
            len as usize,
        );
        let pkt = parse(&ip(addr[d], addr[p], 6, &l4));
        let now = Duration::from_millis(1000 + i as u64);
        let exp = m.expect(d, o.kind, seq, ack, len);
        let v = ct.process(now, 0, &pkt);
        match exp {
            Exp::Opens => {
                prop_assert_eq!(
                    (v.state, v.entry),
                    (CtState::New, None),
                    "step {}: {:?}",
                    i,
                    o
                );
                ct.commit(now, 0, &pkt, CtMark::default()).unwrap();
                m.open(d, seq);
            }
            Exp::Invalid(r) => {
                prop_assert_eq!(
                    (v.state, v.reason),
                    (CtState::Invalid, Some(r)),
                    "step {}: {:?} in {:?}",
                    i,
                    o,
                    m.state()
                );
            }
            Exp::State(s) => {
                let dir = if d == m.orig {
                    Dir::Original
                } else {
                    Dir::Reply
                };
                prop_assert_eq!(
                    (v.state, v.dir, v.reason),
                    (s, dir, None),
                    "step {}: {:?}",
                    i,
                    o
                );
            }
        }
        if m.exists {
            let info = ct.entries().next().expect("one connection");
            prop_assert_eq!(info.proto, ConnProto::Tcp(m.state()), "step {}: {:?}", i, o);
            prop_assert_eq!(info.orig.src, addr[m.orig]);
            seen.push(m.state());
        }
        prop_assert!(ct.len() <= 1);
        ct.check().map_err(TestCaseError::fail)?;
    }
    Ok(seen)
}

fn params() -> impl Strategy<Value = ([u32; 2], [i64; 2], [Option<u8>; 2])> {
    (
        prop_oneof![Just(u32::MAX - 3000), Just(0u32), any::<u32>()],
        any::<u32>(),
        (1000..=65535i64, 1000..=65535i64),
        (prop::option::of(0..=7u8), prop::option::of(0..=7u8)),
    )
        .prop_map(|(a, b, (wa, wb), (sa, sb))| ([a, b], [wa, wb], [sa, sb]))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn tcp_tracker_matches_the_reference((isn, win, ws) in params(), ops in prop::collection::vec(op(), 1..60)) {
        run(isn, win, ws, &ops)?;
    }

    /// Openings are likely: start every case with a SYN and a SYN-ACK so that most steps run
    /// in ESTABLISHED and the closing states.
    #[test]
    fn tcp_tracker_matches_the_reference_after_a_handshake((isn, win, ws) in params(), ops in prop::collection::vec(op(), 1..60)) {
        let mut all = vec![
            Op { side: 0, kind: Kind::Syn, len: 0, seq_off: 0, ack_off: 0 },
            Op { side: 1, kind: Kind::SynAck, len: 0, seq_off: 0, ack_off: 0 },
            Op { side: 0, kind: Kind::Ack, len: 0, seq_off: 0, ack_off: 0 },
        ];
        all.extend(ops);
        run(isn, win, ws, &all)?;
    }
}

/// The generator reaches every state (so the model test is not vacuous).
#[test]
fn the_model_generator_reaches_every_state() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..500 {
        let (isn, win, ws) = params().new_tree(&mut runner).unwrap().current();
        let mut ops = vec![Op {
            side: 0,
            kind: Kind::Syn,
            len: 0,
            seq_off: 0,
            ack_off: 0,
        }];
        ops.extend(
            prop::collection::vec(op(), 1..60)
                .new_tree(&mut runner)
                .unwrap()
                .current(),
        );
        seen.extend(run(isn, win, ws, &ops).unwrap());
    }
    use TcpState::*;
    for s in [
        SynSent,
        SynSent2,
        SynRecv,
        Established,
        FinWait,
        CloseWait,
        LastAck,
        TimeWait,
        Close,
    ] {
        assert!(seen.contains(&s), "{s:?} never reached");
    }
}
