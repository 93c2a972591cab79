//! Authentication of sync datagrams (slow path): the HMAC-SHA256 trailer and
//! the per-peer replay window.
//!
//! The MAC proves a datagram was made by a holder of the shared key; the
//! replay window proves it was not already accepted. Both are checked before
//! anything of the datagram is used, the window only after the MAC (so a
//! forged datagram can never move a window).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::wire::MAC_LEN;

/// Shortest accepted key: 16 bytes (128 bits), below which an HMAC key is
/// guessable in principle; 32 random bytes are recommended
/// (`head -c 32 /dev/urandom > sync.key`).
pub const MIN_KEY_LEN: usize = crate::control::config::MIN_SYNC_KEY_LEN;

/// Sequence numbers remembered behind the newest one seen from a peer. A
/// datagram reordered by more than this is dropped as a replay; sync peers
/// are on one segment, where reordering is rare and shallow.
pub const WINDOW: u64 = 1024;

/// The shared key, as the whole content of `sync.key_file`.
#[derive(Clone)]
pub struct Key {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key of any length (the config has checked [`MIN_KEY_LEN`]).
    pub fn new(bytes: &[u8]) -> Self {
        Key {
            // HMAC takes keys of every length; this cannot fail.
            mac: Hmac::<Sha256>::new_from_slice(bytes).expect("HMAC accepts any key length"),
        }
    }

    /// HMAC-SHA256 of `data`.
    pub fn sign(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.mac.clone();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// True when `mac` is the HMAC of `data` (constant-time comparison).
    pub fn verify(&self, data: &[u8], mac: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(data);
        m.verify_slice(mac).is_ok()
    }
}

/// Why the window refused a (boot, seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// The boot stamp is older than one already accepted: a datagram from
    /// an earlier run of the peer.
    OldBoot,
    /// Older than the window.
    TooOld,
    /// Already accepted.
    Seen,
}

/// One peer's replay state: the newest boot stamp accepted, the highest
/// sequence number accepted under it, and which of the [`WINDOW`] numbers
/// below it were accepted.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// `None` until the first datagram is accepted.
    boot: Option<u64>,
    top: u64,
    /// Bit `i` (word i / 64, bit i % 64) set: `top - i` was accepted.
    bits: [u64; (WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// Accept (boot, seq) once: record it and return `Ok`, or say why not
    /// (and change nothing).
    ///
    /// # Errors
    /// The [`Replay`] reason.
    pub fn accept(&mut self, boot: u64, seq: u64) -> Result<(), Replay> {
        match self.boot {
            Some(b) if boot < b => return Err(Replay::OldBoot),
            Some(b) if boot == b => {}
            // First datagram, or the peer restarted: a fresh window.
            _ => {
                self.boot = Some(boot);
                self.top = seq;
                self.bits = Default::default();
                self.set(0);
                return Ok(());
            }
        }
        if seq > self.top {
            self.shift(seq - self.top);
            self.top = seq;
            self.set(0);
            return Ok(());
        }
        let behind = self.top - seq;
        if behind >= WINDOW {
            return Err(Replay::TooOld);
        }
        if self.get(behind) {
            return Err(Replay::Seen);
        }
        self.set(behind);
        Ok(())
    }

    fn get(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, i: u64) {
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Move the window `n` numbers up (bit i becomes bit i + n).
    fn shift(&mut self, n: u64) {
        if n >= WINDOW {
            self.bits = Default::default();
            return;
        }
        let words = (n / 64) as usize;
        let bits = (n % 64) as u32;
        let len = self.bits.len();
        for w in (0..len).rev() {
            let lo = w.checked_sub(words).map_or(0, |s| self.bits[s]);
            let carry = match (bits, w.checked_sub(words + 1)) {
                (0, _) | (_, None) => 0,
                (b, Some(s)) => self.bits[s] >> (64 - b),
            };
            self.bits[w] = (lo << bits) | carry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Expected values computed with Python's standard library, an oracle
    /// written by others:
    /// `python3 -c 'import hmac,hashlib;print(hmac.new(b"0123456789abcdef",
    /// b"ULVS sync test vector", hashlib.sha256).hexdigest())'`
    /// and RFC 4231 test case 2 (key "Jefe").
    #[test]
    fn hmac_matches_pythons() {
        let k = Key::new(b"0123456789abcdef");
        let m = k.sign(b"ULVS sync test vector");
        assert_eq!(hex(&m), PY_VECTOR);
        assert!(k.verify(b"ULVS sync test vector", &m));
        let mut bad = m;
        bad[31] ^= 1;
        assert!(!k.verify(b"ULVS sync test vector", &bad));
        assert!(!k.verify(b"ULVS sync test vectoR", &m));
        assert!(!k.verify(b"ULVS sync test vector", &m[..31]));
        let jefe = Key::new(b"Jefe").sign(b"what do ya want for nothing?");
        assert_eq!(
            hex(&jefe),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    const PY_VECTOR: &str = "c37ccd77e0123f31b74022975247b3226dbea6b9376ca4e621f04a961cbf021c";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn window_accepts_each_number_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(10, 5), Ok(()));
        assert_eq!(w.accept(10, 5), Err(Replay::Seen));
        assert_eq!(w.accept(10, 3), Ok(()), "reordered, inside the window");
        assert_eq!(w.accept(10, 3), Err(Replay::Seen));
        assert_eq!(w.accept(10, 6), Ok(()));
        assert_eq!(w.accept(10, 5), Err(Replay::Seen));
        assert_eq!(w.accept(10, 6 + WINDOW), Ok(()));
        assert_eq!(w.accept(10, 6), Err(Replay::TooOld));
        assert_eq!(w.accept(10, 7), Ok(()), "exactly WINDOW-1 behind");
        assert_eq!(w.accept(9, 100_000), Err(Replay::OldBoot));
        assert_eq!(w.accept(11, 0), Ok(()), "restarted peer: fresh window");
        assert_eq!(w.accept(11, 0), Err(Replay::Seen));
        assert_eq!(w.accept(10, 100_000), Err(Replay::OldBoot));
    }

    proptest! {
        /// Against a model that remembers every accepted number.
        #[test]
        fn window_matches_a_model(seqs in proptest::collection::vec(0u64..3000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut top: Option<u64> = None;
            for s in seqs {
                let want = if seen.contains(&s) {
                    Err(Replay::Seen)
                } else if top.is_some_and(|t| s + WINDOW <= t) {
                    Err(Replay::TooOld)
                } else {
                    Ok(())
                };
                let got = w.accept(1, s);
                // A number below the window may also have been seen; the
                // window reports it as too old, which the model allows.
                if !(want == Err(Replay::Seen) && got == Err(Replay::TooOld)) {
                    prop_assert_eq!(got, want, "seq {}", s);
                }
                if got.is_ok() {
                    seen.insert(s);
                    top = Some(top.map_or(s, |t| t.max(s)));
                }
            }
        }
    }
}
