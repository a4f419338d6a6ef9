//! Per-CPU counters kept by the kernel programs.

/// Why a packet to a VIP was counted. The row of `STATS` for a VIP holds one
/// [`Counter`] per reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Passed to the local stack (this node's proxy serves it).
    PassLocal = 0,
}

impl Reason {
    /// Number of reasons: the width of one VIP's row in `STATS`.
    pub const COUNT: u32 = 1;
    pub const ALL: [Reason; Self::COUNT as usize] = [Reason::PassLocal];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassLocal => "pass_local",
        }
    }

    /// Index of `(vip_id, self)` in `STATS`.
    pub const fn index(self, vip_id: u32) -> u32 {
        vip_id * Self::COUNT + self as u32
    }
}

/// Value of `STATS` (per CPU): packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: two u64, no padding (size asserted above).
unsafe impl aya::Pod for Counter {}
