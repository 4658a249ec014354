//! The TCP state machine with window tracking.
//!
//! States (of the connection as a middlebox sees it, not of either endpoint):
//!
//! ```text
//!            SYN (orig)                SYN-ACK (reply, acks the SYN)       ACK (orig)
//!  (none) ─────────────► SYN_SENT ───────────────────────────► SYN_RECV ───────────► ESTABLISHED
//!                           │ SYN (reply): simultaneous open          ▲ FIN: closing     │ FIN
//!                           ▼                                         │                  ▼
//!                        SYN_SENT2 ── SYN-ACK (either side) ──────────┘              FIN_WAIT
//!                                                   FIN acked ─► CLOSE_WAIT ─ FIN (other side) ─► LAST_ACK
//!    FIN_WAIT ─ FIN (other side) ─► LAST_ACK ─ both FINs acked ─► TIME_WAIT ─ SYN ─► reopened
//!    any state ─ RST (in window) ─► CLOSE ─ SYN ─► reopened
//! ```
//!
//! [`step`] is the explicit transition table: every (state, segment class, side) either names
//! the next state or rejects. The closing states are derived from two facts per direction (FIN
//! sent, FIN acknowledged): one FIN unacked is FIN_WAIT, one FIN acked is CLOSE_WAIT, two FINs
//! not both acked is LAST_ACK, both acked is TIME_WAIT.
//!
//! Window tracking (the scheme of Guido van Rooij's "Real Stateful TCP Packet Filtering in IP
//! Filter", which Linux and OVS also use). Per direction the tracker keeps `end` (highest
//! sequence number sent, plus one), `maxend` (highest sequence number the peer allowed: its
//! ack plus its window), `maxwin` (largest window it advertised) and its window scale. A
//! segment with sequence `seq`, end `end`, ack `ack` and window `win` from sender S to
//! receiver R is in the window iff
//!
//! 1. `seq <= S.maxend` (not beyond what R allowed),
//! 2. `end >= S.end - R.maxwin` (not older than a window behind what S already sent),
//! 3. `ack <= R.end` (acks nothing R has not sent),
//! 4. `ack >= R.end - max(S.maxwin, 66000)` (not older than a window behind).
//!
//! A segment without ACK is taken to ack `R.end`. All comparisons are modulo 2^32. Windows are
//! scaled by the sender's factor except on SYN segments, and scaling is on only if both SYNs
//! carried the option (RFC 7323). A SYN-ACK must ack exactly the SYN. A segment out of the window
//! or with flags the state does not allow is rejected and changes nothing.
//!
//! Invariant: [`TcpConn::update`] changes `self` only when it returns [`Outcome::Accept`].

use crate::conntrack::types::{Dir, InvalidReason};
use crate::l4::{tcp_flags as F, TcpSeg};

/// The connection's TCP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// The original side sent a SYN.
    SynSent,
    /// Both sides sent a SYN (simultaneous open).
    SynSent2,
    /// A SYN-ACK answered.
    SynRecv,
    /// The handshake completed.
    Established,
    /// One side sent a FIN, not yet acknowledged.
    FinWait,
    /// One side's FIN was acknowledged; the other side is still open.
    CloseWait,
    /// Both sides sent a FIN; not both are acknowledged.
    LastAck,
    /// Both FINs acknowledged.
    TimeWait,
    /// A reset was seen.
    Close,
}

impl TcpState {
    /// Stable lower-case name (as Linux's conntrack prints it).
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "syn_sent",
            TcpState::SynSent2 => "syn_sent2",
            TcpState::SynRecv => "syn_recv",
            TcpState::Established => "established",
            TcpState::FinWait => "fin_wait",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
        }
    }
}

/// What a segment is, for the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegClass {
    /// SYN without ACK.
    Syn,
    /// SYN with ACK.
    SynAck,
    /// FIN with ACK.
    Fin,
    /// ACK only (with or without data).
    Ack,
    /// RST (with or without ACK).
    Rst,
}

