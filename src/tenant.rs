//! Tenants: the partition of everything the proxy learns about caches. A prefix seen under one
//! credential is never used to plan for another, so the tenant salts every prefix key.
//!
//! `Tenant = blake3::keyed_hash(secret, upstream ‖ 0 ‖ credential)`, where the credential is
//! the first present of: the `Authorization` value (its token when it is `Bearer`),
//! `x-api-key`, `x-goog-api-key`, the `key=` query parameter; then, each when sent,
//! `OpenAI-Organization` and `OpenAI-Project`. No credential: one tenant per upstream.
//!
//! The secret keeps tenants from being computed, or credentials tested against them, by
//! whoever reads the registry. It comes from the configuration, or is generated once into
//! `<data dir>/tenant_secret` (64 hex digits, mode 0600) and read back on every start:
//! replicas that share a registry must share it.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use http::HeaderMap;

/// Who a request's caches belong to. Invariant: derived only through [`Tenant::of`] (or the
/// bytes of one), never from a credential directly.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant([u8; 32]);

impl Tenant {
    pub fn of(secret: &TenantSecret, upstream: &str, credential: &Credential<'_>) -> Self {
        let mut h = blake3::Hasher::new_keyed(&secret.0);
        h.update(upstream.as_bytes());
        h.update(&[0]);
        if let Some(key) = credential.key {
            h.update(key);
        }
        // Header values cannot hold a NUL byte, so each tagged field stands apart.
        for (tag, value) in [
            (b"org".as_slice(), credential.organization),
            (b"project".as_slice(), credential.project),
        ] {
            if let Some(value) = value {
                h.update(&[0]);
                h.update(tag);
                h.update(&[0]);
                h.update(value);
            }
        }
        Self(*h.finalize().as_bytes())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 16 hex digits: how records and logs name a tenant (the key is already a keyed hash of
    /// the credential, so this tells nothing of it).
    pub fn fingerprint(&self) -> String {
        let hex = blake3::Hash::from_bytes(self.0).to_hex();
        hex[..16].to_owned()
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = blake3::Hash::from_bytes(self.0).to_hex();
        write!(f, "Tenant({})", &hex[..16])
    }
}

/// What identifies the caller to the upstream, borrowed from the request.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Credential<'a> {
    pub key: Option<&'a [u8]>,
    pub organization: Option<&'a [u8]>,
    pub project: Option<&'a [u8]>,
}

impl<'a> Credential<'a> {
    /// `query` is the request's raw query string; `key=` is compared as sent, undecoded.
    pub fn from_request(headers: &'a HeaderMap, query: Option<&'a str>) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty())
        };
        let key = header("authorization")
            .map(bearer_token)
            .filter(|t| !t.is_empty())
            .or_else(|| header("x-api-key"))
            .or_else(|| header("x-goog-api-key"))
            .or_else(|| query_key(query?));
        Self {
            key,
            organization: header("openai-organization"),
            project: header("openai-project"),
        }
    }
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Presence only: a credential never reaches a log.
        f.debug_struct("Credential")
            .field("key", &self.key.is_some())
            .field("organization", &self.organization.is_some())
            .field("project", &self.project.is_some())
            .finish()
    }
}

/// The token of `Bearer <token>`; any other scheme's whole value (Basic, say) still names
/// the caller.
fn bearer_token(value: &[u8]) -> &[u8] {
    const SCHEME: &[u8] = b"bearer ";
    match value.get(..SCHEME.len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => value[SCHEME.len()..].trim_ascii(),
        _ => value,
    }
}

fn query_key(query: &str) -> Option<&[u8]> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .filter(|k| !k.is_empty())
        .map(str::as_bytes)
}

/// The key of the tenant hash.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantSecret([u8; 32]);

impl fmt::Debug for TenantSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantSecret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("tenant secret {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("tenant secret {} must hold 64 hex digits", path.display())]
    Malformed { path: PathBuf },
    #[error("no randomness for a tenant secret: {0}")]
    Random(getrandom::Error),
}

impl TenantSecret {
    /// The file a generated secret lives in, under the data directory.
    pub const FILE: &'static str = "tenant_secret";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A configured secret: 64 hex digits are the key itself (so the content of a generated
    /// file can be copied into another replica's configuration); any other string is a
    /// passphrase the key is derived from.
    pub fn from_config(value: &str) -> Self {
        let value = value.trim();
        parse_hex(value).map_or_else(
            || {
                Self(blake3::derive_key(
                    "cachet tenant secret v1",
                    value.as_bytes(),
                ))
            },
            Self,
        )
    }

    /// A fresh random secret kept in memory only: tenants then change at every start, which
    /// costs an in-process registry nothing; replicas sharing a registry need a shared one.
    pub fn ephemeral() -> Result<Self, SecretError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(SecretError::Random)?;
        Ok(Self(bytes))
    }

    /// The configured secret if any, else the one in `data_dir`, generated there on first use.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<Self, SecretError> {
        if let Some(value) = configured.filter(|v| !v.trim().is_empty()) {
            return Ok(Self::from_config(value));
        }
        let path = data_dir.join(Self::FILE);
        match read(&path) {
            Err(SecretError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                create(data_dir, &path)
            }
            found => found,
        }
    }
}

fn read(path: &Path) -> Result<TenantSecret, SecretError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    parse_hex(text.trim())
        .map(TenantSecret)
        .ok_or_else(|| SecretError::Malformed {
            path: path.to_owned(),
        })
}

/// Writes a fresh secret to a private temporary file and links it into place, so that a
/// concurrent start never reads a half-written secret, and the first of two to link wins.
fn create(data_dir: &Path, path: &Path) -> Result<TenantSecret, SecretError> {
    fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(SecretError::Random)?;
    let hex = blake3::Hash::from_bytes(bytes).to_hex();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = data_dir.join(format!(
        ".{}.{}.{nanos}",
        TenantSecret::FILE,
        std::process::id()
    ));
    write_private(&tmp, format!("{hex}\n").as_bytes()).map_err(io_error(&tmp))?;
    let linked = fs::hard_link(&tmp, path);
    // The temporary name has served its purpose either way; a leftover is harmless.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(TenantSecret(bytes)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_owned(),
        source,
    }
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
