//! The client side of the handshake as bytes: the options it sends and the replies it reads,
//! built and checked without I/O so the fuzz target can feed the parsers anything.
//!
//! Layouts are the NBD protocol's (`doc/proto.md`); the server side is
//! [`crate::negotiate`] and the constants are [`crate::proto`]'s.

use super::ClientError;
use crate::proto::*;

/// What `NBD_OPT_GO` told us about the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportInfo {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (`NBD_FLAG_*`).
    pub flags: u16,
    /// Minimum block size (1 when the server did not say).
    pub min_block: u32,
    /// Largest payload of one request ([`MAX_PAYLOAD`] when the server did not say).
    pub max_payload: u32,
}

impl ExportInfo {
    /// True when the export takes no writes.
    pub fn read_only(&self) -> bool {
        self.flags & TF_READ_ONLY != 0
    }

    /// True when a flush on one connection covers writes completed on every connection.
    pub fn multi_conn(&self) -> bool {
        self.flags & TF_CAN_MULTI_CONN != 0
    }
}

fn proto(msg: impl Into<String>) -> ClientError {
    ClientError::Proto(msg.into())
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Checks the server's greeting (NBDMAGIC, IHAVEOPT, handshake flags) and returns the flags
/// the client answers with. A server without fixed newstyle is refused: `NBD_OPT_GO` and
/// STARTTLS need it.
pub fn greeting(b: &[u8; GREETING_LEN]) -> Result<u32, ClientError> {
    if be64(&b[0..8]) != NBDMAGIC {
        return Err(proto("greeting: not an NBD server"));
    }
    if be64(&b[8..16]) != IHAVEOPT {
        return Err(proto("greeting: oldstyle server (no options)"));
    }
    let flags = be16(&b[16..18]);
    if flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(proto("greeting: server without fixed newstyle"));
    }
    let mut answer = FLAG_C_FIXED_NEWSTYLE;
    if flags & FLAG_NO_ZEROES != 0 {
        answer |= FLAG_C_NO_ZEROES;
    }
    Ok(answer)
}

/// An option frame: IHAVEOPT, option, length, data.
pub fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(OPTION_HEADER_LEN + data.len());
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// `NBD_OPT_GO` for `export`, asking for the block size.
pub fn go(export: &str) -> Result<Vec<u8>, ClientError> {
    if export.len() > MAX_STRING {
        return Err(ClientError::Invalid(format!(
            "export name of {} bytes (at most {MAX_STRING})",
            export.len()
        )));
    }
    let mut d = Vec::with_capacity(export.len() + 8);
    d.extend_from_slice(&(export.len() as u32).to_be_bytes());
    d.extend_from_slice(export.as_bytes());
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    Ok(option(OPT_GO, &d))
}

/// An option reply's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    /// The option it answers.
    pub option: u32,
    /// Reply type (`NBD_REP_*`).
    pub reply: u32,
    /// Length of the data that follows.
    pub len: u32,
}

/// Length of an option reply's header.
pub const REPLY_HEADER_LEN: usize = 20;

/// Parses an option reply's header, checking it answers `expect` and its data is bounded.
pub fn reply_header(b: &[u8; REPLY_HEADER_LEN], expect: u32) -> Result<ReplyHeader, ClientError> {
    if be64(&b[0..8]) != OPTION_REPLY_MAGIC {
        return Err(proto("option reply: bad magic"));
    }
    let h = ReplyHeader {
        option: be32(&b[8..12]),
        reply: be32(&b[12..16]),
        len: be32(&b[16..20]),
    };
    if h.option != expect {
        return Err(proto(format!(
            "option reply for option {} while waiting for {expect}",
            h.option
        )));
    }
    if h.len > MAX_OPTION_LEN {
        return Err(proto(format!("option reply of {} bytes", h.len)));
    }
    Ok(h)
}

/// What one reply to `NBD_OPT_GO` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoReply {
    /// An `NBD_REP_INFO` the client records (or ignores: unknown info types are allowed).
    Info,
    /// `NBD_REP_ACK`: transmission starts.
    Ack,
}

/// Folds one reply to `NBD_OPT_GO` (header and data) into `info`. Error replies become
/// [`ClientError::Refused`] with the server's message.
pub fn go_reply(h: &ReplyHeader, data: &[u8], info: &mut Partial) -> Result<GoReply, ClientError> {
    if h.reply & REP_ERR != 0 {
        return Err(ClientError::Refused {
            option: h.option,
            reply: h.reply,
            message: String::from_utf8_lossy(data).into_owned(),
        });
    }
    match h.reply {
        REP_ACK => Ok(GoReply::Ack),
        REP_INFO => {
            if data.len() < 2 {
                return Err(proto("NBD_REP_INFO without a type"));
            }
            match be16(&data[0..2]) {
                INFO_EXPORT => {
                    if data.len() != 12 {
                        return Err(proto("NBD_INFO_EXPORT of the wrong length"));
                    }
                    info.size = Some(be64(&data[2..10]));
                    info.flags = Some(be16(&data[10..12]));
                }
                INFO_BLOCK_SIZE => {
                    if data.len() != 14 {
                        return Err(proto("NBD_INFO_BLOCK_SIZE of the wrong length"));
                    }
                    let (min, _pref, max) =
                        (be32(&data[2..6]), be32(&data[6..10]), be32(&data[10..14]));
                    if min == 0 || max < min {
                        return Err(proto("NBD_INFO_BLOCK_SIZE out of order"));
                    }
                    info.min_block = Some(min);
                    info.max_payload = Some(max);
                }
                _ => {}
            }
            Ok(GoReply::Info)
        }
        other => Err(proto(format!(
            "unexpected reply type {other:#x} to NBD_OPT_GO"
        ))),
    }
}

