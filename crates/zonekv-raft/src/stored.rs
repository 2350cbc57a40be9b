//! A group's replicated state as stored in the engine: reading it (the descriptor, the applied
//! state, user values, with their checksums verified) and the writes of one apply not yet in
//! the engine ([`Pending`]), which later ops of the same apply read through.

use std::collections::HashMap;

use bytes::Bytes;
use zonekv_engine::{Cf, Engine, KeyRange, Reader, WriteBatch};

use crate::codec::{AppliedState, decode_applied, decode_descriptor};
use crate::keys::{MetaKey, data_key, meta_key};
use crate::range::RangeDescriptor;
use crate::{Error, RangeId, Result, value};

/// Writes of one `apply` call not yet in the engine, readable by later ops of the same call.
pub(crate) struct Pending {
    pub(crate) batch: WriteBatch,
    /// Data-column-family key → value (decoded), `None` for a delete.
    overlay: HashMap<Vec<u8>, Option<Bytes>>,
}

impl Pending {
    /// Nothing written yet.
    pub(crate) fn new() -> Self {
        Self { batch: WriteBatch::new(), overlay: HashMap::new() }
    }

    /// A data-column-family record as this apply left it so far.
    pub(crate) fn get_raw<E: Engine>(&self, engine: &E, group: RangeId, key: &[u8]) -> Result<Option<Bytes>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => read_raw(engine, group, key),
        }
    }

    /// Sets or deletes a data-column-family record (value framing added here).
    pub(crate) fn set_raw(&mut self, key: Vec<u8>, v: Option<&Bytes>) {
        match v {
            Some(v) => self.batch.put(Cf::Data, key.clone(), value::encode(v)),
            None => self.batch.delete(Cf::Data, key.clone()),
        }
        self.overlay.insert(key, v.cloned());
    }

    pub(crate) fn get<E: Engine>(&self, engine: &E, group: RangeId, key: &Bytes) -> Result<Option<Bytes>> {
        self.get_raw(engine, group, &data_key(key))
    }

    pub(crate) fn set(&mut self, key: &Bytes, v: Option<&Bytes>) {
        self.set_raw(data_key(key), v);
    }
}

fn read_raw<R: Reader + ?Sized>(reader: &R, group: RangeId, key: &[u8]) -> Result<Option<Bytes>> {
    match reader.get(Cf::Data, key)? {
        Some(stored) => value::decode(&stored)
            .map(Some)
            .map_err(|why| Error::Corruption { group, what: format!("value of data key {key:?}: {why}") }),
        None => Ok(None),
    }
}

/// Reads a user key from the data column family, verifying the stored value's checksum.
pub fn read_user_value<R: Reader + ?Sized>(reader: &R, group: RangeId, key: &[u8]) -> Result<Option<Bytes>> {
    read_raw(reader, group, &data_key(key))
}

pub(crate) fn read_applied<R: Reader + ?Sized>(reader: &R, group: RangeId) -> Result<AppliedState> {
    match reader.get(Cf::RaftMeta, &meta_key(group, MetaKey::Applied))? {
        Some(v) => decode_applied(group, &v),
        None => Ok(AppliedState::default()),
    }
}

/// The descriptor of every group that has one stored in `reader`, in group order.
pub fn stored_descriptors<R: Reader + ?Sized>(reader: &R) -> Result<Vec<RangeDescriptor>> {
    let mut out = Vec::new();
    for_each_stored_descriptor(reader, |group, v| {
        out.push(decode_descriptor(group, v)?);
        Ok(())
    })?;
    Ok(out)
}

/// The id of every group that has a descriptor stored in `reader`, in group order (nothing
/// decoded).
pub fn stored_groups<R: Reader + ?Sized>(reader: &R) -> Result<Vec<RangeId>> {
    let mut out = Vec::new();
    for_each_stored_descriptor(reader, |group, _| {
        out.push(group);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with every stored descriptor record: the group and the encoded descriptor.
fn for_each_stored_descriptor<R: Reader + ?Sized>(
    reader: &R,
    mut f: impl FnMut(RangeId, &[u8]) -> Result<()>,
) -> Result<()> {
    for pair in reader.scan(Cf::RaftMeta, &KeyRange::all(), false)? {
        let (k, v) = pair?;
        if k.len() == 9 && k[8] == MetaKey::Descriptor as u8 {
            f(RangeId::new(u64::from_be_bytes(k[..8].try_into().expect("8 bytes"))), &v)?;
        }
    }
    Ok(())
}

/// Reads the stored descriptor of `group`, if there is one.
pub fn read_descriptor<R: Reader + ?Sized>(reader: &R, group: RangeId) -> Result<Option<RangeDescriptor>> {
    reader
        .get(Cf::RaftMeta, &meta_key(group, MetaKey::Descriptor))?
        .map(|v| decode_descriptor(group, &v))
        .transpose()
}
