//! Registry client end to end: `rbuild pull/push/login/logout` against real `registry:2`
//! instances (anonymous, htpasswd, bearer tokens, TLS), checked with skopeo and the
//! registry's own access log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::busybox::{busybox, BaseFormat};
use crate::util::faultproxy::{Fault, FaultProxy};
use crate::util::proxy::{Direction, Proxy};
use crate::util::registry::RegistryOptions;
use crate::util::tokenissuer::TokenIssuer;
use crate::util::{show, tool, Rbuild, Registry, TestDir};

/// Runs rbuild with extra environment and optional stdin.
fn run_env(rb: &Rbuild, env: &[(&str, &Path)], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = rb.cmd();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args);
    match stdin {
        Some(input) => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn rbuild");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().expect("wait rbuild")
        }
        None => cmd.output().expect("spawn rbuild"),
    }
}

fn ok_env(rb: &Rbuild, env: &[(&str, &Path)], args: &[&str]) -> String {
    let out = run_env(rb, env, args, None);
    assert!(
        out.status.success(),
        "rbuild {args:?} failed:\n{}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A store holding the fixture busybox, pulled with rbuild from the shared registry.
fn store_with_busybox() -> Rbuild {
    let rb = Rbuild::new();
    rb.ok(&["pull", "--progress", "plain", &busybox().reference]);
    rb
}

/// The digest printed by `rbuild push` (`TAG: digest: sha256:... size: N`).
fn pushed_digest(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.contains(": digest: sha256:"))
        .unwrap_or_else(|| panic!("no digest line in push output:\n{stdout}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

fn skopeo_digest(reference: &str, extra: &[&str]) -> String {
    let mut args = vec!["inspect", "--format", "{{.Digest}}"];
    args.extend_from_slice(extra);
    let r = format!("docker://{reference}");
    args.push(&r);
    tool("skopeo", &args).trim().to_string()
}

/// Access-log lines after `from` bytes that mention `needle`.
fn log_lines_after(registry: &Registry, from: usize, needle: &str) -> Vec<String> {
    registry.log_text()[from..]
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

fn is_blob_upload(line: &str) -> bool {
    (line.contains("\"PUT ") || line.contains("\"PATCH ")) && line.contains("/blobs/uploads/")
}

#[test]
fn pull_and_push_anonymous_roundtrip() {
    // On the busybox base pushed as OCI and as Docker v2s2, each pushed in its own format.
    for (base, format) in [(BaseFormat::Oci, "oci"), (BaseFormat::Docker, "docker")] {
        let source = &base.busybox().reference;
        let rb = Rbuild::new();
        rb.ok(&["pull", "--progress", "plain", source]);
        let registry = Registry::shared();
        let dest = format!("{}/rt/busybox:{format}", registry.addr);
        let out = rb.ok(&[
            "push",
            "--progress",
            "plain",
            "--format",
            format,
            source,
            &dest,
        ]);
        let digest = pushed_digest(&out);
        assert!(
            out.starts_with(&format!("{format}: digest: sha256:")),
            "{out}"
        );
        // The pulled image is pushed byte for byte: same manifest digest as the source.
        let source_digest = skopeo_digest(source, &["--tls-verify=false"]);
        assert_eq!(digest, source_digest);
        assert_eq!(skopeo_digest(&dest, &["--tls-verify=false"]), digest);

        // skopeo can copy it out (it verifies every blob digest on the way).
        let out_dir = TestDir::new("rt-copy");
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{dest}"),
                &format!("oci:{}:x", out_dir.path().join("layout").display()),
            ],
        );

        // A fresh store pulls it back; the layer is stored under its digest.
        let rb2 = Rbuild::new();
        let id = rb2.ok(&["pull", "-q", &dest]).trim().to_string();
        assert!(id.starts_with("sha256:"), "{id}");
        let index = std::fs::read_to_string(rb2.root.join("index.json")).unwrap();
        assert!(
            index.contains(&digest),
            "tag not in store index.json: {index}"
        );
        assert!(rb2
            .root
            .join("blobs/sha256")
            .join(id.trim_start_matches("sha256:"))
            .exists());
    }
}

#[test]
fn second_push_uploads_no_blob() {
    let rb = store_with_busybox();
    let registry = Registry::shared();
    let dest = format!("{}/again/busybox:v1", registry.addr);
    rb.ok(&["push", &busybox().reference, &dest]);
    let mark = registry.log_text().len();
    let out = run_env(
        &rb,
        &[],
        &["push", "--progress", "plain", &busybox().reference, &dest],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Layer already exists"), "{stderr}");
    let lines = log_lines_after(registry, mark, "/v2/again/busybox/");
    assert!(!lines.is_empty(), "second push left no log lines");
    let uploads: Vec<&String> = lines.iter().filter(|l| is_blob_upload(l)).collect();
    assert!(
        uploads.is_empty(),
        "second push uploaded blobs: {uploads:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("\"HEAD ")), "{lines:#?}");
}

#[test]
fn push_mounts_blobs_from_the_base_repository() {
    let rb = store_with_busybox();
    let registry = Registry::shared();
    let mark = registry.log_text().len();
    let dest = format!("{}/mount/app:v1", registry.addr);
    let out = run_env(
        &rb,
        &[],
        &["push", "--progress", "plain", &busybox().reference, &dest],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    let lines = log_lines_after(registry, mark, "/v2/mount/app/");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mount=sha256:") && l.contains("from=library/busybox")),
        "no mount request: {lines:#?}"
    );
    // The layer was pulled from library/busybox: it must be mounted, not uploaded.
    let layer = layer_digest_of(&busybox().layout);
    assert!(
        !lines
            .iter()
            .any(|l| is_blob_upload(l) && l.contains(&layer)),
        "layer uploaded instead of mounted: {lines:#?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Mounted"));
}

/// A recorded mount source that no longer holds the blob (its repository was deleted) must
/// not turn the push into an upload while another recorded source still holds it.
#[test]
fn push_skips_a_stale_mount_source() {
    let rb = store_with_busybox();
    let registry = Registry::shared();
    let first = format!("{}/aaa-stale/app:v1", registry.addr);
    let out = run_env(&rb, &[], &["push", &busybox().reference, &first], None);
    assert!(out.status.success(), "{}", show(&out));
    // The registry forgets aaa-stale; the store's record of it as a source is now stale and
    // sorts before library/busybox.
    let repo_dir = registry
        .storage
        .join("docker/registry/v2/repositories/aaa-stale");
    std::fs::remove_dir_all(&repo_dir).expect("delete the repository from the registry");

    let mark = registry.log_text().len();
    let dest = format!("{}/zzz-stale/app:v1", registry.addr);
    let out = run_env(
        &rb,
        &[],
        &["push", "--progress", "plain", &busybox().reference, &dest],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    let lines = log_lines_after(registry, mark, "/v2/zzz-stale/");
    let layer = layer_digest_of(&busybox().layout);
    assert!(
        lines.iter().any(|l| l.contains("from=aaa-stale")),
        "the stale source was not tried first: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("from=library/busybox")),
        "the next source was not tried: {lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| is_blob_upload(l) && l.contains(&layer)),
        "layer uploaded instead of mounted: {lines:#?}"
    );
}

/// The first layer digest of the fixture layout.
fn layer_digest_of(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(m.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn push_survives_dropped_connections() {
    let rb = store_with_busybox();
    let registry = Registry::shared();
    // Cut the first two connections that carry more than 200 kB of request body (the
    // layer upload) in the middle of the blob.
    let proxy = Proxy::start(&registry.addr, Direction::Upload, 200_000, 2);
    let dest = format!("{}/dropped/busybox:v1", proxy.addr);
    let out = run_env(
        &rb,
        &[],
        &["push", "--progress", "plain", &busybox().reference, &dest],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(proxy.drops(), 2, "the proxy did not cut the upload");
    let digest = pushed_digest(&String::from_utf8_lossy(&out.stdout));
    let direct = format!("{}/dropped/busybox:v1", registry.addr);
    assert_eq!(skopeo_digest(&direct, &["--tls-verify=false"]), digest);
    let out_dir = TestDir::new("dropped-copy");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{direct}"),
            &format!("oci:{}:x", out_dir.path().join("layout").display()),
        ],
    );
}

#[test]
fn pull_resumes_after_dropped_connection() {
    let registry = Registry::shared();
    let _ = busybox();
    let proxy = Proxy::start(&registry.addr, Direction::Download, 300_000, 1);
    let rb = Rbuild::new();
    let reference = format!("{}/library/busybox:latest", proxy.addr);
    let out = run_env(&rb, &[], &["pull", "--progress", "plain", &reference], None);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(proxy.drops(), 1);
    assert!(
        proxy.saw_range_request(),
        "the pull restarted without a Range request"
    );
    let layer = layer_digest_of(&busybox().layout);
    let blob = rb
        .root
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let bytes = std::fs::read(&blob).expect("layer in store");
    use sha2::Digest;
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
        layer
    );
}

/// A bcrypt htpasswd line made with perl's crypt() (libxcrypt does bcrypt).
fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new("perl")
        .args([
            "-e",
            "print crypt($ARGV[0], '$2b$05$rbuildtestsaltsaltsalu')",
            password,
        ])
        .output()
        .expect("perl");
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(
        hash.starts_with("$2b$05$"),
        "this libc's crypt() does not do bcrypt: {hash:?}"
    );
    format!("{user}:{hash}\n")
}

#[test]
fn basic_auth_with_config_json_and_login() {
    let dir = TestDir::new("basic-auth");
    let user = "robot$ci";
    let password = "s3cret-Pa55";
    let htpasswd = dir.write("htpasswd", htpasswd_line(user, password));
    let registry = Registry::start(
        "basic",
        RegistryOptions {
            extra_yaml: format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                htpasswd.display()
            ),
            ..Default::default()
        },
    );
    let rb = store_with_busybox();
    let dest = format!("{}/project/app:v1", registry.addr);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let docker = dir.path().join("docker");
    let env: Vec<(&str, &Path)> = vec![("HOME", &home), ("DOCKER_CONFIG", &docker)];

    // Anonymous: refused, and the error says so.
    let out = run_env(&rb, &env, &["push", &busybox().reference, &dest], None);
    assert!(
        !out.status.success(),
        "anonymous push succeeded:\n{}",
        show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication"),
        "{}",
        show(&out)
    );

    // A wrong password: login fails and writes nothing.
    let out = run_env(
        &rb,
        &env,
        &["login", "-u", user, "--password-stdin", &registry.addr],
        Some("wrong\n"),
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(!docker.join("config.json").exists());

    // rbuild login writes docker's config.json, 0600, user:password in base64.
    let out = run_env(
        &rb,
        &env,
        &["login", "-u", user, "--password-stdin", &registry.addr],
        Some(&format!("{password}\n")),
    );
    assert!(out.status.success(), "{}", show(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(password), "password echoed: {all}");
    let config = docker.join("config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let auth = v["auths"][&registry.addr]["auth"]
        .as_str()
        .expect("auth entry");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .unwrap();
    assert_eq!(decoded, format!("{user}:{password}").as_bytes());

    let out = ok_env(&rb, &env, &["push", &busybox().reference, &dest]);
    let digest = pushed_digest(&out);
    let creds = format!("{user}:{password}");
    assert_eq!(
        skopeo_digest(&dest, &["--tls-verify=false", "--creds", &creds]),
        digest
    );
    let rb2 = Rbuild::new();
    ok_env(&rb2, &env, &["pull", &dest]);

    // logout removes it, and the registry refuses us again.
    let out = ok_env(&rb, &env, &["logout", &registry.addr]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let out = run_env(&rb2, &env, &["pull", &dest], None);
    assert!(!out.status.success(), "{}", show(&out));

    // A hand-written config.json (as another tool would leave it) works too.
    let other = dir.path().join("docker2");
    std::fs::create_dir_all(&other).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&creds);
    std::fs::write(
        other.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, registry.addr),
    )
    .unwrap();
    let env2: Vec<(&str, &Path)> = vec![("HOME", &home), ("DOCKER_CONFIG", &other)];
    let rb3 = Rbuild::new();
    ok_env(&rb3, &env2, &["pull", &dest]);

    // A credential helper named in credHelpers is run (docker-credential-<name> get).
    let helpers = dir.path().join("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-rbuildtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh
read server
[ \"$1\" = get ] && [ \"$server\" = \"{}\" ] || exit 1
\
             printf '%s' '{{\"Username\":\"{user}\",\"Secret\":\"{password}\"}}'\n",
            registry.addr
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let with_helper = dir.path().join("docker3");
    std::fs::create_dir_all(&with_helper).unwrap();
    std::fs::write(
        with_helper.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"rbuildtest"}}}}"#, registry.addr),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let path = PathBuf::from(path);
    let env3: Vec<(&str, &Path)> = vec![
        ("HOME", &home),
        ("DOCKER_CONFIG", &with_helper),
        ("PATH", &path),
    ];
    let rb4 = Rbuild::new();
    ok_env(&rb4, &env3, &["pull", &dest]);

    // podman's auth.json through REGISTRY_AUTH_FILE, when docker has nothing.
    let auth_file = dir.write(
        "podman/auth.json",
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, registry.addr),
    );
    let empty = dir.path().join("docker-empty");
    let env4: Vec<(&str, &Path)> = vec![
        ("HOME", &home),
        ("DOCKER_CONFIG", &empty),
        ("REGISTRY_AUTH_FILE", &auth_file),
    ];
    let rb5 = Rbuild::new();
    ok_env(&rb5, &env4, &["pull", &dest]);
}

