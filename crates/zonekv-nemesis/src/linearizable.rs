//! Per-key linearizability of a register history (Wing & Gong's search with Lowe's
//! memoization, as in Porcupine and Knossos).
//!
//! A history is the operations on one key, each with the time it was invoked and, if it
//! completed, the time it returned. An operation whose outcome is unknown (timed out, or the
//! node could not say) may have taken effect at any moment after its invocation, or never:
//! it has no return time and need not be linearized. The checker looks for an order of the
//! operations that respects real time (an operation that returned before another was invoked
//! comes first) and the register's semantics. Values are unique per write, so a read names
//! the write it saw.

use std::collections::HashSet;

/// The register's value: `None` before the first write.
pub type Value = Option<u64>;

/// What an operation did, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegOp {
    /// A completed read that returned this value.
    Read(Value),
    /// A write (completed, or with unknown outcome).
    Write(u64),
    /// A compare-and-swap: set `to` if the value was `from`. `ok` is its result when it
    /// completed; with unknown outcome only its success matters (a failed CAS changes nothing).
    Cas {
        /// Expected value.
        from: Value,
        /// New value.
        to: u64,
        /// Whether it succeeded (ignored when the outcome is unknown).
        ok: bool,
    },
}

/// One operation of a per-key history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Invocation time (any monotonic unit).
    pub call: u64,
    /// Return time; `None` if the outcome is unknown.
    pub ret: Option<u64>,
    /// The operation.
    pub op: RegOp,
}

/// The checker's answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A valid order exists.
    Linearizable,
    /// No valid order exists. `stuck_at`: index (into the input) of the first operation, in
    /// invocation order, that the longest valid prefix found could not place.
    Violation {
        /// Longest prefix of operations that could be ordered.
        longest_prefix: usize,
        /// An operation that could not be placed after that prefix.
        stuck_at: usize,
    },
    /// The search explored `max_states` states without an answer.
    Timeout,
}

/// Applies `op` to `state`: the new state, or `None` if `op` cannot happen in `state`.
fn step(state: Value, e: &Entry) -> Option<Value> {
    match e.op {
        RegOp::Read(v) => (v == state).then_some(state),
        RegOp::Write(v) => Some(Some(v)),
        // Unknown outcome: only a successful CAS is worth placing.
        RegOp::Cas { from, to, ok } if ok || e.ret.is_none() => (state == from).then_some(Some(to)),
        RegOp::Cas { from, .. } => (state != from).then_some(state),
    }
}

