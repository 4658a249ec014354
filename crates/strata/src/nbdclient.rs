//! A minimal NBD client for `strata volume import` and `export`: fixed newstyle handshake
//! with NBD_OPT_GO over the daemon's Unix socket, then pipelined WRITEs and a FLUSH, or
//! pipelined READs (simple replies, matched by handle: the server may answer out of order),
//! and a clean disconnect.
//! Constants and layouts follow the NBD protocol (the server side lives in strata-nbd).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const FLAG_FIXED_NEWSTYLE: u16 = 1;
const CLIENT_FLAGS: u32 = 1 | 2; // fixed newstyle, no zeroes
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const INFO_EXPORT: u16 = 0;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;

/// An open export.
pub struct Client {
    s: UnixStream,
    /// Export size in bytes.
    pub size: u64,
    next: u64,
}

fn u16_of(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

impl Client {
    /// Opens `export` on the Unix socket `path`.
    pub fn connect(path: &str, export: &str) -> Result<Client> {
        let mut s = UnixStream::connect(path).with_context(|| format!("connecting to {path}"))?;
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello)?;
        if u64::from_be_bytes(hello[0..8].try_into()?) != NBDMAGIC
            || u64::from_be_bytes(hello[8..16].try_into()?) != IHAVEOPT
            || u16_of(&hello[16..18]) & FLAG_FIXED_NEWSTYLE == 0
        {
            bail!("{path} does not speak fixed newstyle NBD");
        }
        s.write_all(&CLIENT_FLAGS.to_be_bytes())?;
        let mut opt = Vec::new();
        opt.extend_from_slice(&IHAVEOPT.to_be_bytes());
        opt.extend_from_slice(&OPT_GO.to_be_bytes());
        opt.extend_from_slice(&((4 + export.len() + 2) as u32).to_be_bytes());
        opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
        opt.extend_from_slice(export.as_bytes());
        opt.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&opt)?;
        let mut size = None;
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h)?;
            if u64::from_be_bytes(h[0..8].try_into()?) != REPLY_MAGIC {
                bail!("bad option reply magic");
            }
            let kind = u32::from_be_bytes(h[12..16].try_into()?);
            let len = u32::from_be_bytes(h[16..20].try_into()?) as usize;
            if len > 1 << 20 {
                bail!("option reply too long");
            }
            let mut data = vec![0u8; len];
            s.read_exact(&mut data)?;
            match kind {
                REP_ACK => break,
                REP_INFO if len >= 12 && u16_of(&data) == INFO_EXPORT => {
                    size = Some(u64::from_be_bytes(data[2..10].try_into()?));
                }
                REP_INFO => {}
                k if k & (1 << 31) != 0 => bail!(
                    "the server refused export {export}: {}",
                    String::from_utf8_lossy(&data)
                ),
                _ => {}
            }
        }
        Ok(Client {
            s,
            size: size.context("the server sent no export size")?,
            next: 1,
        })
    }

    fn request(&mut self, cmd: u16, offset: u64, len: u32) -> Result<u64> {
        let handle = self.next;
        self.next += 1;
        let mut r = [0u8; 28];
        r[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        r[6..8].copy_from_slice(&cmd.to_be_bytes());
        r[8..16].copy_from_slice(&handle.to_be_bytes());
        r[16..24].copy_from_slice(&offset.to_be_bytes());
        r[24..28].copy_from_slice(&len.to_be_bytes());
        self.s.write_all(&r)?;
        Ok(handle)
    }

    fn reply(&mut self) -> Result<()> {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h)?;
        if u32::from_be_bytes(h[0..4].try_into()?) != SIMPLE_REPLY_MAGIC {
            bail!("unexpected reply magic");
        }
        let err = u32::from_be_bytes(h[4..8].try_into()?);
        if err != 0 {
            bail!("the server answered errno {err}");
        }
        Ok(())
    }

    /// Sends WRITEs for `chunks` (offset, data), keeping up to `depth` in flight.
    pub fn write_all(&mut self, chunks: &[(u64, &[u8])], depth: usize) -> Result<()> {
        let mut in_flight = 0;
        for (off, data) in chunks {
            if in_flight == depth {
                self.reply()?;
                in_flight -= 1;
            }
            self.request(CMD_WRITE, *off, data.len() as u32)?;
            self.s.write_all(data)?;
            in_flight += 1;
        }
        for _ in 0..in_flight {
            self.reply()?;
        }
        Ok(())
    }

    /// READs `len` bytes from `offset` in pieces of `piece`, up to `depth` in flight, handing
    /// each piece to `sink(offset, bytes)` as it arrives (in any order).
    pub fn read_all(
        &mut self,
        offset: u64,
        len: u64,
        piece: u32,
        depth: usize,
        mut sink: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut pending = std::collections::HashMap::new();
        let mut buf = vec![0u8; piece as usize];
        let (mut next, end) = (offset, offset + len);
        while next < end || !pending.is_empty() {
            while next < end && pending.len() < depth {
                let n = (end - next).min(u64::from(piece)) as u32;
                let h = self.request(CMD_READ, next, n)?;
                pending.insert(h, (next, n));
                next += u64::from(n);
            }
            let mut h = [0u8; 16];
            self.s.read_exact(&mut h)?;
            if u32::from_be_bytes(h[0..4].try_into()?) != SIMPLE_REPLY_MAGIC {
                bail!("unexpected reply magic");
            }
            let err = u32::from_be_bytes(h[4..8].try_into()?);
            let handle = u64::from_be_bytes(h[8..16].try_into()?);
            let (off, n) = pending
                .remove(&handle)
                .context("a reply to no request of ours")?;
            if err != 0 {
                bail!("the server answered errno {err} reading at {off}");
            }
            self.s.read_exact(&mut buf[..n as usize])?;
            sink(off, &buf[..n as usize])?;
        }
        Ok(())
    }

    /// FLUSH: everything written is durable when it returns.
    pub fn flush(&mut self) -> Result<()> {
        self.request(CMD_FLUSH, 0, 0)?;
        self.reply()
    }

    /// Disconnects cleanly.
    pub fn close(mut self) -> Result<()> {
        self.request(CMD_DISC, 0, 0)?;
        Ok(())
    }
}