/// Classifies the flags; `None` for a combination that is never valid (SYN+FIN, SYN+RST, a FIN
/// or data without ACK, no flags at all). PSH, URG, ECE and CWR do not matter.
pub fn classify(flags: u8) -> Option<SegClass> {
    const SFRA: u8 = F::SYN | F::FIN | F::RST | F::ACK;
    match flags & SFRA {
        F::SYN => Some(SegClass::Syn),
        x if x == F::SYN | F::ACK => Some(SegClass::SynAck),
        x if x == F::FIN | F::ACK => Some(SegClass::Fin),
        F::ACK => Some(SegClass::Ack),
        F::RST => Some(SegClass::Rst),
        x if x == F::RST | F::ACK => Some(SegClass::Rst),
        _ => None,
    }
}

/// One cell of the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Not allowed in this state.
    Bad,
    /// Allowed; state unchanged.
    Same,
    /// Allowed; go to this state.
    Go(TcpState),
    /// Allowed; the next state is the closing state derived from the FIN facts.
    Closing,
    /// A SYN on a finished connection: the tuple is reused by a new connection.
    Reopen,
}

/// The transition table. `from_answerer` is true when the segment comes from the side that sent
/// the SYN-ACK (in SYN_RECV and later); `simultaneous` when both sides sent a SYN.
fn step(state: TcpState, c: SegClass, dir: Dir, from_answerer: bool, simultaneous: bool) -> Step {
    use SegClass::*;
    use TcpState::*;
    match (state, c) {
        (SynSent, Syn) if dir == Dir::Original => Step::Same,
        (SynSent, Syn) => Step::Go(SynSent2),
        (SynSent, SynAck) if dir == Dir::Reply => Step::Go(SynRecv),
        (SynSent2, Syn) => Step::Same,
        (SynSent2, SynAck) => Step::Go(SynRecv),
        (SynSent | SynSent2, Rst) => Step::Go(Close),
        (SynSent | SynSent2, _) => Step::Bad,

        (SynRecv, Syn) if !from_answerer => Step::Same,
        (SynRecv, SynAck) if from_answerer => Step::Same,
        (SynRecv, SynAck) if simultaneous => Step::Go(Established),
        (SynRecv, Ack) if !from_answerer => Step::Go(Established),
        (SynRecv, Ack) => Step::Same,
        (SynRecv, Fin) => Step::Closing,
        (SynRecv, Rst) => Step::Go(Close),
        (SynRecv, _) => Step::Bad,

        (Established, SynAck) if from_answerer => Step::Same,
        (Established, Ack) => Step::Same,
        (Established, Fin) => Step::Closing,

        (FinWait | CloseWait | LastAck, Ack | Fin) => Step::Closing,
        (TimeWait, Ack | Fin) => Step::Closing,
        (TimeWait | Close, Syn) => Step::Reopen,
        (Close, Rst) => Step::Same,
        (Close, _) => Step::Bad,
        (_, Rst) => Step::Go(Close),
        (_, Syn | SynAck) => Step::Bad,
    }
}

#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// What the tracker knows of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpSide {
    /// Highest sequence number sent plus one (SYN and FIN count one).
    pub end: u32,
    /// Highest sequence number the peer allowed (its ack plus its window).
    pub maxend: u32,
    /// Largest window advertised (scaled); 0 before this side sent anything.
    pub maxwin: u32,
    /// Window scale shift in use.
    pub scale: u8,
    /// Window scale option from this side's SYN.
    wscale_opt: Option<u8>,
    /// End sequence (including the FIN) of this side's FIN.
    fin_end: Option<u32>,
    /// This side's FIN was acknowledged.
    fin_acked: bool,
}

impl TcpSide {
    fn init_from_syn(seg: &TcpSeg) -> TcpSide {
        let end = seg_end(seg);
        TcpSide {
            end,
            maxend: end,
            maxwin: (seg.win as u32).max(1),
            scale: 0,
            wscale_opt: seg.wscale,
            fin_end: None,
            fin_acked: false,
        }
    }
}

fn seg_end(seg: &TcpSeg) -> u32 {
    seg.seq
        .wrapping_add(seg.payload_len)
        .wrapping_add(seg.has(F::SYN) as u32)
        .wrapping_add(seg.has(F::FIN) as u32)
}

