//! In-memory [`Device`] for tests and benchmarks: frames are copied into
//! preallocated slots, so pushing and processing frames does not allocate
//! (unless `capture` keeps copies of what was sent).

use std::collections::VecDeque;

use super::{Action, BatchStats, Device, FastFlow, Frame, RxMeta, TxArena, VnetHdr};

/// Headroom in front of each frame (like the ring's reserve).
pub const HEADROOM: usize = 128;

/// One frame that was transmitted, as captured by [`MemDevice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub bytes: Vec<u8>,
    pub vnet: VnetHdr,
}

/// A `Vec` of frames posing as a network device.
pub struct MemDevice {
    slots: Vec<Box<[u8]>>,
    info: Vec<(usize, RxMeta, VnetHdr)>,
    free: Vec<usize>,
    pending: VecDeque<usize>,
    /// Keep a copy of every transmitted frame (allocates).
    pub capture: bool,
    pub sent: Vec<Sent>,
    pub sent_count: u64,
    pub sent_bytes: u64,
    arena: TxArena,
    /// A stand-in for the XDP fast path, when set: what the worker
    /// installed and removed, and what [`Device::fast_keep`] answers.
    pub fast: Option<MemFast>,
}

/// What a [`MemDevice`] with a fast path was told.
#[derive(Debug, Default, Clone)]
pub struct MemFast {
    /// Installed flows (one per 5-tuple; a new install replaces).
    pub flows: Vec<FastFlow>,
    pub installs: u64,
    pub removes: u64,
    /// `fast_keep` calls.
    pub keep_asked: u64,
    /// `fast_idle` calls.
    pub idle_asked: u64,
    /// Milliseconds since the "program" last forwarded a frame of any
    /// installed flow; `None`: never.
    pub idle_ms: Option<u32>,
}

fn same_tuple(a: &FastFlow, b: &FastFlow) -> bool {
    (a.src, a.dst, a.sport, a.dport, a.proto) == (b.src, b.dst, b.sport, b.dport, b.proto)
}

impl MemFast {
    /// The installed flow with `f`'s 5-tuple.
    pub fn get(&self, f: &FastFlow) -> Option<&FastFlow> {
        self.flows.iter().find(|x| same_tuple(x, f))
    }
}

impl MemDevice {
    /// A device with `slots` buffers of `slot_size` bytes of frame space each
    /// and a 1 MiB transmit arena (room for a segmented 64 KiB super-frame).
    pub fn new(slots: usize, slot_size: usize) -> Self {
        Self::with_arena(slots, slot_size, 1 << 20, 1024)
    }

    /// [`MemDevice::new`] with a transmit arena of `arena_bytes` bytes for at
    /// most `arena_frames` frames: a fuzz target makes a device per input,
    /// and zeroing 1 MiB each time would cost more than the frames.
    pub fn with_arena(slots: usize, slot_size: usize, arena_bytes: usize, arena_frames: usize) -> Self {
        MemDevice {
            slots: (0..slots)
                .map(|_| vec![0u8; HEADROOM + slot_size].into_boxed_slice())
                .collect(),
            info: vec![(0, RxMeta::default(), VnetHdr::default()); slots],
            free: (0..slots).rev().collect(),
            pending: VecDeque::with_capacity(slots),
            capture: true,
            sent: Vec::new(),
            sent_count: 0,
            sent_bytes: 0,
            arena: TxArena::new(arena_bytes, arena_frames),
            fast: None,
        }
    }

