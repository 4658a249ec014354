//! The NBD wire protocol, without I/O: constants, the fixed-newstyle handshake, option and
//! option-reply framing, the transmission request header, simple and structured replies.
//!
//! Everything here follows `doc/proto.md` of the NetworkBlockDevice/nbd repository; the byte
//! layouts are drawn in `docs/nbd.md`. All integers on the wire are big-endian.
//!
//! Invariants:
//! - Decoders validate magic, flags and lengths before anything uses them, and never allocate
//!   more than a caller-visible cap ([`MAX_OPTION_LEN`], [`MAX_PAYLOAD`]).
//! - Encoders append to a caller's `Vec<u8>` so the hot path reuses one buffer per connection.

use thiserror::Error;

// ----- magics -----

/// `NBDMAGIC`: first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle magic, also the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Prefix of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Prefix of an extended-header request (we do not negotiate extended headers: such a request
/// is a protocol violation and closes the connection).
pub const REQUEST_EXT_MAGIC: u32 = 0x21e4_1c71;

// ----- handshake flags (16 bits, server) and client flags (32 bits) -----

/// Server supports fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Server may omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client wants no zero padding.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;
/// The handshake flags this server sends.
pub const SERVER_HANDSHAKE_FLAGS: u16 = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

// ----- transmission flags (16 bits) -----

/// Always set.
pub const TF_HAS_FLAGS: u16 = 1 << 0;
/// Export is read-only.
pub const TF_READ_ONLY: u16 = 1 << 1;
/// `NBD_CMD_FLUSH` supported.
pub const TF_SEND_FLUSH: u16 = 1 << 2;
/// `NBD_CMD_FLAG_FUA` supported.
pub const TF_SEND_FUA: u16 = 1 << 3;
/// Rotational medium.
pub const TF_ROTATIONAL: u16 = 1 << 4;
/// `NBD_CMD_TRIM` supported.
pub const TF_SEND_TRIM: u16 = 1 << 5;
/// `NBD_CMD_WRITE_ZEROES` supported.
pub const TF_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// `NBD_CMD_FLAG_DF` supported (only with structured replies).
pub const TF_SEND_DF: u16 = 1 << 7;
/// Flush and FUA are visible across all connections to the export.
pub const TF_CAN_MULTI_CONN: u16 = 1 << 8;
/// `NBD_CMD_RESIZE` supported (not by us).
pub const TF_SEND_RESIZE: u16 = 1 << 9;
/// `NBD_CMD_CACHE` supported.
pub const TF_SEND_CACHE: u16 = 1 << 10;
/// `NBD_CMD_FLAG_FAST_ZERO` supported.
pub const TF_SEND_FAST_ZERO: u16 = 1 << 11;

// ----- options -----

/// Choose an export and enter transmission (no error possible: failure closes).
pub const OPT_EXPORT_NAME: u32 = 1;
/// End negotiation.
pub const OPT_ABORT: u32 = 2;
/// List exports.
pub const OPT_LIST: u32 = 3;
/// Upgrade to TLS.
pub const OPT_STARTTLS: u32 = 5;
/// Describe an export.
pub const OPT_INFO: u32 = 6;
/// Describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// List metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// Use 64-bit extended headers (not supported: answered `NBD_REP_ERR_UNSUP`).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// ----- option replies -----

/// Option accepted / end of a list.
pub const REP_ACK: u32 = 1;
/// One export of `NBD_OPT_LIST`.
pub const REP_SERVER: u32 = 2;
/// One piece of information of `NBD_OPT_INFO`/`GO`.
pub const REP_INFO: u32 = 3;
/// One metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// The bit every error reply type carries.
pub const REP_ERR: u32 = 1 << 31;
/// Unknown option.
pub const REP_ERR_UNSUP: u32 = REP_ERR | 1;
/// Refused by policy.
pub const REP_ERR_POLICY: u32 = REP_ERR | 2;
/// Syntactically invalid.
pub const REP_ERR_INVALID: u32 = REP_ERR | 3;
/// Not on this platform.
pub const REP_ERR_PLATFORM: u32 = REP_ERR | 4;
/// TLS required first.
pub const REP_ERR_TLS_REQD: u32 = REP_ERR | 5;
/// No such export.
pub const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
/// Server shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_ERR | 7;
/// Client must ask for block sizes.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_ERR | 8;
/// Request or reply too large.
pub const REP_ERR_TOO_BIG: u32 = REP_ERR | 9;

