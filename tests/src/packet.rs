//! Crafted frames for packet tests and XDP benchmarks: Ethernet (optionally one 802.1Q or
//! 802.1ad tag), IPv4 (with options) or IPv6, TCP or UDP, with correct IPv4 header and
//! TCP/UDP checksums. Malformed frames are made from good ones: override a field
//! ([`PacketBuilder::ihl`]) or cut the bytes short ([`Frame::truncated`]).
//!
//! ```
//! use tests::packet::PacketBuilder;
//! let frame = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80").vlan(7).build();
//! assert_eq!(frame.l4, 14 + 4 + 20);
//! ```
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Locally administered MACs, so crafted frames never look like real hardware.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// A built frame and where each layer starts, so tests can cut it inside a chosen header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Vec<u8>,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Offset of the payload.
    pub payload: usize,
}

impl Frame {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The first `len` bytes (the whole frame if it is shorter). Length fields inside are
    /// left as they were: the frame claims more than it carries, like a runt on the wire.
    pub fn truncated(&self, len: usize) -> Vec<u8> {
        truncate(&self.bytes, len)
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The first `len` bytes of `bytes` (all of them if it is shorter).
pub fn truncate(bytes: &[u8], len: usize) -> Vec<u8> {
    bytes[..len.min(bytes.len())].to_vec()
}

#[derive(Clone, Copy, Debug)]
enum L4 {
    Tcp {
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
    },
    Udp,
}

/// Builds one Ethernet/IP/TCP-or-UDP frame. Defaults: client MAC to node MAC, no VLAN,
/// TTL/hop limit 64, DF set, TCP SYN with window 65535, empty payload.
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<(u16, u16)>,
    src: SocketAddr,
    dst: SocketAddr,
    l4: L4,
    ttl: u8,
    ipv4_options: Vec<u8>,
    tcp_options: Vec<u8>,
    ihl: Option<u8>,
    payload: Vec<u8>,
}

impl PacketBuilder {
    /// A TCP SYN from `src` to `dst` (`"198.18.0.1:40000"`, `"[2001:db8::1]:443"`).
    ///
    /// # Panics
    /// If an address does not parse or the two are of different families.
    pub fn tcp(src: &str, dst: &str) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                flags: tcp_flags::SYN,
                seq: 1,
                ack: 0,
                window: 65535,
            },
        )
    }

    /// A UDP datagram from `src` to `dst`.
    ///
    /// # Panics
    /// As [`PacketBuilder::tcp`].
    pub fn udp(src: &str, dst: &str) -> Self {
        Self::new(src, dst, L4::Udp)
    }

    fn new(src: &str, dst: &str, l4: L4) -> Self {
        let src: SocketAddr = src
            .parse()
            .unwrap_or_else(|e| panic!("bad address {src:?}: {e}"));
        let dst: SocketAddr = dst
            .parse()
            .unwrap_or_else(|e| panic!("bad address {dst:?}: {e}"));
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "{src} and {dst} are of different families"
        );
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: NODE_MAC,
            vlan: None,
            src,
            dst,
            l4,
            ttl: 64,
            ipv4_options: Vec::new(),
            tcp_options: Vec::new(),
            ihl: None,
            payload: Vec::new(),
        }
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// One 802.1Q tag with VLAN id `vid`.
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlan = Some((ETH_P_8021Q, vid));
        self
    }

    /// One 802.1ad (service) tag with VLAN id `vid`.
    pub fn vlan_8021ad(mut self, vid: u16) -> Self {
        self.vlan = Some((ETH_P_8021AD, vid));
        self
    }

    /// TCP flags (see [`tcp_flags`]). Ignored for UDP.
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        if let L4::Tcp { flags: f, .. } = &mut self.l4 {
            *f = flags;
        }
        self
    }

    /// TCP sequence and acknowledgement numbers. Ignored for UDP.
    pub fn tcp_seq_ack(mut self, seq: u32, ack: u32) -> Self {
        if let L4::Tcp { seq: s, ack: a, .. } = &mut self.l4 {
            *s = seq;
            *a = ack;
        }
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// IPv4 options, padded with End-of-Options to a multiple of 4 bytes (at most 40).
    ///
    /// # Panics
    /// If more than 40 bytes are given.
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        assert!(options.len() <= 40, "IPv4 options are at most 40 bytes");
        self.ipv4_options = options.to_vec();
        self.ipv4_options.resize(options.len().div_ceil(4) * 4, 0);
        self
    }

    /// TCP options, padded with End-of-Options to a multiple of 4 bytes (at most 40).
    ///
    /// # Panics
    /// If more than 40 bytes are given.
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        assert!(options.len() <= 40, "TCP options are at most 40 bytes");
        self.tcp_options = options.to_vec();
        self.tcp_options.resize(options.len().div_ceil(4) * 4, 0);
        self
    }

    /// Writes `ihl` into the IPv4 header's IHL field instead of the true length, to craft
    /// malformed headers. The header bytes themselves are unchanged.
    pub fn ihl(mut self, ihl: u8) -> Self {
        self.ihl = Some(ihl);
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn build(&self) -> Frame {
        let mut b = Vec::with_capacity(128 + self.payload.len());
        let ethertype = if self.src.is_ipv4() {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        b.extend_from_slice(&self.dst_mac);
        b.extend_from_slice(&self.src_mac);
        if let Some((tpid, vid)) = self.vlan {
            b.extend_from_slice(&tpid.to_be_bytes());
            b.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        b.extend_from_slice(&ethertype.to_be_bytes());
        let l3 = b.len();

        let l4_segment = self.l4_segment();
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                b.extend_from_slice(&self.ipv4_header(s, d, &l4_segment))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                b.extend_from_slice(&self.ipv6_header(s, d, &l4_segment))
            }
            _ => unreachable!("families checked in new()"),
        }
        let l4 = b.len();
        b.extend_from_slice(&l4_segment);
        let payload = b.len() - self.payload.len();
        Frame {
            bytes: b,
            l3,
            l4,
            payload,
        }
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::Udp => IPPROTO_UDP,
        }
    }

    /// The TCP or UDP header plus payload, checksum filled in.
    fn l4_segment(&self) -> Vec<u8> {
        let mut s = Vec::with_capacity(20 + self.payload.len());
        s.extend_from_slice(&self.src.port().to_be_bytes());
        s.extend_from_slice(&self.dst.port().to_be_bytes());
        let csum_at = match self.l4 {
            L4::Tcp {
                flags,
                seq,
                ack,
                window,
            } => {
                s.extend_from_slice(&seq.to_be_bytes());
                s.extend_from_slice(&ack.to_be_bytes());
                // Data offset: 5 words plus the options.
                s.push(((5 + self.tcp_options.len() / 4) as u8) << 4);
                s.push(flags);
                s.extend_from_slice(&window.to_be_bytes());
                s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                s.extend_from_slice(&self.tcp_options);
                16
            }
            L4::Udp => {
                let len = u16::try_from(8 + self.payload.len()).expect("UDP datagram too long");
                s.extend_from_slice(&len.to_be_bytes());
                s.extend_from_slice(&[0, 0]);
                6
            }
        };
        s.extend_from_slice(&self.payload);
        let pseudo = pseudo_header(self.src.ip(), self.dst.ip(), self.proto(), s.len());
        let mut csum = checksum(&[&pseudo, &s]);
        if csum == 0 && matches!(self.l4, L4::Udp) {
            // RFC 768: a computed zero is sent as all ones; zero means "no checksum".
            csum = 0xffff;
        }
        s[csum_at..csum_at + 2].copy_from_slice(&csum.to_be_bytes());
        s
    }

    fn ipv4_header(&self, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
        let hlen = 20 + self.ipv4_options.len();
        let total = u16::try_from(hlen + l4.len()).expect("IPv4 packet too long");
        let ihl = self.ihl.unwrap_or((hlen / 4) as u8);
        let mut h = Vec::with_capacity(hlen);
        h.push(0x40 | (ihl & 0x0f));
        h.push(0); // DSCP/ECN
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]); // identification
        h.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
        h.push(self.ttl);
        h.push(self.proto());
        h.extend_from_slice(&[0, 0]); // checksum
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(&self.ipv4_options);
        let csum = checksum(&[&h]);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        h
    }

    fn ipv6_header(&self, src: Ipv6Addr, dst: Ipv6Addr, l4: &[u8]) -> Vec<u8> {
        let plen = u16::try_from(l4.len()).expect("IPv6 payload too long");
        let mut h = Vec::with_capacity(40);
        h.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
        h.extend_from_slice(&plen.to_be_bytes());
        h.push(self.proto());
        h.push(self.ttl);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h
    }
}