#[test]
fn bearer_token_auth() {
    let dir = TestDir::new("token-auth");
    let issuer = TokenIssuer::start(dir.path(), "robot$builder", "tok-pass");
    let registry = Registry::start(
        "token",
        RegistryOptions {
            extra_yaml: issuer.registry_yaml(),
            ..Default::default()
        },
    );
    let docker = dir.path().join("docker");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let env: Vec<(&str, &Path)> = vec![("HOME", &home), ("DOCKER_CONFIG", &docker)];
    let rb = store_with_busybox();
    let base = format!("{}/lib/base:v1", registry.addr);
    let app = format!("{}/team/app:v1", registry.addr);

    let out = run_env(&rb, &env, &["push", &busybox().reference, &base], None);
    assert!(
        !out.status.success(),
        "anonymous push passed a token registry:\n{}",
        show(&out)
    );

    let out = run_env(
        &rb,
        &env,
        &[
            "login",
            "-u",
            "robot$builder",
            "--password-stdin",
            &registry.addr,
        ],
        Some("tok-pass"),
    );
    assert!(out.status.success(), "{}", show(&out));
    ok_env(&rb, &env, &["push", &busybox().reference, &base]);

    // Pull the base from the token registry into a fresh store, push it to another repo:
    // the blobs are mounted, and the token asked for pull on the source repository.
    let rb2 = Rbuild::new();
    ok_env(&rb2, &env, &["pull", &base]);
    let mark = registry.log_text().len();
    ok_env(&rb2, &env, &["push", &base, &app]);
    let lines = log_lines_after(&registry, mark, "/v2/team/app/");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mount=") && l.contains("from=lib/base")),
        "{lines:#?}"
    );
    let scopes = issuer.requested_scopes();
    assert!(
        scopes.iter().any(|s| s == "repository:lib/base:pull"),
        "{scopes:?}"
    );
    assert!(
        scopes.iter().any(|s| s == "repository:team/app:pull,push"),
        "{scopes:?}"
    );
}

