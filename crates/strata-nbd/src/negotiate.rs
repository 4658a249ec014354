//! Option haggling without I/O: bytes in, reply bytes out, and the decision to continue,
//! close, start TLS or enter transmission. The connection loop feeds it from a socket (and
//! runs the TLS handshake when told to); the fuzz target feeds it arbitrary bytes.
//!
//! TLS (the spec's "TLS support"): with [`TlsMode::Off`] `NBD_OPT_STARTTLS` is `ERR_UNSUP`
//! (the spec's NOTLS). Otherwise it is `ACK` and [`Step::StartTls`]; the caller runs the
//! handshake and reports it with [`Negotiator::on_tls_established`]. With
//! [`TlsMode::Required`] (FORCEDTLS) every other option before that but `ABORT` is
//! `ERR_TLS_REQD`, and `EXPORT_NAME` (which cannot carry an error) closes the connection; its
//! data is not even parsed. Whatever was negotiated in plain text (structured replies,
//! metadata contexts) is forgotten once TLS starts: a man in the middle could have sent it.
//! Every export lookup passes the client's identity (from its certificate, `None` without
//! TLS) to the catalog's [`crate::Authorizer`].

use thiserror::Error;

use crate::export::{Catalog, Export, MetaContext, MAX_CONTEXTS};
use crate::proto::*;
use crate::state::{ConnState, Event, IllegalTransition};

/// Most options one session may send before we give up on it (a client looping on options is
/// a denial of service; qemu sends fewer than ten).
pub const MAX_OPTIONS: u32 = 1024;

/// Why the handshake ended the connection.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// Malformed framing.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A move the state machine does not allow.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// `NBD_OPT_EXPORT_NAME` named no export (it cannot be answered with an error).
    #[error("export {0:?} not found")]
    UnknownExport(String),
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    /// `NBD_OPT_EXPORT_NAME` before TLS on a server that requires TLS (it cannot be answered
    /// `NBD_REP_ERR_TLS_REQD`).
    #[error("export requested before TLS on a server that requires TLS")]
    TlsRequired,
}

/// Whether and how a connection may use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS (Unix sockets, or no TLS configured): `NBD_OPT_STARTTLS` is `ERR_UNSUP`.
    #[default]
    Off,
    /// TLS at the client's choice (the spec's SELECTIVETLS with no TLS-only export; the
    /// authorizer sees `None` for a plain client).
    Optional,
    /// TLS before anything else (the spec's FORCEDTLS).
    Required,
}

/// What the transmission phase needs from negotiation: the opened export (its I/O shared by
/// every request) and what was agreed for it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The export.
    pub export: Export,
    /// Structured replies negotiated.
    pub structured: bool,
    /// Selected metadata contexts; context id = index + 1.
    pub contexts: Vec<MetaContext>,
    /// Transmission flags sent.
    pub flags: u16,
}

/// The outcome of one option.
#[derive(Debug)]
pub enum Step {
    /// Keep haggling.
    Continue,
    /// Close the connection (after sending what was written to `out`).
    Close,
    /// Send `out` (the `ACK`), then run the TLS handshake on the socket and report it with
    /// [`Negotiator::on_tls_established`]; all later bytes go through TLS.
    StartTls,
    /// Enter transmission.
    Transmission(Box<Session>),
}

/// The negotiation of one connection.
#[derive(Debug)]
pub struct Negotiator {
    state: ConnState,
    flags: ClientFlags,
    structured: bool,
    /// Export name the contexts were selected for, and the contexts.
    meta: Option<(String, Vec<MetaContext>)>,
    options: u32,
    shutting_down: bool,
    tls: TlsMode,
    /// The TLS handshake completed.
    tls_active: bool,
    /// The client's identity, from its TLS certificate.
    identity: Option<String>,
}

impl Default for Negotiator {
    fn default() -> Self {
        Self::new()
    }
}

impl Negotiator {
    /// A negotiation without TLS whose greeting ([`greeting`]) has been sent.
    pub fn new() -> Self {
        Self::with_tls(TlsMode::Off)
    }

