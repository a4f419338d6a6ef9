//! The server name a TLS client asks for, read from its ClientHello before anything
//! answers it (what nginx's `ssl_preread` does): `ssl-passthrough` hosts are chosen by it,
//! and the bytes read are then handed on unchanged (to the backend, or to rustls).
//!
//! The ClientHello may arrive in pieces (TCP segments) and, rarely, span several TLS
//! records; both are reassembled, up to [`MAX_HELLO`] bytes of handshake message.
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The largest ClientHello handshake message read (post-quantum key shares make them
/// ~2 KiB today; 64 KiB is what a 16-bit extensions length allows).
pub const MAX_HELLO: usize = 64 * 1024;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// What the bytes so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A complete ClientHello, and the host name of its SNI extension (lower case), if any.
    Complete(Option<String>),
    /// Not a (well-formed) TLS ClientHello: nothing to choose by; rustls will answer it.
    NotHello,
    /// A ClientHello so far, incomplete: read more.
    Incomplete,
}

/// The ClientHello's server name, from the first bytes a client sent.
pub fn parse(bytes: &[u8]) -> Hello {
    // Reassemble the handshake message from the records' payloads.
    let mut message = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(header) = rest.get(..5) else {
            return Hello::Incomplete;
        };
        if header[0] != RECORD_HANDSHAKE || header[1] != 3 {
            return Hello::NotHello;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Hello::NotHello;
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return Hello::Incomplete;
        };
        message.extend_from_slice(payload);
        rest = &rest[5 + len..];
        if message[0] != HANDSHAKE_CLIENT_HELLO {
            return Hello::NotHello;
        }
        let Some(body_len) = message.get(1..4) else {
            continue;
        };
        let body_len = usize::from(body_len[0]) << 16
            | usize::from(body_len[1]) << 8
            | usize::from(body_len[2]);
        if body_len > MAX_HELLO {
            return Hello::NotHello;
        }
        if message.len() >= 4 + body_len {
            return match server_name(&message[4..4 + body_len]) {
                Some(name) => Hello::Complete(name),
                None => Hello::NotHello,
            };
        }
    }
}

/// A cursor over a ClientHello body; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a length prefix of `width` bytes (1 or 2).
    fn vec(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len)
    }
}

/// The SNI host name of a ClientHello body: `Some(None)` without the extension, `None`
/// when the body is malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut c = Cursor(body);
    c.take(2 + 32)?; // legacy_version, random
    c.vec(1)?; // legacy_session_id
    c.vec(2)?; // cipher_suites
    c.vec(1)?; // legacy_compression_methods
    if c.0.is_empty() {
        return Some(None); // no extensions (SSLv3-style hello)
    }
    let mut exts = Cursor(c.vec(2)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec(2)?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        let mut list = Cursor(Cursor(data).vec(2)?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec(2)?;
            if name_type == NAME_TYPE_HOST {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// Reads from `io` until the ClientHello is complete (or proves not to be one); returns
/// every byte read and what they say. An error: the connection ended or failed first.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> std::io::Result<(Vec<u8>, Hello)> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        let n = io.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match parse(&buf) {
            Hello::Incomplete if buf.len() < MAX_HELLO + 4 * 1024 => {}
            Hello::Incomplete => return Ok((buf, Hello::NotHello)),
            decided => return Ok((buf, decided)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The first flight of a real rustls client connecting to `server`.
    fn first_flight(server: rustls::pki_types::ServerName<'static>) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write");
        }
        out
    }

    /// The ClientHello of a real rustls client asking for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        first_flight(rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name"))
    }

    /// `hello`'s handshake message split into records of at most `size` bytes.
    fn in_records(hello: &[u8], size: usize) -> Vec<u8> {
        let message = &hello[5..];
        let mut out = Vec::new();
        for chunk in message.chunks(size) {
            out.extend_from_slice(&[RECORD_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn a_real_client_hello_names_its_server_whole_or_in_records() {
        let hello = client_hello("Models.Example.COM");
        let want = Hello::Complete(Some("models.example.com".to_owned()));
        assert_eq!(parse(&hello), want);
        assert_eq!(parse(&in_records(&hello, 100)), want);
        assert_eq!(parse(&in_records(&hello, 1)), want);
        // Every prefix is incomplete, never a wrong answer.
        for cut in 0..hello.len() {
            assert_eq!(parse(&hello[..cut]), Hello::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn what_is_not_a_client_hello_says_so() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Hello::NotHello);
        assert_eq!(parse(&[22, 3, 1, 0, 0]), Hello::NotHello, "empty record");
        // A handshake record with another message type (ServerHello).
        assert_eq!(parse(&[22, 3, 3, 0, 4, 2, 0, 0, 0]), Hello::NotHello);
        // A ClientHello whose inner lengths run past its body.
        let mut hello = client_hello("a.test");
        let session_id_len = 5 + 4 + 2 + 32;
        hello[session_id_len] = 0xff;
        assert_eq!(parse(&hello), Hello::NotHello);
        // A declared body beyond MAX_HELLO.
        assert_eq!(
            parse(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
            Hello::NotHello
        );
    }

    #[test]
    fn a_client_hello_without_sni_has_no_name() {
        // By IP address: rustls sends no server_name extension.
        let ip = std::net::Ipv4Addr::new(198, 18, 0, 1);
        let out = first_flight(rustls::pki_types::ServerName::IpAddress(ip.into()));
        assert_eq!(parse(&out), Hello::Complete(None));
    }

    #[tokio::test]
    async fn read_collects_a_hello_sent_in_pieces() {
        let hello = client_hello("a.test");
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = hello.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            for piece in sent.chunks(7) {
                client.write_all(piece).await.expect("write");
            }
            client
        });
        let (bytes, hello_read) = read(&mut server).await.expect("read");
        assert_eq!(hello_read, Hello::Complete(Some("a.test".to_owned())));
        assert_eq!(bytes, hello);
        drop(writer.await);

        // The client gives up half way: an error, not a hello.
        let (mut client, mut server) = tokio::io::duplex(64);
        {
            use tokio::io::AsyncWriteExt as _;
            client.write_all(&hello[..10]).await.expect("write");
        }
        drop(client);
        let err = read(&mut server).await.expect_err("cut short");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
