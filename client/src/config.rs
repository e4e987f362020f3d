//! The client configuration file (`~/.drover/config`): where the API server is and the token to
//! present. `drover up` writes it; every other command reads it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default address of the API server.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:6443";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "DROVER_CONFIG";
/// Environment variable overriding the server address.
pub const SERVER_ENV: &str = "DROVER_SERVER";
/// Environment variable overriding the token.
pub const TOKEN_ENV: &str = "DROVER_TOKEN";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// `http://host:port` of the API server.
    pub server: String,
    /// The bearer token presented on every request.
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read client config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("client config {path} is malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("cannot write client config {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the home directory: set HOME or {CONFIG_ENV}")]
    NoHome,
}

/// `~/.drover`, the directory of the default config and data.
pub fn drover_home() -> Result<PathBuf, ConfigError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".drover"))
        .ok_or(ConfigError::NoHome)
}

/// The config file path: `$DROVER_CONFIG`, else `~/.drover/config`.
pub fn default_config_path() -> Result<PathBuf, ConfigError> {
    match std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        Some(p) => Ok(PathBuf::from(p)),
        None => Ok(drover_home()?.join("config")),
    }
}

impl ClientConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        yaml_serde::from_str(&text).map_err(|e| ConfigError::Malformed {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Writes the config file (mode 0600: it holds a credential), replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_err = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A folder made for it (`~/.drover`) is private too; an existing one is left alone.
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(write_err)?;
        }
        let text = yaml_serde::to_string(self).map_err(|e| ConfigError::Malformed {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            #[cfg(unix)]
            use std::os::unix::fs::OpenOptionsExt;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            opts.mode(0o600);
            let mut f = opts.open(&tmp).map_err(write_err)?;
            f.write_all(text.as_bytes()).map_err(write_err)?;
            f.sync_all().map_err(write_err)?;
        }
        std::fs::rename(&tmp, path).map_err(write_err)
    }

    /// Resolves the configuration a command runs with: explicit flags first, then
    /// `DROVER_SERVER` / `DROVER_TOKEN`, then the config file (`config_path`, `$DROVER_CONFIG`
    /// or `~/.drover/config`), then the default server address. A missing config file is not an
    /// error when the flags or environment give what is needed.
    pub fn resolve(
        server: Option<&str>,
        token: Option<&str>,
        config_path: Option<&Path>,
    ) -> Result<ClientConfig, ConfigError> {
        let env_server = std::env::var(SERVER_ENV).ok().filter(|s| !s.is_empty());
        let env_token = std::env::var(TOKEN_ENV).ok().filter(|s| !s.is_empty());
        let server = server.map(str::to_string).or(env_server);
        let token = token.map(str::to_string).or(env_token);
        if let (Some(server), Some(token)) = (&server, &token) {
            return Ok(ClientConfig {
                server: normalize_server(server),
                token: token.clone(),
            });
        }
        let path = match config_path {
            Some(p) => p.to_path_buf(),
            None => default_config_path()?,
        };
        let file = match ClientConfig::load(&path) {
            Ok(c) => Some(c),
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && config_path.is_none() =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(ClientConfig {
            server: normalize_server(
                &server
                    .or_else(|| file.as_ref().map(|f| f.server.clone()))
                    .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            ),
            token: token
                .or_else(|| file.as_ref().map(|f| f.token.clone()))
                .unwrap_or_default(),
        })
    }
}

/// Adds `http://` to a bare `host:port`, to each of a comma-separated list of servers.
pub fn normalize_server(s: &str) -> String {
    s.split(',')
        .map(|one| {
            let one = one.trim().trim_end_matches('/');
            if one.contains("://") {
                one.to_string()
            } else {
                format!("http://{one}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_config_and_its_new_folder_are_private() {
        let top = std::env::temp_dir().join(format!("drover-config-test-{}", std::process::id()));
        let path = top.join(".drover").join("config");
        let cfg = ClientConfig {
            server: "http://127.0.0.1:1".into(),
            token: "secret".into(),
        };
        cfg.save(&path).expect("save");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let (file, dir) = (mode(&path), mode(path.parent().expect("parent")));
        let loaded = ClientConfig::load(&path).expect("load");
        let _ = std::fs::remove_dir_all(&top);
        assert_eq!((file, dir), (0o600, 0o700));
        assert_eq!(loaded.token, "secret");
    }
}
