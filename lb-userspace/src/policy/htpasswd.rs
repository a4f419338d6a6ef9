//! Password files for basic authentication, in the formats nginx's `auth_basic_user_file`
//! accepts (and `htpasswd` writes): `$apr1$` (htpasswd's default) and `$1$` MD5-crypt,
//! `$2a$`/`$2b$`/`$2y$` bcrypt (`htpasswd -B`), `$5$`/`$6$` SHA-crypt, `{SHA}` (`htpasswd -s`),
//! `{SSHA}` and `{PLAIN}`. Anything else (DES crypt, yescrypt) is refused when the file is read,
//! naming the line, so a user is never silently locked out or let in.
use std::collections::HashMap;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha1::Sha1;

/// One user's stored password.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stored {
    /// `$apr1$salt$hash` or `$1$salt$hash` (the same algorithm, another magic).
    Md5Crypt {
        magic: &'static str,
        salt: String,
        full: String,
    },
    Bcrypt(String),
    Sha256Crypt(String),
    Sha512Crypt(String),
    /// `{SHA}`: SHA-1 of the password.
    Sha1([u8; 20]),
    /// `{SSHA}`: SHA-1 of the password and the salt, then the salt.
    SaltedSha1 {
        digest: [u8; 20],
        salt: Vec<u8>,
    },
    Plain(String),
}

impl Stored {
    /// How much work a check of this kind costs (higher: slower), to pick the decoy.
    fn cost(&self) -> u8 {
        match self {
            Stored::Plain(_) => 0,
            Stored::Sha1(_) | Stored::SaltedSha1 { .. } => 1,
            Stored::Md5Crypt { .. } => 2,
            Stored::Sha256Crypt(_) | Stored::Sha512Crypt(_) => 3,
            Stored::Bcrypt(_) => 4,
        }
    }

    fn matches(&self, password: &[u8]) -> bool {
        match self {
            Stored::Md5Crypt { magic, salt, full } => ct_eq(
                md5_crypt(password, salt.as_bytes(), magic).as_bytes(),
                full.as_bytes(),
            ),
            Stored::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Stored::Sha256Crypt(h) => {
                std::str::from_utf8(password).is_ok_and(|p| sha_crypt::sha256_check(p, h).is_ok())
            }
            Stored::Sha512Crypt(h) => {
                std::str::from_utf8(password).is_ok_and(|p| sha_crypt::sha512_check(p, h).is_ok())
            }
            Stored::Sha1(d) => ct_eq(&Sha1::digest(password), d),
            Stored::SaltedSha1 { digest, salt } => {
                let mut h = Sha1::new();
                h.update(password);
                h.update(salt);
                ct_eq(&h.finalize(), digest)
            }
            Stored::Plain(p) => ct_eq(password, p.as_bytes()),
        }
    }
}

/// Users and their stored passwords (a Secret's `auth` file, or an `auth-map`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Htpasswd {
    users: HashMap<String, Stored>,
    /// The costliest stored password: checked (and ignored) for a user that does not
    /// exist, so refusing an unknown user takes as long as refusing a wrong password of a
    /// user of that kind, and the time of a 401 does not tell which users exist.
    decoy: Option<Stored>,
}

impl Htpasswd {
    /// Reads an htpasswd file: `user:hash` per line; blank lines and `#` comments skipped.
    /// An error names the line (1-based) and the user.
    pub fn from_file(text: &str) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {}: not user:password-hash", n + 1));
            };
            // htpasswd files may carry further fields (`user:hash:comment`).
            let hash = hash.split(':').next().unwrap_or(hash);
            let stored = parse(hash).map_err(|e| format!("line {} (user {user:?}): {e}", n + 1))?;
            users.insert(user.to_owned(), stored);
        }
        Ok(Self::of(users))
    }

    /// Reads `auth-map` entries: user -> hash.
    pub fn from_map<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (user, hash) in entries {
            let stored = parse(hash.trim()).map_err(|e| format!("user {user:?}: {e}"))?;
            users.insert(user.to_owned(), stored);
        }
        Ok(Self::of(users))
    }

    fn of(users: HashMap<String, Stored>) -> Self {
        let decoy = users.values().max_by_key(|s| s.cost()).cloned();
        Self { users, decoy }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Slow on purpose for bcrypt and SHA-crypt (run it off
    /// the request's thread); as slow for a user that does not exist (see `decoy`).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(stored) => stored.matches(password),
            None => {
                if let Some(decoy) = &self.decoy {
                    std::hint::black_box(decoy.matches(password));
                }
                false
            }
        }
    }
}

