//! The connection state machine, as an explicit transition table.
//!
//! Every connection moves through these states, and every change of state is asked of
//! [`ConnState::on`], so an illegal one (an option after `NBD_OPT_GO`, a second STARTTLS) is
//! an error that ends the connection instead of a silent corruption of the session:
//! - the pure negotiator ([`crate::negotiate`]) makes every handshake move, from the client
//!   flags to `Transmission` or `Closed`, including the TLS handshake's end (`TlsEstablished`,
//!   or `Violation` / `Refused` reported by the connection);
//! - the connection ([`crate::conn`]) takes the state the negotiator ended in and makes the
//!   rest: `Refused` when no transmission slot is free, then the way out of transmission
//!   (`Disconnect`, `PeerGone`, `Violation`, `Timeout`, `Shutdown` to `Draining`, `Drained` to
//!   `Closed`).
//!
//! The one move not looked up each time is `Request` (`Transmission` to itself), the hot
//! path: the framing loop ([`crate::framing`]) runs only in `Transmission`, which it cannot
//! leave but by returning, so every request it serves is that self-loop. The diagram is in
//! `docs/nbd.md`.

use thiserror::Error;

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Greeting sent; waiting for the client's 32-bit flags.
    AwaitClientFlags,
    /// Option haggling in plain text.
    Options,
    /// `NBD_OPT_STARTTLS` was acknowledged: the TLS handshake runs on the socket. No NBD byte
    /// is read or written until it ends; a failed handshake closes the connection (the ACK is
    /// sent, so there is no way back to plain text).
    TlsHandshake,
    /// Option haggling inside TLS. Only here does a client have an identity (its
    /// certificate's), and a second `NBD_OPT_STARTTLS` is answered `NBD_REP_ERR_INVALID`.
    TlsOptions,
    /// Transmission: requests and replies.
    Transmission,
    /// `NBD_CMD_DISC` received or the server is shutting down: requests in flight finish, new
    /// ones are not read.
    Draining,
    /// Done; the socket is closed.
    Closed,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// Valid client flags arrived.
    ClientFlags,
    /// An option was answered and haggling continues (including errors such as
    /// `NBD_REP_ERR_UNSUP`).
    OptionAnswered,
    /// `NBD_OPT_STARTTLS` was answered `NBD_REP_ACK`.
    StartTls,
    /// The TLS handshake completed (the client's certificate, if any, is verified).
    TlsEstablished,
    /// `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME` succeeded.
    EnterTransmission,
    /// `NBD_OPT_ABORT`.
    Abort,
    /// A transmission request was accepted.
    Request,
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// The server is shutting down.
    Shutdown,
    /// All requests in flight have been answered.
    Drained,
    /// The peer broke the protocol (bad magic, unknown client flags, oversized payload, ...).
    Violation,
    /// The peer closed the connection or an I/O error happened.
    PeerGone,
    /// A deadline passed: the handshake's, the idle timeout, or replies left unread for the
    /// write timeout.
    Timeout,
    /// The server refused the client: its certificate (the admission hook), or no
    /// transmission slot was free when it asked for an export.
    Refused,
}

/// A move the table does not allow.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("illegal transition: {event:?} in state {state:?}")]
pub struct IllegalTransition {
    /// State it happened in.
    pub state: ConnState,
    /// The event.
    pub event: Event,
}

use ConnState::*;
use Event::*;

/// The whole machine: (from, event, to). Anything absent is illegal.
pub const TRANSITIONS: &[(ConnState, Event, ConnState)] = &[
    (AwaitClientFlags, ClientFlags, Options),
    (AwaitClientFlags, Violation, Closed),
    (AwaitClientFlags, PeerGone, Closed),
    (AwaitClientFlags, Shutdown, Closed),
    (AwaitClientFlags, Timeout, Closed),
    (Options, OptionAnswered, Options),
    (Options, EnterTransmission, Transmission),
    (Options, Abort, Closed),
    (Options, Violation, Closed),
    (Options, PeerGone, Closed),
    (Options, Shutdown, Closed),
    (Options, Timeout, Closed),
    (Options, StartTls, TlsHandshake),
    (TlsHandshake, TlsEstablished, TlsOptions),
    (TlsHandshake, Violation, Closed),
    (TlsHandshake, PeerGone, Closed),
    (TlsHandshake, Shutdown, Closed),
    (TlsHandshake, Timeout, Closed),
    (TlsHandshake, Refused, Closed),
    (TlsOptions, OptionAnswered, TlsOptions),
    (TlsOptions, EnterTransmission, Transmission),
    (TlsOptions, Abort, Closed),
    (TlsOptions, Violation, Closed),
    (TlsOptions, PeerGone, Closed),
    (TlsOptions, Shutdown, Closed),
    (TlsOptions, Timeout, Closed),
    (Transmission, Request, Transmission),
    (Transmission, Disconnect, Draining),
    (Transmission, Shutdown, Draining),
    (Transmission, Violation, Draining),
    (Transmission, PeerGone, Draining),
    (Transmission, Timeout, Draining),
    (Transmission, Refused, Closed),
    (Draining, Drained, Closed),
    (Draining, PeerGone, Closed),
    (Draining, Shutdown, Draining),
];

