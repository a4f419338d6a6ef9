//! Names and sizes of the pinned maps and programs. The daemon pins each map under
//! `--bpffs DIR/<NAME>`; operators read them with `bpftool map dump pinned DIR/<NAME>`.

/// VIP:port:protocol -> [`crate::VipInfo`].
pub const VIPS: &str = "VIPS";
/// Per-CPU counters, indexed by `vip_id * Reason::COUNT + reason`.
pub const STATS: &str = "STATS";

/// Most VIP:port:protocol entries one node serves.
pub const MAX_VIPS: u32 = 512;
/// Entries in `STATS`: one row of reasons per possible VIP id.
pub const STATS_ENTRIES: u32 = MAX_VIPS * crate::Reason::COUNT;

/// Name of the XDP program in the object file.
pub const PROG_XDP: &str = "lb_xdp";
/// Name of the pinned XDP link.
pub const LINK_XDP: &str = "lb_xdp_link";