// ----- NBD_INFO types -----

/// Size and transmission flags (always sent).
pub const INFO_EXPORT: u16 = 0;
/// Canonical export name.
pub const INFO_NAME: u16 = 1;
/// Human description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

// ----- commands and command flags -----

/// Read.
pub const CMD_READ: u16 = 0;
/// Write (payload follows the header).
pub const CMD_WRITE: u16 = 1;
/// Disconnect.
pub const CMD_DISC: u16 = 2;
/// Flush.
pub const CMD_FLUSH: u16 = 3;
/// Trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Prefetch hint.
pub const CMD_CACHE: u16 = 5;
/// Write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Block status query.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Force unit access.
pub const CMDF_FUA: u16 = 1 << 0;
/// Write zeroes must not punch holes.
pub const CMDF_NO_HOLE: u16 = 1 << 1;
/// Don't fragment a structured read reply.
pub const CMDF_DF: u16 = 1 << 2;
/// Only one extent per context.
pub const CMDF_REQ_ONE: u16 = 1 << 3;
/// Fail write-zeroes fast instead of writing slowly.
pub const CMDF_FAST_ZERO: u16 = 1 << 4;

// ----- structured replies -----

/// Last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Final empty chunk.
pub const REPLY_TYPE_NONE: u16 = 0;
/// Data at an offset.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Zeros at an offset.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Block status descriptors of one context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Error.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;
/// Error at an offset.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;

// ----- errors (the only values allowed on the wire) -----

/// Operation not permitted (write to a read-only export).
pub const EPERM: u32 = 1;
/// I/O error.
pub const EIO: u32 = 5;
/// Out of memory.
pub const ENOMEM: u32 = 12;
/// Invalid argument.
pub const EINVAL: u32 = 22;
/// No space.
pub const ENOSPC: u32 = 28;
/// Value too large.
pub const EOVERFLOW: u32 = 75;
/// Not supported (fast zero impossible).
pub const ENOTSUP: u32 = 95;
/// Server shutting down.
pub const ESHUTDOWN: u32 = 108;

// ----- base:allocation flags -----

/// Unallocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// Reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

// ----- sizes and limits -----

/// Server greeting: NBDMAGIC, IHAVEOPT, handshake flags.
pub const GREETING_LEN: usize = 18;
/// Option header: IHAVEOPT, option, length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Request header.
pub const REQUEST_LEN: usize = 28;
/// Simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Structured reply chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;
/// Largest option payload we accept (names are at most 4096 bytes; a meta-context query list
/// fits easily). Larger options close the connection: nothing legitimate sends them.
pub const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Longest string (export name, context name) the spec allows.
pub const MAX_STRING: usize = 4096;
/// Largest READ/WRITE payload, advertised as the maximum block size.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Preferred block size advertised to clients.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Minimum block size: 1, because the engine does read-modify-write of partial blocks.
pub const MIN_BLOCK: u32 = 1;

/// A wire-format violation. Any of these ends the connection: the byte stream can no longer be
/// trusted to be framed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    /// A magic number did not match.
    #[error("bad magic: expected {expected:#x}, got {got:#x}")]
    BadMagic {
        /// What the protocol requires.
        expected: u64,
        /// What arrived.
        got: u64,
    },
    /// The client set flags we did not offer.
    #[error("unknown client flags {0:#x}")]
    UnknownClientFlags(u32),
    /// An option's payload exceeds [`MAX_OPTION_LEN`].
    #[error("option {option} carries {len} bytes, more than {MAX_OPTION_LEN}")]
    OptionTooLong {
        /// Option number.
        option: u32,
        /// Declared length.
        len: u32,
    },
    /// A write payload exceeds [`MAX_PAYLOAD`].
    #[error("write payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    PayloadTooLarge(u32),
    /// Fewer bytes than a fixed-size structure needs.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Why an option's payload is invalid (answered `NBD_REP_ERR_INVALID`, the session continues).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionDataError {
    /// Lengths inside the payload do not add up.
    #[error("option payload is malformed: {0}")]
    Malformed(&'static str),
    /// A string is not UTF-8 or contains NUL.
    #[error("string is not valid UTF-8 without NUL")]
    BadString,
    /// A string is longer than 4096 bytes.
    #[error("string longer than {MAX_STRING} bytes")]
    StringTooLong,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}
