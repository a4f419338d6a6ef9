//! Writing the kernel policy and configuration into the maps of a loaded (or pinned)
//! object, as diffs: an unchanged entry is never rewritten, so a republish of the same
//! configuration costs a few reads and no writes.
use std::{collections::HashSet, net::IpAddr, time::Duration};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap as BpfHashMap,
        lpm_trie::{Key, LpmTrie},
    },
};
use lb_common::{
    ALLOW_V4, ALLOW_V6, AclValue, CONFIG, CONFIG_KEY, Config, DENY_V4, DENY_V6, PENALTY, SourceKey,
};

use super::{
    DataplaneError, map_err,
    policy::{Cidr, KernelPolicy},
};

/// The `CONFIG` entry as it is in the kernel now.
pub fn read_config(ebpf: &Ebpf) -> Result<Config, DataplaneError> {
    let map = ebpf.map(CONFIG).ok_or(DataplaneError::Missing(CONFIG))?;
    let array: Array<_, Config> = Array::try_from(map).map_err(map_err(CONFIG))?;
    array.get(&CONFIG_KEY, 0).map_err(map_err(CONFIG))
}

/// Writes `cfg` into `CONFIG` unless it is already there. One 80-byte element written by
/// one syscall: a packet sees the old record or the new one, never a mix.
pub fn write_config(ebpf: &mut Ebpf, cfg: &Config) -> Result<(), DataplaneError> {
    if read_config(ebpf)? == *cfg {
        return Ok(());
    }
    let map = ebpf
        .map_mut(CONFIG)
        .ok_or(DataplaneError::Missing(CONFIG))?;
    let mut array: Array<_, Config> = Array::try_from(map).map_err(map_err(CONFIG))?;
    array.set(CONFIG_KEY, cfg, 0).map_err(map_err(CONFIG))
}

/// Makes one LPM trie hold exactly `wanted` (prefix length, address bytes).
fn sync_trie<const N: usize>(
    ebpf: &mut Ebpf,
    name: &'static str,
    wanted: &[(u32, [u8; N])],
) -> Result<(), DataplaneError>
where
    [u8; N]: aya::Pod,
{
    let map = ebpf.map_mut(name).ok_or(DataplaneError::Missing(name))?;
    let mut trie: LpmTrie<_, [u8; N], AclValue> = LpmTrie::try_from(map).map_err(map_err(name))?;
    let want: HashSet<(u32, [u8; N])> = wanted.iter().copied().collect();
    let have: HashSet<(u32, [u8; N])> = trie
        .keys()
        .filter_map(Result::ok)
        .map(|k| (k.prefix_len(), k.data()))
        .collect();
    for (len, data) in have.difference(&want) {
        trie.remove(&Key::new(*len, *data)).map_err(map_err(name))?;
    }
    for (len, data) in want.difference(&have) {
        trie.insert(&Key::new(*len, *data), 1, 0)
            .map_err(map_err(name))?;
    }
    Ok(())
}

/// (prefix length, address bytes) of one trie entry.
type Prefix<const N: usize> = (u32, [u8; N]);

fn split(cidrs: &[Cidr]) -> (Vec<Prefix<4>>, Vec<Prefix<16>>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for c in cidrs {
        match c.addr {
            IpAddr::V4(a) => v4.push((u32::from(c.prefix), a.octets())),
            IpAddr::V6(a) => v6.push((u32::from(c.prefix), a.octets())),
        }
    }
    (v4, v6)
}

/// Writes the ACL tries and the policy's part of `CONFIG`.
///
/// Order matters for a packet arriving in between: allow entries are written before
/// `CONFIG` turns the allow list on, and the deny list is complete before that too.
pub fn write_policy(ebpf: &mut Ebpf, policy: &KernelPolicy) -> Result<(), DataplaneError> {
    let (deny4, deny6) = split(&policy.deny);
    let (allow4, allow6) = split(&policy.allow);
    sync_trie(ebpf, DENY_V4, &deny4)?;
    sync_trie(ebpf, DENY_V6, &deny6)?;
    sync_trie(ebpf, ALLOW_V4, &allow4)?;
    sync_trie(ebpf, ALLOW_V6, &allow6)?;
    let penalties = penalty_box_in_use(ebpf)?;
    let mut cfg = read_config(ebpf)?;
    policy.apply_to(&mut cfg);
    cfg.penalty_active |= u32::from(penalties);
    write_config(ebpf, &cfg)
}

/// True when `PENALTY` holds any entry (from this run or one before a restart): `lb_xdp`
/// only looks sources up there while `Config::penalty_active` is set.
fn penalty_box_in_use(ebpf: &Ebpf) -> Result<bool, DataplaneError> {
    let map = ebpf.map(PENALTY).ok_or(DataplaneError::Missing(PENALTY))?;
    let penalty: BpfHashMap<_, SourceKey, u64> =
        BpfHashMap::try_from(map).map_err(map_err(PENALTY))?;
    Ok(penalty.keys().next().is_some())
}

/// The kernel's monotonic clock (what `bpf_ktime_get_ns` reads).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

pub fn source_key(addr: IpAddr) -> SourceKey {
    match addr {
        IpAddr::V4(a) => SourceKey::v4(a.octets()),
        IpAddr::V6(a) => SourceKey::v6(a.octets()),
    }
}

/// Puts `addr` in the penalty box for `duration` (what the L7 rate limiter calls for an
/// abusive client; `penalty-seconds` is the usual duration).
pub fn penalize(ebpf: &mut Ebpf, addr: IpAddr, duration: Duration) -> Result<(), DataplaneError> {
    let map = ebpf
        .map_mut(PENALTY)
        .ok_or(DataplaneError::Missing(PENALTY))?;
    let mut penalty: BpfHashMap<_, SourceKey, u64> =
        BpfHashMap::try_from(map).map_err(map_err(PENALTY))?;
    let until =
        monotonic_ns().saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    penalty
        .insert(source_key(addr), until, 0)
        .map_err(map_err(PENALTY))?;
    let mut cfg = read_config(ebpf)?;
    if cfg.penalty_active == 0 {
        cfg.penalty_active = 1;
        write_config(ebpf, &cfg)?;
    }
    Ok(())
}