    /// A negotiation whose greeting has been sent, with TLS as `tls` says.
    pub fn with_tls(tls: TlsMode) -> Self {
        Negotiator {
            state: ConnState::AwaitClientFlags,
            flags: ClientFlags::default(),
            structured: false,
            meta: None,
            options: 0,
            shutting_down: false,
            tls,
            tls_active: false,
            identity: None,
        }
    }

    /// Whether TLS is running (the handshake completed).
    pub fn in_tls(&self) -> bool {
        self.tls_active
    }

    /// The client's identity (see [`Negotiator::on_tls_established`]).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The TLS handshake that [`Step::StartTls`] asked for completed; `identity` is the
    /// client's, from its verified certificate (`None` if it sent none). Option haggling
    /// starts over inside TLS: what was negotiated in plain text is dropped.
    pub fn on_tls_established(&mut self, identity: Option<String>) -> Result<(), HandshakeError> {
        self.go(Event::TlsEstablished)?;
        self.tls_active = true;
        self.identity = identity;
        self.structured = false;
        self.meta = None;
        Ok(())
    }

    /// The TLS handshake failed: the connection is over.
    pub fn on_tls_failed(&mut self) {
        let _ = self.go(Event::Violation);
    }

    /// The TLS handshake completed but the server's admission hook refused the client
    /// (a revoked certificate): the connection is over.
    pub fn on_tls_refused(&mut self) {
        let _ = self.go(Event::Refused);
    }

    /// The identity the transport vouches for before any TLS (a Unix listener's, see
    /// [`crate::UnixListenerOptions::identity`]); a TLS certificate's replaces it. Every
    /// export lookup, `NBD_OPT_LIST` included, is authorized as it.
    pub fn set_identity(&mut self, identity: Option<String>) {
        self.identity = identity;
    }

    /// The state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// From now on every option but ABORT is answered `NBD_REP_ERR_SHUTDOWN`.
    pub fn set_shutting_down(&mut self) {
        self.shutting_down = true;
    }

    fn go(&mut self, ev: Event) -> Result<(), IllegalTransition> {
        self.state = self.state.on(ev)?;
        Ok(())
    }

    /// Handles the client's 32-bit flags.
    pub fn on_client_flags(&mut self, b: &[u8]) -> Result<(), HandshakeError> {
        match parse_client_flags(b) {
            Ok(f) => {
                self.go(Event::ClientFlags)?;
                self.flags = f;
                Ok(())
            }
            Err(e) => {
                self.go(Event::Violation)?;
                Err(e.into())
            }
        }
    }

