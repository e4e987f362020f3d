//! Authentication: bearer tokens from a static token file (`token,user[,group|group...]` per
//! line, as Kubernetes' `--token-auth-file`). The admin token is generated at first start.
//!
//! The file is the keys to the cluster: it is written mode 0600 (a missing directory for it is
//! made 0700), and an existing file readable by others is made 0600 when it is loaded.
//!
//! Authorisation (what an authenticated user may do) is [`authz`].

pub mod authz;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use drover_api::Status;
use rand::RngExt;

pub use authz::{AlwaysAllow, Attributes, Authorizer, Decision, Verb};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The admin user `drover up` configures the local client with.
pub const ADMIN_USER: &str = "admin";
/// The group with every permission.
pub const MASTERS_GROUP: &str = "system:masters";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write token file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} line {line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Maps bearer tokens to users.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, User>,
    admin_token: String,
}

impl Authenticator {
    /// Loads the token file, creating it with a fresh admin token when it does not exist.
    pub fn load_or_init(path: &Path) -> Result<Authenticator, AuthError> {
        if !path.exists() {
            let token = generate_token();
            let line = format!("{token},{ADMIN_USER},{MASTERS_GROUP}\n");
            write_private(path, line.as_bytes()).map_err(|source| AuthError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        } else {
            make_private_file(path).map_err(|source| AuthError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Authenticator, AuthError> {
        let mut auth = Authenticator::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |message: &str| AuthError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                message: message.into(),
            };
            let mut parts = line.split(',');
            let token = parts.next().unwrap_or_default().trim();
            let user = parts.next().unwrap_or_default().trim();
            if token.is_empty() || user.is_empty() {
                return Err(malformed("expected `token,user[,group|group...]`"));
            }
            let groups: Vec<String> = parts
                .next()
                .map(|g| g.split('|').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            if groups.iter().any(|g| g == MASTERS_GROUP) && auth.admin_token.is_empty() {
                auth.admin_token = token.to_string();
            }
            auth.tokens.insert(
                token.to_string(),
                User {
                    name: user.to_string(),
                    groups,
                },
            );
        }
        if auth.admin_token.is_empty() {
            return Err(AuthError::Malformed {
                path: path.to_path_buf(),
                line: 0,
                message: format!("no token in group {MASTERS_GROUP}"),
            });
        }
        Ok(auth)
    }

    /// The token of the first user in `system:masters` (written to the client config).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<User, Status> {
        let header = header.ok_or_else(|| {
            Status::unauthorized("no bearer token: send `Authorization: Bearer <token>`")
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Status::unauthorized("malformed Authorization header: expected `Bearer <token>`")
            })?
            .trim();
        // Compare in constant time per candidate so response times leak nothing about tokens.
        self.tokens
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
            .map(|(_, u)| u.clone())
            .ok_or_else(|| Status::unauthorized("invalid bearer token"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random 256-bit token, hex-encoded.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mode of the token file.
pub const TOKEN_FILE_MODE: u32 = 0o600;

/// Makes an existing token file 0600 when others (group included) may read or write it.
fn make_private_file(path: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the token file was readable by others; making it 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(TOKEN_FILE_MODE))?;
    }
    Ok(())
}

pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(TOKEN_FILE_MODE)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_file_authenticates_admin_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let auth = Authenticator::load_or_init(&path).unwrap();
        let token = auth.admin_token().to_string();
        assert_eq!(token.len(), 64);
        let user = auth.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(user.name, ADMIN_USER);
        assert!(auth.authenticate(None).is_err());
        assert!(auth.authenticate(Some("Bearer nope")).is_err());
        assert!(auth.authenticate(Some(&token)).is_err());
        // A second start reads the same token.
        let again = Authenticator::load_or_init(&path).unwrap();
        assert_eq!(again.admin_token(), token);
    }

    #[test]
    fn token_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("tokens");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        Authenticator::load_or_init(&path).unwrap();
        assert_eq!(mode(&path), 0o600, "new token file");
        assert_eq!(mode(path.parent().unwrap()), 0o700, "its new directory");
        // A file made readable by others (by hand, or an older version) is closed on load.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Authenticator::load_or_init(&path).unwrap();
        assert_eq!(mode(&path), 0o600, "loaded token file");
    }

    #[test]
    fn malformed_file_names_the_line() {
        let err = Authenticator::parse(Path::new("t"), "abc\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