fn need(b: &[u8], n: usize) -> Result<(), ProtoError> {
    if b.len() < n {
        return Err(ProtoError::Truncated {
            need: n,
            have: b.len(),
        });
    }
    Ok(())
}

/// Somewhere encoders append bytes: a `Vec<u8>`, or the connection's reusable reply buffer.
pub trait Put {
    /// Appends `b`.
    fn put(&mut self, b: &[u8]);
}

impl Put for Vec<u8> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

// ----- handshake -----

/// The 18 bytes the server sends on connect.
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    g[16..18].copy_from_slice(&SERVER_HANDSHAKE_FLAGS.to_be_bytes());
    g
}

/// What the client's 32-bit flags asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientFlags {
    /// Fixed newstyle.
    pub fixed_newstyle: bool,
    /// Omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub no_zeroes: bool,
}

/// Decodes the client flags; unknown bits close the connection (the spec says MUST).
pub fn parse_client_flags(b: &[u8]) -> Result<ClientFlags, ProtoError> {
    need(b, 4)?;
    let f = be_u32(b, 0);
    if f & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(ProtoError::UnknownClientFlags(f));
    }
    Ok(ClientFlags {
        fixed_newstyle: f & FLAG_C_FIXED_NEWSTYLE != 0,
        no_zeroes: f & FLAG_C_NO_ZEROES != 0,
    })
}

/// An option header: `IHAVEOPT`, option number, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// Option number.
    pub option: u32,
    /// Payload length (at most [`MAX_OPTION_LEN`]).
    pub len: u32,
}

/// Decodes and validates an option header.
pub fn parse_option_header(b: &[u8]) -> Result<OptionHeader, ProtoError> {
    need(b, OPTION_HEADER_LEN)?;
    let magic = be_u64(b, 0);
    if magic != IHAVEOPT {
        return Err(ProtoError::BadMagic {
            expected: IHAVEOPT,
            got: magic,
        });
    }
    let option = be_u32(b, 8);
    let len = be_u32(b, 12);
    if len > MAX_OPTION_LEN {
        return Err(ProtoError::OptionTooLong { option, len });
    }
    Ok(OptionHeader { option, len })
}

/// A decoded client option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// `NBD_OPT_EXPORT_NAME`.
    ExportName(String),
    /// `NBD_OPT_ABORT`.
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_STARTTLS`.
    StartTls,
    /// `NBD_OPT_INFO` (`go == false`) or `NBD_OPT_GO`.
    Info {
        /// Whether this is `NBD_OPT_GO`.
        go: bool,
        /// Export name.
        name: String,
        /// Requested `NBD_INFO_*` items.
        requests: Vec<u16>,
    },
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT` (`set == false`) or `NBD_OPT_SET_META_CONTEXT`.
    MetaContext {
        /// Whether this is the SET variant.
        set: bool,
        /// Export the contexts are for.
        export: String,
        /// Queries.
        queries: Vec<String>,
    },
    /// Anything else (answered `NBD_REP_ERR_UNSUP`).
    Unsupported(u32),
}

fn string(b: &[u8]) -> Result<String, OptionDataError> {
    if b.len() > MAX_STRING {
        return Err(OptionDataError::StringTooLong);
    }
    if b.contains(&0) {
        return Err(OptionDataError::BadString);
    }
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| OptionDataError::BadString)
}

/// Reads a 32-bit length-prefixed string at `*at`, advancing it.
fn prefixed_string(d: &[u8], at: &mut usize) -> Result<String, OptionDataError> {
    if d.len() - *at < 4 {
        return Err(OptionDataError::Malformed("missing string length"));
    }
    let n = be_u32(d, *at) as usize;
    *at += 4;
    if d.len() - *at < n {
        return Err(OptionDataError::Malformed("string runs past the option"));
    }
    let s = string(&d[*at..*at + n])?;
    *at += n;
    Ok(s)
}