    /// Handles one option: `hdr` decoded by [`parse_option_header`], `data` its payload.
    /// Replies are appended to `out`, which the caller sends whatever the result.
    pub fn on_option(
        &mut self,
        hdr: OptionHeader,
        data: &[u8],
        catalog: &Catalog,
        out: &mut Vec<u8>,
    ) -> Result<Step, HandshakeError> {
        if !matches!(self.state, ConnState::Options | ConnState::TlsOptions) {
            return Err(IllegalTransition {
                state: self.state,
                event: Event::OptionAnswered,
            }
            .into());
        }
        self.options += 1;
        if self.options > MAX_OPTIONS {
            self.go(Event::Violation)?;
            return Err(HandshakeError::TooManyOptions);
        }
        let opt = hdr.option;
        if self.tls == TlsMode::Required
            && !self.tls_active
            && !matches!(opt, OPT_STARTTLS | OPT_ABORT)
        {
            // FORCEDTLS: nothing but the upgrade (or goodbye) in plain text; the data is not
            // even parsed.
            if opt == OPT_EXPORT_NAME {
                self.go(Event::Violation)?;
                return Err(HandshakeError::TlsRequired);
            }
            put_option_reply(
                out,
                opt,
                REP_ERR_TLS_REQD,
                b"TLS is required: send NBD_OPT_STARTTLS first",
            );
            self.go(Event::OptionAnswered)?;
            return Ok(Step::Continue);
        }
        let parsed = match parse_option(opt, data) {
            Ok(p) => p,
            Err(e) if opt == OPT_EXPORT_NAME => {
                // EXPORT_NAME cannot be answered with an error: close.
                self.go(Event::Violation)?;
                return Err(HandshakeError::UnknownExport(e.to_string()));
            }
            Err(e) => {
                put_option_reply(out, opt, REP_ERR_INVALID, e.to_string().as_bytes());
                self.go(Event::OptionAnswered)?;
                return Ok(Step::Continue);
            }
        };
        if self.shutting_down && !matches!(parsed, ClientOption::Abort) {
            if let ClientOption::ExportName(_) = parsed {
                self.go(Event::Shutdown)?;
                return Ok(Step::Close);
            }
            put_option_reply(out, opt, REP_ERR_SHUTDOWN, b"server is shutting down");
            self.go(Event::OptionAnswered)?;
            return Ok(Step::Continue);
        }
        let client = self.identity.clone();
        let client = client.as_deref();
        match parsed {
            ClientOption::StartTls if self.tls == TlsMode::Off => {
                put_option_reply(out, opt, REP_ERR_UNSUP, &[]);
                self.go(Event::OptionAnswered)?;
                Ok(Step::Continue)
            }
            ClientOption::StartTls if self.tls_active => {
                put_option_reply(out, opt, REP_ERR_INVALID, b"TLS is already running");
                self.go(Event::OptionAnswered)?;
                Ok(Step::Continue)
            }
            ClientOption::StartTls => {
                put_option_reply(out, opt, REP_ACK, &[]);
                self.go(Event::StartTls)?;
                Ok(Step::StartTls)
            }
            ClientOption::Abort => {
                put_option_reply(out, opt, REP_ACK, &[]);
                self.go(Event::Abort)?;
                Ok(Step::Close)
            }
            ClientOption::ExportName(name) => {
                let Some(export) = catalog.lookup_as(&name, client) else {
                    self.go(Event::Violation)?;
                    return Err(HandshakeError::UnknownExport(name));
                };
                let session = self.session(export);
                put_export_name_reply(
                    out,
                    session.export.size,
                    session.flags,
                    self.flags.no_zeroes,
                );
                self.go(Event::EnterTransmission)?;
                Ok(Step::Transmission(Box::new(session)))
            }
            ClientOption::List => {
                for name in catalog.list_as(client) {
                    put_rep_server(out, opt, &name);
                }
                put_option_reply(out, opt, REP_ACK, &[]);
                self.go(Event::OptionAnswered)?;
                Ok(Step::Continue)
            }
            ClientOption::StructuredReply => {
                self.structured = true;
                put_option_reply(out, opt, REP_ACK, &[]);
                self.go(Event::OptionAnswered)?;
                Ok(Step::Continue)
            }
            ClientOption::Info { go, name, requests } => {
                let Some(export) = catalog.lookup_as(&name, client) else {
                    let msg = format!("export {name:?} not found");
                    put_option_reply(out, opt, REP_ERR_UNKNOWN, msg.as_bytes());
                    self.go(Event::OptionAnswered)?;
                    return Ok(Step::Continue);
                };
                let session = self.session(export);
                put_info_export(out, opt, session.export.size, session.flags);
                let mut sent_name = false;
                let mut sent_desc = false;
                for r in requests {
                    match r {
                        INFO_NAME if !sent_name => {
                            put_info_string(out, opt, INFO_NAME, &session.export.name);
                            sent_name = true;
                        }
                        INFO_DESCRIPTION if !sent_desc => {
                            let d = session.export.description();
                            put_info_string(out, opt, INFO_DESCRIPTION, &d);
                            sent_desc = true;
                        }
                        _ => {}
                    }
                }
                // Always sent: our minimum is 1, so no client is constrained by it.
                put_info_block_size(out, opt, MIN_BLOCK, PREFERRED_BLOCK, MAX_PAYLOAD);
                put_option_reply(out, opt, REP_ACK, &[]);
                if go {
                    self.go(Event::EnterTransmission)?;
                    Ok(Step::Transmission(Box::new(session)))
                } else {
                    self.go(Event::OptionAnswered)?;
                    Ok(Step::Continue)
                }
            }
            ClientOption::MetaContext {
                set,
                export,
                queries,
            } => {
                self.meta_context(opt, set, &export, &queries, catalog, out);
                self.go(Event::OptionAnswered)?;
                Ok(Step::Continue)
            }
            ClientOption::Unsupported(_) => {
                put_option_reply(out, opt, REP_ERR_UNSUP, &[]);
                self.go(Event::OptionAnswered)?;
                Ok(Step::Continue)
            }
        }
    }

