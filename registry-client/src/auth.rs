//! Registry authentication: `WWW-Authenticate` challenges, token scopes and the bearer token
//! flow (GET with basic credentials, or POST with a refresh token), cached per scope set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::secret::{Credential, Secret};
use crate::{Error, Result};

/// What the registry asked for in its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=...`: send the credential with each request.
    Basic,
    /// `Bearer realm=...,service=...`: get a token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// The `service` parameter to send back.
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value.
    pub(crate) fn parse(registry: &str, header: &str) -> Result<Challenge> {
        let unsupported = || Error::Challenge {
            registry: registry.to_string(),
            challenge: header.to_string(),
        };
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let params = parse_params(rest);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Ok(Challenge::Basic),
            "bearer" => {
                let realm = params.get("realm").cloned().ok_or_else(unsupported)?;
                Ok(Challenge::Bearer {
                    realm,
                    service: params.get("service").cloned(),
                })
            }
            _ => Err(unsupported()),
        }
    }
}

/// `key="value", key2=value2` with commas allowed inside quotes.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// A set of token scopes (`repository:<name>:pull,push`), kept sorted so equal sets share a
/// cached token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct Scopes(Vec<String>);

impl Scopes {
    /// No repository access (for `/v2/` checks and login).
    pub(crate) fn none() -> Scopes {
        Scopes(Vec::new())
    }

    /// Pull access to `repository`.
    pub(crate) fn pull(repository: &str) -> Scopes {
        Scopes(vec![format!("repository:{repository}:pull")])
    }

    /// Pull and push access to `repository`, plus pull on each mount source.
    pub(crate) fn push<'a>(
        repository: &str,
        mount_sources: impl Iterator<Item = &'a str>,
    ) -> Scopes {
        let mut v = vec![format!("repository:{repository}:pull,push")];
        for src in mount_sources {
            if src != repository {
                v.push(format!("repository:{src}:pull"));
            }
        }
        v.sort();
        v.dedup();
        Scopes(v)
    }

    /// For messages.
    pub(crate) fn describe(&self) -> String {
        if self.0.is_empty() {
            "registry".into()
        } else {
            self.0.join(" ")
        }
    }
}

/// Bearer tokens by scope set.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: HashMap<Scopes, (Secret, Instant)>,
}

impl TokenCache {
    pub(crate) fn get(&self, scopes: &Scopes) -> Option<Secret> {
        self.tokens
            .get(scopes)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    pub(crate) fn put(&mut self, scopes: Scopes, token: Secret, lifetime: Duration) {
        // Renew a little early so a token does not expire mid-request.
        let lifetime = lifetime.saturating_sub(Duration::from_secs(10));
        self.tokens
            .insert(scopes, (token, Instant::now() + lifetime));
    }

    pub(crate) fn forget(&mut self, scopes: &Scopes) {
        self.tokens.remove(scopes);
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Asks `realm` for a token for `scopes`, authenticating with `credential` if any.
/// Returns the token and its lifetime; `Unauthorized` when the endpoint refuses.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scopes: &Scopes,
    credential: Option<&Credential>,
) -> Result<(Secret, Duration)> {
    let bad = |reason| Error::Token {
        realm: realm.to_string(),
        reason,
    };
    let request = match credential {
        Some(Credential::IdentityToken(refresh)) => {
            let mut form: Vec<(&str, String)> = vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", refresh.expose().to_string()),
                ("client_id", "rbuild".into()),
                ("scope", scopes.0.join(" ")),
            ];
            if let Some(s) = service {
                form.push(("service", s.to_string()));
            }
            http.post(realm).form(&form)
        }
        other => {
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = service {
                query.push(("service", s));
            }
            for s in &scopes.0 {
                query.push(("scope", s));
            }
            let mut r = http.get(realm).query(&query);
            if let Some(Credential::Basic { username, password }) = other {
                r = r.header(
                    reqwest::header::AUTHORIZATION,
                    basic_header(username, password),
                );
            }
            r
        }
    };
    let response = request.send().await.map_err(|source| Error::Connection {
        method: "GET".into(),
        url: realm.to_string(),
        source,
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Error::Unauthorized {
            registry: registry.to_string(),
            scope: scopes.describe(),
        });
    }
    if !status.is_success() {
        return Err(Error::Status {
            method: "GET".into(),
            url: realm.to_string(),
            status: status.as_u16(),
            detail: None,
        });
    }
    let body = crate::body::read_limited(response, 1 << 20, realm).await?;
    let parsed: TokenResponse =
        serde_json::from_slice(&body).map_err(|_| bad("answer is not a token JSON object"))?;
    let token = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("answer has no token"))?;
    // The spec's default lifetime is 60 seconds.
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).max(60));
    Ok((Secret::new(token), lifetime))
}

/// `Basic base64(user:password)`.
pub(crate) fn basic_header(username: &str, password: &Secret) -> String {
    let raw = format!("{username}:{}", password.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_scope() {
        let c = Challenge::parse(
            "r",
            r#"Bearer realm="https://h/service/token",service="harbor-registry",scope="repository:p/a:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://h/service/token".into(),
                service: Some("harbor-registry".into())
            }
        );
        assert_eq!(
            Challenge::parse("r", r#"Basic realm="x""#).unwrap(),
            Challenge::Basic
        );
        assert!(Challenge::parse("r", "Negotiate abc").is_err());
    }

    #[test]
    fn scope_sets_are_canonical() {
        let a = Scopes::push("x/app", ["lib/base", "x/app"].into_iter());
        let b = Scopes::push("x/app", ["lib/base"].into_iter());
        assert_eq!(a, b);
        assert_eq!(
            a.describe(),
            "repository:lib/base:pull repository:x/app:pull,push"
        );
    }

    #[test]
    fn basic_header_keeps_dollar() {
        let h = basic_header("robot$ci", &Secret::new("s"));
        let b64 = h.strip_prefix("Basic ").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw, b"robot$ci:s");
    }
}