/// The outcome of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; the connection moved (or stayed).
    Accept,
    /// A SYN reuses a finished connection's tuple: drop the old entry, treat as new.
    Reopen,
    /// Rejected; nothing changed.
    Reject(InvalidReason),
}

/// A tracked TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConn {
    /// Current state.
    pub state: TcpState,
    /// Per direction (index [`Dir::idx`]).
    pub sides: [TcpSide; 2],
    /// The side that sent the (first accepted) SYN-ACK.
    answerer: Dir,
    /// Both sides sent a SYN.
    simultaneous: bool,
    /// Per direction: segments were carried without the tracker since this side last sent
    /// one through it ([`TcpConn::resync`]), so its window data are stale.
    unsynced: [bool; 2],
}

impl TcpConn {
    /// A connection opened by `seg`, which must be a SYN without ACK.
    pub fn open(seg: &TcpSeg) -> Result<TcpConn, InvalidReason> {
        match classify(seg.flags) {
            Some(SegClass::Syn) => Ok(TcpConn {
                state: TcpState::SynSent,
                sides: [TcpSide::init_from_syn(seg), TcpSide::default()],
                answerer: Dir::Reply,
                simultaneous: false,
                unsynced: [false; 2],
            }),
            Some(_) => Err(InvalidReason::NoConnection),
            None => Err(InvalidReason::TcpFlags),
        }
    }

    /// Segments of this connection went by without the tracker (a port layer forwarded them:
    /// docs/net-engine.md, "Conntrack-established flows"): the sequence numbers moved on
    /// unseen. Until each side has sent one segment through [`TcpConn::update`] again, the
    /// window check is skipped and each side's data are taken afresh from its next segment
    /// (its end, and the peer's limit from its ack and window), as Linux's
    /// `nf_conntrack_tcp_be_liberal` does for every segment. The state machine still applies.
    pub fn resync(&mut self) {
        if self.sides[0].maxwin != 0 && self.sides[1].maxwin != 0 {
            self.unsynced = [true; 2];
        }
    }

    /// True if `seg` can open a connection (a SYN without ACK).
    pub fn can_open(seg: &TcpSeg) -> bool {
        classify(seg.flags) == Some(SegClass::Syn)
    }

    /// Runs one segment from `dir` through the table and the window check.
    pub fn update(&mut self, dir: Dir, seg: &TcpSeg) -> Outcome {
        let Some(class) = classify(seg.flags) else {
            return Outcome::Reject(InvalidReason::TcpFlags);
        };
        let next = match step(
            self.state,
            class,
            dir,
            dir == self.answerer,
            self.simultaneous,
        ) {
            Step::Bad => return Outcome::Reject(InvalidReason::TcpState),
            Step::Reopen => return Outcome::Reopen,
            s => s,
        };
        let mut c = *self;
        let (d, r) = (dir.idx(), dir.flip().idx());
        let ack_flag = seg.has(F::ACK);
        if c.sides[d].maxwin == 0 {
            // The answering side's first segment (SYN or SYN-ACK, or a RST to our SYN).
            if class == SegClass::Rst {
                if !(ack_flag && seg.ack == c.sides[r].end) {
                    return Outcome::Reject(InvalidReason::TcpWindow);
                }
            } else {
                c.sides[d] = TcpSide::init_from_syn(seg);
                let (a, b) = (c.sides[0].wscale_opt, c.sides[1].wscale_opt);
                if let (Some(a), Some(b)) = (a, b) {
                    c.sides[0].scale = a;
                    c.sides[1].scale = b;
                }
                if class == SegClass::SynAck {
                    if seg.ack != c.sides[r].end {
                        return Outcome::Reject(InvalidReason::TcpWindow);
                    }
                    let lim = seg.ack.wrapping_add(seg.win as u32);
                    if after(lim, c.sides[r].maxend) {
                        c.sides[r].maxend = lim;
                    }
                    c.answerer = dir;
                } else {
                    c.simultaneous = true;
                }
            }
        } else if class == SegClass::Syn && self.state == TcpState::SynSent {
            // A retransmitted (or re-initialised) SYN from the opener: take its values.
            c.sides[d] = TcpSide::init_from_syn(seg);
        } else if c.unsynced[0] || c.unsynced[1] {
            c.relearn(dir, seg);
        } else {
            if !c.in_window(dir, seg) {
                return Outcome::Reject(InvalidReason::TcpWindow);
            }
            if class == SegClass::SynAck && self.state == TcpState::SynSent2 {
                c.answerer = dir;
            }
            c.advance(dir, seg);
        }
        if class == SegClass::Fin && c.sides[d].fin_end.is_none() {
            c.sides[d].fin_end = Some(seg_end(seg));
        }
        if ack_flag && class != SegClass::Rst {
            let peer = &mut c.sides[r];
            if let Some(fe) = peer.fin_end {
                if !before(seg.ack, fe) {
                    peer.fin_acked = true;
                }
            }
        }
        c.state = match next {
            Step::Go(s) => s,
            Step::Closing => c.closing_state(),
            _ => c.state,
        };
        // A FIN's ACK in a later state keeps the derived closing state current.
        if matches!(
            c.state,
            TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck
        ) {
            c.state = c.closing_state();
        }
        *self = c;
        Outcome::Accept
    }

