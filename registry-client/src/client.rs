//! `Client`: the entry point. Holds one [`Endpoint`] per registry host (TLS setup, auth
//! state, token cache), and answers digest look-ups and login checks.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rbuild_store::Digest;
use reqwest::header::ACCEPT;
use reqwest::{Method, Response, StatusCode};

use crate::auth::Scopes;
use crate::body::read_limited;
use crate::manifest;
use crate::secret::{Credential, Secret};
use crate::transport::{status_error, ClientOptions, CredentialSource, Endpoint, Req};
use crate::{Error, Result};
use rbuild_store::Reference;

/// A registry client. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) options: ClientOptions,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// A manifest as fetched: its bytes (kept exactly as received), media type and digest.
pub(crate) struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
    pub digest: Digest,
}

/// An image manifest resolved from a reference (through an index when there is one).
pub(crate) struct ImageManifest {
    /// The digest the reference resolved to (an index's, when it named one).
    pub resolved: Digest,
    /// The image manifest as received.
    pub fetched: Fetched,
    /// Its media type.
    pub media_type: String,
    /// Its config.
    pub config: rbuild_store::Descriptor,
    /// Its layers, bottom first.
    pub layers: Vec<rbuild_store::Descriptor>,
}

impl Client {
    /// A client with `options`. Nothing is contacted until the first request.
    pub fn new(options: ClientOptions) -> Client {
        Client {
            inner: Arc::new(Inner {
                options,
                endpoints: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    pub(crate) fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>> {
        let mut map = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(registry) {
            return Ok(e.clone());
        }
        let e = Arc::new(Endpoint::new(registry, &self.inner.options)?);
        map.insert(registry.to_string(), e.clone());
        Ok(e)
    }

    /// The digest `reference` points at now (HEAD on the manifest; the index digest for a
    /// multi-platform image). A reference that carries a digest is answered without asking.
    pub async fn resolve_digest(&self, reference: &Reference) -> Result<Digest> {
        if let Some(d) = reference.digest() {
            return Ok(d.clone());
        }
        let ep = self.endpoint(reference.registry())?;
        let url = ep
            .url(&format!(
                "/v2/{}/manifests/{}",
                reference.repository(),
                reference.manifest_ref()
            ))
            .await?;
        let req = Req::new(Method::HEAD, url.clone()).header(ACCEPT, manifest::ACCEPT);
        let resp = ep
            .send_retry(&req, &Scopes::pull(reference.repository()))
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                what: reference.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(status_error(&Method::HEAD, &url, resp).await);
        }
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::from_str(v).ok());
        match header {
            Some(d) => Ok(d),
            // Not every registry sends the header on HEAD: hash the manifest itself.
            None => Ok(self.fetch_manifest(&ep, reference, None).await?.digest),
        }
    }

    /// Checks `username`/`password` against `registry` (`/v2/`, through the token flow if
    /// the registry uses one). `registry` is as written in references (`docker.io`).
    pub async fn login(&self, registry: &str, username: &str, password: &Secret) -> Result<()> {
        let mut options = self.inner.options.clone();
        options.credentials = CredentialSource::Fixed(Credential::Basic {
            username: username.to_string(),
            password: password.clone(),
        });
        let ep = Endpoint::new(registry, &options)?;
        ep.verify_login().await
    }

    /// The image manifest `reference` names: its own, or, when it is an index, the entry
    /// for `platform` (attestations skipped; `None` refuses an index). Returns the digest
    /// the reference resolved to (the index's, if any), the image manifest as fetched, its
    /// media type, config and layers.
    pub(crate) async fn image_manifest(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        platform: Option<&rbuild_store::Platform>,
    ) -> Result<ImageManifest> {
        let what = reference.to_string();
        let top = self.fetch_manifest(ep, reference, None).await?;
        let resolved = top.digest.clone();
        let (mut media_type, mut parsed) =
            manifest::parse(&what, &top.bytes, top.media_type.as_deref())?;
        let mut fetched = top;
        if let manifest::Parsed::Index(entries) = &parsed {
            let Some(platform) = platform else {
                return Err(Error::UnexpectedManifest {
                    what,
                    reason: format!("is an index ({media_type}), not an image manifest"),
                });
            };
            let digest = manifest::select(&what, entries, platform)?.digest.clone();
            fetched = self.fetch_manifest(ep, reference, Some(&digest)).await?;
            let (mt, p) = manifest::parse(&what, &fetched.bytes, fetched.media_type.as_deref())?;
            media_type = mt;
            parsed = p;
        }
        let manifest::Parsed::Image { config, layers } = parsed else {
            return Err(Error::UnsupportedMediaType { what, media_type });
        };
        Ok(ImageManifest {
            resolved,
            fetched,
            media_type,
            config: *config,
            layers,
        })
    }

    /// GETs a manifest (bytes kept as received, at most [`manifest::MAX_MANIFEST_SIZE`]),
    /// verifying it against `expected` or the reference's digest.
    pub(crate) async fn fetch_manifest(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        expected: Option<&Digest>,
    ) -> Result<Fetched> {
        let what_ref = expected.map_or_else(|| reference.manifest_ref(), |d| d.to_string());
        let url = ep
            .url(&format!(
                "/v2/{}/manifests/{what_ref}",
                reference.repository()
            ))
            .await?;
        let req = Req::new(Method::GET, url.clone()).header(ACCEPT, manifest::ACCEPT);
        let resp: Response = ep
            .send_retry(&req, &Scopes::pull(reference.repository()))
            .await?;
        let what = match expected {
            Some(d) => format!("{}@{d}", reference.name()),
            None => reference.to_string(),
        };
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound { what });
        }
        if !resp.status().is_success() {
            return Err(status_error(&Method::GET, &url, resp).await);
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = read_limited(resp, manifest::MAX_MANIFEST_SIZE, &what).await?;
        let digest = Digest::of(&bytes);
        if let Some(want) = expected.or(reference.digest()) {
            if *want != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }
}
