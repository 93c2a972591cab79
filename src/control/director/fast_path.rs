//! The XDP fast path (`xdp_fast_path`) from the slow path's side: its
//! flows hold the decisions of the table they were installed under, so
//! when a publish changes the servers (state, drain, MAC, removal, the
//! director's MAC) they are flushed and each flow's next frame goes to its
//! worker, which decides again under the new table (an established flow
//! keeps a server that can still take it; a dead server's flows are
//! re-picked) and installs it again.
//!
//! A worker may be in a batch under the old table when the flush runs and
//! install an old decision after it; so the flush is repeated once every
//! worker has started a batch under the new table (its installs are issued
//! at the end of a batch, before the next one loads the table).
//!
//! The program counts what it forwards per server too (a per-CPU array
//! indexed by backend id); [`Director::fast_per_server`] reads it, and the
//! reports add it to the workers' per-server packets and bytes, so
//! `ulvsadm list`, rates, metrics and the status page show every frame a
//! server got, whichever path carried it.
//!
//! `ULVS_XDP_FAST_PATH` ([`FAST_PATH_ENV`]) is a test knob: `1` turns the
//! fast path on (with `io: af_xdp` or `auto`) whatever the config says, `0`
//! turns it off; the test bed uses it to run every scenario with it.

use std::sync::atomic::{AtomicBool, Ordering};

use log::warn;

use super::{Director, DirectorError};
use crate::control::config::Config;
use crate::control::snapshot::FastPathCounters;
use crate::fwd::table::FwdTable;
use crate::io::xdp::{fast_server_slots, FastCounters};

/// The environment variable that overrides `xdp_fast_path` (a test knob).
pub const FAST_PATH_ENV: &str = "ULVS_XDP_FAST_PATH";

/// Whether the fast path is wanted: `config` (`xdp_fast_path`) unless the
/// test knob says otherwise (`env`: its value, if set).
///
/// # Errors
/// A value other than `0` or `1`, as the message to stop with.
fn fast_path_on(config: bool, env: Option<&str>) -> Result<bool, String> {
    match env {
        None => Ok(config),
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(v) => Err(format!(
            "{FAST_PATH_ENV}={v:?}: expected 1 (XDP fast path on) or 0 (off); unset, xdp_fast_path in the config decides"
        )),
    }
}

/// The XDP program's fast path for `cfg` (read once, at start): `None`
/// without it, else the number of per-server counter slots.
///
/// # Errors
/// A bad [`FAST_PATH_ENV`] value.
pub(super) fn fast_path_slots(cfg: &Config) -> Result<Option<u32>, DirectorError> {
    let env = match std::env::var(FAST_PATH_ENV) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(v)) => Some(v.to_string_lossy().into_owned()),
    };
    let on = fast_path_on(cfg.xdp_fast_path, env.as_deref()).map_err(DirectorError::Refused)?;
    if env.is_some() && on != cfg.xdp_fast_path {
        warn!(
            "{FAST_PATH_ENV}={}: XDP fast path {} (a test knob; the config says xdp_fast_path: {})",
            env.as_deref().unwrap_or(""),
            if on { "on" } else { "off" },
            cfg.xdp_fast_path
        );
    }
    let servers: usize = cfg.services.iter().map(|s| s.real_servers.len()).sum();
    Ok(on.then(|| fast_server_slots(servers)))
}

/// Set once a read of the per-server counters failed (warned about once).
static SERVER_READ_FAILED: AtomicBool = AtomicBool::new(false);

impl Director {
    /// Whether publishing `new` changes what the fast path's flows hold
    /// (always false without a fast path).
    pub(super) fn servers_changed(&self, new: &FwdTable) -> bool {
        if !self.xdp.as_ref().is_some_and(|x| x.fast_path()) {
            return false;
        }
        let old = self.shared.table.load();
        old.backends != new.backends || old.director_mac != new.director_mac
    }

    /// Flush the fast path now and again once the workers are past the
    /// table just published.
    pub(super) fn fast_path_flush(&mut self) {
        let Some(x) = &self.xdp else {
            return;
        };
        if let Err(e) = x.fast_flush() {
            warn!("flushing the XDP fast path: {e}");
        }
        self.fast_flush_pending = Some(self.shared.table.load().generation);
    }

    /// The second flush, when due (from the slow path's periodic tick).
    pub(super) fn fast_path_settle(&mut self) {
        let Some(g) = self.fast_flush_pending else {
            return;
        };
        if self
            .stats
            .iter()
            .all(|s| s.generation.load(Ordering::Acquire) >= g)
        {
            self.fast_flush_pending = None;
            if let Some(x) = &self.xdp {
                if let Err(e) = x.fast_flush() {
                    warn!("flushing the XDP fast path: {e}");
                }
            }
        }
    }

    /// What the XDP program forwarded itself per server (index: backend
    /// id), for every id a server or a removed server still holds; empty
    /// without the fast path (or when the read failed: warned once).
    pub(super) fn fast_per_server(&self) -> Vec<FastCounters> {
        let Some(x) = self.xdp.as_ref().filter(|x| x.fast_path()) else {
            return Vec::new();
        };
        let ids = self.rt.servers.values().map(|s| s.id);
        let top = ids.chain(self.rt.removed.keys().copied()).max();
        let Some(top) = top else {
            return Vec::new();
        };
        x.fast_server_counters(top.saturating_add(1))
            .unwrap_or_else(|e| {
                if !SERVER_READ_FAILED.swap(true, Ordering::Relaxed) {
                    warn!("reading the XDP fast path's per-server counters: {e} (servers' counters lack its frames)");
                }
                Vec::new()
            })
    }

    /// What the XDP program forwarded itself, with the fast path on.
    pub(super) fn fast_path_counters(&self) -> Option<FastPathCounters> {
        let x = self.xdp.as_ref().filter(|x| x.fast_path())?;
        let c = x.fast_counters().ok()?;
        Some(FastPathCounters {
            frames: c.frames,
            bytes: c.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_knob_overrides_the_config_and_refuses_other_values() {
        assert_eq!(fast_path_on(false, None), Ok(false));
        assert_eq!(fast_path_on(true, None), Ok(true));
        assert_eq!(fast_path_on(false, Some("1")), Ok(true));
        assert_eq!(fast_path_on(true, Some("0")), Ok(false));
        for bad in ["", "yes", "true", " 1"] {
            let e = fast_path_on(false, Some(bad)).unwrap_err();
            assert!(e.starts_with("ULVS_XDP_FAST_PATH="), "{e}");
        }
    }
}
