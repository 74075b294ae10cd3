//! Credentials on disk: reading docker's `config.json` (auths, credsStore, credHelpers) and
//! podman's `auth.json`, and writing `config.json` for `rbuild login` / `logout`.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use docker_credential::{CredentialRetrievalError, DockerCredential};

use crate::secret::{Credential, Secret};
use crate::{Error, Result};

/// The keys docker may have used for `registry` in `auths` / `credHelpers`.
fn server_keys(registry: &str) -> Vec<String> {
    if registry == crate::reference::DOCKER_HUB {
        return vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ];
    }
    vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ]
}

/// Looks up the credential for `registry` (as written in references, e.g. `docker.io`):
/// docker's config.json first, then podman's auth.json. `Ok(None)` means anonymous.
/// Blocking: it may run a `docker-credential-*` helper.
pub fn lookup(registry: &str) -> Result<Option<Credential>> {
    for key in server_keys(registry) {
        match docker_credential::get_credential(&key) {
            Ok(c) => return Ok(Some(convert(c))),
            Err(e) => check(registry, e)?,
        }
    }
    for key in server_keys(registry) {
        match docker_credential::get_podman_credential(&key) {
            Ok(c) => return Ok(Some(convert(c))),
            Err(e) => check(registry, e)?,
        }
    }
    Ok(None)
}

fn convert(c: DockerCredential) -> Credential {
    match c {
        DockerCredential::UsernamePassword(username, password) => Credential::Basic {
            username,
            password: Secret::new(password),
        },
        DockerCredential::IdentityToken(t) => Credential::IdentityToken(Secret::new(t)),
    }
}

/// "Nothing configured" is fine; anything else is an error that names the registry. Helper
/// output is not repeated (it may echo secrets), only its stderr's first line.
fn check(registry: &str, e: CredentialRetrievalError) -> Result<()> {
    let reason = match e {
        CredentialRetrievalError::NoCredentialConfigured
        | CredentialRetrievalError::ConfigNotFound
        | CredentialRetrievalError::ConfigReadError => return Ok(()),
        CredentialRetrievalError::HelperFailure {
            helper,
            stdout,
            stderr,
        } => {
            // A helper that has nothing for this server says so (on stdout, by convention);
            // that is not an error. Its output is never repeated: it may hold secrets.
            let said = format!("{stdout}{stderr}").to_ascii_lowercase();
            if said.contains("not found") || said.trim().is_empty() {
                return Ok(());
            }
            format!(
                "{helper} failed: {}",
                stderr.lines().next().unwrap_or_default()
            )
        }
        CredentialRetrievalError::HelperCommunicationError => {
            "cannot run the credential helper".into()
        }
        CredentialRetrievalError::MalformedHelperResponse => {
            "credential helper answered malformed JSON".into()
        }
        CredentialRetrievalError::CredentialDecodingError => {
            "the auth entry is not base64 of user:password".into()
        }
        CredentialRetrievalError::CredentialMismatchError => {
            "the auth entry does not match its username and password fields".into()
        }
    };
    Err(Error::Credentials {
        registry: registry.to_string(),
        reason,
    })
}

/// docker's config directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_path() -> PathBuf {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".docker")
        });
    dir.join("config.json")
}

/// The `auths` key docker uses for a registry (`https://index.docker.io/v1/` for Docker Hub).
pub fn auths_key(registry: &str) -> String {
    if registry == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/".into()
    } else {
        registry.to_string()
    }
}

/// Stores `username`/`password` for `registry` in `config_path` as docker does
/// (`auths.<host>.auth` = base64 of `user:password`), keeping every other field.
/// The file is written atomically with mode 0600.
pub fn store_login(
    config_path: &Path,
    registry: &str,
    username: &str,
    password: &Secret,
) -> Result<()> {
    let mut config = read_config(config_path)?;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    let root = as_object(&mut config);
    let auths = root
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !auths.is_object() {
        *auths = serde_json::Value::Object(Default::default());
    }
    as_object(auths).insert(auths_key(registry), serde_json::json!({ "auth": auth }));
    write_config(config_path, &config)
}

/// Removes the stored credentials for `registry`; returns whether there were any.
pub fn remove_login(config_path: &Path, registry: &str) -> Result<bool> {
    if !config_path.exists() {
        return Ok(false);
    }
    let mut config = read_config(config_path)?;
    let mut removed = false;
    if let Some(auths) = config.get_mut("auths").and_then(|a| a.as_object_mut()) {
        for key in server_keys(registry) {
            removed |= auths.remove(&key).is_some();
        }
    }
    if removed {
        write_config(config_path, &config)?;
    }
    Ok(removed)
}

fn as_object(v: &mut serde_json::Value) -> &mut serde_json::Map<String, serde_json::Value> {
    if !v.is_object() {
        *v = serde_json::Value::Object(Default::default());
    }
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

fn read_config(path: &Path) -> Result<serde_json::Value> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
            Ok(serde_json::Value::Object(Default::default()))
        }
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(serde_json::Value::Object(Default::default()))
        }
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Writes `value` to a temp file beside `path` (mode 0600), fsyncs and renames it.
fn write_config(path: &Path, value: &serde_json::Value) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config.json"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_writes_docker_format_and_keeps_other_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"gcr.io":"gcloud"},"auths":{}}"#).unwrap();
        store_login(&path, "harbor.example.com", "robot$ci", &Secret::new("p:w")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let auth = v["auths"]["harbor.example.com"]["auth"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap();
        assert_eq!(decoded, b"robot$ci:p:w");
        assert_eq!(v["credHelpers"]["gcr.io"], "gcloud");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(remove_login(&path, "harbor.example.com").unwrap());
        assert!(!remove_login(&path, "harbor.example.com").unwrap());
    }

    #[test]
    fn docker_hub_uses_the_v1_key() {
        assert_eq!(auths_key("docker.io"), "https://index.docker.io/v1/");
    }
}
