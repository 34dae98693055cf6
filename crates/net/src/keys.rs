//! Identities: an Ed25519 key pair per device and per clone server. The private key is a PKCS#8
//! PEM file (`NAME.key`); the public key is one line (`NAME.pub`), `clonecloud-ed25519 <hex of the
//! SubjectPublicKeyInfo DER>`, which the other side pins.

use crate::NetError;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

const PUB_PREFIX: &str = "clonecloud-ed25519";

/// The DER of an Ed25519 SubjectPublicKeyInfo before its 32 bytes of key (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A public key: the DER of an X.509 SubjectPublicKeyInfo.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub Vec<u8>);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUB_PREFIX} ")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// A public key's line (or a line of an allow list) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("a public key line starts with `{PUB_PREFIX} `")]
    Prefix,
    #[error("the key is not a whole number of hex bytes")]
    Length,
    #[error("the key is not hex")]
    NotHex,
    #[error("the key is not an Ed25519 public key (clonecloud keys are made by `clonecloud keygen`)")]
    NotEd25519,
    #[error("line {line}: {error}")]
    Line { line: usize, error: Box<KeyParseError> },
}

impl PublicKey {
    /// Parses the one-line form.
    pub fn parse(line: &str) -> Result<PublicKey, KeyParseError> {
        let hex = line.trim().strip_prefix(PUB_PREFIX).ok_or(KeyParseError::Prefix)?.trim().as_bytes();
        if !hex.is_ascii() {
            return Err(KeyParseError::NotHex);
        }
        if hex.len() % 2 != 0 || hex.is_empty() {
            return Err(KeyParseError::Length);
        }
        let der = hex
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()).ok_or(KeyParseError::NotHex))
            .collect::<Result<Vec<u8>, KeyParseError>>()?;
        if der.len() != ED25519_SPKI_PREFIX.len() + 32 || !der.starts_with(&ED25519_SPKI_PREFIX) {
            return Err(KeyParseError::NotEd25519);
        }
        Ok(PublicKey(der))
    }

    /// A short, stable name for logs: the last 8 bytes of the key, in hex. Not an identity
    /// (see [`PublicKey::id`]).
    pub fn fingerprint(&self) -> String {
        self.0.iter().rev().take(8).rev().map(|b| format!("{b:02x}")).collect()
    }

    /// The whole key, in hex: what a server keys a device's sessions, replicas and files by.
    pub fn id(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn load(path: &Path) -> Result<PublicKey, NetError> {
        let text = std::fs::read_to_string(path).map_err(|e| NetError::io(format!("cannot read {}", path.display()), e))?;
        PublicKey::parse(&text).map_err(|e| NetError::Key(format!("{}: {e}", path.display())))
    }
}

/// A key pair.
#[derive(Clone)]
pub struct Identity {
    /// PKCS#8 PEM of the private key.
    pem: String,
    public: PublicKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public.fingerprint())
    }
}