/// Makes a CA and a server certificate for 127.0.0.1 signed by it; returns (ca, cert, key).
fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (ca_key, ca, key, csr, cert, ext) = (
        p("ca.key"),
        p("ca.pem"),
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("ext.cnf"),
    );
    tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rbuild test CA",
            "-keyout",
            &s(&ca_key),
            "-out",
            &s(&ca),
        ],
    );
    tool(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &s(&key),
            "-out",
            &s(&csr),
        ],
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&ca),
            "-CAkey",
            &s(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &s(&ext),
            "-out",
            &s(&cert),
        ],
    );
    (ca, cert, key)
}

#[test]
fn tls_registry_with_custom_ca() {
    let dir = TestDir::new("tls");
    let (ca, cert, key) = make_tls(dir.path());
    let registry = Registry::start(
        "tls",
        RegistryOptions {
            http_yaml: format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            ..Default::default()
        },
    );
    let rb = store_with_busybox();
    let dest = format!("{}/secure/busybox:v1", registry.addr);

    // Without the CA, a verified connection fails.
    let bare_home = dir.path().join("bare-home");
    std::fs::create_dir_all(&bare_home).unwrap();
    let env: Vec<(&str, &Path)> = vec![("HOME", &bare_home), ("XDG_CONFIG_HOME", &bare_home)];
    let out = run_env(
        &rb,
        &env,
        &["push", "--tls-verify=true", &busybox().reference, &dest],
        None,
    );
    assert!(
        !out.status.success(),
        "push trusted an unknown CA:\n{}",
        show(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate"),
        "not a certificate error:\n{}",
        show(&out)
    );

    // With the CA in ~/.config/rbuild/certs.d/<host:port>/ca.crt, it is verified and works.
    let home = dir.path().join("home");
    let certs = home.join(".config/rbuild/certs.d").join(&registry.addr);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let env: Vec<(&str, &Path)> = vec![("HOME", &home)];
    let out = ok_env(
        &rb,
        &env,
        &["push", "--tls-verify=true", &busybox().reference, &dest],
    );
    let digest = pushed_digest(&out);
    let cert_dir = certs.to_str().unwrap().to_string();
    assert_eq!(skopeo_digest(&dest, &["--cert-dir", &cert_dir]), digest);
    let rb2 = Rbuild::new();
    ok_env(&rb2, &env, &["pull", &dest]);
}

#[test]
fn multi_platform_index_picks_the_platform() {
    let registry = Registry::shared();
    let layout = TestDir::new("multi-layout");
    let (amd_config, arm_config) = write_two_platform_layout(&busybox().layout, layout.path());
    let dest = format!("{}/multi/busybox:v1", registry.addr);
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--all",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", layout.path().display()),
            &format!("docker://{dest}"),
        ],
    );
    let rb = Rbuild::new();
    let id = rb.ok(&["pull", "-q", &dest]);
    assert_eq!(
        id.trim(),
        amd_config,
        "default platform should be linux/amd64"
    );
    let rb = Rbuild::new();
    let id = rb.ok(&["pull", "-q", "--platform", "linux/arm64", &dest]);
    assert_eq!(id.trim(), arm_config);
    let out = rb.run(&["pull", "--platform", "linux/s390x", &dest]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("linux/arm64") && stderr.contains("linux/s390x"),
        "{stderr}"
    );
}