    /// Queue a received frame; false when no slot is free or it does not fit.
    pub fn push_rx(&mut self, frame: &[u8], meta: RxMeta, vnet: VnetHdr) -> bool {
        let Some(i) = self.free.pop() else {
            return false;
        };
        if frame.len() > self.slots[i].len() - HEADROOM {
            self.free.push(i);
            return false;
        }
        self.slots[i][HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.info[i] = (frame.len(), meta, vnet);
        self.pending.push_back(i);
        true
    }

    /// Frames waiting to be processed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl Device for MemDevice {
    fn wait(&mut self, _timeout_ms: i32) -> std::io::Result<()> {
        Ok(())
    }

    fn peek_batch<F: FnMut(&[u8], &RxMeta)>(&self, max: usize, mut f: F) {
        for &i in self.pending.iter().take(max) {
            let (len, meta, _) = &self.info[i];
            f(&self.slots[i][HEADROOM..HEADROOM + len], meta);
        }
    }

    fn process_batch<F: FnMut(&mut Frame<'_>, &mut TxArena) -> Action>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> std::io::Result<BatchStats> {
        let mut st = BatchStats::default();
        self.arena.clear();
        while st.received < max {
            let Some(i) = self.pending.pop_front() else {
                break;
            };
            st.received += 1;
            let (len, meta, vnet) = self.info[i];
            let mut frame = Frame::new(&mut self.slots[i], HEADROOM, len, meta, vnet);
            if f(&mut frame, &mut self.arena) == Action::Transmit {
                st.sent += 1;
                self.sent_count += 1;
                self.sent_bytes += frame.len() as u64;
                if self.capture {
                    self.sent.push(Sent {
                        bytes: frame.data().to_vec(),
                        vnet: frame.vnet,
                    });
                }
            }
            self.free.push(i);
        }
        for k in 0..self.arena.len() {
            let f = self.arena.frame_with_vnet(k);
            st.sent += 1;
            self.sent_count += 1;
            self.sent_bytes += (f.len() - VnetHdr::LEN) as u64;
            if self.capture {
                let mut vb = [0u8; VnetHdr::LEN];
                vb.copy_from_slice(&f[..VnetHdr::LEN]);
                self.sent.push(Sent {
                    bytes: f[VnetHdr::LEN..].to_vec(),
                    vnet: VnetHdr::parse(&vb),
                });
            }
        }
        Ok(st)
    }

    fn fast_path(&self) -> bool {
        self.fast.is_some()
    }

    fn fast_install(&mut self, flows: &[FastFlow]) {
        let Some(m) = &mut self.fast else {
            return;
        };
        for f in flows {
            m.installs += 1;
            m.flows.retain(|x| !same_tuple(x, f));
            m.flows.push(*f);
        }
    }

    fn fast_remove(&mut self, flows: &[FastFlow]) {
        let Some(m) = &mut self.fast else {
            return;
        };
        for f in flows {
            m.removes += 1;
            m.flows.retain(|x| !same_tuple(x, f));
        }
    }

    fn fast_idle(&mut self, flow: &FastFlow) -> Option<u32> {
        let m = self.fast.as_mut()?;
        m.idle_asked += 1;
        m.get(flow)?;
        m.idle_ms
    }

    fn fast_keep(&mut self, flow: &FastFlow, timeout_ms: u32) -> Option<u32> {
        let m = self.fast.as_mut()?;
        m.keep_asked += 1;
        m.get(flow)?;
        match m.idle_ms {
            Some(i) if i < timeout_ms => Some(i),
            _ => {
                m.flows.retain(|x| !same_tuple(x, flow));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_shows_the_next_batch_without_taking_it() {
        let mut d = MemDevice::new(4, 64);
        for b in [1u8, 2, 3] {
            let meta = RxMeta {
                pkttype: b,
                ..RxMeta::default()
            };
            assert!(d.push_rx(&[b; 3][..b as usize], meta, VnetHdr::default()));
        }
        let mut seen = vec![];
        d.peek_batch(2, |f, m| seen.push((f.to_vec(), m.pkttype)));
        assert_eq!(seen, vec![(vec![1], 1), (vec![2, 2], 2)]);
        assert_eq!(d.pending(), 3);
        // process_batch then takes the same frames, in the same order.
        let mut taken = vec![];
        d.process_batch(2, |f, _| {
            taken.push((f.data().to_vec(), f.meta.pkttype));
            Action::Drop
        })
        .unwrap();
        assert_eq!(taken, seen);
    }

    #[test]
    fn echo_and_drop() {
        let mut d = MemDevice::new(4, 64);
        assert!(d.push_rx(&[1, 2, 3], RxMeta::default(), VnetHdr::default()));
        assert!(d.push_rx(&[4, 5], RxMeta::default(), VnetHdr::default()));
        assert!(!d.push_rx(&[0; 65], RxMeta::default(), VnetHdr::default()));
        let st = d
            .process_batch(8, |f, _| {
                if f.data()[0] == 1 {
                    f.data_mut()[0] = 9;
                    assert!(f.push_front(2));
                    f.data_mut()[..2].copy_from_slice(&[7, 7]);
                    Action::Transmit
                } else {
                    Action::Drop
                }
            })
            .unwrap();
        assert_eq!(
            st,
            BatchStats {
                received: 2,
                sent: 1,
                tx_failed: 0
            }
        );
        assert_eq!(d.sent[0].bytes, vec![7, 7, 9, 2, 3]);
        assert_eq!(d.pending(), 0);
    }
}
