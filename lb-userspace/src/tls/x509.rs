//! The few fields of an X.509 certificate the metrics need (serial, issuer CN/O, notAfter,
//! public key algorithm), read from its DER with a minimal, bounds-checked reader: rustls
//! and webpki parse certificates but do not expose the validity period, and a full X.509
//! crate would be a large dependency for five fields.
//!
//! Only DER (definite lengths) is accepted, which is what a certificate is.

/// What `nginx_ingress_controller_ssl_certificate_info` and `_ssl_expire_time_seconds` show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Serial number in decimal (as Go's `big.Int` prints it).
    pub serial: String,
    /// The issuer's commonName (empty when it has none).
    pub issuer_common_name: String,
    /// The issuer's organizationName values, joined with ",".
    pub issuer_organization: String,
    /// The issuer's serialNumber attribute (part of ingress-nginx's `identifier`).
    pub issuer_serial: String,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// `RSA`, `ECDSA`, `Ed25519`, `DSA` (Go's names), else `Unknown`.
    pub public_key_algorithm: &'static str,
}

impl CertSummary {
    /// ingress-nginx's `identifier` label: issuer serialNumber attribute, `-`, serial.
    pub fn identifier(&self) -> String {
        format!("{}-{}", self.issuer_serial, self.serial)
    }
}

/// Why a certificate's DER could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum X509Error {
    #[error("truncated DER at {0}")]
    Truncated(&'static str),
    #[error("unexpected DER tag {tag:#04x} for {what}")]
    Tag { what: &'static str, tag: u8 },
    #[error("unsupported DER length encoding in {0}")]
    Length(&'static str),
    #[error("invalid time {0:?}")]
    Time(String),
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const CONTEXT_0: u8 = 0xa0;

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
const OID_SERIAL: &[u8] = &[0x55, 0x04, 0x05];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];

/// One TLV from the front of `input`, which is advanced past it.
fn tlv<'a>(input: &mut &'a [u8], what: &'static str) -> Result<(u8, &'a [u8]), X509Error> {
    let (&tag, rest) = input.split_first().ok_or(X509Error::Truncated(what))?;
    let (&first, mut rest) = rest.split_first().ok_or(X509Error::Truncated(what))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(X509Error::Length(what));
        }
        let (bytes, after) = rest.split_at_checked(n).ok_or(X509Error::Truncated(what))?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    let (content, after) = rest
        .split_at_checked(len)
        .ok_or(X509Error::Truncated(what))?;
    *input = after;
    Ok((tag, content))
}

/// A TLV that must carry `tag`.
fn expect<'a>(input: &mut &'a [u8], tag: u8, what: &'static str) -> Result<&'a [u8], X509Error> {
    let (t, content) = tlv(input, what)?;
    if t != tag {
        return Err(X509Error::Tag { what, tag: t });
    }
    Ok(content)
}

/// Reads the summary of a DER certificate.
pub fn summarize(der: &[u8]) -> Result<CertSummary, X509Error> {
    let mut input = der;
    let mut cert = expect(&mut input, SEQUENCE, "Certificate")?;
    let mut tbs = expect(&mut cert, SEQUENCE, "tbsCertificate")?;
    if tbs.first() == Some(&CONTEXT_0) {
        expect(&mut tbs, CONTEXT_0, "version")?;
    }
    let serial = expect(&mut tbs, INTEGER, "serialNumber")?;
    expect(&mut tbs, SEQUENCE, "signature")?;
    let issuer = expect(&mut tbs, SEQUENCE, "issuer")?;
    let mut validity = expect(&mut tbs, SEQUENCE, "validity")?;
    let _not_before = tlv(&mut validity, "notBefore")?;
    let (time_tag, not_after) = tlv(&mut validity, "notAfter")?;
    expect(&mut tbs, SEQUENCE, "subject")?;
    let mut spki = expect(&mut tbs, SEQUENCE, "subjectPublicKeyInfo")?;
    let mut alg = expect(&mut spki, SEQUENCE, "subjectPublicKeyInfo.algorithm")?;
    let alg_oid = expect(&mut alg, OID, "subjectPublicKeyInfo.algorithm.oid")?;

    let mut summary = CertSummary {
        serial: decimal(serial),
        issuer_common_name: String::new(),
        issuer_organization: String::new(),
        issuer_serial: String::new(),
        not_after: time(time_tag, not_after)?,
        public_key_algorithm: match alg_oid {
            OID_RSA | OID_RSA_PSS => "RSA",
            OID_EC => "ECDSA",
            OID_ED25519 => "Ed25519",
            OID_DSA => "DSA",
            _ => "Unknown",
        },
    };
    let mut rdns = issuer;
    let mut orgs: Vec<String> = Vec::new();
    while !rdns.is_empty() {
        let mut set = expect(&mut rdns, SET, "issuer RDN")?;
        while !set.is_empty() {
            let mut atv = expect(&mut set, SEQUENCE, "issuer attribute")?;
            let oid = expect(&mut atv, OID, "issuer attribute type")?;
            let (tag, value) = tlv(&mut atv, "issuer attribute value")?;
            let text = string_value(tag, value);
            match oid {
                OID_CN if summary.issuer_common_name.is_empty() => {
                    summary.issuer_common_name = text;
                }
                OID_O => orgs.push(text),
                OID_SERIAL if summary.issuer_serial.is_empty() => summary.issuer_serial = text,
                _ => {}
            }
        }
    }
    summary.issuer_organization = orgs.join(",");
    Ok(summary)
}