/// Equal contents, in time that depends on the lengths only.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse(hash: &str) -> Result<Stored, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(rest) = hash.strip_prefix("{SHA}") {
        let d = b64
            .decode(rest)
            .map_err(|_| "{SHA} value is not base64".to_owned())?;
        let d = <[u8; 20]>::try_from(d).map_err(|_| "{SHA} value is not a SHA-1 digest")?;
        return Ok(Stored::Sha1(d));
    }
    if let Some(rest) = hash.strip_prefix("{SSHA}") {
        let d = b64
            .decode(rest)
            .map_err(|_| "{SSHA} value is not base64".to_owned())?;
        if d.len() <= 20 {
            return Err("{SSHA} value is too short for a SHA-1 digest and a salt".into());
        }
        let (digest, salt) = d.split_at(20);
        let digest = <[u8; 20]>::try_from(digest).map_err(|_| "{SSHA} digest")?;
        return Ok(Stored::SaltedSha1 {
            digest,
            salt: salt.to_vec(),
        });
    }
    if let Some(rest) = hash.strip_prefix("{PLAIN}") {
        return Ok(Stored::Plain(rest.to_owned()));
    }
    for magic in ["$apr1$", "$1$"] {
        if let Some(rest) = hash.strip_prefix(magic) {
            let salt = rest.split('$').next().unwrap_or("");
            if salt.is_empty() || !rest[salt.len()..].starts_with('$') {
                return Err(format!("{magic} hash without a salt"));
            }
            return Ok(Stored::Md5Crypt {
                magic: if magic == "$1$" { "$1$" } else { "$apr1$" },
                salt: salt.chars().take(8).collect(),
                full: hash.to_owned(),
            });
        }
    }
    if ["$2a$", "$2b$", "$2y$"].iter().any(|m| hash.starts_with(m)) {
        // Checked now, so a malformed one is an error here and not a refusal per request.
        return match hash.parse::<bcrypt::HashParts>() {
            Ok(_) => Ok(Stored::Bcrypt(hash.to_owned())),
            Err(e) => Err(format!("bcrypt hash: {e}")),
        };
    }
    if hash.starts_with("$5$") {
        return Ok(Stored::Sha256Crypt(hash.to_owned()));
    }
    if hash.starts_with("$6$") {
        return Ok(Stored::Sha512Crypt(hash.to_owned()));
    }
    Err(match hash.get(..3) {
        Some("$y$") | Some("$7$") => "yescrypt/scrypt hashes are not supported".to_owned(),
        _ if hash.is_empty() => "empty password hash".to_owned(),
        _ => "unsupported password hash (use htpasswd's default $apr1$, -B bcrypt, or -s {SHA})"
            .to_owned(),
    })
}