    fn closing_state(&self) -> TcpState {
        let [o, r] = self.sides;
        match (o.fin_end.is_some(), r.fin_end.is_some()) {
            (false, false) => TcpState::Established,
            (true, true) if o.fin_acked && r.fin_acked => TcpState::TimeWait,
            (true, true) => TcpState::LastAck,
            (true, false) if o.fin_acked => TcpState::CloseWait,
            (false, true) if r.fin_acked => TcpState::CloseWait,
            _ => TcpState::FinWait,
        }
    }

    fn win_of(&self, dir: Dir, seg: &TcpSeg) -> u32 {
        if seg.has(F::SYN) {
            seg.win as u32
        } else {
            (seg.win as u32) << self.sides[dir.idx()].scale
        }
    }

    /// The four window conditions of the module doc.
    fn in_window(&self, dir: Dir, seg: &TcpSeg) -> bool {
        let s = &self.sides[dir.idx()];
        let r = &self.sides[dir.flip().idx()];
        let end = seg_end(seg);
        let ack = if seg.has(F::ACK) { seg.ack } else { r.end };
        let max_ack_win = s.maxwin.max(66_000);
        let seq_ok = !after(seg.seq, s.maxend) && !before(end, s.end.wrapping_sub(r.maxwin));
        // Before the peer sent anything, there is nothing an ack could refer to.
        seq_ok
            && (r.maxwin == 0 || !after(ack, r.end))
            && (r.maxwin == 0 || !before(ack, r.end.wrapping_sub(max_ack_win)))
    }

    /// Takes a segment after [`TcpConn::resync`] without the window check: its sender's end
    /// and largest window, the peer's limit from its ack and window, and (while the peer is
    /// unsynced too) the peer's end from the ack.
    fn relearn(&mut self, dir: Dir, seg: &TcpSeg) {
        let win = self.win_of(dir, seg);
        let (d, r) = (dir.idx(), dir.flip().idx());
        let fresh = self.unsynced[d];
        let s = &mut self.sides[d];
        s.maxwin = s.maxwin.max(win);
        let end = seg_end(seg);
        if fresh || after(end, s.end) {
            s.end = end;
        }
        if seg.has(F::ACK) {
            let lim = seg.ack.wrapping_add(win);
            let peer_fresh = self.unsynced[r];
            let rs = &mut self.sides[r];
            if fresh || after(lim, rs.maxend) {
                rs.maxend = lim;
            }
            if peer_fresh {
                rs.end = seg.ack;
            }
        }
        self.unsynced[d] = false;
    }