/// A directory string as text: BMPString is UTF-16BE, the others are read as UTF-8 (ASCII
/// subsets included); invalid bytes are replaced.
fn string_value(tag: u8, value: &[u8]) -> String {
    const BMP_STRING: u8 = 0x1e;
    if tag == BMP_STRING {
        let units: Vec<u16> = value
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(value).into_owned()
}

/// The decimal form of a DER INTEGER's two's-complement content (serials are positive; a
/// negative one, which RFC 5280 forbids, is printed with its sign as Go does).
fn decimal(bytes: &[u8]) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude: Vec<u8> = if negative {
        // Two's complement: invert and add one.
        let mut m: Vec<u8> = bytes.iter().map(|b| !b).collect();
        for b in m.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
        m
    } else {
        bytes.to_vec()
    };
    let mut digits = Vec::new();
    // Repeated division by 10 of the big-endian magnitude.
    while magnitude.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in magnitude.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// Unix seconds. DER requires the `Z` form with seconds and no fraction.
fn time(tag: u8, value: &[u8]) -> Result<i64, X509Error> {
    let bad = || X509Error::Time(String::from_utf8_lossy(value).into_owned());
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let digits = text.strip_suffix('Z').ok_or_else(bad)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, X509Error> {
        digits
            .get(range)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (num(0..4)?, 4),
        _ => return Err(bad()),
    };
    let (month, day) = (num(rest..rest + 2)?, num(rest + 2..rest + 4)?);
    let (h, m, s) = (
        num(rest + 4..rest + 6)?,
        num(rest + 6..rest + 8)?,
        num(rest + 8..rest + 10)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, date_time_ymd};

    fn cert(params: CertificateParams, key: &KeyPair) -> Vec<u8> {
        params.self_signed(key).expect("self-signed").der().to_vec()
    }

    #[test]
    fn fields_of_an_rcgen_certificate() {
        let mut p = CertificateParams::new(vec!["a.example.com".into()]).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Example Issuing CA");
        dn.push(DnType::OrganizationName, "Example Org");
        p.distinguished_name = dn;
        p.serial_number = Some(0x0123_4567_89ab_cdef_u64.into());
        p.not_after = date_time_ymd(2031, 4, 5);
        let key = KeyPair::generate().expect("key");
        let s = summarize(&cert(p, &key)).expect("summary");
        assert_eq!(s.serial, "81985529216486895");
        assert_eq!(s.issuer_common_name, "Example Issuing CA");
        assert_eq!(s.issuer_organization, "Example Org");
        assert_eq!(s.issuer_serial, "");
        assert_eq!(s.identifier(), "-81985529216486895");
        // date -u -d 2031-04-05 +%s
        assert_eq!(s.not_after, 1_933_113_600);
        assert_eq!(s.public_key_algorithm, "ECDSA");
    }

    #[test]
    fn generalized_time_large_serial_and_ed25519() {
        let mut p = CertificateParams::new(vec!["b.example.com".into()]).expect("params");
        // 20 bytes, the most RFC 5280 allows.
        p.serial_number = Some(vec![0x7f; 20].into());
        p.not_after = date_time_ymd(2051, 2, 28);
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let s = summarize(&cert(p, &key)).expect("summary");
        // python3 -c 'print(int("7f"*20, 16))'
        assert_eq!(s.serial, "727885129180488904360266563744972327436484050815");
        // date -u -d 2051-02-28 +%s (GeneralizedTime from 2050 on)
        assert_eq!(s.not_after, 2_561_155_200);
        assert_eq!(s.public_key_algorithm, "Ed25519");
    }

    #[test]
    fn the_self_signed_default_certificate_parses() {
        let (key, _, _) = crate::tls::self_signed(&["x.example"]).expect("self-signed");
        let s = summarize(key.cert[0].as_ref()).expect("summary");
        // rcgen's default validity ends 4096-01-01.
        assert_eq!(s.not_after, days_from_civil(4096, 1, 1) * 86_400);
        assert_eq!(s.issuer_common_name, "rcgen self signed cert");
    }

    #[test]
    fn decimal_and_dates() {
        assert_eq!(decimal(&[]), "0");
        assert_eq!(decimal(&[0x00]), "0");
        assert_eq!(decimal(&[0x00, 0xff]), "255");
        assert_eq!(decimal(&[0x01, 0x00]), "256");
        assert_eq!(decimal(&[0xff]), "-1");
        assert_eq!(decimal(&[0x80]), "-128");
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Ok(2_524_607_999));
        assert_eq!(time(UTC_TIME, b"500101000000Z"), Ok(-631_152_000));
        assert!(time(UTC_TIME, b"5001010000Z").is_err());
        assert!(time(GENERALIZED_TIME, b"20501301000000Z").is_err());
        assert!(time(GENERALIZED_TIME, b"2050010100000aZ").is_err());
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let key = KeyPair::generate().expect("key");
        let der = cert(
            CertificateParams::new(vec!["c.example".into()]).expect("params"),
            &key,
        );
        assert!(summarize(&der).is_ok());
        for cut in [0, 1, 2, 10, 50, der.len() / 2] {
            assert!(summarize(&der[..cut]).is_err(), "cut at {cut}");
        }
        assert!(summarize(b"not der").is_err());
        // Indefinite and over-long lengths.
        assert!(summarize(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(summarize(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
    }
}
