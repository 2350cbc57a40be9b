//! A zipfian key generator (Gray et al., "Quickly generating billion-record synthetic
//! databases", as used by YCSB), scrambled so popular keys are spread over the keyspace.

use rand::Rng;

/// Draws integers in `[0, n)` with a zipfian distribution of exponent `theta`.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipf {
    /// A generator over `n` items. YCSB's default `theta` is 0.99.
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2.min(n), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Self { n, theta, alpha, zetan, eta }
    }

    /// The next rank (0 = most popular), scrambled into a key index.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        let rank = if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(self.theta) {
            1
        } else {
            ((self.n as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        scramble(rank.min(self.n - 1)) % self.n
    }
}

/// FNV-1a over the rank's bytes: a fixed permutation-like spread of ranks over keys.
fn scramble(x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(10_000, 0.99);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            let k = z.sample(&mut rng);
            assert!(k < 10_000);
            *counts.entry(k).or_insert(0u32) += 1;
        }
        let mut top: Vec<u32> = counts.values().copied().collect();
        top.sort_unstable_by(|a, b| b.cmp(a));
        // The most popular key gets several percent of all accesses; uniform would be 0.01 %.
        assert!(top[0] > 5_000, "hottest key drew only {}", top[0]);
        assert!(counts.len() > 2_000, "only {} distinct keys", counts.len());
    }
}