/// Checks one key's history, giving up after `max_states` search states.
/// Completed reads and all completed operations must be placed; unknown ones may be left out.
pub fn check(history: &[Entry], max_states: usize) -> Outcome {
    let n = history.len();
    let mut by_call: Vec<usize> = (0..n).collect();
    by_call.sort_by_key(|&i| history[i].call);
    let mut by_ret: Vec<usize> = (0..n).filter(|&i| history[i].ret.is_some()).collect();
    by_ret.sort_by_key(|&i| history[i].ret);

    let mut placed = vec![false; n];
    let mut bits = vec![0u64; n.div_ceil(64)];
    let mut to_place = by_ret.len();
    let mut seen: HashSet<(Vec<u64>, Value)> = HashSet::new();
    // Each frame: (position in by_call of the placed op, the op, state before it).
    let mut stack: Vec<(usize, usize, Value)> = Vec::new();
    let mut state: Value = None;
    let mut from = 0;
    let (mut best, mut best_stuck) = (0, by_call.first().copied().unwrap_or(0));
    loop {
        if to_place == 0 {
            return Outcome::Linearizable;
        }
        // An op can go next only if no unplaced op returned before it was invoked.
        let deadline = by_ret.iter().find(|&&i| !placed[i]).and_then(|&i| history[i].ret).unwrap_or(u64::MAX);
        let mut next = None;
        for (pos, &i) in by_call.iter().enumerate().skip(from) {
            let e = &history[i];
            if e.call >= deadline {
                break;
            }
            if placed[i] {
                continue;
            }
            let Some(s) = step(state, e) else { continue };
            bits[i / 64] |= 1 << (i % 64);
            if seen.insert((bits.clone(), s)) {
                next = Some((pos, i, s));
                break;
            }
            bits[i / 64] &= !(1 << (i % 64));
        }
        match next {
            Some((pos, i, s)) => {
                placed[i] = true;
                stack.push((pos, i, state));
                state = s;
                if history[i].ret.is_some() {
                    to_place -= 1;
                }
                if seen.len() > max_states {
                    return Outcome::Timeout;
                }
                from = 0;
            }
            None => {
                if stack.len() >= best {
                    best = stack.len();
                    best_stuck = by_call.iter().copied().find(|&i| !placed[i]).unwrap_or(best_stuck);
                }
                let Some((pos, i, prev)) = stack.pop() else {
                    return Outcome::Violation { longest_prefix: best, stuck_at: best_stuck };
                };
                placed[i] = false;
                bits[i / 64] &= !(1 << (i % 64));
                if history[i].ret.is_some() {
                    to_place += 1;
                }
                state = prev;
                from = pos + 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, op: RegOp) -> Entry {
        Entry { call, ret: Some(ret), op }
    }

    fn unknown(call: u64, op: RegOp) -> Entry {
        Entry { call, ret: None, op }
    }

    const MAX: usize = 100_000;

    #[test]
    fn sequential_histories_follow_the_register() {
        let h = [op(0, 1, RegOp::Read(None)), op(2, 3, RegOp::Write(1)), op(4, 5, RegOp::Read(Some(1)))];
        assert_eq!(check(&h, MAX), Outcome::Linearizable);
        let stale = [op(0, 1, RegOp::Write(1)), op(2, 3, RegOp::Write(2)), op(4, 5, RegOp::Read(Some(1)))];
        assert!(matches!(check(&stale, MAX), Outcome::Violation { stuck_at: 2, .. }));
        assert_eq!(check(&[], MAX), Outcome::Linearizable);
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps both writes: it may see either.
        for seen in [Some(1), Some(2)] {
            let h = [op(0, 10, RegOp::Write(1)), op(1, 11, RegOp::Write(2)), op(2, 12, RegOp::Read(seen))];
            assert_eq!(check(&h, MAX), Outcome::Linearizable, "read saw {seen:?}");
        }
        // But two later reads cannot disagree about a finished past.
        let h = [
            op(0, 10, RegOp::Write(1)),
            op(1, 11, RegOp::Write(2)),
            op(12, 13, RegOp::Read(Some(2))),
            op(14, 15, RegOp::Read(Some(1))),
        ];
        assert!(matches!(check(&h, MAX), Outcome::Violation { .. }));
    }

    #[test]
    fn compare_and_swap_results_must_match_the_state() {
        let ok = [
            op(0, 1, RegOp::Write(1)),
            op(2, 3, RegOp::Cas { from: Some(1), to: 2, ok: true }),
            op(4, 5, RegOp::Cas { from: Some(1), to: 3, ok: false }),
            op(6, 7, RegOp::Read(Some(2))),
        ];
        assert_eq!(check(&ok, MAX), Outcome::Linearizable);
        let lost_update = [
            op(0, 1, RegOp::Write(1)),
            op(2, 3, RegOp::Cas { from: Some(1), to: 2, ok: true }),
            op(4, 5, RegOp::Cas { from: Some(1), to: 3, ok: true }),
        ];
        assert!(matches!(check(&lost_update, MAX), Outcome::Violation { .. }));
    }

    #[test]
    fn unknown_outcomes_may_apply_late_or_never() {
        // A timed-out write seen long after it was invoked: fine.
        let late =
            [unknown(0, RegOp::Write(7)), op(50, 51, RegOp::Read(None)), op(60, 61, RegOp::Read(Some(7)))];
        assert_eq!(check(&late, MAX), Outcome::Linearizable);
        // Never seen: fine too.
        assert_eq!(
            check(&[unknown(0, RegOp::Write(7)), op(5, 6, RegOp::Read(None))], MAX),
            Outcome::Linearizable
        );
        // But it cannot be seen before it was invoked, nor un-happen once seen.
        let early = [op(0, 1, RegOp::Read(Some(7))), unknown(5, RegOp::Write(7))];
        assert!(matches!(check(&early, MAX), Outcome::Violation { .. }));
        let flicker =
            [unknown(0, RegOp::Write(7)), op(5, 6, RegOp::Read(Some(7))), op(7, 8, RegOp::Read(None))];
        assert!(matches!(check(&flicker, MAX), Outcome::Violation { .. }));
    }

    #[test]
    fn the_search_gives_up_at_its_state_budget() {
        // Many concurrent unknown writes and a read that saw none of them: every subset order
        // is explored before the contradiction is proven.
        let mut h: Vec<Entry> = (0..40).map(|i| unknown(i, RegOp::Write(i + 100))).collect();
        h.push(op(50, 51, RegOp::Read(Some(1))));
        assert_eq!(check(&h, 1000), Outcome::Timeout);
    }
}