/// Copies the busybox layout into `dir` and adds an arm64 variant (same layer, another
/// config) and an index over both, tagged `multi`. Returns the two config digests.
fn write_two_platform_layout(src: &Path, dir: &Path) -> (String, String) {
    use sha2::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for e in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |b: &[u8]| {
        let hex = hex::encode(sha2::Sha256::digest(b));
        std::fs::write(blobs.join(&hex), b).unwrap();
        format!("sha256:{hex}")
    };
    let read = |d: &str| std::fs::read(blobs.join(d.trim_start_matches("sha256:"))).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
    let amd_manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let amd_manifest_bytes = read(&amd_manifest_digest);
    let amd_manifest: serde_json::Value = serde_json::from_slice(&amd_manifest_bytes).unwrap();
    let amd_config = amd_manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&read(&amd_config)).unwrap();
    config["architecture"] = "arm64".into();
    config["variant"] = "v8".into();
    let arm_config_bytes = serde_json::to_vec(&config).unwrap();
    let arm_config = put(&arm_config_bytes);
    let mut arm_manifest = amd_manifest.clone();
    arm_manifest["config"]["digest"] = arm_config.clone().into();
    arm_manifest["config"]["size"] = arm_config_bytes.len().into();
    let arm_manifest_bytes = serde_json::to_vec(&arm_manifest).unwrap();
    let arm_manifest_digest = put(&arm_manifest_bytes);
    let image_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_manifest_digest,
             "size": arm_manifest_bytes.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd_manifest_digest,
             "size": amd_manifest_bytes.len(), "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    let index_bytes = serde_json::to_vec(&image_index).unwrap();
    let index_digest = put(&index_bytes);
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
            "size": index_bytes.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    (amd_config, arm_config)
}

