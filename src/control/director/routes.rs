//! `announce: route` on the director's loop (slow path): the host routes
//! follow the served VIPs (at least one server up) while announcing is on;
//! `ulvsadm announce off` and a clean stop withdraw them all. The kernel
//! does the rest when the process dies (see [`crate::control::hostroutes`]).

use std::collections::BTreeSet;
use std::net::IpAddr;

use log::{info, warn};

use super::{served_vips, Director};
use crate::control::hostroutes::route_name;

fn list(vips: &[IpAddr]) -> String {
    vips.iter().map(|v| route_name(*v)).collect::<Vec<_>>().join(", ")
}

impl Director {
    /// Make the installed host routes match the served VIPs (none when not
    /// announcing). Nothing in the other announce modes.
    pub(super) fn sync_routes(&mut self) {
        let wanted = if self.announcing {
            served_vips(&self.cfg, &self.rt)
        } else {
            BTreeSet::new()
        };
        let Some((dev, routes)) = self.routes.as_mut() else {
            return;
        };
        let r = routes.sync(&wanted);
        if !r.removed.is_empty() {
            info!(
                "withdrew host route(s) {} from table {} (dev {})",
                list(&r.removed),
                dev.table,
                dev.name
            );
        }
        if !r.added.is_empty() {
            info!(
                "installed host route(s) {} in table {} (dev {})",
                list(&r.added),
                dev.table,
                dev.name
            );
        }
        for (vip, what, e) in &r.errors {
            warn!(
                "cannot {what} host route {} in table {}: {e} (retrying)",
                route_name(*vip),
                dev.table
            );
        }
    }

    /// Retry the changes that failed (the loop calls it every 200 ms).
    pub(super) fn retry_routes(&mut self) {
        if self.routes.as_ref().is_some_and(|(_, h)| h.pending()) {
            self.sync_routes();
        }
    }

    /// `ulvsadm announce on|off` with `announce: route`.
    pub(super) fn set_route_announcing(&mut self, on: bool) -> String {
        let was = std::mem::replace(&mut self.announcing, on);
        self.sync_routes();
        let Some((dev, routes)) = self.routes.as_ref() else {
            return String::new();
        };
        let n = routes.installed().count();
        let again = if was == on {
            if on {
                " (it was on)"
            } else {
                " (it was off)"
            }
        } else {
            ""
        };
        let m = if on {
            format!(
                "announcing on{again}: {n} host route(s) in table {} (VIPs with a server up)",
                dev.table
            )
        } else {
            format!(
                "announcing off{again}: host routes withdrawn from table {}",
                dev.table
            )
        };
        info!("{m}");
        m
    }

    /// A clean stop: withdraw every route before the workers stop, so the
    /// routing daemon moves the traffic while this director still forwards.
    pub(super) fn withdraw_routes(&mut self) {
        if self.routes.is_some() {
            self.announcing = false;
            self.sync_routes();
        }
    }
}