/// Decodes an option's payload. `data` is exactly the payload the header announced.
pub fn parse_option(option: u32, data: &[u8]) -> Result<ClientOption, OptionDataError> {
    let no_data = |o: ClientOption| {
        if data.is_empty() {
            Ok(o)
        } else {
            Err(OptionDataError::Malformed("option takes no data"))
        }
    };
    match option {
        OPT_EXPORT_NAME => Ok(ClientOption::ExportName(string(data)?)),
        // ABORT's data is ignored: the session ends either way.
        OPT_ABORT => Ok(ClientOption::Abort),
        OPT_LIST => no_data(ClientOption::List),
        OPT_STARTTLS => no_data(ClientOption::StartTls),
        OPT_STRUCTURED_REPLY => no_data(ClientOption::StructuredReply),
        OPT_INFO | OPT_GO => {
            let mut at = 0;
            let name = prefixed_string(data, &mut at)?;
            if data.len() - at < 2 {
                return Err(OptionDataError::Malformed(
                    "missing information request count",
                ));
            }
            let n = be_u16(data, at) as usize;
            at += 2;
            if data.len() - at != 2 * n {
                return Err(OptionDataError::Malformed(
                    "information request count does not match the length",
                ));
            }
            let requests = (0..n).map(|i| be_u16(data, at + 2 * i)).collect();
            Ok(ClientOption::Info {
                go: option == OPT_GO,
                name,
                requests,
            })
        }
        OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
            let mut at = 0;
            let export = prefixed_string(data, &mut at)?;
            if data.len() - at < 4 {
                return Err(OptionDataError::Malformed("missing query count"));
            }
            let n = be_u32(data, at) as usize;
            at += 4;
            // Each query takes at least 4 bytes: bound the count before allocating for it.
            if n > (data.len() - at) / 4 {
                return Err(OptionDataError::Malformed("query count exceeds the option"));
            }
            let mut queries = Vec::with_capacity(n);
            for _ in 0..n {
                queries.push(prefixed_string(data, &mut at)?);
            }
            if at != data.len() {
                return Err(OptionDataError::Malformed(
                    "trailing bytes after the queries",
                ));
            }
            Ok(ClientOption::MetaContext {
                set: option == OPT_SET_META_CONTEXT,
                export,
                queries,
            })
        }
        other => Ok(ClientOption::Unsupported(other)),
    }
}

