//! The MAC a peer node is reached at, from the kernel's neighbour tables: IPv4 from
//! `/proc/thread-self/net/arp`, IPv6 from an `RTM_GETNEIGH` netlink dump (the kernel has no text file
//! for the IPv6 table). Entries count once resolved (reachable, stale, delay, probe or
//! permanent); the health check's TCP connect is what makes the kernel resolve a peer.
use std::net::IpAddr;

/// The MAC of `addr` in this network namespace's neighbour table, if resolved.
pub fn mac_of(addr: IpAddr) -> Option<[u8; 6]> {
    match addr {
        IpAddr::V4(a) => {
            // thread-self: the table of this thread's network namespace (/proc/net follows
            // the process's first thread).
            let table = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
            parse_arp(&table, &a.to_string())
        }
        IpAddr::V6(a) => {
            let dump = dump_v6_neighbours().ok()?;
            parse_neighbours(&dump, &a.octets())
        }
    }
}

pub(crate) fn parse_arp(table: &str, ip: &str) -> Option<[u8; 6]> {
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device; flag 0x2 = complete.
        if f.len() < 4 || f[0] != ip {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        if flags & 0x2 == 0 {
            return None;
        }
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = f[3].split(':').collect();
        if parts.len() != 6 {
            return None;
        }
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16).ok()?;
        }
        return Some(mac);
    }
    None
}

use super::netlink::{self, NLMSG_ERROR, attributes, messages, u16_at};

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
/// struct ndmsg: family, pad, pad, ifindex, state, flags, type.
const NDMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT.
const NUD_RESOLVED: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;

/// Finds `addr` among the `RTM_NEWNEIGH` messages of a dump (the concatenated bytes the
/// kernel returned). Every length is checked: a short or odd message ends the walk.
pub(crate) fn parse_neighbours(dump: &[u8], addr: &[u8; 16]) -> Option<[u8; 6]> {
    for (kind, msg) in messages(dump) {
        if kind == NLMSG_ERROR {
            return None;
        }
        if kind != RTM_NEWNEIGH
            || msg.len() < NDMSG_LEN
            || u16_at(msg, 8).is_none_or(|state| state & NUD_RESOLVED == 0)
        {
            continue;
        }
        let (mut dst, mut mac) = (None, None);
        for (atype, value) in attributes(msg, NDMSG_LEN) {
            match atype {
                NDA_DST => dst = Some(value),
                NDA_LLADDR => mac = <[u8; 6]>::try_from(value).ok(),
                _ => {}
            }
        }
        if dst == Some(&addr[..]) && mac.is_some() {
            return mac;
        }
    }
    None
}

/// The raw messages of an `RTM_GETNEIGH` dump of the IPv6 table.
fn dump_v6_neighbours() -> std::io::Result<Vec<u8>> {
    // ndmsg: family AF_INET6, the rest zero.
    let mut body = [0u8; NDMSG_LEN];
    body[0] = libc::AF_INET6 as u8;
    netlink::request(RTM_GETNEIGH, &body, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_table_parsing() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 198.18.0.11      0x1         0x2         02:aa:bb:cc:dd:0e     *        n0\n\
                 198.18.0.13      0x1         0x0         00:00:00:00:00:00     *        n0\n";
        assert_eq!(
            parse_arp(t, "198.18.0.11"),
            Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e])
        );
        assert_eq!(parse_arp(t, "198.18.0.13"), None);
        assert_eq!(parse_arp(t, "198.18.0.99"), None);
    }

    /// One RTM_NEWNEIGH message: ndmsg with `state`, NDA_DST, NDA_LLADDR.
    fn neigh(addr: [u8; 16], mac: [u8; 6], state: u16) -> Vec<u8> {
        let mut body = vec![0u8; NDMSG_LEN];
        body[0] = libc::AF_INET6 as u8;
        body[8..10].copy_from_slice(&state.to_ne_bytes());
        netlink::push_attribute(&mut body, NDA_DST, &addr);
        netlink::push_attribute(&mut body, NDA_LLADDR, &mac);
        netlink::encode(RTM_NEWNEIGH, 0, &body)
    }

    #[test]
    fn netlink_neighbour_dump_parsing() {
        let a: [u8; 16] = [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
        let b: [u8; 16] = [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
        let mut dump = neigh(b, [2, 0, 0, 0, 0, 0x12], 0x01); // incomplete
        dump.extend(neigh(a, [2, 0, 0, 0, 0, 0x11], 0x04)); // stale: resolved
        assert_eq!(parse_neighbours(&dump, &a), Some([2, 0, 0, 0, 0, 0x11]));
        assert_eq!(
            parse_neighbours(&dump, &b),
            None,
            "unresolved entries do not count"
        );
        // Truncated input ends the walk without panicking.
        for cut in 0..dump.len() {
            let _ = parse_neighbours(&dump[..cut], &a);
        }
        let mut bad = dump.clone();
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(parse_neighbours(&bad, &a), None);
    }
}