    fn session(&self, export: Export) -> Session {
        // Contexts apply only to the export they were selected for.
        let contexts = match &self.meta {
            Some((name, ctxs)) if *name == export.name => ctxs.clone(),
            _ => Vec::new(),
        };
        Session {
            flags: export.flags(self.structured),
            export,
            structured: self.structured,
            contexts,
        }
    }

    fn meta_context(
        &mut self,
        opt: u32,
        set: bool,
        export: &str,
        queries: &[String],
        catalog: &Catalog,
        out: &mut Vec<u8>,
    ) {
        if !self.structured {
            put_option_reply(
                out,
                opt,
                REP_ERR_INVALID,
                b"negotiate structured replies first",
            );
            return;
        }
        if set {
            // A SET replaces the previous selection, even when it fails.
            self.meta = None;
        }
        let Some(e) = catalog.lookup_as(export, self.identity.as_deref()) else {
            let msg = format!("export {export:?} not found");
            put_option_reply(out, opt, REP_ERR_UNKNOWN, msg.as_bytes());
            return;
        };
        let mut found: Vec<MetaContext> = Vec::new();
        if queries.is_empty() {
            if !set {
                found = catalog.all_contexts(&e);
            }
        } else {
            for q in queries {
                for c in catalog.contexts_for(&e, q, !set) {
                    if !found.contains(&c) {
                        found.push(c);
                    }
                }
            }
        }
        if set && found.len() > MAX_CONTEXTS {
            put_option_reply(out, opt, REP_ERR_TOO_BIG, b"too many metadata contexts");
            return;
        }
        for (i, c) in found.iter().enumerate() {
            // LIST replies carry id 0, as the spec asks.
            let id = if set { i as u32 + 1 } else { 0 };
            put_meta_context(out, opt, id, &c.name());
        }
        put_option_reply(out, opt, REP_ACK, &[]);
        if set {
            self.meta = Some((e.name, found));
        }
    }
}

