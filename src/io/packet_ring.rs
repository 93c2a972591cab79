//! The AF_PACKET [`Device`]: a TPACKET_V2 RX ring with `PACKET_VNET_HDR`,
//! transmitting batches with `sendmmsg` (fast path). The mechanics are in
//! [`super::sys::PacketRing`]; this file adapts it to the trait.

use std::io;

use super::sys::{PacketRing, RingConfig};
use super::{Action, BatchStats, Device, Frame, TxArena};

/// A worker's AF_PACKET device.
pub struct PacketDevice {
    ring: PacketRing,
}

impl PacketDevice {
    /// Open a ring on interface `ifindex`.
    ///
    /// # Errors
    /// Socket setup failed (see [`PacketRing::new`]).
    pub fn open(ifindex: i32, cfg: RingConfig) -> io::Result<Self> {
        Ok(PacketDevice {
            ring: PacketRing::new(ifindex, cfg)?,
        })
    }
}

impl Device for PacketDevice {
    fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        self.ring.wait(timeout_ms)
    }

    fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        f: F,
    ) -> io::Result<BatchStats> {
        self.ring.process_batch(max, f)
    }

    fn ring_drops(&mut self) -> u64 {
        self.ring.ring_drops()
    }
}