/// A frame of any other ethertype: Ethernet header (client to node) then `payload`.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ETH_HLEN + payload.len());
    b.extend_from_slice(&NODE_MAC);
    b.extend_from_slice(&CLIENT_MAC);
    b.extend_from_slice(&ethertype.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A broadcast ARP request: who has `target`? tell `sender`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = Vec::with_capacity(28);
    arp.extend_from_slice(&[0, 1]); // hardware: Ethernet
    arp.extend_from_slice(&ETH_P_IP.to_be_bytes());
    arp.extend_from_slice(&[6, 4, 0, 1]); // sizes, op: request
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    let mut b = ethernet(ETH_P_ARP, &arp);
    b[..6].copy_from_slice(&[0xff; 6]);
    b
}

/// TCP/UDP pseudo-header for the checksum (RFC 793 for IPv4, RFC 8200 section 8.1 for IPv6).
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&u16::try_from(len).expect("segment too long").to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&u32::try_from(len).expect("segment too long").to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => unreachable!("families checked in PacketBuilder::new()"),
    }
    p
}

/// Internet checksum (RFC 1071) over the concatenation of `parts`, each of which but the
/// last must have even length.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checksummed region (with its checksum in place) sums to zero.
    fn verifies(parts: &[&[u8]]) -> bool {
        checksum(parts) == 0
    }

    #[test]
    fn checksum_matches_rfc1071_style_vector() {
        // The classic example header; its checksum field is 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&h]), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verifies(&[&h]));
    }

    #[test]
    fn ipv4_tcp_layout_and_checksums() {
        let f = PacketBuilder::tcp("198.18.0.1:40000", "198.18.0.210:80")
            .payload(b"hello")
            .build();
        assert_eq!((f.l3, f.l4, f.payload, f.len()), (14, 34, 54, 59));
        assert_eq!(&f.bytes[12..14], &ETH_P_IP.to_be_bytes());
        let ip = &f.bytes[f.l3..f.l4];
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 45);
        assert!(verifies(&[ip]));
        let seg = &f.bytes[f.l4..];
        assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), 80);
        let pseudo = pseudo_header(
            "198.18.0.1".parse().expect("addr"),
            "198.18.0.210".parse().expect("addr"),
            IPPROTO_TCP,
            seg.len(),
        );
        assert!(verifies(&[&pseudo, seg]));
    }

    #[test]
    fn ipv6_udp_layout_and_checksum() {
        let f = PacketBuilder::udp("[2001:db8::1]:5353", "[2001:db8::d2]:53")
            .payload(b"odd")
            .build();
        assert_eq!((f.l3, f.l4, f.len()), (14, 54, 54 + 8 + 3));
        let seg = &f.bytes[f.l4..];
        assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 11);
        let pseudo = pseudo_header(
            "2001:db8::1".parse().expect("addr"),
            "2001:db8::d2".parse().expect("addr"),
            IPPROTO_UDP,
            seg.len(),
        );
        assert!(verifies(&[&pseudo, seg]));
        assert_ne!(&seg[6..8], &[0, 0], "IPv6 UDP checksum is mandatory");
    }

    #[test]
    fn vlan_options_ihl_and_truncation() {
        let f = PacketBuilder::udp("198.18.0.1:1", "198.18.0.2:2")
            .vlan_8021ad(0x123)
            .ipv4_options(&[0x01, 0x01, 0x01]) // three NOPs, padded to 4
            .build();
        assert_eq!(&f.bytes[12..18], &[0x88, 0xa8, 0x01, 0x23, 0x08, 0x00]);
        assert_eq!((f.l3, f.l4), (18, 18 + 24));
        assert_eq!(f.bytes[f.l3], 0x46);
        assert!(verifies(&[&f.bytes[f.l3..f.l4]]));

        let bad = PacketBuilder::tcp("198.18.0.1:1", "198.18.0.2:2")
            .ihl(4)
            .build();
        assert_eq!(bad.bytes[bad.l3], 0x44);
        assert_eq!(bad.l4 - bad.l3, 20);

        assert_eq!(f.truncated(10).len(), 10);
        assert_eq!(f.truncated(1000), f.bytes);
    }

    #[test]
    fn arp_and_other_ethertypes() {
        let a = arp_request(
            "198.18.0.1".parse().expect("addr"),
            "198.18.0.210".parse().expect("addr"),
        );
        assert_eq!(a.len(), 42);
        assert_eq!(&a[..6], &[0xff; 6]);
        assert_eq!(&a[12..14], &ETH_P_ARP.to_be_bytes());
        assert_eq!(ethernet(0x88cc, &[0; 46]).len(), 60);
    }
}
