//! Request validation: every check runs before anything is proposed, so a rejected request
//! changes nothing.

use bytes::Bytes;
use zonekv_raft::Mutation;

use crate::config::{Limits, MAX_KEY_BYTES};
use crate::{Error, Result};

/// Checks a key: not empty, at most [`MAX_KEY_BYTES`].
pub fn key(k: &[u8]) -> Result<()> {
    if k.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    if k.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            k.len()
        )));
    }
    Ok(())
}

/// Checks a scan bound key: may be empty, at most [`MAX_KEY_BYTES`].
pub fn bound_key(k: &[u8]) -> Result<()> {
    if k.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "scan bound is {} bytes; the limit is {MAX_KEY_BYTES}",
            k.len()
        )));
    }
    Ok(())
}

/// Checks a value against the configured limit.
pub fn value(limits: &Limits, v: &[u8]) -> Result<()> {
    if v.len() > limits.max_value_bytes {
        return Err(Error::InvalidArgument(format!(
            "value is {} bytes; the limit is {} (limits.max-value-bytes)",
            v.len(),
            limits.max_value_bytes
        )));
    }
    Ok(())
}

/// Checks a key and value pair.
pub fn put(limits: &Limits, k: &Bytes, v: &Bytes) -> Result<()> {
    key(k)?;
    value(limits, v)
}

/// Checks a batch: not empty, within the op and byte limits, every key and value valid.
pub fn batch(limits: &Limits, mutations: &[Mutation]) -> Result<()> {
    if mutations.is_empty() {
        return Err(Error::InvalidArgument("batch has no mutations".into()));
    }
    if mutations.len() > limits.max_batch_ops {
        return Err(Error::InvalidArgument(format!(
            "batch has {} mutations; the limit is {} (limits.max-batch-ops)",
            mutations.len(),
            limits.max_batch_ops
        )));
    }
    let mut total = 0usize;
    for (i, m) in mutations.iter().enumerate() {
        let at = |e: Error| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("mutation {i}: {m}")),
            other => other,
        };
        match m {
            Mutation::Put { key: k, value: v } => put(limits, k, v).map_err(at)?,
            Mutation::Delete { key: k } => key(k).map_err(at)?,
        }
        total += m.bytes();
    }
    if total > limits.max_batch_bytes {
        return Err(Error::InvalidArgument(format!(
            "batch holds {total} bytes of keys and values; the limit is {} (limits.max-batch-bytes)",
            limits.max_batch_bytes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn keys_values_and_batches_over_the_limits_are_named_in_the_error() {
        let limits =
            Limits { max_value_bytes: 10, max_batch_ops: 2, max_batch_bytes: 12, ..Limits::default() };
        assert!(key(b"").unwrap_err().to_string().contains("empty"));
        assert!(key(&[1; 4097]).unwrap_err().to_string().contains("4097 bytes"));
        key(&[1; 4096]).unwrap();
        assert!(value(&limits, &[0; 11]).unwrap_err().to_string().contains("max-value-bytes"));
        assert!(batch(&limits, &[]).unwrap_err().to_string().contains("no mutations"));
        let put = |k: &[u8], v: &[u8]| Mutation::Put { key: b(k), value: b(v) };
        let three = [put(b"a", b""), put(b"b", b""), put(b"c", b"")];
        assert!(batch(&limits, &three).unwrap_err().to_string().contains("max-batch-ops"));
        let err = batch(&limits, &[put(b"a", b"1"), Mutation::Delete { key: b(b"") }]).unwrap_err();
        assert!(err.to_string().starts_with("mutation 1: key must not be empty"), "{err}");
        let err = batch(&limits, &[put(b"aa", b"0123456789"), put(b"b", b"")]).unwrap_err();
        assert!(err.to_string().contains("max-batch-bytes"), "{err}");
        batch(&limits, &[put(b"a", b"0123456789")]).unwrap();
    }
}
