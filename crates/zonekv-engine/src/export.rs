//! Export and import of key spans as a checksummed byte stream.
//!
//! Raft snapshots of a range carry its data in this format. The stream is:
//!
//! ```text
//! header  := "ZKVX" version:u8                 (version = 1)
//! chunk   := len:u32 crc32(payload):u32 payload   (len in 1..=CHUNK_LIMIT)
//! payload := record*
//! record  := cf:u8 key_len:u32 key value_len:u32 value
//! footer  := 0xFFFF_FFFF records:u64 crc32(records):u32
//! ```
//!
//! All integers are big-endian. Every chunk is verified before any record of it is used, and a
//! stream without its footer (truncated) or whose record count disagrees is rejected, so a
//! damaged snapshot is reported as [`Error::Corruption`] and never partially installed.

use std::io::{Read, Write};

use crate::{Cf, Error, KeyRange, Reader, Result};

const MAGIC: &[u8; 4] = b"ZKVX";
const VERSION: u8 = 1;
const FOOTER_TAG: u32 = u32::MAX;
/// Payload bytes after which a chunk is closed (a single large record may exceed it).
const CHUNK_TARGET: usize = 1 << 20;
/// Largest chunk accepted on import: guards against allocating on a corrupt length.
const CHUNK_LIMIT: usize = 1 << 30;

/// What an export or import moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanStats {
    /// Key-value pairs.
    pub records: u64,
    /// Bytes of the stream.
    pub bytes: u64,
}

/// Writes every pair of `spans` read from `reader` (typically a snapshot) to `out`.
pub fn export<R: Reader + ?Sized, W: Write>(
    reader: &R,
    spans: &[(Cf, KeyRange)],
    out: &mut W,
) -> Result<SpanStats> {
    let mut stats = SpanStats::default();
    out.write_all(MAGIC)?;
    out.write_all(&[VERSION])?;
    stats.bytes += 5;
    let mut chunk = Vec::with_capacity(CHUNK_TARGET + 1024);
    for (cf, range) in spans {
        for pair in reader.scan(*cf, range, false)? {
            let (k, v) = pair?;
            chunk.push(cf_tag(*cf));
            put_bytes(&mut chunk, &k)?;
            put_bytes(&mut chunk, &v)?;
            stats.records += 1;
            if chunk.len() >= CHUNK_TARGET {
                stats.bytes += flush_chunk(out, &mut chunk)?;
            }
        }
    }
    if !chunk.is_empty() {
        stats.bytes += flush_chunk(out, &mut chunk)?;
    }
    out.write_all(&FOOTER_TAG.to_be_bytes())?;
    out.write_all(&stats.records.to_be_bytes())?;
    out.write_all(&crc32fast::hash(&stats.records.to_be_bytes()).to_be_bytes())?;
    stats.bytes += 16;
    Ok(stats)
}

/// Reads a stream written by [`export`] and hands every pair to `sink`, after checking each
/// chunk's checksum and that the pair lies inside one of `spans` for its column family.
///
/// Returns an error, having possibly called `sink` for a prefix of the pairs, if the stream is
/// damaged; callers collect pairs in a write batch and apply it only on success.
pub fn import<Rd: Read>(
    input: &mut Rd,
    spans: &[(Cf, KeyRange)],
    mut sink: impl FnMut(Cf, Vec<u8>, Vec<u8>) -> Result<()>,
) -> Result<SpanStats> {
    let mut stats = SpanStats::default();
    let mut header = [0u8; 5];
    read_exact(input, &mut header, "header")?;
    if &header[..4] != MAGIC || header[4] != VERSION {
        return Err(Error::Corruption(format!("snapshot data: bad header {header:?}")));
    }
    stats.bytes += 5;
    loop {
        let mut word = [0u8; 4];
        read_exact(input, &mut word, "chunk length")?;
        let len = u32::from_be_bytes(word);
        if len == FOOTER_TAG {
            let mut footer = [0u8; 12];
            read_exact(input, &mut footer, "footer")?;
            let count = u64::from_be_bytes(footer[..8].try_into().expect("8 bytes"));
            let crc = u32::from_be_bytes(footer[8..].try_into().expect("4 bytes"));
            if crc != crc32fast::hash(&footer[..8]) || count != stats.records {
                return Err(Error::Corruption(format!(
                    "snapshot data: footer says {count} records, stream had {}",
                    stats.records
                )));
            }
            stats.bytes += 16;
            return Ok(stats);
        }
        let len = len as usize;
        if len == 0 || len > CHUNK_LIMIT {
            return Err(Error::Corruption(format!("snapshot data: chunk length {len}")));
        }
        read_exact(input, &mut word, "chunk checksum")?;
        let crc = u32::from_be_bytes(word);
        let mut payload = vec![0u8; len];
        read_exact(input, &mut payload, "chunk payload")?;
        if crc32fast::hash(&payload) != crc {
            return Err(Error::Corruption("snapshot data: chunk checksum mismatch".into()));
        }
        stats.bytes += 8 + len as u64;
        let mut rest = payload.as_slice();
        while !rest.is_empty() {
            let cf = cf_from_tag(rest[0])?;
            rest = &rest[1..];
            let key = take_bytes(&mut rest)?;
            let value = take_bytes(&mut rest)?;
            if !spans.iter().any(|(c, r)| *c == cf && r.contains(&key)) {
                return Err(Error::Corruption(format!(
                    "snapshot data: key {key:?} in {} is outside the exported spans",
                    cf.name()
                )));
            }
            stats.records += 1;
            sink(cf, key, value)?;
        }
    }
}

fn flush_chunk<W: Write>(out: &mut W, chunk: &mut Vec<u8>) -> Result<u64> {
    out.write_all(&(chunk.len() as u32).to_be_bytes())?;
    out.write_all(&crc32fast::hash(chunk).to_be_bytes())?;
    out.write_all(chunk)?;
    let n = 8 + chunk.len() as u64;
    chunk.clear();
    Ok(n)
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) -> Result<()> {
    let len = u32::try_from(b.len())
        .map_err(|_| Error::Backend(format!("record of {} bytes is too large to export", b.len())))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(b);
    Ok(())
}

fn take_bytes(rest: &mut &[u8]) -> Result<Vec<u8>> {
    let truncated = || Error::Corruption("snapshot data: truncated record".into());
    let len_bytes: [u8; 4] = rest.get(..4).ok_or_else(truncated)?.try_into().expect("4 bytes");
    let len = u32::from_be_bytes(len_bytes) as usize;
    let body = rest.get(4..4 + len).ok_or_else(truncated)?.to_vec();
    *rest = &rest[4 + len..];
    Ok(body)
}

fn read_exact<Rd: Read>(input: &mut Rd, buf: &mut [u8], what: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            Error::Corruption(format!("snapshot data: truncated in the {what}"))
        }
        _ => Error::Io(e),
    })
}

fn cf_tag(cf: Cf) -> u8 {
    cf.index() as u8
}

fn cf_from_tag(tag: u8) -> Result<Cf> {
    Cf::ALL
        .get(tag as usize)
        .copied()
        .ok_or_else(|| Error::Corruption(format!("snapshot data: unknown column family tag {tag}")))
}
