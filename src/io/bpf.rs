//! A labelled assembler for the two BPF dialects the director loads (slow
//! path, at start): the classic BPF fanout program of the AF_PACKET ring
//! ([`super::packet_ring::fanout_program`]) and the eBPF program of AF_XDP
//! ([`super::xdp`]). Jumps name a label; their offsets are computed when the
//! program is finished, so adding an instruction can never silently retarget
//! a jump the way a hand-numbered listing does.
//!
//! Both dialects jump forward only here (cBPF cannot jump back at all), so
//! a jump to a label placed before it is refused.

use super::sys::xdp::Insn;

/// Which jump field of an instruction a label fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// The only target: eBPF `off`, cBPF `BPF_JA`'s `k`.
    Always,
    /// cBPF `jt`: taken when the condition holds.
    True,
    /// cBPF `jf`: taken when it does not.
    False,
}

/// An instruction whose jump fields the assembler can fill.
pub trait Instruction: Copy {
    /// Make jump field `which` skip `rel` instructions after this one.
    ///
    /// # Panics
    /// If `rel` does not fit the field (255 for cBPF conditionals).
    fn set_jump(&mut self, which: Branch, rel: usize);
}

impl Instruction for libc::sock_filter {
    fn set_jump(&mut self, which: Branch, rel: usize) {
        let short = || u8::try_from(rel).expect("a cBPF conditional jumps at most 255 instructions");
        match which {
            Branch::Always => self.k = u32::try_from(rel).expect("cBPF jump"),
            Branch::True => self.jt = short(),
            Branch::False => self.jf = short(),
        }
    }
}

impl Instruction for Insn {
    fn set_jump(&mut self, which: Branch, rel: usize) {
        assert_eq!(which, Branch::Always, "eBPF jumps have one target");
        self.off = i16::try_from(rel).expect("an eBPF jump spans at most 32767 instructions");
    }
}

/// Instructions, labels, and the jumps to fix up when the program is done.
pub struct Asm<I, L> {
    insns: Vec<I>,
    fixups: Vec<(usize, Branch, L)>,
    labels: Vec<(L, usize)>,
}

impl<I: Instruction, L: Copy + Eq + std::fmt::Debug> Asm<I, L> {
    pub fn new() -> Self {
        Asm {
            insns: Vec::with_capacity(64),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Append an instruction that does not jump.
    pub fn push(&mut self, insn: I) {
        self.insns.push(insn);
    }

    /// Append a jump whose field `which` goes to `to`; other fields stay as
    /// given (a cBPF conditional's other branch is usually 0: the next one).
    pub fn push_jump(&mut self, insn: I, which: Branch, to: L) {
        self.fixups.push((self.insns.len(), which, to));
        self.insns.push(insn);
    }

    /// Append a cBPF-style conditional: `if_true` / `if_false` name labels,
    /// `None` falls through to the next instruction.
    pub fn push_branch(&mut self, insn: I, if_true: Option<L>, if_false: Option<L>) {
        let at = self.insns.len();
        self.insns.push(insn);
        for (which, to) in [(Branch::True, if_true), (Branch::False, if_false)] {
            if let Some(to) = to {
                self.fixups.push((at, which, to));
            }
        }
    }

    /// Place `l` at the next instruction.
    ///
    /// # Panics
    /// If `l` was placed before.
    pub fn label(&mut self, l: L) {
        assert!(
            self.labels.iter().all(|(p, _)| *p != l),
            "label {l:?} placed twice"
        );
        self.labels.push((l, self.insns.len()));
    }

    /// Fill in every jump and return the program.
    ///
    /// # Panics
    /// If a jump names a label that was never placed, or one placed at or
    /// before the jump (a loop), or beyond the last instruction.
    pub fn finish(mut self) -> Vec<I> {
        for &(at, which, to) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map(|&(_, pc)| pc)
                .unwrap_or_else(|| panic!("label {to:?} is never placed"));
            assert!(target > at, "jump at {at} to {to:?} goes backwards");
            assert!(target < self.insns.len(), "label {to:?} is past the end");
            self.insns[at].set_jump(which, target - at - 1);
        }
        self.insns
    }
}

impl<I: Instruction, L: Copy + Eq + std::fmt::Debug> Default for Asm<I, L> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum L {
        A,
        B,
    }

    fn stmt(code: u16, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    #[test]
    fn cbpf_branches_are_relative_to_the_next_instruction() {
        let mut a = Asm::new();
        a.push_branch(stmt(0x15, 1), None, Some(L::B)); // 0
        a.push_jump(stmt(0x05, 0), Branch::Always, L::A); // 1
        a.push(stmt(0x06, 1)); // 2
        a.label(L::A);
        a.push(stmt(0x06, 2)); // 3
        a.label(L::B);
        a.push(stmt(0x06, 3)); // 4
        let p = a.finish();
        assert_eq!((p[0].jt, p[0].jf), (0, 3));
        assert_eq!(p[1].k, 1);
    }

    #[test]
    fn ebpf_offsets() {
        let mut a = Asm::new();
        a.push_jump(Insn::new(0x15, 0, 0, 0, 0), Branch::Always, L::A);
        a.push(Insn::new(0x95, 0, 0, 0, 0));
        a.label(L::A);
        a.push(Insn::new(0x95, 0, 0, 0, 0));
        assert_eq!(a.finish()[0].off, 1);
    }

    #[test]
    #[should_panic(expected = "never placed")]
    fn a_missing_label_is_refused() {
        let mut a: Asm<Insn, L> = Asm::new();
        a.push_jump(Insn::new(0x05, 0, 0, 0, 0), Branch::Always, L::B);
        a.push(Insn::new(0x95, 0, 0, 0, 0));
        a.finish();
    }

    #[test]
    #[should_panic(expected = "backwards")]
    fn a_backward_jump_is_refused() {
        let mut a: Asm<Insn, L> = Asm::new();
        a.label(L::A);
        a.push_jump(Insn::new(0x05, 0, 0, 0, 0), Branch::Always, L::A);
        a.finish();
    }
}
