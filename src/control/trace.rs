//! `ulvsadm trace`: the explanation of how the director treats the frames
//! of one 5-tuple, as the director sends it (`--json`) and as `ulvsadm`
//! prints it. The director computes it in `director::trace` from the
//! published table and a copy of the workers' flow entries; nothing here
//! runs on the fast path.

use serde::{Deserialize, Serialize};

/// One flow entry that exists for the 5-tuple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceFlow {
    /// The worker whose table holds it.
    pub worker: usize,
    /// `syn`, `established`, `closing`, `udp`, ...
    pub state: String,
    /// Seconds until it expires if no packet comes.
    pub expires_in: u64,
    /// `local`, or the sync peer that created it (`IP:PORT` as in `sync.peers`).
    #[serde(default)]
    pub origin: String,
    /// The real server it is pinned to.
    pub server: String,
}

/// A real server as the trace names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceServer {
    /// `IP` or `IP:PORT` (NAT), as in the config.
    pub address: String,
    /// `up`, `down`, `draining`, `removed`.
    pub state: String,
    pub weight: u32,
    /// Its resolved MAC (the next hop's for an off-link TUN server).
    pub mac: Option<String>,
    /// Why its health check last failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
}

/// The whole explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub protocol: String,
    pub client: String,
    pub vip: String,
    /// The service matched (none: the frame is dropped, see `drop`).
    pub service: Option<String>,
    /// Its mode and scheduler.
    pub mode: Option<String>,
    pub scheduler: Option<String>,
    /// The worker that receives this tuple's frames; `None` when the NIC's
    /// receive hashing decides (AF_XDP, several queues).
    pub worker: Option<usize>,
    /// The flow entries found (normally one; a synced flow may sit in every
    /// worker when the receiving one cannot be known).
    pub flows: Vec<TraceFlow>,
    /// What the Maglev table gives a new flow of this tuple: what is hashed,
    /// the slot, the table size and the server in the slot.
    pub hash_on: Option<String>,
    pub slot: Option<u32>,
    pub table_size: Option<u32>,
    pub slot_server: Option<String>,
    /// How the server below was chosen: `flow` (the existing entry),
    /// `rescheduled` (the entry's server may not keep it), `maglev` (new flow).
    pub chosen_by: Option<String>,
    /// The server the frame goes to.
    pub server: Option<TraceServer>,
    /// `forward` or `drop`.
    pub verdict: String,
    /// The drop counter (`ulvsadm stats`) that a dropped frame moves.
    #[serde(rename = "drop")]
    pub drop_counter: Option<String>,
    /// What happens to the frame, in words.
    pub action: String,
    /// Workers asked for their entries, and those that answered in time.
    pub workers: usize,
    pub workers_answered: usize,
}

impl Trace {
    /// The explanation as `ulvsadm trace` prints it.
    pub fn lines(&self) -> Vec<String> {
        let mut l = Vec::new();
        l.push(format!(
            "{} {} -> {}",
            self.protocol.to_uppercase(),
            self.client,
            self.vip
        ));
        match &self.service {
            Some(s) => l.push(format!(
                "service:   {s} (mode {}, scheduler {})",
                self.mode.as_deref().unwrap_or("-"),
                self.scheduler.as_deref().unwrap_or("-")
            )),
            None => l.push("service:   none".into()),
        }
        match self.worker {
            Some(w) => l.push(format!("worker:    {w} receives this tuple's frames")),
            None if self.service.is_some() => {
                l.push("worker:    chosen by the NIC's receive hashing (unknown here)".into())
            }
            None => {}
        }
        if self.service.is_some() {
            if self.flows.is_empty() {
                l.push("flow:      none (the next frame creates one)".into());
            }
            for f in &self.flows {
                l.push(format!(
                    "flow:      worker {}: {} -> {}, expires in {} s, created {}",
                    f.worker,
                    f.state,
                    f.server,
                    f.expires_in,
                    if f.origin == "local" || f.origin.is_empty() {
                        "here".to_string()
                    } else {
                        format!("by sync {}", f.origin)
                    }
                ));
            }
        }
        if let (Some(h), Some(slot), Some(m)) = (&self.hash_on, self.slot, self.table_size) {
            l.push(format!(
                "maglev:    hash of the {h} -> slot {slot} of {m} -> {}",
                self.slot_server.as_deref().unwrap_or("no server")
            ));
        }
        if let Some(s) = &self.server {
            let mut line = format!(
                "server:    {} state {} weight {} mac {}",
                s.address,
                s.state,
                s.weight,
                s.mac.as_deref().unwrap_or("unresolved")
            );
            if let Some(by) = &self.chosen_by {
                line.push_str(&format!(" (chosen by {by})"));
            }
            if let Some(r) = &s.health_reason {
                line.push_str(&format!(" [health: {r}]"));
            }
            l.push(line);
        }
        l.push(format!("verdict:   {}", self.action));
        if self.workers_answered < self.workers {
            l.push(format!(
                "(incomplete: {} of {} workers answered in time; a flow entry may be missing)",
                self.workers_answered, self.workers
            ));
        }
        l
    }
}