/// Builds `FROM busybox` + one COPY of ~1.5 MB of text (compressible, so gzip levels give
/// different bytes) into `rb`'s store as `tag`.
fn build_text_image(rb: &Rbuild, tag: &str) {
    let ctx = TestDir::new("levels-ctx");
    ctx.write(
        "Dockerfile",
        format!("FROM {}\nCOPY data.txt /data.txt\n", busybox().reference),
    );
    let mut text = String::new();
    let mut x: u32 = 11;
    while text.len() < 1_500_000 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        text.push_str(&format!("entry {} value {}\n", x % 7919, x >> 19));
    }
    ctx.write("data.txt", text);
    rb.ok(&[
        "build",
        "--progress",
        "plain",
        "-t",
        tag,
        &ctx.path().display().to_string(),
    ]);
}

/// The pushed image's top layer: its blob digest, and whether the blob fetched from the
/// registry (copied out by skopeo, which verifies digests) decompresses to its diffID.
fn top_layer(reference: &str) -> (String, bool) {
    let out = TestDir::new("levels-copy");
    let layout = out.path().join("layout");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:x", layout.display()),
        ],
    );
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest[7..]);
    let json = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(blob(digest)).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = json(index["manifests"][0]["digest"].as_str().unwrap());
    let config = json(manifest["config"]["digest"].as_str().unwrap());
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let diff_id = config["rootfs"]["diff_ids"][1]
        .as_str()
        .unwrap()
        .to_string();
    let tar = Command::new("gzip")
        .arg("-dc")
        .arg(blob(&layer))
        .output()
        .expect("gzip");
    assert!(tar.status.success(), "{}", show(&tar));
    use sha2::Digest;
    let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar.stdout)));
    (layer, actual == diff_id)
}

