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
            let dump = netlink::dump_v6_neighbours().ok()?;
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

const NLMSG_HDRLEN: usize = 16;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWNEIGH: u16 = 28;
/// struct ndmsg: family, pad, pad, ifindex, state, flags, type.
const NDMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT.
const NUD_RESOLVED: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Finds `addr` among the `RTM_NEWNEIGH` messages of a dump (the concatenated bytes the
/// kernel returned). Every length is checked: a short or odd message ends the walk.
pub(crate) fn parse_neighbours(dump: &[u8], addr: &[u8; 16]) -> Option<[u8; 6]> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= dump.len() {
        let len = u32_at(dump, off)? as usize;
        let kind = u16_at(dump, off + 4)?;
        if len < NLMSG_HDRLEN || off + len > dump.len() {
            return None;
        }
        let msg = &dump[off + NLMSG_HDRLEN..off + len];
        if kind == NLMSG_DONE || kind == NLMSG_ERROR {
            return None;
        }
        if kind == RTM_NEWNEIGH
            && msg.len() >= NDMSG_LEN
            && u16_at(msg, 8).is_some_and(|state| state & NUD_RESOLVED != 0)
        {
            let (mut dst, mut mac) = (None, None);
            let mut a = NDMSG_LEN;
            while a + 4 <= msg.len() {
                let alen = u16_at(msg, a)? as usize;
                let atype = u16_at(msg, a + 2)?;
                if alen < 4 || a + alen > msg.len() {
                    break;
                }
                let value = &msg[a + 4..a + alen];
                match atype {
                    NDA_DST => dst = Some(value),
                    NDA_LLADDR => mac = <[u8; 6]>::try_from(value).ok(),
                    _ => {}
                }
                a += (alen + 3) & !3;
            }
            if dst == Some(&addr[..]) && mac.is_some() {
                return mac;
            }
        }
        off += (len + 3) & !3;
    }
    None
}

mod netlink {
    use std::io;

    use super::{NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, u16_at, u32_at};

    const RTM_GETNEIGH: u16 = 30;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    /// A dump of a large table ends within this many reads (each up to 64 KiB).
    const MAX_READS: usize = 1024;

    /// Closes the socket when dropped.
    struct Fd(libc::c_int);

    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: the fd is ours and closed once.
            unsafe { libc::close(self.0) };
        }
    }

    /// The raw messages of an `RTM_GETNEIGH` dump of the IPv6 table, up to `NLMSG_DONE`.
    pub fn dump_v6_neighbours() -> io::Result<Vec<u8>> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = Fd(fd);
        // nlmsghdr + ndmsg (family AF_INET6, the rest zero).
        let mut req = [0u8; NLMSG_HDRLEN + super::NDMSG_LEN];
        let req_len = req.len() as u32;
        req[0..4].copy_from_slice(&req_len.to_ne_bytes());
        req[4..6].copy_from_slice(&RTM_GETNEIGH.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        req[NLMSG_HDRLEN] = libc::AF_INET6 as u8;
        // SAFETY: sends our buffer on our socket; the kernel is the default destination.
        if unsafe { libc::send(fd.0, req.as_ptr().cast(), req.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        for _ in 0..MAX_READS {
            // SAFETY: receives into our buffer, at most its length.
            let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let chunk = &buf[..n as usize];
            out.extend_from_slice(chunk);
            // Done when this read holds NLMSG_DONE (or an error) at a message boundary.
            let mut off = 0;
            while off + NLMSG_HDRLEN <= chunk.len() {
                let (Some(len), Some(kind)) = (u32_at(chunk, off), u16_at(chunk, off + 4)) else {
                    break;
                };
                if kind == NLMSG_DONE || kind == NLMSG_ERROR {
                    return Ok(out);
                }
                if (len as usize) < NLMSG_HDRLEN {
                    break;
                }
                off += (len as usize + 3) & !3;
            }
            if n == 0 {
                break;
            }
        }
        Err(io::Error::other("netlink neighbour dump did not end"))
    }
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
        for (kind, value) in [(NDA_DST, &addr[..]), (NDA_LLADDR, &mac[..])] {
            let len = 4 + value.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(value);
            body.resize((body.len() + 3) & !3, 0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
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
