//! SYN flood defence, after the kernel's xdp_synproxy selftest. When a VIP receives more
//! SYNs per second than `syn-cookie-threshold`, SYNs of flows this node serves are answered
//! here: a SYN-ACK whose sequence number is a SYN cookie (`bpf_tcp_raw_gen_syncookie_*`: the
//! kernel's own algorithm and secret), sent back with XDP_TX, no state kept. The returning
//! ACK is checked with `bpf_tcp_raw_check_syncookie_*` and passed to the stack, where the
//! listener's SYN-cookie code (`net.ipv4.tcp_syncookies` >= 1) turns it into an established
//! connection that the proxy accepts.
//!
//! The kernel only takes a cookie ACK while its listener has "recently overflowed"
//! (`tcp_synq_no_recent_overflow`: within the last two minutes). A listener that never saw
//! the flood (because we answered every SYN) would reset those ACKs, so each CPU in cookie
//! mode calls `bpf_tcp_gen_syncookie` on the real listener at most every
//! [`LISTENER_REFRESH_NS`]: that marks it as overflowing (`tcp_synq_overflow`), exactly as a
//! full SYN queue would. No listener, or one that cannot take cookies (syncookies off, or an
//! IPv6 socket for an IPv4 SYN): the SYN goes to the stack as usual.
//!
//! Limits: the SYN-ACK carries only the MSS option (window scaling, SACK and timestamps
//! would need the listener's per-connection timestamp offset) — the trade the kernel makes
//! for cookies without timestamps. SYNs Maglev gives to another node are steered as usual
//! and that node's kernel answers them with its own cookies (the secret is per node, so one
//! node cannot admit another's cookie). IPv4 SYNs with IP options go to the stack.
use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple, iphdr, ipv6hdr, tcphdr},
    cty::c_void,
    helpers::{
        bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_gen_syncookie,
        bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_tail,
        bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use lb_common::{Config, FAMILY_V4, SynWindow};

use crate::{
    clock, csum,
    maps::{SCRATCH, SYN_RATE},
    parse::{IPV4_HLEN, IPV6_HLEN, Packet},
};

const WINDOW_NS: u64 = 1_000_000_000;
/// How often a CPU in cookie mode re-marks the listener as overflowing (the kernel keeps
/// the mark for two minutes).
pub const LISTENER_REFRESH_NS: u64 = 30 * WINDOW_NS;
const TCP_HLEN: usize = 20;
/// Our SYN-ACK's TCP header: 20 bytes + the MSS option.
const SYNACK_TCP_LEN: usize = 24;
const TTL: u8 = 64;
/// Receive window announced in the SYN-ACK (no window scaling with cookies): the kernel's
/// usual initial window, 44 segments of 1460 bytes.
const WINDOW: u16 = 64_240;
const PROTO_TCP: u8 = 6;

/// Outcome of [`answer_syn`].
pub enum Reply {
    /// The frame is now the SYN-ACK: send it (XDP_TX).
    Sent,
    /// Nothing changed: handle the SYN as usual.
    Skipped,
    /// The frame was resized but could not be rewritten: drop it.
    Broken,
}

/// Counts a SYN to `vip_id` on this CPU; `Some` (this CPU's window) when cookies should
/// answer: over the per-CPU threshold in this window or the previous one.
#[inline(always)]
pub fn engaged(vip_id: u32, cfg: &Config) -> Option<&'static mut SynWindow> {
    let p = SYN_RATE.get_ptr_mut(vip_id)?;
    // SAFETY: this CPU's slot of a preallocated per-CPU array element.
    let w = unsafe { &mut *p };
    let now = clock::coarse_ns();
    let elapsed = now.wrapping_sub(w.start_ns);
    if elapsed >= WINDOW_NS {
        let was_over = elapsed < 2 * WINDOW_NS && w.count > cfg.syn_cookie_threshold;
        w.prev_over = was_over as u32;
        w.start_ns = now;
        w.count = 0;
    }
    w.count = w.count.saturating_add(1);
    if w.count > cfg.syn_cookie_threshold || w.prev_over != 0 {
        Some(w)
    } else {
        None
    }
}

