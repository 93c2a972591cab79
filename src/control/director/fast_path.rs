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

use std::sync::atomic::Ordering;

use log::warn;

use super::Director;
use crate::control::snapshot::FastPathCounters;
use crate::fwd::table::FwdTable;

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