/// What `NBD_OPT_GO` has said so far.
#[derive(Debug, Default, Clone)]
pub struct Partial {
    size: Option<u64>,
    flags: Option<u16>,
    min_block: Option<u32>,
    max_payload: Option<u32>,
}

impl Partial {
    /// The export's description once the server acknowledged; `NBD_INFO_EXPORT` is required.
    pub fn finish(self) -> Result<ExportInfo, ClientError> {
        let (Some(size), Some(flags)) = (self.size, self.flags) else {
            return Err(proto("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT"));
        };
        Ok(ExportInfo {
            size,
            flags,
            min_block: self.min_block.unwrap_or(1),
            max_payload: self.max_payload.unwrap_or(MAX_PAYLOAD).min(MAX_PAYLOAD),
        })
    }
}

/// A transmission request's header.
pub fn request(cmd: u16, flags: u16, handle: u64, offset: u64, len: u32) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&cmd.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..28].copy_from_slice(&len.to_be_bytes());
    b
}

/// Checks a simple reply's header against the request's handle; returns the errno (0: done).
pub fn simple_reply(b: &[u8; SIMPLE_REPLY_LEN], handle: u64) -> Result<u32, ClientError> {
    let (got, errno) = simple_reply_of_any(b)?;
    if got != handle {
        return Err(proto(format!(
            "reply to handle {got} while waiting for {handle}"
        )));
    }
    Ok(errno)
}

/// A simple reply to whichever request: `(handle, errno)` (several requests in flight may be
/// answered in any order).
pub fn simple_reply_of_any(b: &[u8; SIMPLE_REPLY_LEN]) -> Result<(u64, u32), ClientError> {
    if be32(&b[0..4]) != SIMPLE_REPLY_MAGIC {
        return Err(proto(
            "reply: bad magic (structured replies were not asked for)",
        ));
    }
    Ok((be64(&b[8..16]), be32(&b[4..8])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(option: u32, reply: u32, len: u32) -> [u8; REPLY_HEADER_LEN] {
        let mut b = [0u8; REPLY_HEADER_LEN];
        b[0..8].copy_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
        b[8..12].copy_from_slice(&option.to_be_bytes());
        b[12..16].copy_from_slice(&reply.to_be_bytes());
        b[16..20].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn greeting_answers_the_flags_the_server_offers() {
        let mut g = [0u8; GREETING_LEN];
        g[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
        g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
        g[16..18].copy_from_slice(&SERVER_HANDSHAKE_FLAGS.to_be_bytes());
        assert_eq!(
            greeting(&g).unwrap(),
            FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES
        );
        g[16..18].copy_from_slice(&FLAG_FIXED_NEWSTYLE.to_be_bytes());
        assert_eq!(greeting(&g).unwrap(), FLAG_C_FIXED_NEWSTYLE);
        g[16..18].copy_from_slice(&0u16.to_be_bytes());
        assert!(greeting(&g).is_err());
        g[0] ^= 1;
        assert!(greeting(&g).is_err());
    }

    #[test]
    fn go_replies_fold_into_the_export_info() {
        let mut p = Partial::default();
        let mut d = INFO_EXPORT.to_be_bytes().to_vec();
        d.extend_from_slice(&(1u64 << 30).to_be_bytes());
        d.extend_from_slice(&(TF_HAS_FLAGS | TF_CAN_MULTI_CONN).to_be_bytes());
        let h = reply_header(&hdr(OPT_GO, REP_INFO, 12), OPT_GO).unwrap();
        assert_eq!(go_reply(&h, &d, &mut p).unwrap(), GoReply::Info);
        let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for v in [1u32, 4096, 1 << 20] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        let h = reply_header(&hdr(OPT_GO, REP_INFO, 14), OPT_GO).unwrap();
        go_reply(&h, &d, &mut p).unwrap();
        let h = reply_header(&hdr(OPT_GO, REP_ACK, 0), OPT_GO).unwrap();
        assert_eq!(go_reply(&h, &[], &mut p).unwrap(), GoReply::Ack);
        let info = p.finish().unwrap();
        assert_eq!(info.size, 1 << 30);
        assert!(info.multi_conn() && !info.read_only());
        assert_eq!(info.max_payload, 1 << 20);
    }

    #[test]
    fn bad_replies_are_protocol_errors_and_refusals_keep_the_message() {
        assert!(reply_header(&hdr(OPT_LIST, REP_ACK, 0), OPT_GO).is_err());
        assert!(reply_header(&hdr(OPT_GO, REP_ACK, MAX_OPTION_LEN + 1), OPT_GO).is_err());
        let h = reply_header(&hdr(OPT_GO, REP_ERR_UNKNOWN, 4), OPT_GO).unwrap();
        match go_reply(&h, b"gone", &mut Partial::default()) {
            Err(ClientError::Refused { message, .. }) => assert_eq!(message, "gone"),
            other => panic!("{other:?}"),
        }
        assert!(Partial::default().finish().is_err());
    }

    #[test]
    fn simple_replies_must_answer_the_request() {
        let mut b = [0u8; SIMPLE_REPLY_LEN];
        b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&EIO.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        assert_eq!(simple_reply(&b, 7).unwrap(), EIO);
        assert!(simple_reply(&b, 8).is_err());
        b[0] = 0;
        assert!(simple_reply(&b, 7).is_err());
    }
}
