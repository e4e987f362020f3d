//! The API server's credential toward node agents, and the TokenReview that agents ask.
//!
//! The log proxy never forwards the caller's token (a Node object names any address it likes, so
//! that would hand the caller's credential to whoever registered it). Instead it presents a
//! short-lived token it mints for the one node it calls: `drover-agent:v1:NODE:EXPIRY:MAC`, the
//! MAC an HMAC-SHA256 over the node and the expiry under a key kept in the data directory (0600).
//! The agent checks it with a TokenReview for its own audience (`drover:node:NODE`): the token is
//! good on that node, for a few minutes, and nowhere else — in particular not on the API server,
//! whose authenticator knows only user tokens.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_api::authentication::{
    API_AUDIENCE, TokenReview, TokenReviewStatus, UserInfo, node_audience,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::{AuthError, Authenticator, generate_token, write_private};

/// The user the API server is when it calls an agent.
pub const APISERVER_USER: &str = "system:apiserver";
/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// How long a minted token is good for (one log request starts well within it).
pub const AGENT_TOKEN_TTL: Duration = Duration::from_secs(120);
const PREFIX: &str = "drover-agent:v1:";

type HmacSha256 = Hmac<Sha256>;

/// Mints and checks the tokens the API server presents to node agents.
#[derive(Clone)]
pub struct AgentCredentials {
    /// The keyed MAC, cloned for each token.
    keyed: HmacSha256,
}

impl std::fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCredentials").finish_non_exhaustive()
    }
}