impl ConnState {
    /// The state after `event`, or an error if the table does not allow it.
    pub fn on(self, event: Event) -> Result<ConnState, IllegalTransition> {
        TRANSITIONS
            .iter()
            .find(|(from, ev, _)| *from == self && *ev == event)
            .map(|&(_, _, to)| to)
            .ok_or(IllegalTransition { state: self, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path() {
        let s = AwaitClientFlags.on(ClientFlags).unwrap();
        let s = s.on(OptionAnswered).unwrap().on(EnterTransmission).unwrap();
        let s = s.on(Request).unwrap().on(Disconnect).unwrap();
        assert_eq!(s.on(Drained).unwrap(), Closed);
    }

    #[test]
    fn tls_path() {
        let s = Options.on(OptionAnswered).unwrap().on(StartTls).unwrap();
        assert_eq!(s, TlsHandshake);
        // Nothing but the handshake's end (or the connection's) leaves TlsHandshake.
        for ev in [OptionAnswered, EnterTransmission, Abort, StartTls, Request] {
            assert!(s.on(ev).is_err(), "{ev:?} during the TLS handshake");
        }
        let s = s.on(TlsEstablished).unwrap();
        assert_eq!(s, TlsOptions);
        // No second upgrade, and no way back to plain-text haggling.
        assert!(s.on(StartTls).is_err());
        assert!(s.on(TlsEstablished).is_err());
        let s = s.on(OptionAnswered).unwrap().on(EnterTransmission).unwrap();
        assert_eq!(s, Transmission);
        assert!(Transmission.on(StartTls).is_err());
        assert!(AwaitClientFlags.on(StartTls).is_err());
        assert_eq!(TlsHandshake.on(Violation).unwrap(), Closed);
        // A revoked certificate ends the connection before any option inside TLS.
        assert_eq!(TlsHandshake.on(Refused).unwrap(), Closed);
        assert!(TlsOptions.on(Refused).is_err());
    }

    #[test]
    fn deadlines_end_every_phase() {
        for s in [AwaitClientFlags, Options, TlsHandshake, TlsOptions] {
            assert_eq!(s.on(Timeout).unwrap(), Closed, "{s:?}");
        }
        // In transmission what is in flight is answered first.
        assert_eq!(Transmission.on(Timeout).unwrap(), Draining);
        // No slot at GO: nothing was in flight.
        assert_eq!(Transmission.on(Refused).unwrap(), Closed);
        assert!(Draining.on(Timeout).is_err());
    }

    #[test]
    fn illegal_moves_are_rejected() {
        assert!(AwaitClientFlags.on(Request).is_err());
        assert!(Options.on(Request).is_err());
        assert!(Transmission.on(OptionAnswered).is_err());
        assert!(Transmission.on(EnterTransmission).is_err());
        assert!(Draining.on(Request).is_err());
        for ev in [ClientFlags, OptionAnswered, Request, Disconnect, PeerGone] {
            assert!(Closed.on(ev).is_err(), "{ev:?} from Closed");
        }
    }

    #[test]
    fn table_is_deterministic() {
        for (i, a) in TRANSITIONS.iter().enumerate() {
            for b in &TRANSITIONS[i + 1..] {
                assert!(!(a.0 == b.0 && a.1 == b.1), "duplicate {a:?} / {b:?}");
            }
        }
        // Every state but Closed can reach Closed.
        for s in [
            AwaitClientFlags,
            Options,
            TlsHandshake,
            TlsOptions,
            Transmission,
            Draining,
        ] {
            let mut cur = s;
            for _ in 0..3 {
                if cur == Closed {
                    break;
                }
                cur = cur.on(PeerGone).unwrap();
                if cur == Draining {
                    cur = cur.on(Drained).unwrap();
                }
            }
            assert_eq!(cur, Closed, "from {s:?}");
        }
    }
}
