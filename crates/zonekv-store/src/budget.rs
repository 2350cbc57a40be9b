//! A memory budget: how many bytes some queue may hold at once, shared by every producer.
//!
//! A request that would take the budget past its limit is refused at once (load shedding: the
//! caller answers `RESOURCE_EXHAUSTED`, nothing was done, safe to retry later) instead of
//! waiting in an unbounded queue. One request is always admitted while the budget is empty, so
//! a single request larger than the whole budget still makes progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held against a limit. Shared through an [`Arc`]; every [`Charge`] returns its bytes
/// when dropped.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

/// Bytes taken from a [`MemoryBudget`], given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { used: AtomicUsize::new(0), limit })
    }

    /// Takes `bytes` if they fit (or if nothing is held), else `None`: the caller sheds the
    /// request.
    pub fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used != 0 && used.saturating_add(bytes) > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Charge { budget: self.clone(), bytes }),
                Err(now) => used = now,
            }
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_frees_on_drop() {
        let b = MemoryBudget::new(100);
        let a = b.try_charge(60).expect("fits");
        let c = b.try_charge(40).expect("fits exactly");
        assert!(b.try_charge(1).is_none(), "a full budget refuses");
        assert_eq!(b.used(), 100);
        drop(a);
        assert_eq!(b.used(), 40);
        assert!(b.try_charge(61).is_none(), "40 + 61 > 100");
        let d = b.try_charge(60).expect("40 + 60 fits");
        drop((c, d));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn an_empty_budget_admits_one_oversized_charge() {
        let b = MemoryBudget::new(10);
        let big = b.try_charge(1000).expect("nothing held: admitted");
        assert!(b.try_charge(1).is_none(), "but nothing beside it");
        drop(big);
        assert!(b.try_charge(1).is_some());
    }
}