/// `--compression-level` changes the pushed layer; the compressed blob is remembered per
/// level, so pushing again at the same level uploads nothing new and another level makes
/// (and uploads) another blob.
#[test]
fn compression_level_is_remembered_per_level() {
    let rb = store_with_busybox();
    let registry = Registry::shared();
    build_text_image(&rb, "levels/app:v1");

    let fast = format!("{}/levels-fast/app:v1", registry.addr);
    let out = rb.ok(&["push", "--compression-level", "1", "levels/app:v1", &fast]);
    let fast_digest = pushed_digest(&out);
    let (fast_layer, ok) = top_layer(&fast);
    assert!(ok, "the level-1 layer does not decompress to its diffID");

    // Same level again, to the same repository: nothing uploaded, same manifest.
    let mark = registry.log_text().len();
    let out = rb.ok(&["push", "--compression-level", "1", "levels/app:v1", &fast]);
    assert_eq!(pushed_digest(&out), fast_digest);
    let lines = log_lines_after(registry, mark, "/v2/levels-fast/app/");
    let uploads: Vec<&String> = lines.iter().filter(|l| is_blob_upload(l)).collect();
    assert!(uploads.is_empty(), "second push uploaded: {uploads:#?}");

    // Same level to a new repository: the remembered blob is reused (same layer digest).
    let other = format!("{}/levels-other/app:v1", registry.addr);
    let out = rb.ok(&["push", "--compression-level", "1", "levels/app:v1", &other]);
    assert_eq!(pushed_digest(&out), fast_digest);

    // The default level makes another blob, uploaded this time.
    let default = format!("{}/levels-default/app:v1", registry.addr);
    let mark = registry.log_text().len();
    let out = rb.ok(&["push", "--progress", "plain", "levels/app:v1", &default]);
    assert_ne!(pushed_digest(&out), fast_digest);
    let (default_layer, ok) = top_layer(&default);
    assert!(
        ok,
        "the default-level layer does not decompress to its diffID"
    );
    assert_ne!(
        default_layer, fast_layer,
        "the level did not change the blob"
    );
    let lines = log_lines_after(registry, mark, "/v2/levels-default/app/");
    // Streamed while compressing: one PATCH without a known length, then the PUT.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"PATCH ") && l.contains("/blobs/uploads/")),
        "the new blob was not streamed: {lines:#?}"
    );
    let records: Vec<String> = std::fs::read_dir(rb.root.join("cache/compressed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        records.iter().any(|r| r.ends_with("-gzip-1")),
        "{records:?}"
    );
    assert_eq!(records.len(), 2, "one record per level: {records:?}");
}

