//! A minimal rtnetlink client: one request on a fresh `NETLINK_ROUTE` socket, its replies
//! collected, and bounds-checked walkers over messages and attributes. Used for the IPv6
//! neighbour table (`neighbour`) and for routes and link addresses (`route`).
use std::io;

pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
/// A reply (a dump of a large table) ends within this many reads (each up to 64 KiB).
const MAX_READS: usize = 1024;

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of a reply as (type, payload after the header). A short or inconsistent
/// length ends the walk; so does `NLMSG_DONE`.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let len = u32_at(buf, off)? as usize;
        let kind = u16_at(buf, off + 4)?;
        if len < NLMSG_HDRLEN || off + len > buf.len() || kind == NLMSG_DONE {
            return None;
        }
        let msg = &buf[off + NLMSG_HDRLEN..off + len];
        off += (len + 3) & !3;
        Some((kind, msg))
    })
}

/// The attributes (type, value) of a message payload whose fixed header is `header` bytes.
pub fn attributes(msg: &[u8], header: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut a = header;
    std::iter::from_fn(move || {
        let alen = u16_at(msg, a)? as usize;
        let atype = u16_at(msg, a + 2)?;
        if alen < 4 || a + alen > msg.len() {
            return None;
        }
        let value = &msg[a + 4..a + alen];
        a += (alen + 3) & !3;
        // The top two bits are the nested / byte-order flags.
        Some((atype & 0x3fff, value))
    })
}

/// Appends an attribute (padded to 4 bytes) to a request body.
pub fn push_attribute(body: &mut Vec<u8>, kind: u16, value: &[u8]) {
    body.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(value);
    body.resize((body.len() + 3) & !3, 0);
}

/// One message: header (type `kind`, `flags`, sequence 1) and `body`.
pub fn encode(kind: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// Closes the socket when dropped.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// Sends one request of type `kind` with `body` (the fixed header and attributes) and
/// returns the raw replies: up to `NLMSG_DONE` for a dump, the first read otherwise. An
/// `NLMSG_ERROR` carrying an error code becomes that error.
pub fn request(kind: u16, body: &[u8], dump: bool) -> io::Result<Vec<u8>> {
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
    let flags = if dump {
        NLM_F_REQUEST | NLM_F_DUMP
    } else {
        NLM_F_REQUEST
    };
    let req = encode(kind, flags, body);
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
        // Done when this read holds NLMSG_DONE or an error at a message boundary (or, for a
        // plain request, after the first read).
        let mut off = 0;
        while off + NLMSG_HDRLEN <= chunk.len() {
            let (Some(len), Some(kind)) = (u32_at(chunk, off), u16_at(chunk, off + 4)) else {
                break;
            };
            if kind == NLMSG_ERROR {
                // struct nlmsgerr: a negative errno first (0: an acknowledgement).
                let code = u32_at(chunk, off + NLMSG_HDRLEN).unwrap_or(0) as i32;
                if code < 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                return Ok(out);
            }
            if kind == NLMSG_DONE {
                return Ok(out);
            }
            if (len as usize) < NLMSG_HDRLEN {
                break;
            }
            off += (len as usize + 3) & !3;
        }
        if n == 0 || !dump {
            return Ok(out);
        }
    }
    Err(io::Error::other("netlink reply did not end"))
}
