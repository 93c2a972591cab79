//! Rate estimation for `ulvsadm list --rate` and metrics (slow path): the
//! slow path samples monotonically increasing counters about once a second;
//! a rate is the counter's increase over the last sampling window divided by
//! its duration, smoothed like the IPVS estimator (an exponentially weighted
//! average, so one quiet second does not zero a busy service).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Counters sampled for one server (all monotonically increasing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub conns: u64,
    pub in_packets: u64,
    pub in_bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
}

impl Counters {
    /// The increase since `base` (counters of an id taken over from a
    /// removed server start from what it had counted).
    pub fn since(&self, base: &Counters) -> Counters {
        Counters {
            conns: self.conns.saturating_sub(base.conns),
            in_packets: self.in_packets.saturating_sub(base.in_packets),
            in_bytes: self.in_bytes.saturating_sub(base.in_bytes),
            out_packets: self.out_packets.saturating_sub(base.out_packets),
            out_bytes: self.out_bytes.saturating_sub(base.out_bytes),
        }
    }
}

/// Per-second rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rates {
    pub conns_per_s: f64,
    pub in_packets_per_s: f64,
    pub in_bytes_per_s: f64,
    pub out_packets_per_s: f64,
    pub out_bytes_per_s: f64,
}

impl Rates {
    /// Sum of two rates (a service is the sum of its servers).
    pub fn add(&self, o: &Rates) -> Rates {
        Rates {
            conns_per_s: self.conns_per_s + o.conns_per_s,
            in_packets_per_s: self.in_packets_per_s + o.in_packets_per_s,
            in_bytes_per_s: self.in_bytes_per_s + o.in_bytes_per_s,
            out_packets_per_s: self.out_packets_per_s + o.out_packets_per_s,
            out_bytes_per_s: self.out_bytes_per_s + o.out_bytes_per_s,
        }
    }
}

/// Weight of the newest window in the moving average.
const ALPHA: f64 = 0.5;

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    last: Counters,
    rates: Rates,
    primed: bool,
}

/// Rates of many keys.
#[derive(Debug)]
pub struct RateMeter<K> {
    entries: HashMap<K, Entry>,
    min_window: Duration,
}

impl<K: Eq + Hash + Clone> Default for RateMeter<K> {
    fn default() -> Self {
        Self::new(Duration::from_millis(500))
    }
}

fn per_s(now: u64, before: u64, secs: f64) -> f64 {
    // A counter that went backwards (it cannot, but never report negative rates).
    now.saturating_sub(before) as f64 / secs
}

impl<K: Eq + Hash + Clone> RateMeter<K> {
    /// Samples closer together than `min_window` are ignored.
    pub fn new(min_window: Duration) -> Self {
        RateMeter {
            entries: HashMap::new(),
            min_window,
        }
    }

    /// Feed one sample of `key`'s counters taken at `at`.
    pub fn sample(&mut self, key: K, at: Instant, c: Counters) {
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key,
                    Entry {
                        at,
                        last: c,
                        rates: Rates::default(),
                        primed: false,
                    },
                );
            }
            Some(e) => {
                let dt = at.saturating_duration_since(e.at);
                if dt < self.min_window {
                    return;
                }
                let s = dt.as_secs_f64();
                let r = Rates {
                    conns_per_s: per_s(c.conns, e.last.conns, s),
                    in_packets_per_s: per_s(c.in_packets, e.last.in_packets, s),
                    in_bytes_per_s: per_s(c.in_bytes, e.last.in_bytes, s),
                    out_packets_per_s: per_s(c.out_packets, e.last.out_packets, s),
                    out_bytes_per_s: per_s(c.out_bytes, e.last.out_bytes, s),
                };
                let mix = |old: f64, new: f64| if e.primed { old + ALPHA * (new - old) } else { new };
                e.rates = Rates {
                    conns_per_s: mix(e.rates.conns_per_s, r.conns_per_s),
                    in_packets_per_s: mix(e.rates.in_packets_per_s, r.in_packets_per_s),
                    in_bytes_per_s: mix(e.rates.in_bytes_per_s, r.in_bytes_per_s),
                    out_packets_per_s: mix(e.rates.out_packets_per_s, r.out_packets_per_s),
                    out_bytes_per_s: mix(e.rates.out_bytes_per_s, r.out_bytes_per_s),
                };
                e.primed = true;
                e.at = at;
                e.last = c;
            }
        }
    }

    /// Current rates of `key` (zero until two samples were seen).
    pub fn rates(&self, key: &K) -> Rates {
        self.entries.get(key).map(|e| e.rates).unwrap_or_default()
    }

    /// Forget keys not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(conns: u64, pk: u64, by: u64) -> Counters {
        Counters {
            conns,
            in_packets: pk,
            in_bytes: by,
            ..Counters::default()
        }
    }

    #[test]
    fn steady_rate() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        m.sample(1u32, t0, c(0, 0, 0));
        assert_eq!(m.rates(&1), Rates::default());
        m.sample(1, t0 + Duration::from_secs(2), c(20, 200, 20_000));
        let r = m.rates(&1);
        assert_eq!(r.conns_per_s, 10.0);
        assert_eq!(r.in_packets_per_s, 100.0);
        assert_eq!(r.in_bytes_per_s, 10_000.0);
        m.sample(1, t0 + Duration::from_secs(3), c(30, 300, 30_000));
        assert_eq!(m.rates(&1).conns_per_s, 10.0);
    }

    #[test]
    fn smoothing_and_idle() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        m.sample(1u32, t0, c(0, 0, 0));
        m.sample(1, t0 + Duration::from_secs(1), c(100, 0, 0));
        assert_eq!(m.rates(&1).conns_per_s, 100.0);
        // one idle second halves the estimate, it does not zero it
        m.sample(1, t0 + Duration::from_secs(2), c(100, 0, 0));
        assert_eq!(m.rates(&1).conns_per_s, 50.0);
        m.sample(1, t0 + Duration::from_secs(3), c(100, 0, 0));
        assert_eq!(m.rates(&1).conns_per_s, 25.0);
    }

    #[test]
    fn short_windows_ignored_and_retain() {
        let mut m = RateMeter::default();
        let t0 = Instant::now();
        m.sample(1u32, t0, c(0, 0, 0));
        m.sample(1, t0 + Duration::from_millis(100), c(1000, 0, 0));
        assert_eq!(m.rates(&1), Rates::default());
        m.sample(2, t0, c(0, 0, 0));
        m.retain(|k| *k == 2);
        m.sample(1, t0 + Duration::from_secs(1), c(5, 0, 0));
        assert_eq!(m.rates(&1), Rates::default(), "forgotten key starts over");
        let sum = Rates {
            conns_per_s: 1.0,
            ..Rates::default()
        }
        .add(&Rates {
            conns_per_s: 2.0,
            ..Rates::default()
        });
        assert_eq!(sum.conns_per_s, 3.0);
    }
}