    /// Records an accepted in-window segment.
    fn advance(&mut self, dir: Dir, seg: &TcpSeg) {
        let win = self.win_of(dir, seg);
        let end = seg_end(seg);
        let (d, r) = (dir.idx(), dir.flip().idx());
        let s = &mut self.sides[d];
        s.maxwin = s.maxwin.max(win);
        if after(end, s.end) {
            s.end = end;
        }
        if seg.has(F::ACK) && self.sides[r].maxwin != 0 {
            let lim = seg.ack.wrapping_add(win);
            let rs = &mut self.sides[r];
            if after(lim, rs.maxend) {
                rs.maxend = lim;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u8, seq: u32, ack: u32, len: u32) -> TcpSeg {
        TcpSeg {
            seq,
            ack,
            flags,
            win: 1000,
            payload_len: len,
            ..TcpSeg::default()
        }
    }
    const O: Dir = Dir::Original;
    const R: Dir = Dir::Reply;
    const A: u8 = F::ACK;

    /// Opens a connection: client ISN 100, server ISN 5000.
    fn established() -> TcpConn {
        let mut c = TcpConn::open(&seg(F::SYN, 100, 0, 0)).unwrap();
        assert_eq!(c.state, TcpState::SynSent);
        assert_eq!(c.update(R, &seg(F::SYN | A, 5000, 101, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::SynRecv);
        assert_eq!(c.update(O, &seg(A, 101, 5001, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::Established);
        c
    }

    #[test]
    fn three_way_handshake_and_orderly_close() {
        let mut c = established();
        assert_eq!(c.update(O, &seg(A, 101, 5001, 50)), Outcome::Accept);
        assert_eq!(c.update(R, &seg(A, 5001, 151, 0)), Outcome::Accept);
        assert_eq!(c.update(O, &seg(F::FIN | A, 151, 5001, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::FinWait);
        assert_eq!(c.update(R, &seg(A, 5001, 152, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::CloseWait);
        assert_eq!(c.update(R, &seg(A, 5001, 152, 10)), Outcome::Accept);
        assert_eq!(c.state, TcpState::CloseWait);
        assert_eq!(c.update(R, &seg(F::FIN | A, 5011, 152, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::LastAck);
        assert_eq!(c.update(O, &seg(A, 152, 5012, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::TimeWait);
        assert_eq!(c.update(O, &seg(F::SYN, 9000, 0, 0)), Outcome::Reopen);
    }

    #[test]
    fn fin_wait_then_peer_fin_is_last_ack() {
        let mut c = established();
        assert_eq!(c.update(O, &seg(F::FIN | A, 101, 5001, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::FinWait);
        // The peer's FIN also acks ours: one ACK left.
        assert_eq!(c.update(R, &seg(F::FIN | A, 5001, 102, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::LastAck);
        assert_eq!(c.update(O, &seg(A, 102, 5002, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::TimeWait);
    }

    #[test]
    fn rst_closes_from_any_state_and_syn_reopens() {
        let mut c = established();
        assert_eq!(c.update(R, &seg(F::RST, 5001, 0, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::Close);
        assert_eq!(
            c.update(O, &seg(A, 101, 5001, 0)),
            Outcome::Reject(InvalidReason::TcpState)
        );
        assert_eq!(c.update(R, &seg(F::SYN, 1, 0, 0)), Outcome::Reopen);
    }

    #[test]
    fn rst_out_of_window_is_rejected_and_changes_nothing() {
        let mut c = established();
        let before_ = c;
        let r = c.update(R, &seg(F::RST, 5001u32.wrapping_add(1 << 30), 0, 0));
        assert_eq!(r, Outcome::Reject(InvalidReason::TcpWindow));
        assert_eq!(c, before_);
    }

    #[test]
    fn rst_to_syn_must_ack_it() {
        let mut c = TcpConn::open(&seg(F::SYN, 100, 0, 0)).unwrap();
        let r = c.update(R, &seg(F::RST | A, 0, 555, 0));
        assert_eq!(r, Outcome::Reject(InvalidReason::TcpWindow));
        assert_eq!(c.update(R, &seg(F::RST | A, 0, 101, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::Close);
    }

    #[test]
    fn syn_ack_must_ack_the_syn() {
        let mut c = TcpConn::open(&seg(F::SYN, 100, 0, 0)).unwrap();
        let r = c.update(R, &seg(F::SYN | A, 5000, 102, 0));
        assert_eq!(r, Outcome::Reject(InvalidReason::TcpWindow));
        assert_eq!(c.state, TcpState::SynSent);
    }

    #[test]
    fn data_before_handshake_and_bad_flags_are_rejected() {
        let mut c = TcpConn::open(&seg(F::SYN, 100, 0, 0)).unwrap();
        assert_eq!(
            c.update(O, &seg(A, 101, 0, 5)),
            Outcome::Reject(InvalidReason::TcpState)
        );
        assert_eq!(
            c.update(O, &seg(F::SYN | F::FIN, 100, 0, 0)),
            Outcome::Reject(InvalidReason::TcpFlags)
        );
        let mut e = established();
        assert_eq!(
            e.update(O, &seg(0, 101, 0, 5)),
            Outcome::Reject(InvalidReason::TcpFlags)
        );
        assert_eq!(
            e.update(O, &seg(F::SYN, 7, 0, 0)),
            Outcome::Reject(InvalidReason::TcpState)
        );
    }

    #[test]
    fn window_bounds_are_enforced() {
        let mut c = established();
        // The server allowed 101 + 1000: a segment starting at 1101 is fine, at 1102 is not.
        assert_eq!(
            c.update(O, &seg(A, 1102, 5001, 1)),
            Outcome::Reject(InvalidReason::TcpWindow)
        );
        assert_eq!(c.update(O, &seg(A, 1101, 5001, 0)), Outcome::Accept);
        // Acking data the server never sent.
        assert_eq!(
            c.update(O, &seg(A, 101, 5002, 0)),
            Outcome::Reject(InvalidReason::TcpWindow)
        );
        // An old retransmission within a window behind is fine; far behind is not.
        assert_eq!(c.update(O, &seg(A, 101, 5001, 10)), Outcome::Accept);
        assert_eq!(
            c.update(O, &seg(A, 101u32.wrapping_sub(5000), 5001, 10)),
            Outcome::Reject(InvalidReason::TcpWindow)
        );
    }

    #[test]
    fn window_scaling_needs_both_syns() {
        let mut syn = seg(F::SYN, 100, 0, 0);
        syn.wscale = Some(7);
        let mut c = TcpConn::open(&syn).unwrap();
        let mut sa = seg(F::SYN | A, 5000, 101, 0);
        sa.wscale = Some(2);
        assert_eq!(c.update(R, &sa), Outcome::Accept);
        assert_eq!((c.sides[0].scale, c.sides[1].scale), (7, 2));
        assert_eq!(c.update(O, &seg(A, 101, 5001, 0)), Outcome::Accept);
        // The server's window 1000 << 2 = 4000 after its next ACK.
        assert_eq!(c.update(R, &seg(A, 5001, 101, 0)), Outcome::Accept);
        assert_eq!(c.update(O, &seg(A, 4101, 5001, 0)), Outcome::Accept);
        assert_eq!(
            c.update(O, &seg(A, 4102, 5001, 0)),
            Outcome::Reject(InvalidReason::TcpWindow)
        );

        let mut c = TcpConn::open(&syn).unwrap();
        assert_eq!(c.update(R, &seg(F::SYN | A, 5000, 101, 0)), Outcome::Accept);
        assert_eq!((c.sides[0].scale, c.sides[1].scale), (0, 0));
    }

    #[test]
    fn simultaneous_open() {
        let mut c = TcpConn::open(&seg(F::SYN, 100, 0, 0)).unwrap();
        assert_eq!(c.update(R, &seg(F::SYN, 5000, 0, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::SynSent2);
        assert_eq!(c.update(O, &seg(F::SYN | A, 100, 5001, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::SynRecv);
        assert_eq!(c.update(R, &seg(F::SYN | A, 5000, 101, 0)), Outcome::Accept);
        assert_eq!(c.state, TcpState::Established);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut c = TcpConn::open(&seg(F::SYN, u32::MAX - 10, 0, 0)).unwrap();
        assert_eq!(
            c.update(R, &seg(F::SYN | A, u32::MAX, u32::MAX - 9, 0)),
            Outcome::Accept
        );
        assert_eq!(c.update(O, &seg(A, u32::MAX - 9, 0, 100)), Outcome::Accept);
        assert_eq!(c.state, TcpState::Established);
        assert_eq!(c.update(R, &seg(A, 0, 90, 0)), Outcome::Accept);
        assert_eq!(c.sides[0].end, 90);
    }
}
