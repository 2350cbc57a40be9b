//! A byte-rate limiter for snapshot traffic (docs/multiraft.md, "Transport"): one per node
//! and direction, shared by every range's snapshots, so catching up a follower never takes
//! the disk and network away from the writes.
//!
//! Pacing, not a bucket: each caller reserves the next free slot of `bytes / rate` seconds and
//! waits until its slot starts. A chunk goes out at once when the limiter has been idle, and
//! over any stretch the bytes admitted stay within `rate × time + one chunk`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Limits the bytes per second that pass through it; unlimited when built with rate 0.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    bytes_per_sec: u64,
    /// When the next reservation may start.
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        Self { bytes_per_sec, next_free: Mutex::new(None) }
    }

    /// Chunk size that keeps pacing smooth: at most `max`, and about a quarter second's worth
    /// of the rate, so a slow limit is not met in one-second lurches.
    pub(crate) fn chunk_bytes(&self, max: usize) -> usize {
        if self.bytes_per_sec == 0 {
            return max;
        }
        usize::try_from(self.bytes_per_sec / 4).unwrap_or(max).clamp(1024, max)
    }

    /// Waits until `bytes` more may pass.
    pub(crate) async fn acquire(&self, bytes: usize) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let start = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = next.filter(|&t| t > now).unwrap_or(now);
            *next = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time: the lower bounds are exact (the limiter never lets bytes through early); the
    // upper bounds leave room for a loaded machine.

    #[tokio::test]
    async fn admits_bytes_at_the_configured_rate() {
        let limiter = RateLimiter::new(10_000);
        let t0 = Instant::now();
        // The first chunk passes at once; each later one waits for the previous one's share.
        for _ in 0..5 {
            limiter.acquire(500).await;
        }
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(400), "{took:?}");
        // After an idle stretch the next chunk passes at once again (no debt, no credit).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t1 = Instant::now();
        limiter.acquire(500).await;
        assert!(t1.elapsed() < Duration::from_millis(40), "{:?}", t1.elapsed());
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_rate() {
        let limiter = std::sync::Arc::new(RateLimiter::new(10_000));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move {
                    for _ in 0..4 {
                        l.acquire(250).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 16 chunks of 25 ms each: the last starts 15 × 25 ms in.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(375) && took < Duration::from_millis(700), "{took:?}");
    }

    #[tokio::test]
    async fn zero_means_unlimited() {
        let limiter = RateLimiter::new(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            limiter.acquire(1 << 30).await;
        }
        assert!(t0.elapsed() < Duration::from_millis(100), "{:?}", t0.elapsed());
        assert_eq!(limiter.chunk_bytes(1 << 20), 1 << 20);
    }

    #[test]
    fn chunks_shrink_with_a_slow_rate() {
        assert_eq!(RateLimiter::new(64 << 20).chunk_bytes(1 << 20), 1 << 20);
        assert_eq!(RateLimiter::new(64 << 10).chunk_bytes(1 << 20), 16 << 10);
        assert_eq!(RateLimiter::new(100).chunk_bytes(1 << 20), 1024);
    }
}