#[test]
fn compression_level_out_of_range_is_a_usage_error() {
    let rb = Rbuild::new();
    for args in [
        &["push", "--compression-level", "10", "x/y:z"][..],
        &[
            "push",
            "--compression",
            "zstd",
            "--compression-level",
            "0",
            "x/y:z",
        ],
        &["push", "--compression-level", "-1", "x/y:z"],
        &[
            "build",
            "--push",
            "-t",
            "x/y:z",
            "--compression-level",
            "42",
            ".",
        ],
    ] {
        let out = rb.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("compression level"), "{args:?}: {stderr}");
    }
}

/// A layer compressed during its upload whose stream is cut mid-way is still pushed: the
/// blob is finished in the store and uploaded from it with the retrying upload.
#[test]
fn streamed_layer_upload_falls_back_when_cut() {
    let rb = store_with_busybox();
    let registry = Registry::shared();
    build_text_image(&rb, "cut/app:v1");
    // Cut the first connection carrying more than 100 kB of request body: the stream.
    let proxy = Proxy::start(&registry.addr, Direction::Upload, 100_000, 1);
    let dest = format!("{}/cut/app:v1", proxy.addr);
    let out = run_env(
        &rb,
        &[],
        &["push", "--progress", "plain", "cut/app:v1", &dest],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(proxy.drops(), 1, "the proxy did not cut the upload");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Retrying (attempt 2)"),
        "no fallback upload: {stderr}"
    );
    let direct = format!("{}/cut/app:v1", registry.addr);
    let (_, ok) = top_layer(&direct);
    assert!(ok, "the layer does not decompress to its diffID");
    // The blob was remembered: a second push compresses and uploads nothing.
    let mark = registry.log_text().len();
    rb.ok(&["push", "cut/app:v1", &direct]);
    let lines = log_lines_after(registry, mark, "/v2/cut/app/");
    assert!(!lines.iter().any(|l| is_blob_upload(l)), "{lines:#?}");
}

/// A registry that answers the streamed PATCH with a 5xx still gets the layer: the finished
/// blob is uploaded from the store with the ordinary (monolithic) upload.
#[test]
fn streamed_layer_upload_falls_back_on_5xx() {
    let rb = store_with_busybox();
    let registry = Registry::shared();
    build_text_image(&rb, "refused/app:v1");
    let proxy = FaultProxy::start(&registry.addr, Fault::StatusOnPatch(503), usize::MAX);
    let dest = format!("{}/refused/app:v1", proxy.addr);
    let out = run_env(
        &rb,
        &[],
        &["push", "--progress", "plain", "refused/app:v1", &dest],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(proxy.injected() >= 1, "no PATCH reached the proxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Retrying (attempt 2)"),
        "no fallback upload: {stderr}"
    );
    let (_, ok) = top_layer(&format!("{}/refused/app:v1", registry.addr));
    assert!(ok, "the layer does not decompress to its diffID");
}
