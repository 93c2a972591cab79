//! Liveness for systemd (slow path): `READY=1`, `RELOADING=1`, `STOPPING=1`
//! and the watchdog ping (`WATCHDOG=1`, `Type=notify` + `WatchdogSec=`).
//!
//! The director's loop pings only while every worker has made progress
//! recently: each worker bumps a heartbeat counter once per loop iteration,
//! idle polls included (a worker waits at most 100 ms per iteration), and
//! [`Liveness`] remembers when each counter last moved. A worker stuck in a
//! frame, or a stuck slow-path loop (which then pings nobody), stops the
//! pings and systemd restarts the director.

use std::time::{Duration, Instant};

use log::{error, info, warn};
use sd_notify::NotifyState;

/// When each worker's heartbeat last moved.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// (last value seen, when it last changed), per worker.
    seen: Vec<(u64, Instant)>,
    /// A worker whose heartbeat has not moved for longer is stuck.
    max_stall: Duration,
    /// Workers reported stuck (logged once per stall).
    stuck: Vec<bool>,
}

impl Liveness {
    /// `workers` heartbeats, all taken as fresh at `now`.
    pub fn new(workers: usize, now: Instant, max_stall: Duration) -> Self {
        Liveness {
            seen: vec![(0, now); workers],
            max_stall,
            stuck: vec![false; workers],
        }
    }

    /// Record the heartbeats read at `now` (`beats[i]` is worker `i`'s);
    /// returns the workers stuck at `now` (empty when all made progress
    /// within `max_stall`).
    pub fn observe(&mut self, beats: &[u64], now: Instant) -> Vec<usize> {
        let mut stuck = Vec::new();
        for (i, (&b, seen)) in beats.iter().zip(self.seen.iter_mut()).enumerate() {
            if b != seen.0 {
                *seen = (b, now);
            } else if now.saturating_duration_since(seen.1) > self.max_stall {
                stuck.push(i);
            }
        }
        stuck
    }

    /// As [`Liveness::observe`], logging each worker once as it gets stuck and
    /// again when it recovers; true when every worker is live.
    pub fn check(&mut self, beats: &[u64], now: Instant) -> bool {
        let stuck = self.observe(beats, now);
        for (i, was) in self.stuck.iter_mut().enumerate() {
            let is = stuck.contains(&i);
            if is && !*was {
                error!(
                    "worker {i} made no progress for more than {:.1} s; the watchdog is no longer pinged",
                    self.max_stall.as_secs_f64()
                );
            } else if !is && *was {
                info!("worker {i} makes progress again");
            }
            *was = is;
        }
        stuck.is_empty()
    }
}

/// The systemd watchdog as the loop sees it: whether it is on, and when the
/// next ping is due (every half interval, as sd_watchdog_enabled(3) advises).
#[derive(Debug, Clone)]
pub struct Watchdog {
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// From `WATCHDOG_USEC` (off when the director does not run under a
    /// systemd unit with `WatchdogSec=`).
    pub fn from_env() -> Self {
        Self::new(sd_notify::watchdog_enabled())
    }

    /// A watchdog of `interval` (None: off).
    pub fn new(interval: Option<Duration>) -> Self {
        Watchdog {
            every: interval.map(|d| d / 2),
            last: None,
        }
    }

    /// The longest a worker may stall before the pings stop: half the
    /// watchdog interval (so systemd notices within one interval), at least
    /// 1 s (ten idle polls); 5 s when the watchdog is off.
    pub fn max_stall(&self) -> Duration {
        self.every
            .map_or(Duration::from_secs(5), |d| d.max(Duration::from_secs(1)))
    }

    /// Is a ping due at `now`?
    pub fn due(&self, now: Instant) -> bool {
        match (self.every, self.last) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(every), Some(last)) => now.saturating_duration_since(last) >= every,
        }
    }

    /// Ping if one is due and `live`; returns whether it pinged.
    pub fn tick(&mut self, now: Instant, live: bool) -> bool {
        if !live || !self.due(now) {
            return false;
        }
        self.last = Some(now);
        notify(&[NotifyState::Watchdog]);
        true
    }
}

/// Tell systemd (a no-op without `NOTIFY_SOCKET`).
pub fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify systemd: {e}");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (then [`ready`] when the reload is over, taken or not).
pub fn reloading() {
    notify(&[NotifyState::Reloading]);
}

/// `STOPPING=1`.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn every_worker_must_move_within_the_stall_bound() {
        let t0 = Instant::now();
        let mut l = Liveness::new(2, t0, 1000 * MS);
        // Both move: live.
        assert!(l.observe(&[1, 1], t0 + 100 * MS).is_empty());
        // Worker 1 stops; within the bound it still counts as live.
        assert!(l.observe(&[5, 1], t0 + 1000 * MS).is_empty());
        assert!(l.observe(&[9, 1], t0 + 1100 * MS).is_empty());
        // Past the bound since its last move (at 100 ms): stuck.
        assert_eq!(l.observe(&[12, 1], t0 + 1101 * MS), vec![1]);
        assert!(!l.check(&[13, 1], t0 + 1500 * MS));
        // It moves again: live at once.
        assert!(l.check(&[14, 2], t0 + 1600 * MS));
        // A wrapped or restarted counter is movement too.
        assert!(l.observe(&[0, 3], t0 + 1700 * MS).is_empty());
    }

    #[test]
    fn an_idle_but_polling_worker_is_live() {
        // Idle polls bump the heartbeat every 100 ms: never stuck.
        let t0 = Instant::now();
        let mut l = Liveness::new(1, t0, 1000 * MS);
        for i in 1..100u64 {
            assert!(l.observe(&[i], t0 + i as u32 * 100 * MS).is_empty());
        }
    }

    #[test]
    fn pings_every_half_interval_only_while_live() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(Some(Duration::from_secs(10)));
        assert_eq!(w.max_stall(), Duration::from_secs(5));
        assert!(w.tick(t0, true));
        assert!(!w.tick(t0 + 4999 * MS, true));
        assert!(w.tick(t0 + 5000 * MS, true));
        // A stuck worker: no ping, however late.
        assert!(!w.tick(t0 + 20_000 * MS, false));
        assert!(w.tick(t0 + 20_001 * MS, true));
        let off = Watchdog::new(None);
        assert!(!off.due(t0 + 100_000 * MS));
        assert_eq!(
            Watchdog::new(Some(Duration::from_secs(1))).max_stall(),
            Duration::from_secs(1)
        );
    }
}