/// Copies `len` bytes at `off` of the frame into `buf` (`len <= N`).
#[inline(always)]
fn load<const N: usize>(ctx: &XdpContext, off: usize, buf: &mut [u8; N], len: u32) -> bool {
    // SAFETY: ctx.ctx is this invocation's xdp_md; the kernel checks off/len against the
    // frame and the verifier checks len against the buffer.
    unsafe { bpf_xdp_load_bytes(ctx.ctx, off as u32, buf.as_mut_ptr() as *mut c_void, len) == 0 }
}

/// Copies the first `len` bytes of `buf` into the frame at `off`.
#[inline(always)]
fn store(ctx: &XdpContext, off: usize, buf: &mut [u8], len: u32) -> bool {
    // SAFETY: as in `load`; callers pass a constant len no larger than buf.
    unsafe { bpf_xdp_store_bytes(ctx.ctx, off as u32, buf.as_mut_ptr() as *mut c_void, len) == 0 }
}

/// Working memory for the cookie helpers: the packet's headers copied out, the reply's
/// headers and the socket tuple. Too big for the 512-byte BPF stack next to the rest of
/// `lb_xdp`, so it lives in the per-CPU `SCRATCH` map.
#[repr(C)]
pub struct Scratch {
    /// The IP header (20 bytes for IPv4 without options, 40 for IPv6).
    ip: [u8; IPV6_HLEN],
    /// The full TCP header (options included).
    tcp: [u8; 60],
    out_ip: [u8; IPV6_HLEN],
    out_tcp: [u8; SYNACK_TCP_LEN],
    macs: [u8; 12],
    swapped: [u8; 12],
    tuple: bpf_sock_tuple,
}

/// This CPU's scratch space with the packet's IP and TCP headers loaded, and the TCP
/// header length (data offset * 4, 20..=60; kept in a register, where the verifier still
/// knows its bounds).
#[inline(always)]
fn headers(ctx: &XdpContext, p: &Packet, full_tcp: bool) -> Option<(&'static mut Scratch, u32)> {
    // SAFETY: this CPU's slot of a preallocated per-CPU array; nothing else runs on this
    // CPU while the program does.
    let h = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    let v4 = p.flow.family == FAMILY_V4;
    let ip_len = if v4 { IPV4_HLEN } else { IPV6_HLEN };
    if !load(ctx, p.l2_len, &mut h.ip, ip_len as u32) {
        return None;
    }
    // IPv4 options would move the TCP header; such packets are left to the stack.
    if v4 && h.ip[0] != 0x45 {
        return None;
    }
    let tcp_off = p.l2_len + ip_len;
    if !load(ctx, tcp_off, &mut h.tcp, TCP_HLEN as u32) {
        return None;
    }
    // black_box: LLVM would otherwise test the lower bound on the raw byte and hand the
    // helpers a register the verifier only knows as 0..=60 ("invalid zero-sized read").
    let tcp_len = core::hint::black_box(((h.tcp[12] >> 4) as u32) * 4);
    if tcp_len < TCP_HLEN as u32 {
        return None;
    }
    if full_tcp && tcp_len > TCP_HLEN as u32 && !load(ctx, tcp_off, &mut h.tcp, tcp_len) {
        return None;
    }
    Some((h, tcp_len))
}

