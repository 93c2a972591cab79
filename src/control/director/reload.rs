//! Re-reading the config (SIGHUP, `ulvsadm reload`) on the slow path.

use log::{error, info, warn};

use super::{has_nat, health_targets, nat_servers, unsupported, vips, Director};
use crate::control::config::{Config, HealthKind};
use crate::control::nft;
use crate::control::publish::{self, Runtime};

impl Director {
    /// Re-read the config; on any problem keep the running one.
    pub(super) fn reload(&mut self) -> Result<String, String> {
        let file = self.path.display().to_string();
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(errs) => {
                self.slow.reload_failures += 1;
                for e in &errs.0 {
                    error!("reload rejected: {e}");
                }
                return Err(errs.to_string());
            }
        };
        let mut problems: Vec<String> = unsupported(&new, &file).iter().map(|e| e.to_string()).collect();
        if new.interface != self.cfg.interface {
            problems.push(format!(
                "{file}: interface: cannot change from {} to {} on reload; restart the director",
                self.cfg.interface, new.interface
            ));
        }
        if !problems.is_empty() {
            self.slow.reload_failures += 1;
            for p in &problems {
                error!("reload rejected: {p}");
            }
            return Err(problems.join("\n"));
        }
        for (what, changed) in [
            ("control_socket", new.control_socket != self.cfg.control_socket),
            ("workers", new.workers != self.cfg.workers),
            ("flow_capacity", new.flow_capacity != self.cfg.flow_capacity),
            ("cpus", new.cpus != self.cfg.cpus),
            ("io", new.io != self.cfg.io),
            ("metrics_listen", new.metrics_listen != self.cfg.metrics_listen),
        ] {
            if changed {
                warn!("reload: {what} changed; it takes effect at the next restart");
            }
        }
        let mut rt_probe = Runtime::default();
        std::mem::swap(&mut rt_probe, &mut self.rt);
        let mut rt = rt_probe;
        if let Err(e) = rt.sync(&new) {
            // sync changes nothing on error
            self.rt = rt;
            self.slow.reload_failures += 1;
            return Err(e.to_string());
        }
        let old_vips = vips(&self.cfg);
        let new_vips = vips(&new);
        if old_vips != new_vips || nat_servers(&self.cfg) != nat_servers(&new) {
            if let Err(e) = nft::install(&new.interface, &new_vips, &nat_servers(&new), self.ifinfo.ipv4) {
                // Roll back the runtime to the running config.
                let _ = rt.sync(&self.cfg);
                self.rt = rt;
                self.slow.reload_failures += 1;
                return Err(format!("cannot update the VIP drop rule: {e}"));
            }
            if let Some(Err(e)) = self
                .xdp
                .as_ref()
                .map(|x| x.set_addresses(&new_vips, &nat_servers(&new)))
            {
                if let Some(x) = &self.xdp {
                    let _ = x.set_addresses(&old_vips, &nat_servers(&self.cfg));
                }
                let _ = rt.sync(&self.cfg);
                self.rt = rt;
                self.slow.reload_failures += 1;
                return Err(format!("cannot update the XDP redirect map: {e}"));
            }
        }
        // Keep the running values of what needs a restart.
        let mut new = new;
        new.control_socket = self.cfg.control_socket.clone();
        new.workers = self.cfg.workers;
        new.flow_capacity = self.cfg.flow_capacity;
        new.cpus = self.cfg.cpus.clone();
        new.io = self.cfg.io;
        new.metrics_listen = self.cfg.metrics_listen;
        if has_nat(&new) && !has_nat(&self.cfg) && self.stats.len() > 1 {
            warn!(
                "reload: NAT services with {} workers: reply state is per worker; restart to run 1 worker",
                self.stats.len()
            );
        }
        // Servers of services that are no longer checked are up.
        for s in &new.services {
            if s.health.kind == HealthKind::None {
                for r in &s.real_servers {
                    if let Ok(srt) = rt.find_mut(&new, &s.name, &r.endpoint()) {
                        srt.health = publish::Health::Up;
                    }
                }
            }
        }
        self.rt = rt;
        self.cfg = new;
        self.checker.update(health_targets(&self.cfg, &self.rt));
        let wanted = self.wanted();
        self.neigh.set_wanted(wanted);
        self.arp_tick();
        self.publish();
        let added: Vec<u32> = new_vips
            .iter()
            .filter(|v| !old_vips.contains(v))
            .copied()
            .collect();
        self.announce(&added);
        self.slow.reloads += 1;
        let msg = format!(
            "reloaded {}: {} services, generation {}",
            file,
            self.cfg.services.len(),
            self.slow.generation
        );
        info!("{msg}");
        Ok(msg)
    }
}