/// Runs a whole client byte stream through the handshake the way a connection does (client
/// flags, then framed options), without a socket: returns the server's bytes and the session
/// if transmission was reached. Used by the fuzz target and the never-panic tests; a framing
/// error or an end of input simply stops it.
pub fn replay_handshake(input: &[u8], catalog: &Catalog) -> (Vec<u8>, Option<Session>) {
    let mut out = greeting().to_vec();
    let mut n = Negotiator::new();
    if input.len() < 4 || n.on_client_flags(&input[..4]).is_err() {
        return (out, None);
    }
    let mut at = 4;
    while input.len() - at >= OPTION_HEADER_LEN {
        let Ok(hdr) = parse_option_header(&input[at..at + OPTION_HEADER_LEN]) else {
            break;
        };
        at += OPTION_HEADER_LEN;
        let len = hdr.len as usize;
        if input.len() - at < len {
            break;
        }
        let data = &input[at..at + len];
        at += len;
        match n.on_option(hdr, data, catalog, &mut out) {
            Ok(Step::Continue) => {}
            // A socket-less replay cannot run a TLS handshake.
            Ok(Step::Close) | Ok(Step::StartTls) | Err(_) => break,
            Ok(Step::Transmission(s)) => return (out, Some(*s)),
        }
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_block::{DeviceSpec, MemDevice, Pool};
    use strata_types::DeviceClass;

    fn catalog() -> Catalog {
        let dev = MemDevice::new(64 << 20, "m");
        let pool = Pool::create(vec![DeviceSpec {
            device: dev,
            class: DeviceClass::Ssd,
        }])
        .unwrap();
        let v = pool.create_volume("vol", 1 << 20, None).unwrap();
        pool.create_snapshot(v, "s1").unwrap();
        Catalog::new(pool)
    }

    fn hdr(option: u32, data: &[u8]) -> OptionHeader {
        OptionHeader {
            option,
            len: data.len() as u32,
        }
    }

    fn opened() -> Negotiator {
        let mut n = Negotiator::new();
        n.on_client_flags(&[0, 0, 0, 3]).unwrap();
        n
    }

    fn go_data(name: &str, reqs: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    #[test]
    fn go_reply_bytes_are_frozen() {
        let c = catalog();
        let mut n = opened();
        let mut out = Vec::new();
        let d = go_data("vol", &[]);
        let step = n.on_option(hdr(OPT_GO, &d), &d, &c, &mut out).unwrap();
        assert!(matches!(step, Step::Transmission(_)));
        let mut want = Vec::new();
        // INFO_EXPORT: size 1 MiB, flags HAS|FLUSH|FUA|TRIM|WZ|MULTI_CONN|CACHE|FAST_ZERO.
        want.extend_from_slice(&[
            0, 3, 0xe8, 0x89, 4, 0x55, 0x65, 0xa9, 0, 0, 0, 7, 0, 0, 0, 3,
        ]);
        want.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x0d, 0x6d]);
        // INFO_BLOCK_SIZE 1 / 4096 / 32 MiB.
        want.extend_from_slice(&[
            0, 3, 0xe8, 0x89, 4, 0x55, 0x65, 0xa9, 0, 0, 0, 7, 0, 0, 0, 3,
        ]);
        want.extend_from_slice(&[0, 0, 0, 14, 0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0]);
        // ACK.
        want.extend_from_slice(&[
            0, 3, 0xe8, 0x89, 4, 0x55, 0x65, 0xa9, 0, 0, 0, 7, 0, 0, 0, 1,
        ]);
        want.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(out, want);
        assert_eq!(n.state(), ConnState::Transmission);
    }

    #[test]
    fn unknown_options_continue_and_export_name_closes_on_unknown() {
        let c = catalog();
        let mut n = opened();
        let mut out = Vec::new();
        for o in [OPT_STARTTLS, OPT_EXTENDED_HEADERS, 4, 12345] {
            out.clear();
            let step = n.on_option(hdr(o, &[]), &[], &c, &mut out).unwrap();
            assert!(matches!(step, Step::Continue));
            assert_eq!(&out[12..16], &REP_ERR_UNSUP.to_be_bytes());
        }
        assert!(matches!(
            n.on_option(hdr(OPT_EXPORT_NAME, b"nope"), b"nope", &c, &mut out),
            Err(HandshakeError::UnknownExport(_))
        ));
        assert_eq!(n.state(), ConnState::Closed);
    }

    #[test]
    fn snapshot_export_is_read_only_and_meta_contexts_negotiate() {
        let c = catalog();
        let mut n = opened();
        let mut out = Vec::new();
        // SET_META_CONTEXT before STRUCTURED_REPLY is invalid.
        let mut q = 3u32.to_be_bytes().to_vec();
        q.extend_from_slice(b"vol");
        q.extend_from_slice(&2u32.to_be_bytes());
        for s in ["base:allocation", "strata:changed-since:s1"] {
            q.extend_from_slice(&(s.len() as u32).to_be_bytes());
            q.extend_from_slice(s.as_bytes());
        }
        n.on_option(hdr(OPT_SET_META_CONTEXT, &q), &q, &c, &mut out)
            .unwrap();
        assert_eq!(&out[12..16], &REP_ERR_INVALID.to_be_bytes());
        out.clear();
        n.on_option(hdr(OPT_STRUCTURED_REPLY, &[]), &[], &c, &mut out)
            .unwrap();
        out.clear();
        n.on_option(hdr(OPT_SET_META_CONTEXT, &q), &q, &c, &mut out)
            .unwrap();
        assert_eq!(&out[12..16], &REP_META_CONTEXT.to_be_bytes());
        let d = go_data("vol", &[INFO_NAME]);
        out.clear();
        let Step::Transmission(s) = n.on_option(hdr(OPT_GO, &d), &d, &c, &mut out).unwrap() else {
            panic!("no transmission")
        };
        assert_eq!(s.contexts.len(), 2);
        assert!(s.structured);

        let mut n = opened();
        let d = go_data("vol@s1", &[]);
        let Step::Transmission(s) = n.on_option(hdr(OPT_GO, &d), &d, &c, &mut out).unwrap() else {
            panic!("no transmission")
        };
        assert!(s.export.read_only);
        assert_ne!(s.flags & TF_READ_ONLY, 0);
        assert_eq!(s.flags & TF_SEND_TRIM, 0);
    }

    #[test]
    fn forced_tls_refuses_everything_before_starttls() {
        let c = catalog();
        let mut n = Negotiator::with_tls(TlsMode::Required);
        n.on_client_flags(&[0, 0, 0, 3]).unwrap();
        let mut out = Vec::new();
        let d = go_data("vol", &[]);
        for (o, data) in [
            (OPT_GO, &d[..]),
            (OPT_INFO, &d[..]),
            (OPT_LIST, &[][..]),
            (OPT_STRUCTURED_REPLY, &[][..]),
            (OPT_EXTENDED_HEADERS, &[][..]),
            // Not even parsed: malformed data gets TLS_REQD too.
            (OPT_GO, &[1, 2][..]),
        ] {
            out.clear();
            let step = n.on_option(hdr(o, data), data, &c, &mut out).unwrap();
            assert!(matches!(step, Step::Continue));
            assert_eq!(&out[8..12], &o.to_be_bytes());
            assert_eq!(&out[12..16], &REP_ERR_TLS_REQD.to_be_bytes());
        }
        // STARTTLS with data is invalid, and haggling goes on in plain text.
        out.clear();
        n.on_option(hdr(OPT_STARTTLS, b"x"), b"x", &c, &mut out)
            .unwrap();
        assert_eq!(&out[12..16], &REP_ERR_INVALID.to_be_bytes());
        // STARTTLS: exactly one ACK with no data, then the handshake.
        out.clear();
        let step = n
            .on_option(hdr(OPT_STARTTLS, &[]), &[], &c, &mut out)
            .unwrap();
        assert!(matches!(step, Step::StartTls));
        let mut want = OPTION_REPLY_MAGIC.to_be_bytes().to_vec();
        want.extend_from_slice(&OPT_STARTTLS.to_be_bytes());
        want.extend_from_slice(&REP_ACK.to_be_bytes());
        want.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(out, want);
        assert_eq!(n.state(), ConnState::TlsHandshake);
        // No option is taken while the handshake runs.
        assert!(n.on_option(hdr(OPT_LIST, &[]), &[], &c, &mut out).is_err());
    }

    #[test]
    fn inside_tls_options_work_and_second_starttls_is_invalid() {
        let c = catalog();
        let mut n = Negotiator::with_tls(TlsMode::Required);
        n.on_client_flags(&[0, 0, 0, 3]).unwrap();
        let mut out = Vec::new();
        n.on_option(hdr(OPT_STARTTLS, &[]), &[], &c, &mut out)
            .unwrap();
        n.on_tls_established(Some("acme".into())).unwrap();
        assert!(n.in_tls());
        assert_eq!(n.identity(), Some("acme"));
        out.clear();
        n.on_option(hdr(OPT_STARTTLS, &[]), &[], &c, &mut out)
            .unwrap();
        assert_eq!(&out[12..16], &REP_ERR_INVALID.to_be_bytes());
        let d = go_data("vol", &[]);
        out.clear();
        let step = n.on_option(hdr(OPT_GO, &d), &d, &c, &mut out).unwrap();
        assert!(matches!(step, Step::Transmission(_)));
    }

    #[test]
    fn plain_text_negotiation_is_forgotten_after_starttls() {
        let c = catalog();
        let mut n = Negotiator::with_tls(TlsMode::Optional);
        n.on_client_flags(&[0, 0, 0, 3]).unwrap();
        let mut out = Vec::new();
        n.on_option(hdr(OPT_STRUCTURED_REPLY, &[]), &[], &c, &mut out)
            .unwrap();
        // Optional TLS: plain options are answered.
        n.on_option(hdr(OPT_LIST, &[]), &[], &c, &mut out).unwrap();
        assert!(matches!(
            n.on_option(hdr(OPT_STARTTLS, &[]), &[], &c, &mut out)
                .unwrap(),
            Step::StartTls
        ));
        n.on_tls_established(None).unwrap();
        let d = go_data("vol", &[]);
        let Step::Transmission(s) = n.on_option(hdr(OPT_GO, &d), &d, &c, &mut out).unwrap() else {
            panic!("no transmission")
        };
        assert!(!s.structured);
    }

    #[test]
    fn authorizer_sees_the_tls_identity() {
        let c = catalog().with_authorizer(Some(crate::Authorizer::new(|e, id| {
            id == Some("acme") && !e.contains('@')
        })));
        let d = go_data("vol", &[]);
        let mut out = Vec::new();
        // Without TLS: unknown.
        let mut n = opened();
        n.on_option(hdr(OPT_INFO, &d), &d, &c, &mut out).unwrap();
        assert_eq!(&out[12..16], &REP_ERR_UNKNOWN.to_be_bytes());
        // As acme: the volume, not its snapshot; LIST shows what may be opened.
        let mut n = Negotiator::with_tls(TlsMode::Required);
        n.on_client_flags(&[0, 0, 0, 3]).unwrap();
        n.on_option(hdr(OPT_STARTTLS, &[]), &[], &c, &mut out)
            .unwrap();
        n.on_tls_established(Some("acme".into())).unwrap();
        out.clear();
        n.on_option(hdr(OPT_LIST, &[]), &[], &c, &mut out).unwrap();
        assert_eq!(&out[12..16], &REP_SERVER.to_be_bytes());
        assert_eq!(
            &out[20..],
            b"\0\0\0\x03vol\0\x03\xe8\x89\x04\x55\x65\xa9\0\0\0\x03\0\0\0\x01\0\0\0\0"
        );
        let s = go_data("vol@s1", &[]);
        out.clear();
        n.on_option(hdr(OPT_INFO, &s), &s, &c, &mut out).unwrap();
        assert_eq!(&out[12..16], &REP_ERR_UNKNOWN.to_be_bytes());
        out.clear();
        let step = n.on_option(hdr(OPT_GO, &d), &d, &c, &mut out).unwrap();
        assert!(matches!(step, Step::Transmission(_)));
        // EXPORT_NAME of a refused export closes, like a missing one.
        let mut n = opened();
        assert!(matches!(
            n.on_option(hdr(OPT_EXPORT_NAME, b"vol"), b"vol", &c, &mut out),
            Err(HandshakeError::UnknownExport(_))
        ));
    }

    #[test]
    fn forced_tls_export_name_before_tls_closes() {
        let c = catalog();
        let mut n = Negotiator::with_tls(TlsMode::Required);
        n.on_client_flags(&[0, 0, 0, 3]).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            n.on_option(hdr(OPT_EXPORT_NAME, b"vol"), b"vol", &c, &mut out),
            Err(HandshakeError::TlsRequired)
        ));
        assert!(out.is_empty());
        assert_eq!(n.state(), ConnState::Closed);
        // ABORT is still answered before TLS.
        let mut n = Negotiator::with_tls(TlsMode::Required);
        n.on_client_flags(&[0, 0, 0, 3]).unwrap();
        let step = n.on_option(hdr(OPT_ABORT, &[]), &[], &c, &mut out).unwrap();
        assert!(matches!(step, Step::Close));
        assert_eq!(&out[12..16], &REP_ACK.to_be_bytes());
    }

    #[test]
    fn options_after_go_are_illegal() {
        let c = catalog();
        let mut n = opened();
        let mut out = Vec::new();
        let d = go_data("vol", &[]);
        n.on_option(hdr(OPT_GO, &d), &d, &c, &mut out).unwrap();
        assert!(matches!(
            n.on_option(hdr(OPT_LIST, &[]), &[], &c, &mut out),
            Err(HandshakeError::Illegal(_))
        ));
    }
}