/// Appends an option reply with payload `data`.
pub fn put_option_reply(out: &mut impl Put, option: u32, reply: u32, data: &[u8]) {
    out.put(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.put(&option.to_be_bytes());
    out.put(&reply.to_be_bytes());
    out.put(&(data.len() as u32).to_be_bytes());
    out.put(data);
}

/// Appends an `NBD_REP_SERVER` reply naming an export.
pub fn put_rep_server(out: &mut impl Put, option: u32, name: &str) {
    let mut d = Vec::with_capacity(4 + name.len());
    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    put_option_reply(out, option, REP_SERVER, &d);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_EXPORT`.
pub fn put_info_export(out: &mut impl Put, option: u32, size: u64, flags: u16) {
    let mut d = [0u8; 12];
    d[0..2].copy_from_slice(&INFO_EXPORT.to_be_bytes());
    d[2..10].copy_from_slice(&size.to_be_bytes());
    d[10..12].copy_from_slice(&flags.to_be_bytes());
    put_option_reply(out, option, REP_INFO, &d);
}

/// Appends `NBD_REP_INFO` carrying a string (`NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`).
pub fn put_info_string(out: &mut impl Put, option: u32, info: u16, s: &str) {
    let mut d = Vec::with_capacity(2 + s.len());
    d.extend_from_slice(&info.to_be_bytes());
    d.extend_from_slice(s.as_bytes());
    put_option_reply(out, option, REP_INFO, &d);
}

/// Appends `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn put_info_block_size(out: &mut impl Put, option: u32, min: u32, pref: u32, max: u32) {
    let mut d = [0u8; 14];
    d[0..2].copy_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    d[2..6].copy_from_slice(&min.to_be_bytes());
    d[6..10].copy_from_slice(&pref.to_be_bytes());
    d[10..14].copy_from_slice(&max.to_be_bytes());
    put_option_reply(out, option, REP_INFO, &d);
}

/// Appends `NBD_REP_META_CONTEXT`.
pub fn put_meta_context(out: &mut impl Put, option: u32, id: u32, name: &str) {
    let mut d = Vec::with_capacity(4 + name.len());
    d.extend_from_slice(&id.to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    put_option_reply(out, option, REP_META_CONTEXT, &d);
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, transmission flags, and 124 zeros unless the
/// client negotiated `NBD_FLAG_C_NO_ZEROES`.
pub fn put_export_name_reply(out: &mut impl Put, size: u64, flags: u16, no_zeroes: bool) {
    out.put(&size.to_be_bytes());
    out.put(&flags.to_be_bytes());
    if !no_zeroes {
        out.put(&[0u8; 124]);
    }
}

// ----- transmission -----

/// A request header, magic checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`CMDF_*`).
    pub flags: u16,
    /// Command type (`CMD_*`).
    pub cmd: u16,
    /// Opaque handle echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length (payload length for WRITE).
    pub len: u32,
}

impl Request {
    /// Bytes of payload that follow this header on the wire.
    pub fn payload_len(&self) -> u32 {
        if self.cmd == CMD_WRITE {
            self.len
        } else {
            0
        }
    }
}

/// Decodes a request header. Bad magic and over-large write payloads are fatal: the stream's
/// framing is lost (or the client ignored the advertised maximum block size).
pub fn parse_request(b: &[u8]) -> Result<Request, ProtoError> {
    need(b, REQUEST_LEN)?;
    let magic = be_u32(b, 0);
    if magic != REQUEST_MAGIC {
        return Err(ProtoError::BadMagic {
            expected: REQUEST_MAGIC as u64,
            got: magic as u64,
        });
    }
    let req = Request {
        flags: be_u16(b, 4),
        cmd: be_u16(b, 6),
        handle: be_u64(b, 8),
        offset: be_u64(b, 16),
        len: be_u32(b, 24),
    };
    if req.cmd == CMD_WRITE && req.len > MAX_PAYLOAD {
        return Err(ProtoError::PayloadTooLarge(req.len));
    }
    Ok(req)
}

/// Encodes a request header (clients and tests use this).
pub fn put_request(out: &mut impl Put, r: &Request) {
    out.put(&REQUEST_MAGIC.to_be_bytes());
    out.put(&r.flags.to_be_bytes());
    out.put(&r.cmd.to_be_bytes());
    out.put(&r.handle.to_be_bytes());
    out.put(&r.offset.to_be_bytes());
    out.put(&r.len.to_be_bytes());
}

/// Appends a simple reply header (the data of a successful simple READ follows it).
pub fn put_simple_reply(out: &mut impl Put, error: u32, handle: u64) {
    let mut h = [0u8; SIMPLE_REPLY_LEN];
    h[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&error.to_be_bytes());
    h[8..16].copy_from_slice(&handle.to_be_bytes());
    out.put(&h);
}

/// Appends a structured reply chunk header.
pub fn put_chunk_header(out: &mut impl Put, flags: u16, typ: u16, handle: u64, len: u32) {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    h[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&typ.to_be_bytes());
    h[8..16].copy_from_slice(&handle.to_be_bytes());
    h[16..20].copy_from_slice(&len.to_be_bytes());
    out.put(&h);
}

/// Appends the header of a final `NBD_REPLY_TYPE_OFFSET_DATA` chunk for `data_len` bytes at
/// `offset`; the caller appends the data.
pub fn put_offset_data_header(out: &mut impl Put, handle: u64, offset: u64, data_len: u32) {
    put_chunk_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        handle,
        data_len + 8,
    );
    out.put(&offset.to_be_bytes());
}

/// Appends a final `NBD_REPLY_TYPE_ERROR` chunk. The message is cut to keep the chunk small.
pub fn put_error_chunk(out: &mut impl Put, handle: u64, error: u32, msg: &str) {
    let mut m = msg.as_bytes();
    if m.len() > 1024 {
        // Cut at a char boundary so the message stays valid UTF-8.
        let mut n = 1024;
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        m = &m[..n];
    }
    put_chunk_header(
        out,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        handle,
        6 + m.len() as u32,
    );
    out.put(&error.to_be_bytes());
    out.put(&(m.len() as u16).to_be_bytes());
    out.put(m);
}

/// Appends an `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: `(length, flags)` descriptors for context
/// `ctx`. `descriptors` must be non-empty.
pub fn put_block_status_chunk(
    out: &mut impl Put,
    handle: u64,
    done: bool,
    ctx: u32,
    descriptors: &[(u32, u32)],
) {
    let flags = if done { REPLY_FLAG_DONE } else { 0 };
    let len = 4 + 8 * descriptors.len() as u32;
    put_chunk_header(out, flags, REPLY_TYPE_BLOCK_STATUS, handle, len);
    out.put(&ctx.to_be_bytes());
    for &(l, f) in descriptors {
        out.put(&l.to_be_bytes());
        out.put(&f.to_be_bytes());
    }
}

/// Which command flags each command accepts (FUA is accepted on every command, as the spec
/// requires once `NBD_FLAG_SEND_FUA` is advertised). `structured` enables DF on READ.
pub fn allowed_flags(cmd: u16, structured: bool) -> u16 {
    match cmd {
        CMD_READ if structured => CMDF_FUA | CMDF_DF,
        CMD_WRITE_ZEROES => CMDF_FUA | CMDF_NO_HOLE | CMDF_FAST_ZERO,
        CMD_BLOCK_STATUS => CMDF_FUA | CMDF_REQ_ONE,
        _ => CMDF_FUA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_bytes_are_frozen() {
        assert_eq!(
            greeting(),
            [
                b'N', b'B', b'D', b'M', b'A', b'G', b'I', b'C', // NBDMAGIC
                b'I', b'H', b'A', b'V', b'E', b'O', b'P', b'T', // IHAVEOPT
                0x00, 0x03, // FIXED_NEWSTYLE | NO_ZEROES
            ]
        );
    }

    #[test]
    fn option_reply_bytes_are_frozen() {
        let mut out = Vec::new();
        put_option_reply(&mut out, OPT_STRUCTURED_REPLY, REP_ACK, &[]);
        assert_eq!(
            out,
            [
                0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, // reply magic
                0, 0, 0, 8, // option
                0, 0, 0, 1, // NBD_REP_ACK
                0, 0, 0, 0, // length
            ]
        );
        out.clear();
        put_info_export(&mut out, OPT_GO, 1 << 30, TF_HAS_FLAGS | TF_SEND_FLUSH);
        assert_eq!(
            &out[12..],
            &[
                0, 0, 0, 3, // NBD_REP_INFO
                0, 0, 0, 12, // length
                0, 0, // NBD_INFO_EXPORT
                0, 0, 0, 0, 0x40, 0, 0, 0, // size
                0, 5, // flags
            ]
        );
        out.clear();
        put_info_block_size(&mut out, OPT_GO, 1, 4096, MAX_PAYLOAD);
        assert_eq!(
            &out[16..],
            &[0, 0, 0, 14, 0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0]
        );
        out.clear();
        put_export_name_reply(&mut out, 4096, 1, false);
        assert_eq!(out.len(), 8 + 2 + 124);
        out.clear();
        put_export_name_reply(&mut out, 4096, 1, true);
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0x10, 0, 0, 1]);
    }

    #[test]
    fn client_flags() {
        assert_eq!(
            parse_client_flags(&[0, 0, 0, 3]).unwrap(),
            ClientFlags {
                fixed_newstyle: true,
                no_zeroes: true
            }
        );
        assert_eq!(
            parse_client_flags(&[0, 0, 0, 4]),
            Err(ProtoError::UnknownClientFlags(4))
        );
        assert!(parse_client_flags(&[0, 0]).is_err());
    }

    #[test]
    fn option_header_validation() {
        let mut b = Vec::new();
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&OPT_GO.to_be_bytes());
        b.extend_from_slice(&10u32.to_be_bytes());
        assert_eq!(
            parse_option_header(&b).unwrap(),
            OptionHeader {
                option: OPT_GO,
                len: 10
            }
        );
        b[12..16].copy_from_slice(&(MAX_OPTION_LEN + 1).to_be_bytes());
        assert!(matches!(
            parse_option_header(&b),
            Err(ProtoError::OptionTooLong { .. })
        ));
        b[0] = 0;
        assert!(matches!(
            parse_option_header(&b),
            Err(ProtoError::BadMagic { .. })
        ));
    }

    #[test]
    fn go_and_meta_context_payloads() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"vol");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&INFO_NAME.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        assert_eq!(
            parse_option(OPT_GO, &d).unwrap(),
            ClientOption::Info {
                go: true,
                name: "vol".into(),
                requests: vec![INFO_NAME, INFO_BLOCK_SIZE]
            }
        );
        // Count disagreeing with the length.
        assert!(parse_option(OPT_GO, &d[..d.len() - 1]).is_err());
        // Name length past the end.
        assert!(parse_option(OPT_INFO, &[0, 0, 0, 9, b'a']).is_err());

        let mut m = Vec::new();
        m.extend_from_slice(&3u32.to_be_bytes());
        m.extend_from_slice(b"vol");
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(&15u32.to_be_bytes());
        m.extend_from_slice(b"base:allocation");
        assert_eq!(
            parse_option(OPT_SET_META_CONTEXT, &m).unwrap(),
            ClientOption::MetaContext {
                set: true,
                export: "vol".into(),
                queries: vec!["base:allocation".into()]
            }
        );
        // A huge query count cannot make the decoder allocate.
        let mut h = Vec::new();
        h.extend_from_slice(&0u32.to_be_bytes());
        h.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_option(OPT_LIST_META_CONTEXT, &h).is_err());
        assert_eq!(
            parse_option(OPT_LIST, &[1]),
            Err(OptionDataError::Malformed("option takes no data"))
        );
        assert_eq!(
            parse_option(OPT_EXPORT_NAME, b"a\0b"),
            Err(OptionDataError::BadString)
        );
        assert_eq!(
            parse_option(99, b"xyz").unwrap(),
            ClientOption::Unsupported(99)
        );
    }

    #[test]
    fn request_roundtrip_and_limits() {
        let r = Request {
            flags: CMDF_FUA,
            cmd: CMD_WRITE,
            handle: 0x0102_0304_0506_0708,
            offset: 4096,
            len: 512,
        };
        let mut b = Vec::new();
        put_request(&mut b, &r);
        assert_eq!(
            b,
            [
                0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0x10,
                0, 0, 0, 2, 0
            ]
        );
        assert_eq!(parse_request(&b).unwrap(), r);
        b[24..28].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        assert_eq!(
            parse_request(&b),
            Err(ProtoError::PayloadTooLarge(MAX_PAYLOAD + 1))
        );
        // A huge READ is not fatal (it has no payload): it is answered EINVAL later.
        b[6..8].copy_from_slice(&CMD_READ.to_be_bytes());
        assert!(parse_request(&b).is_ok());
        b[0] = 0;
        assert!(matches!(
            parse_request(&b),
            Err(ProtoError::BadMagic { .. })
        ));
    }

    #[test]
    fn reply_bytes_are_frozen() {
        let mut out = Vec::new();
        put_simple_reply(&mut out, EIO, 7);
        assert_eq!(
            out,
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        out.clear();
        put_offset_data_header(&mut out, 7, 512, 4);
        assert_eq!(
            out,
            [
                0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 12, 0, 0, 0,
                0, 0, 0, 2, 0
            ]
        );
        out.clear();
        put_error_chunk(&mut out, 1, EPERM, "ro");
        assert_eq!(&out[4..8], &[0, 1, 0x80, 1]);
        assert_eq!(&out[16..], &[0, 0, 0, 8, 0, 0, 0, 1, 0, 2, b'r', b'o']);
        out.clear();
        put_block_status_chunk(&mut out, 1, true, 2, &[(4096, 3), (512, 0)]);
        assert_eq!(&out[16..20], &[0, 0, 0, 20]);
        assert_eq!(
            &out[20..],
            &[0, 0, 0, 2, 0, 0, 0x10, 0, 0, 0, 0, 3, 0, 0, 2, 0, 0, 0, 0, 0]
        );
    }
}
