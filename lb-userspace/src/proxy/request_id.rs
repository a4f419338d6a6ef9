//! X-Request-ID: kept when the client sent one, else generated (32 hex digits, as
//! ingress-nginx's `$req_id`), and passed upstream.
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::balance::random_u64;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds an X-Request-ID when there is none (or it is empty).
pub fn ensure(headers: &mut HeaderMap) {
    if headers
        .get(&X_REQUEST_ID)
        .is_some_and(|v| !v.as_bytes().is_empty())
    {
        return;
    }
    headers.insert(X_REQUEST_ID.clone(), generate());
}

/// 128 random bits as 32 lower-case hex digits.
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (half, word) in [random_u64(), random_u64()].into_iter().enumerate() {
        for i in 0..16 {
            out[half * 16 + i] = HEX[((word >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_when_absent_kept_when_present() {
        let mut h = HeaderMap::new();
        ensure(&mut h);
        let id = h[&X_REQUEST_ID].to_str().expect("ascii").to_owned();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        ensure(&mut h);
        assert_eq!(h[&X_REQUEST_ID], id.as_str());
        let mut other = HeaderMap::new();
        ensure(&mut other);
        assert_ne!(other[&X_REQUEST_ID], id.as_str());
    }
}
