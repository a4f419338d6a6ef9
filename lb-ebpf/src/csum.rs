//! Internet checksum (RFC 1071) of headers we build.

/// Adds `b` as big-endian 16-bit words (an even length) to a running sum.
#[inline(always)]
pub fn add_words(mut sum: u32, b: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Folds a running sum into the one's-complement checksum field value. The sum may be of
/// words read in native byte order, if the result is stored natively too (RFC 1071
/// section 2(B): the one's-complement sum is byte-order independent).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