/// MD5-crypt (poul-henning kamp's, as `$1$`; Apache's `$apr1$` is the same with its magic):
/// the full `magic + salt + '$' + hash` string.
fn md5_crypt(password: &[u8], salt: &[u8], magic: &str) -> String {
    let salt = &salt[..salt.len().min(8)];
    let alt = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alt[..chunk.len()]);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(magic);
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let f = |i: usize| u32::from(fin[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64(f(a) << 16 | f(b) << 8 | f(c), 4);
    }
    to64(f(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with `openssl passwd -apr1 / -1 / -5 / -6 -salt ... password`; {SHA} is
    // base64(SHA-1("password")), as `htpasswd -s` writes it.
    const FILE: &str = "\
# users of the MLflow UI
alice:$apr1$K8cG3XnA$Hq0mcE57z5C2xREA/oUlh.
bob:$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/
carol:$5$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4AtC.
dave:$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/
erin:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
frank:{PLAIN}plain words

";

    #[test]
    fn every_supported_format_accepts_its_password_and_refuses_others() {
        let h = Htpasswd::from_file(FILE).expect("file");
        assert_eq!(h.len(), 6);
        for user in ["alice", "bob", "carol", "dave", "erin"] {
            assert!(h.verify(user, b"password"), "{user}");
            assert!(!h.verify(user, b"passwore"), "{user}");
            assert!(!h.verify(user, b""), "{user}");
        }
        assert!(h.verify("frank", b"plain words"));
        assert!(!h.verify("frank", b"plain word"));
        assert!(!h.verify("mallory", b"password"));
    }

    /// An unknown user is checked against the costliest stored password (the decoy) and
    /// refused, even with the password that decoy holds.
    #[test]
    fn an_unknown_user_costs_a_check_of_the_slowest_kind_and_is_refused() {
        let bcrypt = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        let h = Htpasswd::from_file(&format!("{FILE}grace:{bcrypt}\n")).expect("file");
        assert_eq!(h.decoy, Some(Stored::Bcrypt(bcrypt.to_owned())));
        assert!(h.verify("grace", b"U*U"));
        assert!(!h.verify("mallory", b"U*U"));
        let sha = Htpasswd::from_map([("erin", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")]).expect("map");
        assert!(matches!(sha.decoy, Some(Stored::Sha1(_))));
        assert!(!sha.verify("mallory", b"password"));
        assert_eq!(Htpasswd::default().decoy, None);
        assert!(!Htpasswd::default().verify("mallory", b""));
    }

    #[test]
    fn bcrypt_as_htpasswd_b_writes_it() {
        // OpenBSD's test vector (password "U*U", cost 5), under each accepted prefix.
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let line =
                format!("u:{prefix}05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
            let h = Htpasswd::from_file(&line).expect("bcrypt line");
            assert!(h.verify("u", b"U*U"), "{prefix}");
            assert!(!h.verify("u", b"U*V"), "{prefix}");
        }
    }

    #[test]
    fn md5_crypt_matches_known_vectors() {
        // `openssl passwd -1 -salt saltsalt password`, `openssl passwd -apr1 -salt K8cG3XnA password`.
        assert_eq!(
            md5_crypt(b"password", b"saltsalt", "$1$"),
            "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"
        );
        assert_eq!(
            md5_crypt(b"password", b"K8cG3XnA", "$apr1$"),
            "$apr1$K8cG3XnA$Hq0mcE57z5C2xREA/oUlh."
        );
    }

    #[test]
    fn auth_map_entries() {
        let h = Htpasswd::from_map([("ml", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g= ")]).expect("map");
        assert!(h.verify("ml", b"password"));
        let e = Htpasswd::from_map([("ml", "secret")]).expect_err("plain text refused");
        assert!(
            e.contains("user \"ml\"") && e.contains("unsupported"),
            "{e}"
        );
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line_and_user() {
        let cases = [
            ("ok:{PLAIN}x\nnocolon\n", "line 2: not user:password-hash"),
            (
                "a:{PLAIN}x\n\nb:abcdefghijklm\n",
                "line 3 (user \"b\"): unsupported",
            ),
            ("y:$y$j9T$salt$hash\n", "yescrypt"),
            ("s:{SHA}not-base64!\n", "not base64"),
            ("s:{SHA}AAAA\n", "not a SHA-1 digest"),
            ("m:$apr1$$x\n", "without a salt"),
            ("b:$2y$99$short\n", "bcrypt hash"),
            ("e:\n", "empty password hash"),
        ];
        for (file, want) in cases {
            let e = Htpasswd::from_file(file).expect_err(file);
            assert!(e.contains(want), "{file:?}: {e}");
        }
    }

    #[test]
    fn salted_sha1() {
        // base64(sha1("password" + "salt") + "salt")
        let mut d = Sha1::new();
        d.update(b"password");
        d.update(b"salt");
        let mut raw = d.finalize().to_vec();
        raw.extend_from_slice(b"salt");
        let line = format!(
            "s:{{SSHA}}{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        let h = Htpasswd::from_file(&line).expect("ssha");
        assert!(h.verify("s", b"password"));
        assert!(!h.verify("s", b"salt"));
    }
}
