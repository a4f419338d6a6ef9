//! Where frames to a peer node leave this node: the kernel's route to the peer
//! (`RTM_GETROUTE`: output interface and gateway) and that interface's MAC (`RTM_GETLINK`).
//! `steering` uses them to fill `NODES` (the next hop's MAC) and, when the route leaves by
//! another interface than the one `lb_xdp` runs on, `EGRESS` and `TX_PORTS` (XDP_REDIRECT).
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::netlink::{self, attributes, messages};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
const RTMSG_LEN: usize = 12;
/// struct ifinfomsg: family, pad, type (u16), index (i32), flags, change (u32).
const IFINFOMSG_LEN: usize = 16;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFLA_ADDRESS: u16 = 1;

/// The route the kernel picks for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Output interface.
    pub ifindex: u32,
    /// The router frames go to; `None` when the destination is on the link itself.
    pub gateway: Option<IpAddr>,
}

impl NextHop {
    /// The address whose MAC frames to `dst` are sent to.
    pub fn l2_neighbour(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
}

/// The kernel's route to `dst` in this thread's network namespace.
pub fn next_hop(dst: IpAddr) -> io::Result<NextHop> {
    let (family, addr): (u8, Vec<u8>) = match dst {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let mut body = vec![0u8; RTMSG_LEN];
    body[0] = family;
    body[1] = (addr.len() * 8) as u8;
    netlink::push_attribute(&mut body, RTA_DST, &addr);
    let reply = netlink::request(RTM_GETROUTE, &body, false)?;
    parse_route(&reply).ok_or_else(|| io::Error::other(format!("no usable route to {dst}")))
}

/// The hardware address of interface `ifindex`.
pub fn link_mac(ifindex: u32) -> io::Result<[u8; 6]> {
    let mut body = vec![0u8; IFINFOMSG_LEN];
    body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    let reply = netlink::request(RTM_GETLINK, &body, false)?;
    parse_link_mac(&reply)
        .ok_or_else(|| io::Error::other(format!("interface {ifindex} has no Ethernet address")))
}

/// The name of the interface that holds address `addr` in this network namespace.
pub fn interface_with(addr: IpAddr) -> io::Result<Option<String>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        let here = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            }
        };
        if here == Some(addr) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// Output interface and gateway of the first `RTM_NEWROUTE` in a reply.
pub(crate) fn parse_route(reply: &[u8]) -> Option<NextHop> {
    let (_, msg) = messages(reply).find(|(kind, _)| *kind == RTM_NEWROUTE)?;
    let family = *msg.first()?;
    if msg.len() < RTMSG_LEN {
        return None;
    }
    let (mut ifindex, mut gateway) = (None, None);
    for (kind, value) in attributes(msg, RTMSG_LEN) {
        match kind {
            RTA_OIF => ifindex = netlink::u32_at(value, 0),
            RTA_GATEWAY => {
                gateway = match (i32::from(family), value.len()) {
                    (libc::AF_INET, 4) => {
                        let b: [u8; 4] = value.try_into().ok()?;
                        Some(IpAddr::V4(Ipv4Addr::from(b)))
                    }
                    (libc::AF_INET6, 16) => {
                        let b: [u8; 16] = value.try_into().ok()?;
                        Some(IpAddr::V6(Ipv6Addr::from(b)))
                    }
                    _ => return None,
                }
            }
            _ => {}
        }
    }
    Some(NextHop {
        ifindex: ifindex.filter(|i| *i != 0)?,
        gateway,
    })
}

/// `IFLA_ADDRESS` of the first `RTM_NEWLINK` in a reply, when it is 6 bytes (Ethernet).
pub(crate) fn parse_link_mac(reply: &[u8]) -> Option<[u8; 6]> {
    let (_, msg) = messages(reply).find(|(kind, _)| *kind == RTM_NEWLINK)?;
    attributes(msg, IFINFOMSG_LEN)
        .find(|(kind, _)| *kind == IFLA_ADDRESS)
        .and_then(|(_, v)| <[u8; 6]>::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_reply(family: u8, oif: Option<u32>, gateway: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![0u8; RTMSG_LEN];
        body[0] = family;
        netlink::push_attribute(&mut body, RTA_DST, &[198, 19, 0, 12]);
        if let Some(oif) = oif {
            netlink::push_attribute(&mut body, RTA_OIF, &oif.to_ne_bytes());
        }
        if let Some(gw) = gateway {
            netlink::push_attribute(&mut body, RTA_GATEWAY, gw);
        }
        netlink::encode(RTM_NEWROUTE, 0, &body)
    }

    #[test]
    fn routes_give_the_interface_and_the_gateway() {
        let direct = route_reply(libc::AF_INET as u8, Some(7), None);
        assert_eq!(
            parse_route(&direct),
            Some(NextHop {
                ifindex: 7,
                gateway: None
            })
        );
        let via = route_reply(libc::AF_INET as u8, Some(3), Some(&[198, 18, 0, 1]));
        let hop = parse_route(&via).expect("route");
        assert_eq!(hop.gateway, Some("198.18.0.1".parse().expect("ip")));
        assert_eq!(
            hop.l2_neighbour("198.19.0.12".parse().expect("ip")),
            "198.18.0.1".parse::<IpAddr>().expect("ip")
        );
        let gw6: [u8; 16] = "fe80::1".parse::<Ipv6Addr>().expect("ip").octets();
        let v6 = route_reply(libc::AF_INET6 as u8, Some(3), Some(&gw6));
        assert_eq!(
            parse_route(&v6).and_then(|h| h.gateway),
            Some("fe80::1".parse().expect("ip"))
        );
        // No output interface, a gateway of the wrong size, truncations: no route, no panic.
        assert_eq!(parse_route(&route_reply(2, None, None)), None);
        assert_eq!(parse_route(&route_reply(2, Some(3), Some(&[1, 2]))), None);
        for cut in 0..via.len() {
            let _ = parse_route(&via[..cut]);
        }
    }

    #[test]
    fn link_replies_give_the_ethernet_address() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        netlink::push_attribute(&mut body, 3, b"b9\0");
        netlink::push_attribute(&mut body, IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9]);
        let reply = netlink::encode(RTM_NEWLINK, 0, &body);
        assert_eq!(parse_link_mac(&reply), Some([2, 0, 0, 0, 0, 9]));
        let mut tun = vec![0u8; IFINFOMSG_LEN];
        netlink::push_attribute(&mut tun, IFLA_ADDRESS, &[198, 19, 0, 1]);
        assert_eq!(parse_link_mac(&netlink::encode(RTM_NEWLINK, 0, &tun)), None);
    }

    /// The kernel's own answer: the route to 127.0.0.1 leaves by `lo`, which has a
    /// (zero) Ethernet address and holds 127.0.0.1.
    #[test]
    fn loopback_route_from_the_kernel() {
        let hop = next_hop("127.0.0.1".parse().expect("ip")).expect("route to 127.0.0.1");
        assert_eq!(hop.gateway, None);
        assert_eq!(link_mac(hop.ifindex).expect("lo's address"), [0; 6]);
        let lo = interface_with("127.0.0.1".parse().expect("ip")).expect("getifaddrs");
        assert_eq!(lo.as_deref(), Some("lo"));
        assert_eq!(
            interface_with("198.18.255.254".parse().expect("ip")).expect("getifaddrs"),
            None
        );
    }
}