/// Marks the listener for the packet's VIP:port as overflowing (see the module comment),
/// at most every [`LISTENER_REFRESH_NS`] per CPU. False: no listener that takes cookies.
#[inline(always)]
fn listener_ready(
    ctx: &XdpContext,
    p: &Packet,
    h: &mut Scratch,
    tcp_len: u32,
    w: &mut SynWindow,
) -> bool {
    let now = clock::coarse_ns();
    if w.listener_ns != 0 && now.wrapping_sub(w.listener_ns) < LISTENER_REFRESH_NS {
        return true;
    }
    // SAFETY: bpf_sock_tuple is plain integers; all zero is a valid value.
    h.tuple = unsafe { core::mem::zeroed() };
    let f = &p.flow;
    let (size, ip_len) = if f.family == FAMILY_V4 {
        // SAFETY: writing the ipv4 member of a zeroed union.
        let t = unsafe { &mut h.tuple.__bindgen_anon_1.ipv4 };
        t.saddr = f.src_words()[0];
        t.daddr = f.dst_words()[0];
        t.sport = f.sport.to_be();
        t.dport = f.dport.to_be();
        (12, IPV4_HLEN as u32)
    } else {
        // SAFETY: writing the ipv6 member of a zeroed union.
        let t = unsafe { &mut h.tuple.__bindgen_anon_1.ipv6 };
        t.saddr = f.src_words();
        t.daddr = f.dst_words();
        t.sport = f.sport.to_be();
        t.dport = f.dport.to_be();
        (36, IPV6_HLEN as u32)
    };
    // SAFETY: ctx.ctx is this invocation's context; the tuple lives on our stack. A
    // non-null result holds a reference that is released below on every path.
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx as *mut c_void,
            &mut h.tuple,
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: sk is the referenced socket from the lookup; the header copies are ours.
    let r = unsafe {
        bpf_tcp_gen_syncookie(
            sk as *mut c_void,
            h.ip.as_mut_ptr() as *mut c_void,
            ip_len,
            h.tcp.as_mut_ptr() as *mut tcphdr,
            tcp_len,
        )
    };
    // SAFETY: releases the reference taken by the lookup.
    unsafe { bpf_sk_release(sk as *mut c_void) };
    if r < 0 {
        return false;
    }
    w.listener_ns = now;
    true
}

