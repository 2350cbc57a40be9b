//! The engine-independent atomic write batch.

use crate::Cf;

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Sets `key` to `value`.
    Put {
        /// Column family.
        cf: Cf,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Removes `key` (a no-op if absent).
    Delete {
        /// Column family.
        cf: Cf,
        /// Key.
        key: Vec<u8>,
    },
    /// Removes every key in `[start, end)`.
    DeleteRange {
        /// Column family.
        cf: Cf,
        /// First key removed.
        start: Vec<u8>,
        /// First key kept (exclusive end).
        end: Vec<u8>,
    },
}

/// An ordered list of writes applied atomically by [`crate::Engine::write`].
///
/// Operations apply in order, so a later put of the same key wins over an earlier one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
    size: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.size += key.len() + value.len();
        self.ops.push(WriteOp::Put { cf, key, value });
    }

    /// Adds a delete.
    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.size += key.len();
        self.ops.push(WriteOp::Delete { cf, key });
    }

    /// Adds a range delete of `[start, end)`. Does nothing if `start >= end`.
    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (start, end) = (start.into(), end.into());
        if start >= end {
            return;
        }
        self.size += start.len() + end.len();
        self.ops.push(WriteOp::DeleteRange { cf, start, end });
    }

    /// Appends every operation of `other`, after the ones already here.
    pub fn extend(&mut self, other: WriteBatch) {
        self.size += other.size;
        self.ops.extend(other.ops);
    }

    /// The operations in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Total bytes of keys and values in the batch.
    pub fn size_bytes(&self) -> usize {
        self.size
    }
}
