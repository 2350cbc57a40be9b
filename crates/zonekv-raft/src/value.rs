//! Encoding of user values in the data column family.
//!
//! ```text
//! value := format:u8 (= 1) crc32(payload):u32be payload
//! ```
//!
//! The format byte leaves room for the MVCC encoding to come. A value whose checksum does not
//! match is reported as corruption and never returned.

use bytes::Bytes;

/// Format byte of a plain (non-MVCC) value.
const FORMAT_PLAIN: u8 = 1;
const HEADER: usize = 5;

/// Encodes a user value for storage.
pub fn encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.push(FORMAT_PLAIN);
    out.extend_from_slice(&crc32fast::hash(value).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a stored value, verifying its checksum. The error names what is wrong.
pub fn decode(stored: &[u8]) -> Result<Bytes, String> {
    if stored.len() < HEADER {
        return Err(format!("stored value is {} bytes, shorter than its header", stored.len()));
    }
    if stored[0] != FORMAT_PLAIN {
        return Err(format!("stored value has unknown format {}", stored[0]));
    }
    let crc = u32::from_be_bytes(stored[1..HEADER].try_into().expect("4 bytes"));
    let payload = &stored[HEADER..];
    if crc32fast::hash(payload) != crc {
        return Err("stored value failed its CRC32 check".to_string());
    }
    Ok(Bytes::copy_from_slice(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_bit_flip_is_caught() {
        let stored = encode(b"hello, zonekv");
        assert_eq!(decode(&stored).unwrap(), Bytes::from_static(b"hello, zonekv"));
        for byte in 0..stored.len() {
            for bit in 0..8 {
                let mut bad = stored.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
        assert!(decode(&stored[..3]).is_err());
        assert_eq!(decode(&encode(b"")).unwrap(), Bytes::new());
    }
}