impl Identity {
    /// A fresh Ed25519 key pair.
    pub fn generate() -> Result<Identity, NetError> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| NetError::Key(format!("key generation failed: {e}")))?;
        Ok(Identity { pem: kp.serialize_pem(), public: PublicKey(rcgen::PublicKeyData::subject_public_key_info(&kp)) })
    }

    pub fn from_pem(pem: &str) -> Result<Identity, NetError> {
        let kp = rcgen::KeyPair::from_pem(pem).map_err(|e| NetError::Key(format!("not a PKCS#8 PEM private key: {e}")))?;
        Ok(Identity { pem: pem.to_string(), public: PublicKey(rcgen::PublicKeyData::subject_public_key_info(&kp)) })
    }

    /// Reads a private key, which must be readable by its owner only.
    pub fn load(path: &Path) -> Result<Identity, NetError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(|e| NetError::io(format!("cannot read {}", path.display()), e))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(NetError::Key(format!(
                    "{} is readable by others (mode {:o}); a private key must not be: run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )));
            }
        }
        let pem = std::fs::read_to_string(path).map_err(|e| NetError::io(format!("cannot read {}", path.display()), e))?;
        Identity::from_pem(&pem).map_err(|e| NetError::Key(format!("{}: {e}", path.display())))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// A 32-byte secret for `purpose`, derived from the private key (HMAC-SHA256 keyed by it):
    /// the same key gives the same secret on every start, and nobody without the key can
    /// compute it. The clone server seals each device's file store with one.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.pem.as_bytes());
        let tag = ring::hmac::sign(&key, purpose.as_bytes());
        tag.as_ref().try_into().expect("HMAC-SHA256 has 32 bytes")
    }

    pub(crate) fn key_pair(&self) -> Result<rcgen::KeyPair, NetError> {
        rcgen::KeyPair::from_pem(&self.pem).map_err(|e| NetError::Key(e.to_string()))
    }

    /// Writes `PREFIX.key` (readable by its owner only) and `PREFIX.pub`; returns both paths.
    /// An existing key is replaced only with `overwrite` (a key lost is an identity lost).
    pub fn save(&self, prefix: &Path, overwrite: bool) -> Result<(PathBuf, PathBuf), NetError> {
        let with = |ext: &str| {
            let mut p = prefix.as_os_str().to_owned();
            p.push(ext);
            PathBuf::from(p)
        };
        let (key, public) = (with(".key"), with(".pub"));
        match write_private(&key, self.pem.as_bytes(), overwrite) {
            Err(NetError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(NetError::Key(format!("{} exists already; move it away to make a new key (or pass --force to replace it)", key.display())));
            }
            r => r?,
        }
        std::fs::write(&public, format!("{}\n", self.public)).map_err(|e| NetError::io(format!("cannot write {}", public.display()), e))?;
        Ok((key, public))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8], overwrite: bool) -> Result<(), NetError> {
    if overwrite {
        return write_private_file(path, data, true);
    }
    // Without `overwrite`: written whole to a private file beside it, then published under its
    // name by one link that fails on anything there (a link at the key's path, dangling or not,
    // is not followed). Nobody reads a half-written key, and of two processes making the same
    // key at once exactly one wins.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.{nanos}.new", std::process::id()));
    let tmp = PathBuf::from(tmp);
    write_private_file(&tmp, data, false)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| NetError::io(format!("cannot write {}", path.display()), e))
}

#[cfg(unix)]
fn write_private_file(path: &Path, data: &[u8], overwrite: bool) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Without `overwrite`, one atomic create that fails on anything there (O_EXCL: a link at
    // the path, dangling or not, is not followed).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(overwrite)
        .create_new(!overwrite)
        .truncate(overwrite)
        .mode(0o600)
        .open(path)
        .map_err(|e| NetError::io(format!("cannot write {}", path.display()), e))?;
    // A file that existed keeps its mode on open: make it the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| NetError::io(format!("cannot write {}", path.display()), e))?;
    f.write_all(data).map_err(|e| NetError::io(format!("cannot write {}", path.display()), e))
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8], _overwrite: bool) -> Result<(), NetError> {
    std::fs::write(path, data).map_err(|e| NetError::io(format!("cannot write {}", path.display()), e))
}

/// The device keys a server accepts: one public key per line (`#` comments, blank lines).
#[derive(Debug, Clone, Default)]
pub struct AllowList(BTreeSet<PublicKey>);

impl AllowList {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> AllowList {
        AllowList(keys.into_iter().collect())
    }

    pub fn parse(text: &str) -> Result<AllowList, KeyParseError> {
        let mut keys = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.insert(PublicKey::parse(line).map_err(|e| KeyParseError::Line { line: n + 1, error: Box::new(e) })?);
        }
        Ok(AllowList(keys))
    }

    pub fn load(path: &Path) -> Result<AllowList, NetError> {
        let text = std::fs::read_to_string(path).map_err(|e| NetError::io(format!("cannot read {}", path.display()), e))?;
        AllowList::parse(&text).map_err(|e| NetError::Key(format!("{}: {e}", path.display())))
    }

    pub fn contains(&self, k: &PublicKey) -> bool {
        self.0.contains(k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