/// Turns the SYN `p` into a SYN-ACK carrying a SYN cookie (see the module comment).
#[inline(always)]
pub fn answer_syn(ctx: &XdpContext, p: &Packet, w: &mut SynWindow) -> Reply {
    let Some((h, tcp_len)) = headers(ctx, p, true) else {
        return Reply::Skipped;
    };
    if !listener_ready(ctx, p, h, tcp_len, w) {
        return Reply::Skipped;
    }
    let v4 = p.flow.family == FAMILY_V4;
    // SAFETY: the helpers read the stack copies of the headers (sizes checked by the
    // verifier); they return the cookie in the low 32 bits and its MSS above, or < 0.
    let r = unsafe {
        if v4 {
            bpf_tcp_raw_gen_syncookie_ipv4(
                h.ip.as_mut_ptr() as *mut iphdr,
                h.tcp.as_mut_ptr() as *mut tcphdr,
                tcp_len,
            )
        } else {
            bpf_tcp_raw_gen_syncookie_ipv6(
                h.ip.as_mut_ptr() as *mut ipv6hdr,
                h.tcp.as_mut_ptr() as *mut tcphdr,
                tcp_len,
            )
        }
    };
    if r < 0 {
        return Reply::Skipped;
    }
    let cookie = r as u32;
    let mss = (r >> 32) as u16;
    let ip_len = if v4 { IPV4_HLEN } else { IPV6_HLEN };

    // The TCP header of the SYN-ACK, checksum filled in below.
    let t = &h.tcp;
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let tcp = &mut h.out_tcp;
    *tcp = [0; SYNACK_TCP_LEN];
    tcp[0..2].copy_from_slice(&t[2..4]);
    tcp[2..4].copy_from_slice(&t[0..2]);
    tcp[4..8].copy_from_slice(&cookie.to_be_bytes());
    tcp[8..12].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
    tcp[12] = ((SYNACK_TCP_LEN / 4) as u8) << 4;
    tcp[13] = 0x12; // SYN | ACK
    tcp[14..16].copy_from_slice(&WINDOW.to_be_bytes());
    tcp[20] = 2; // MSS option: kind 2, length 4
    tcp[21] = 4;
    tcp[22..24].copy_from_slice(&mss.to_be_bytes());

    // Resize the frame to L2 + IP + 24 bytes (drops SYN options and any payload).
    let old_len = (ctx.data_end() - ctx.data()) as i32;
    let new_len = (p.l2_len + ip_len + SYNACK_TCP_LEN) as i32;
    // SAFETY: ctx.ctx is this invocation's xdp_md; on failure the frame is unchanged.
    if new_len != old_len && unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len - old_len) } != 0 {
        return Reply::Skipped;
    }
    let ok = if v4 {
        let ip = &h.ip;
        let out = &mut h.out_ip;
        *out = [0; IPV6_HLEN];
        out[0] = 0x45;
        out[2..4].copy_from_slice(&((IPV4_HLEN + SYNACK_TCP_LEN) as u16).to_be_bytes());
        out[6] = 0x40; // DF
        out[8] = TTL;
        out[9] = PROTO_TCP;
        out[12..16].copy_from_slice(&ip[16..20]);
        out[16..20].copy_from_slice(&ip[12..16]);
        let c = csum::fold(csum::add_words(0, &out[..IPV4_HLEN]));
        out[10..12].copy_from_slice(&c.to_be_bytes());
        let sum = csum::add_words(0, &out[12..20]);
        let c = csum::fold(csum::add_words(
            sum + PROTO_TCP as u32 + SYNACK_TCP_LEN as u32,
            &tcp[..],
        ));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        store(ctx, p.l2_len, &mut out[..], IPV4_HLEN as u32)
    } else {
        let ip = &h.ip;
        let out = &mut h.out_ip;
        out[0] = 0x60;
        out[1..4].copy_from_slice(&[0; 3]);
        out[4..6].copy_from_slice(&(SYNACK_TCP_LEN as u16).to_be_bytes());
        out[6] = PROTO_TCP;
        out[7] = TTL;
        out[8..24].copy_from_slice(&ip[24..40]);
        out[24..40].copy_from_slice(&ip[8..24]);
        let sum = csum::add_words(0, &out[8..40]);
        let c = csum::fold(csum::add_words(
            sum + PROTO_TCP as u32 + SYNACK_TCP_LEN as u32,
            &tcp[..],
        ));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        store(ctx, p.l2_len, &mut out[..], IPV6_HLEN as u32)
    };
    if !ok
        || !store(
            ctx,
            p.l2_len + ip_len,
            &mut h.out_tcp[..],
            SYNACK_TCP_LEN as u32,
        )
        || !swap_macs(ctx, h)
    {
        return Reply::Broken;
    }
    Reply::Sent
}

/// Sends the frame back where it came from: destination MAC <-> source MAC.
#[inline(always)]
fn swap_macs(ctx: &XdpContext, h: &mut Scratch) -> bool {
    if !load(ctx, 0, &mut h.macs, 12) {
        return false;
    }
    h.swapped[0..6].copy_from_slice(&h.macs[6..12]);
    h.swapped[6..12].copy_from_slice(&h.macs[0..6]);
    store(ctx, 0, &mut h.swapped[..], 12)
}

/// True when the packet (a pure ACK of no known flow) acknowledges a SYN cookie this node
/// issued.
#[inline(always)]
pub fn valid_ack(ctx: &XdpContext, p: &Packet) -> bool {
    let Some((h, _)) = headers(ctx, p, false) else {
        return false;
    };
    let v4 = p.flow.family == FAMILY_V4;
    let (ip, tcp) = (&mut h.ip, &mut h.tcp);
    // SAFETY: the helpers read our stack copies (fixed sizes checked by the verifier).
    let r = unsafe {
        if v4 {
            bpf_tcp_raw_check_syncookie_ipv4(
                ip.as_mut_ptr() as *mut iphdr,
                tcp.as_mut_ptr() as *mut tcphdr,
            )
        } else {
            bpf_tcp_raw_check_syncookie_ipv6(
                ip.as_mut_ptr() as *mut ipv6hdr,
                tcp.as_mut_ptr() as *mut tcphdr,
            )
        }
    };
    r == 0
}