impl AgentCredentials {
    /// Reads the key file, creating it (0600) with a fresh random key when it does not exist.
    pub fn load_or_init(path: &Path) -> Result<AgentCredentials, AuthError> {
        if !path.exists() {
            write_private(path, generate_token().as_bytes()).map_err(|source| {
                AuthError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        let key = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key = String::from_utf8_lossy(&key).trim().as_bytes().to_vec();
        if key.len() < 32 {
            return Err(AuthError::Malformed {
                path: path.to_path_buf(),
                line: 1,
                message: format!("expected a key of at least 32 bytes, found {}", key.len()),
            });
        }
        let keyed = HmacSha256::new_from_slice(&key).map_err(|e| AuthError::Malformed {
            path: path.to_path_buf(),
            line: 1,
            message: format!("unusable key: {e}"),
        })?;
        Ok(AgentCredentials { keyed })
    }

    fn mac(&self, node: &str, expiry: u64) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(node.as_bytes());
        mac.update(b":");
        mac.update(expiry.to_string().as_bytes());
        mac
    }

    /// A token for the agent of `node`, good until `now + AGENT_TOKEN_TTL`.
    pub fn mint(&self, node: &str, now: SystemTime) -> String {
        let expiry = unix(now) + AGENT_TOKEN_TTL.as_secs();
        let tag = self.mac(node, expiry).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{node}:{expiry}:{hex}")
    }

    /// Whether `token` looks like one of ours (so it is never tried as a user token).
    pub fn is_agent_token(token: &str) -> bool {
        token.starts_with(PREFIX)
    }

    /// The node a minted token is for, when its MAC is right and it has not expired.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<String, String> {
        let rest = token
            .strip_prefix(PREFIX)
            .ok_or_else(|| "not a token of this API server".to_string())?;
        let mut parts = rest.rsplitn(3, ':');
        let (Some(hex), Some(expiry), Some(node)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed agent token".into());
        };
        let expiry: u64 = expiry
            .parse()
            .map_err(|_| "malformed agent token expiry".to_string())?;
        let tag = decode_hex(hex).ok_or_else(|| "malformed agent token MAC".to_string())?;
        self.mac(node, expiry)
            .verify_slice(&tag)
            .map_err(|_| "the agent token's signature is not valid".to_string())?;
        if unix(now) >= expiry {
            return Err("the agent token has expired".into());
        }
        Ok(node.to_string())
    }

    /// Answers a TokenReview: user tokens are valid for the API server's audience, minted
    /// tokens for their node's only. `audiences` empty means the API server's.
    pub fn review(
        &self,
        users: &Authenticator,
        review: &TokenReview,
        now: SystemTime,
    ) -> TokenReview {
        let wanted: Vec<String> = if review.spec.audiences.is_empty() {
            vec![API_AUDIENCE.to_string()]
        } else {
            review.spec.audiences.clone()
        };
        let token = review.spec.token.trim();
        let found = if Self::is_agent_token(token) {
            self.verify(token, now).map(|node| {
                let user = UserInfo {
                    username: APISERVER_USER.into(),
                    groups: vec![AUTHENTICATED_GROUP.into()],
                    ..Default::default()
                };
                (user, node_audience(&node))
            })
        } else {
            users
                .authenticate(Some(&format!("Bearer {token}")))
                .map(|u| {
                    let mut groups = u.groups;
                    groups.push(AUTHENTICATED_GROUP.into());
                    let user = UserInfo {
                        username: u.name,
                        groups,
                        ..Default::default()
                    };
                    (user, API_AUDIENCE.to_string())
                })
                .map_err(|s| s.message)
        };
        let status = match found {
            Ok((user, audience)) if wanted.contains(&audience) => TokenReviewStatus {
                authenticated: true,
                user: Some(user),
                audiences: vec![audience],
                error: String::new(),
            },
            Ok((_, audience)) => TokenReviewStatus {
                error: format!(
                    "the token is valid for audience {audience}, not for {}",
                    wanted.join(", ")
                ),
                ..Default::default()
            },
            Err(error) => TokenReviewStatus {
                error,
                ..Default::default()
            },
        };
        let mut out = review.clone();
        out.status = status;
        out
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use drover_api::authentication::TokenReviewSpec;

    use super::*;

    fn creds(dir: &Path) -> AgentCredentials {
        AgentCredentials::load_or_init(&dir.join("agent-credential.key")).expect("key")
    }

    fn review(token: &str, audiences: &[&str]) -> TokenReview {
        TokenReview {
            spec: TokenReviewSpec {
                token: token.into(),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_minted_token_is_good_on_its_node_only_and_not_for_long() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = creds(dir.path());
        let users = Authenticator::load_or_init(&dir.path().join("tokens")).expect("tokens");
        let now = SystemTime::now();
        let token = c.mint("gpu-1", now);
        let a1 = node_audience("gpu-1");
        let a2 = node_audience("gpu-2");

        let ok = c.review(&users, &review(&token, &[&a1, API_AUDIENCE]), now);
        assert!(ok.status.authenticated, "{:?}", ok.status);
        assert_eq!(ok.status.user.expect("user").username, APISERVER_USER);
        assert_eq!(ok.status.audiences, vec![a1.clone()]);

        let cases: Vec<(String, Vec<&str>, SystemTime, &str)> = vec![
            (token.clone(), vec![&a2, API_AUDIENCE], now, "audience"),
            (token.clone(), vec![], now, "audience"),
            (token.clone(), vec![&a1], now + AGENT_TOKEN_TTL, "expired"),
            (token.replace("gpu-1", "gpu-2"), vec![&a2], now, "signature"),
            (format!("{token}0"), vec![&a1], now, "MAC"),
            ("drover-agent:v1:x".into(), vec![&a1], now, "malformed"),
        ];
        for (t, auds, at, why) in cases {
            let r = c.review(&users, &review(&t, &auds), at);
            assert!(!r.status.authenticated, "{t} {auds:?} accepted");
            assert!(r.status.error.contains(why), "{t}: {}", r.status.error);
        }
        // Another server's key (another data directory) does not accept it.
        let other = tempfile::tempdir().expect("tmp");
        assert!(creds(other.path()).verify(&token, now).is_err());
        // The API server itself does not take it as a user token.
        assert!(
            users
                .authenticate(Some(&format!("Bearer {token}")))
                .is_err()
        );
        // The key survives a restart.
        assert!(creds(dir.path()).verify(&token, now).is_ok());
    }

    #[test]
    fn user_tokens_are_good_for_the_api_audience() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = creds(dir.path());
        let users = Authenticator::load_or_init(&dir.path().join("tokens")).expect("tokens");
        let admin = users.admin_token().to_string();
        let now = SystemTime::now();
        let r = c.review(&users, &review(&admin, &[]), now);
        assert!(r.status.authenticated, "{:?}", r.status);
        let groups = r.status.user.expect("user").groups;
        assert!(
            groups.iter().any(|g| g == AUTHENTICATED_GROUP),
            "{groups:?}"
        );
        let r = c.review(&users, &review(&admin, &[&node_audience("n")]), now);
        assert!(!r.status.authenticated);
        let r = c.review(&users, &review("wrong", &[]), now);
        assert!(!r.status.authenticated && r.status.error.contains("invalid"));
    }
}
