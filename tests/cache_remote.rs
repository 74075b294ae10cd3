//! The remote build cache end to end (`--cache-to` / `--cache-from`): two stores as two CI
//! runners sharing a real `registry:2`, keys that do not depend on the machine, laziness
//! (blob bytes counted from the registry's access log), refs that are missing, foreign or
//! garbage, concurrent and killed exporters, token auth, the local-directory cache.

use std::path::Path;
use std::process::Output;

use crate::util::busybox::busybox;
use crate::util::registry_api::{put_blob, put_manifest, raw_manifest, registry_blob};
use crate::util::{show, tool, Rbuild, Registry, TestDir};

const DOCKERFILE: &str = "ARG BASE\n\
FROM ${BASE}\n\
COPY app.conf /etc/app.conf\n\
RUN echo ran-step-$((40+2)) && cat /etc/app.conf > /copy-of-conf.txt\n\
WORKDIR /srv\n\
RUN echo ran-step-$((40+3)) && echo two > two.txt\n\
COPY other.txt /other.txt\n";

/// A context with the Dockerfile above and `app.conf` holding `conf`.
fn context(name: &str, conf: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.write("Dockerfile", DOCKERFILE);
    dir.write("app.conf", conf);
    dir.write("other.txt", "other\n");
    dir
}

/// `rbuild build --progress=plain` of `ctx` with the busybox base and `extra` flags.
fn build(r: &Rbuild, ctx: &Path, extra: &[&str]) -> Output {
    build_from(r, ctx, &busybox().reference, extra)
}

/// [`build`] with `base` as the base image.
fn build_from(r: &Rbuild, ctx: &Path, base: &str, extra: &[&str]) -> Output {
    let base = format!("BASE={base}");
    let mut args = vec!["build", "--progress=plain", "--build-arg", &base];
    args.extend_from_slice(extra);
    let c = ctx.to_string_lossy().into_owned();
    args.push(&c);
    r.run(&args)
}

/// Like [`build`], panicking unless it succeeds; returns (image id, stderr).
fn build_ok(r: &Rbuild, ctx: &Path, extra: &[&str]) -> (String, String) {
    build_from_ok(r, ctx, &busybox().reference, extra)
}

/// [`build_ok`] with `base` as the base image.
fn build_from_ok(r: &Rbuild, ctx: &Path, base: &str, extra: &[&str]) -> (String, String) {
    let out = build_from(r, ctx, base, extra);
    assert!(out.status.success(), "build failed:\n{}", show(&out));
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `#N` of every step header that makes a layer (RUN, COPY, WORKDIR).
fn layer_steps(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("] RUN ") || l.contains("] COPY ") || l.contains("] WORKDIR "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Every layer step came from the cache, no RUN ran, and no layer was fetched.
fn assert_all_cached(log: &str) {
    assert_all_steps_cached(log);
    // Nothing needed a layer's files.
    assert!(!log.contains("#0 fetching layer"), "{log}");
}

/// Every layer step came from the cache and no RUN ran.
fn assert_all_steps_cached(log: &str) {
    let steps = layer_steps(log);
    assert_eq!(steps.len(), 5, "{log}");
    for n in &steps {
        assert!(
            log.contains(&format!("{n} CACHED")),
            "step {n} not cached:\n{log}"
        );
    }
    assert!(!log.contains("cache miss"), "{log}");
    // No RUN step ran: their echo lines never appear.
    assert!(!log.contains("ran-step-4"), "a RUN step ran:\n{log}");
}

/// The digest in the `#0 pushed REF: digest: D size: N` line.
fn pushed_digest(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("#0 pushed ") && l.contains(": digest: "))
        .unwrap_or_else(|| panic!("no pushed line:\n{log}"));
    line.split("digest: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `GET .../blobs/<digest>` lines of the access log after `mark`: (digest, bytes sent).
fn blob_gets(registry: &Registry, mark: usize) -> Vec<(String, u64)> {
    registry.log_text()[mark..]
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .map(|l| {
            let digest = l
                .split("/blobs/")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            // `"GET /v2/x/blobs/D HTTP/1.1" 200 1234 ...`
            let after = l.split("HTTP/1.1\" ").nth(1).unwrap_or("");
            let bytes = after
                .split_whitespace()
                .nth(1)
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            (digest.to_string(), bytes)
        })
        .collect()
}

/// The keys of the records in the cache at `reference` (`registry/repo:tag`).
fn cache_keys(registry: &str, repo: &str, tag: &str) -> Vec<String> {
    let m = raw_manifest(&format!("{registry}/{repo}:{tag}"));
    let config = registry_blob(registry, repo, m["config"]["digest"].as_str().unwrap());
    let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let mut keys: Vec<String> = c["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

/// Every blob of the image at `reference` exists in the registry: skopeo copies it out,
/// verifying each digest.
fn assert_complete(reference: &str) {
    let out = TestDir::new("complete");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:x", out.path().join("layout").display()),
        ],
    );
}

/// A registry of the test's own (its access log counts only this test's requests) holding
/// the busybox base at `library/busybox:latest`; returns it and the base's reference.
fn own_registry(name: &str) -> (Registry, String) {
    let registry = Registry::start(name, Default::default());
    let base = format!("{}/library/busybox:latest", registry.addr);
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:latest", busybox().layout.display()),
            &format!("docker://{base}"),
        ],
    );
    (registry, base)
}

#[test]
fn a_runner_with_an_empty_store_rebuilds_from_the_registry_cache_running_nothing() {
    let (registry, base) = own_registry("cr-two-runners");
    let registry = &registry;
    let ctx = context("cr-two-runners", "setting=1\n");
    let cache = format!("{}/cr/two-runners-cache:ci", registry.addr);
    let cache_to = format!("type=registry,ref={cache},mode=max");
    let (a_img, b_img) = (
        format!("{}/cr/two-runners:a", registry.addr),
        format!("{}/cr/two-runners:b", registry.addr),
    );

    // Runner A: cold build, cache exported, image pushed.
    let a = Rbuild::new();
    let (a_id, a_log) = build_from_ok(
        &a,
        ctx.path(),
        &base,
        &["-t", &a_img, "--push", "--cache-to", &cache_to],
    );
    assert!(a_log.contains("ran-step-42"), "{a_log}");
    assert!(
        a_log.contains(&format!("#0 exported cache to {cache}: digest: ")),
        "{a_log}"
    );

    // The ref is one OCI image manifest (never an index) with our config type, whose
    // layers are the cached layers, all present.
    let m = raw_manifest(&cache);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.rbuild.cache.config.v1+json"
    );
    assert!(m.get("manifests").is_none());
    assert_eq!(m["layers"].as_array().unwrap().len(), 5, "{m}");
    assert_complete(&cache);

    // Runner B: an empty store at another path imports, builds, pushes.
    let b = Rbuild::new();
    let mark = registry.log_text().len();
    let (b_id, b_log) = build_from_ok(
        &b,
        ctx.path(),
        &base,
        &["-t", &b_img, "--push", "--cache-from", &cache],
    );
    assert_all_cached(&b_log);
    assert!(
        b_log.contains(&format!("#0 imported 7 cache records from {cache}")),
        "{b_log}"
    );
    // The same image, bit for bit: config (image ID) and pushed manifest.
    assert_eq!(a_id, b_id);
    assert_eq!(pushed_digest(&a_log), pushed_digest(&b_log));
    // B downloaded no layer: only manifests and small configs.
    let layers: Vec<String> = raw_manifest(&b_img)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 6);
    let gets = blob_gets(registry, mark);
    for (d, _) in &gets {
        assert!(
            !layers.contains(d),
            "runner B downloaded layer {d}: {gets:?}"
        );
    }
    let bytes: u64 = gets.iter().map(|(_, n)| n).sum();
    assert!(
        bytes <= 256 * 1024,
        "runner B downloaded {bytes} blob bytes: {gets:?}"
    );
    assert_complete(&b_img);
    b.ok(&["fsck"]);

    // A RUN on top of the cached layers needs their files: B fetches them then, lazily.
    let next = TestDir::new("cr-two-runners-next");
    next.write(
        "Dockerfile",
        format!("FROM {b_img}\nRUN cat /copy-of-conf.txt /srv/two.txt > /both.txt\n"),
    );
    let mark = registry.log_text().len();
    let out = b.run(&[
        "build",
        "--progress=plain",
        "-t",
        "next",
        &next.path().to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("#0 fetching layer sha256:").count(), 6, "{log}");
    let fetched: Vec<String> = blob_gets(registry, mark)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    for l in &layers {
        assert!(
            fetched.contains(l),
            "layer {l} was not fetched: {fetched:?}"
        );
    }
    b.ok(&["fsck"]);
}

#[test]
fn keys_do_not_depend_on_store_path_checkout_path_or_owner() {
    use std::os::unix::fs::chown;
    let registry = Registry::shared();
    let (ctx_a, ctx_b) = (
        context("cr-keys-a", "k=1\n"),
        context("cr-keys-b-elsewhere", "k=1\n"),
    );
    // Runner B's checkout and store belong to another user than runner A's.
    for entry in std::fs::read_dir(ctx_b.path()).unwrap() {
        chown(entry.unwrap().path(), Some(4242), Some(4243)).unwrap();
    }
    chown(ctx_b.path(), Some(4242), Some(4243)).unwrap();
    let (a, b) = (Rbuild::new(), Rbuild::new());
    std::fs::create_dir_all(&b.root).unwrap();
    chown(&b.root, Some(4242), Some(4243)).unwrap();
    assert_ne!(a.root, b.root);
    for (r, ctx, tag) in [(&a, &ctx_a, "a"), (&b, &ctx_b, "b")] {
        let to = format!("type=registry,ref={}/cr/keys:{tag},mode=max", registry.addr);
        build_ok(r, ctx.path(), &["--cache-to", &to]);
    }
    let keys_a = cache_keys(&registry.addr, "cr/keys", "a");
    assert_eq!(keys_a.len(), 7);
    assert_eq!(keys_a, cache_keys(&registry.addr, "cr/keys", "b"));
}

#[test]
fn missing_foreign_garbage_and_unreachable_refs_are_one_warning_each() {
    let registry = Registry::shared();
    let addr = &registry.addr;
    // Garbage: our config media type over bytes that are no record list.
    let garbage = b"\x00\x01 not json at all".to_vec();
    let config = put_blob(addr, "cr/garbage", &garbage);
    put_manifest(
        addr,
        "cr/garbage",
        "ci",
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.rbuild.cache.config.v1+json",
                       "digest": config, "size": garbage.len()},
            "layers": []
        }),
    );
    // Lying: a well-formed record list whose record names a layer the manifest lacks.
    let lying = serde_json::json!({
        "schemaVersion": 1, "keyVersion": rbuild_builder::solver::cachekey::VERSION,
        "records": [{"key": "ab".repeat(32), "layer": 3,
                     "diffID": format!("sha256:{}", "cd".repeat(32)), "config": {}}]
    })
    .to_string();
    let config = put_blob(addr, "cr/lying", lying.as_bytes());
    put_manifest(
        addr,
        "cr/lying",
        "ci",
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.rbuild.cache.config.v1+json",
                       "digest": config, "size": lying.len()},
            "layers": []
        }),
    );
    // Real caches made wrong after the fact: one whose first layer was deleted from its
    // repository, one whose manifest states a wrong layer size.
    for repo in ["cr/deleted-layer", "cr/wrong-size"] {
        build_ok(
            &Rbuild::new(),
            context(&format!("cr-{}", repo.replace('/', "-")), "r=1\n").path(),
            &[
                "--cache-to",
                &format!("type=registry,ref={addr}/{repo}:ci,mode=max"),
            ],
        );
    }
    let m = raw_manifest(&format!("{addr}/cr/deleted-layer:ci"));
    let out = std::process::Command::new("curl")
        .args(["-sSf", "-X", "DELETE"])
        .arg(format!(
            "http://{addr}/v2/cr/deleted-layer/blobs/{}",
            m["layers"][0]["digest"].as_str().unwrap()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let mut resized = raw_manifest(&format!("{addr}/cr/wrong-size:ci"));
    let size = resized["layers"][1]["size"].as_u64().unwrap();
    resized["layers"][1]["size"] = (size + 1).into();
    put_manifest(addr, "cr/wrong-size", "ci", &resized);
    let refs = [
        (format!("{addr}/cr/deleted-layer:ci"), "not found"),
        (format!("{addr}/cr/wrong-size:ci"), "the manifest says"),
        (
            format!("{addr}/cr/garbage:ci"),
            "config is not a cache record list",
        ),
        (format!("{addr}/cr/lying:ci"), "names layer 3 of 0"),
        (format!("{addr}/cr/missing:ci"), "not found"),
        // A plain image: its config is an image config, not records.
        (busybox().reference.clone(), "not an rbuild cache"),
        ("127.0.0.1:1/cr/unreachable:ci".to_string(), "127.0.0.1:1"),
    ];
    let ctx = context("cr-garbage", "g=1\n");
    let r = Rbuild::new();
    let mut args: Vec<&str> = Vec::new();
    for (reference, _) in &refs {
        args.extend(["--cache-from", reference]);
    }
    let (_, log) = build_ok(&r, ctx.path(), &args);
    for (reference, why) in &refs {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("WARNING: cache {reference} not used: ")))
            .collect();
        assert_eq!(lines.len(), 1, "{reference}:\n{log}");
        assert!(lines[0].contains(why), "{reference}: {}", lines[0]);
    }
    // Nothing was trusted: every step ran.
    assert!(
        log.contains("ran-step-42") && log.contains("ran-step-43"),
        "{log}"
    );
    r.ok(&["fsck"]);
}

#[test]
fn a_miss_names_the_cache_ref_and_the_changed_source() {
    let registry = Registry::shared();
    let cache = format!("{}/cr/explain:ci", registry.addr);
    let ctx = context("cr-explain", "setting=1\n");
    build_ok(
        &Rbuild::new(),
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    std::fs::write(ctx.path().join("app.conf"), "setting=2\n").unwrap();
    let (_, log) = build_ok(&Rbuild::new(), ctx.path(), &["--cache-from", &cache]);
    assert!(
        log.contains(&format!(
            "cache miss: no record in cache ref {cache} for this key; \
             nearest record differs in checksum of app.conf"
        )),
        "{log}"
    );
    assert_eq!(
        log.matches("cache miss: an earlier step changed").count(),
        4,
        "{log}"
    );
}

#[test]
fn export_failures_fail_the_build_unless_ignore_error() {
    let ctx = context("cr-export-fail", "e=1\n");
    let r = Rbuild::new();
    let to = "type=registry,ref=127.0.0.1:1/cr/nowhere:ci";
    let out = build(&r, ctx.path(), &["--cache-to", to]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot export the build cache to 127.0.0.1:1/cr/nowhere:ci"),
        "{err}"
    );
    let (_, log) = build_ok(
        &r,
        ctx.path(),
        &[
            "--cache-to",
            &format!("{to},ignore-error=true,oci-mediatypes=false"),
        ],
    );
    assert!(
        log.contains(
            "WARNING: cache export to 127.0.0.1:1/cr/nowhere:ci failed (ignore-error=true)"
        ),
        "{log}"
    );
    // BuildKit's `oci-mediatypes=false` does not break the script: a warning says rbuild
    // writes one OCI image manifest anyway.
    assert!(
        log.contains("WARNING: --cache-to 127.0.0.1:1/cr/nowhere:ci: oci-mediatypes=false ignored"),
        "{log}"
    );
}

/// The digest of the manifest `reference` names in the registry.
fn ref_digest(reference: &str) -> String {
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(raw.as_bytes()))
    )
}

/// Whether a fresh store importing `cache` rebuilds `ctx` with every step cached.
fn all_cached_from(ctx: &Path, cache: &str) -> bool {
    let (_, log) = build_ok(&Rbuild::new(), ctx, &["--cache-from", cache]);
    let steps = layer_steps(&log);
    steps.len() == 5 && steps.iter().all(|n| log.contains(&format!("{n} CACHED")))
}

#[test]
fn concurrent_exporters_leave_one_complete_manifest() {
    let registry = Registry::shared();
    let cache = format!("{}/cr/concurrent:ci", registry.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let ctxs: Vec<TestDir> = (0..3)
        .map(|i| context(&format!("cr-concurrent-{i}"), &format!("exporter={i}\n")))
        .collect();
    let stores: Vec<Rbuild> = (0..3).map(|_| Rbuild::new()).collect();
    let base = format!("BASE={}", busybox().reference);
    let children: Vec<_> = stores
        .iter()
        .zip(&ctxs)
        .map(|(r, ctx)| {
            r.cmd()
                .args(["build", "-q", "--build-arg", &base, "--cache-to", &to])
                .arg(ctx.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
    }
    assert_complete(&cache);
    // The ref is exactly one exporter's: its context rebuilds all cached from it.
    let winners: Vec<usize> = (0..3)
        .filter(|&i| all_cached_from(ctxs[i].path(), &cache))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exporters whose records the ref holds: {winners:?}"
    );
}

#[test]
fn an_exporter_killed_before_its_manifest_leaves_the_previous_ref() {
    use crate::util::gateproxy::GateProxy;
    let registry = Registry::shared();
    let direct = format!("{}/cr/killed:ci", registry.addr);
    let old_ctx = context("cr-killed-old", "old\n");
    build_ok(
        &Rbuild::new(),
        old_ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={direct},mode=max"),
        ],
    );
    let old = ref_digest(&direct);

    // Through a proxy that holds manifest PUTs back: the exporter has uploaded every blob
    // when the proxy reports its manifest, and is killed right there.
    let gate = GateProxy::start(&registry.addr);
    let new_ctx = context("cr-killed-new", "new\n");
    // A layer big enough that the export is not instant either way.
    let big: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    new_ctx.write("other.txt", &big);
    let to = format!("type=registry,ref={}/cr/killed:ci,mode=max", gate.addr);
    let base = format!("BASE={}", busybox().reference);
    let r = Rbuild::new();
    let mut child = r
        .cmd()
        .args(["build", "-q", "--build-arg", &base, "--cache-to", &to])
        .arg(new_ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let held = gate.held_manifest(std::time::Duration::from_secs(120));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    let held = held.expect("the exporter never reached its manifest PUT");
    assert!(held.contains("/v2/cr/killed/manifests/ci"), "{held}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    assert_eq!(
        ref_digest(&direct),
        old,
        "the killed exporter changed the ref"
    );
    assert_complete(&direct);
    assert!(all_cached_from(old_ctx.path(), &direct));
    r.ok(&["fsck"]);
}

#[test]
fn the_cache_works_against_a_token_auth_registry() {
    use crate::util::registry::RegistryOptions;
    use crate::util::tokenissuer::TokenIssuer;
    use std::io::Write;
    let dir = TestDir::new("cr-token");
    let issuer = TokenIssuer::start(dir.path(), "robot$ci", "ci-pass");
    let registry = Registry::start(
        "cr-token",
        RegistryOptions {
            extra_yaml: issuer.registry_yaml(),
            ..Default::default()
        },
    );
    let docker = dir.path().join("docker");
    let cache = format!("{}/cr/token-cache:ci", registry.addr);
    let ctx = context("cr-token-ctx", "t=1\n");
    let with_env = |r: &Rbuild, extra: &[&str]| {
        let base = format!("BASE={}", busybox().reference);
        let out = r
            .cmd()
            .env("DOCKER_CONFIG", &docker)
            .args(["build", "--progress=plain", "--build-arg", &base])
            .args(extra)
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Without credentials the import is refused by the registry: one warning, a cold build.
    let anonymous = with_env(&Rbuild::new(), &["--cache-from", &cache]);
    assert_eq!(
        anonymous
            .matches(&format!("WARNING: cache {cache} not used"))
            .count(),
        1,
        "{anonymous}"
    );
    let a = Rbuild::new();
    let mut login = a
        .cmd()
        .env("DOCKER_CONFIG", &docker)
        .args([
            "login",
            "-u",
            "robot$ci",
            "--password-stdin",
            &registry.addr,
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    login.stdin.take().unwrap().write_all(b"ci-pass").unwrap();
    assert!(login.wait().unwrap().success());
    let to = format!("type=registry,ref={cache},mode=max");
    let a_log = with_env(
        &a,
        &[
            "--cache-to",
            &to,
            "--push",
            "-t",
            &format!("{}/cr/token-app:a", registry.addr),
        ],
    );
    assert!(a_log.contains("#0 exported cache to"), "{a_log}");
    let b_log = with_env(
        &Rbuild::new(),
        &[
            "--cache-from",
            &cache,
            "--push",
            "-t",
            &format!("{}/cr/token-app:b", registry.addr),
        ],
    );
    assert_all_cached(&b_log);
    assert_eq!(pushed_digest(&a_log), pushed_digest(&b_log));
    // The token flow asked for pull on the cache repository.
    assert!(
        issuer
            .requested_scopes()
            .iter()
            .any(|s| s == "repository:cr/token-cache:pull"),
        "{:?}",
        issuer.requested_scopes()
    );
}

#[test]
fn mode_min_exports_the_final_image_layers_and_mode_max_every_stage() {
    let registry = Registry::shared();
    let ctx = TestDir::new("cr-modes");
    ctx.write(
        "Dockerfile",
        "ARG BASE\n\
         FROM ${BASE} AS builder\n\
         RUN echo built-$((1+1)) && echo a > /artifact && echo s > /scratch.txt\n\
         FROM ${BASE}\n\
         COPY --from=builder /artifact /artifact\n\
         RUN echo final-$((2+2)) && cat /artifact > /final\n",
    );
    for mode in ["min", "max"] {
        let tag = format!("modes-{mode}");
        build_ok(
            &Rbuild::new(),
            ctx.path(),
            &[
                "--cache-to",
                &format!(
                    "type=registry,ref={}/cr/modes:{tag},mode={mode}",
                    registry.addr
                ),
            ],
        );
        let (_, log) = build_ok(
            &Rbuild::new(),
            ctx.path(),
            &["--cache-from", &format!("{}/cr/modes:{tag}", registry.addr)],
        );
        let keys = cache_keys(&registry.addr, "cr/modes", &tag);
        let final_run = log
            .lines()
            .find(|l| l.contains("] RUN echo final"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string();
        assert!(
            log.contains(&format!("{final_run} CACHED")),
            "{mode}:\n{log}"
        );
        match mode {
            // The COPY --from and the final RUN: the builder's RUN runs again, and the COPY
            // of its output still hits (its key is the builder stage's key, as BuildKit's).
            "min" => {
                assert_eq!(keys.len(), 2, "{keys:?}");
                assert!(log.contains("built-2"), "{log}");
                assert!(log.contains("cache miss"), "{log}");
            }
            _ => {
                assert_eq!(keys.len(), 3, "{keys:?}");
                assert!(
                    !log.contains("cache miss") && !log.contains("built-2"),
                    "{log}"
                );
            }
        }
    }
}

#[test]
fn a_local_directory_cache_is_an_oci_layout_and_rebuilds_all_cached() {
    let ctx = context("cr-local", "l=1\n");
    let dir = TestDir::new("cr-local-cache");
    let cache = dir.path().join("cache");
    let dest = format!("type=local,dest={},mode=max", cache.display());
    build_ok(&Rbuild::new(), ctx.path(), &["--cache-to", &dest]);
    // An OCI layout whose index names one image manifest of our config type.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let hex = entries[0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.rbuild.cache.config.v1+json"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 5);
    // skopeo reads it as an OCI layout (every blob present and verified).
    let copy = TestDir::new("cr-local-copy");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{}:rbuild-cache", cache.display()),
            &format!("oci:{}:x", copy.path().join("l").display()),
        ],
    );
    let b = Rbuild::new();
    let src = format!("type=local,src={}", cache.display());
    let (_, log) = build_ok(&b, ctx.path(), &["--cache-from", &src]);
    assert_all_cached(&log);
    b.ok(&["fsck"]);
    // The next job exports again over the same directory: the index names the new manifest.
    std::fs::write(ctx.path().join("app.conf"), "l=2\n").unwrap();
    build_ok(&b, ctx.path(), &["--cache-from", &src, "--cache-to", &dest]);
    let (_, log) = build_ok(&Rbuild::new(), ctx.path(), &["--cache-from", &src]);
    assert_all_cached(&log);
}

#[test]
fn an_inline_cache_in_a_pushed_image_is_used_by_every_next_build() {
    let registry = Registry::shared();
    let ctx = context("cr-inline", "i=1\n");
    let (v1, v2) = (
        format!("{}/cr/inline:v1", registry.addr),
        format!("{}/cr/inline:v2", registry.addr),
    );
    let (_, a_log) = build_ok(
        &Rbuild::new(),
        ctx.path(),
        &["--cache-to", "type=inline", "--push", "-t", &v1],
    );
    // B builds from v1's records and writes them again into v2: C then hits too (BuildKit's
    // inline cache hit only every second build).
    let (_, b_log) = build_ok(
        &Rbuild::new(),
        ctx.path(),
        &[
            "--cache-from",
            &v1,
            "--cache-to",
            "type=inline",
            "--push",
            "-t",
            &v2,
        ],
    );
    assert_all_cached(&b_log);
    assert_eq!(pushed_digest(&a_log), pushed_digest(&b_log));
    let c = Rbuild::new();
    let (_, c_log) = build_ok(&c, ctx.path(), &["--cache-from", &v2, "-t", "inline-c"]);
    assert_all_cached(&c_log);
    // Saving C's image needs every layer, none of which a step needed: they are fetched.
    let saved = TestDir::new("cr-inline-save");
    let archive = saved.path().join("c.tar");
    c.ok(&["save", "-o", &archive.to_string_lossy(), "inline-c"]);
    let listing = tool("tar", &["-tf", &archive.to_string_lossy()]);
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.ends_with("/layer.tar"))
            .count(),
        6,
        "{listing}"
    );
    c.ok(&["fsck"]);
    // The records ride in the image config; a child image does not inherit them.
    let config = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{v2}"),
        ],
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["rbuild.cache.v1"]["records"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let child = TestDir::new("cr-inline-child");
    child.write("Dockerfile", format!("FROM {v2}\nLABEL child=1\n"));
    let c = Rbuild::new();
    c.ok(&[
        "build",
        "-q",
        "-t",
        "child",
        &child.path().to_string_lossy(),
    ]);
    let child_config = crate::build::config(&c, "child");
    assert!(
        child_config.get("rbuild.cache.v1").is_none(),
        "{child_config}"
    );
}

#[test]
fn a_zstd_cache_is_imported_and_its_layers_fetched_when_a_gzip_push_needs_them() {
    let registry = Registry::shared();
    let cache = format!("{}/cr/zstd-cache:ci", registry.addr);
    let ctx = context("cr-zstd", "z=1\n");
    build_ok(
        &Rbuild::new(),
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max,compression=zstd,compression-level=5"),
        ],
    );
    let m = raw_manifest(&cache);
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["application/vnd.oci.image.layer.v1.tar+zstd"; 5]
    );
    // Runner B hits every step; its gzip push needs each zstd layer's contents to recompress
    // it: the layers are fetched then, and the pushed image is complete.
    let b = Rbuild::new();
    let image = format!("{}/cr/zstd-app:b", registry.addr);
    let (_, log) = build_ok(
        &b,
        ctx.path(),
        &["--cache-from", &cache, "--push", "-t", &image],
    );
    assert_all_cached(&log);
    let pushed = raw_manifest(&image);
    for l in pushed["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{pushed}"
        );
    }
    assert_complete(&image);
    b.ok(&["fsck"]);
}

#[test]
fn hits_on_steps_that_read_other_stages_fetch_none_of_their_layers() {
    let registry = Registry::shared();
    let ctx = TestDir::new("cr-other-stages");
    ctx.write(
        "Dockerfile",
        "ARG BASE\n\
         FROM ${BASE} AS tools\n\
         RUN echo tool-$((3+4)) && echo tool > /tool.txt && echo big > /unused.txt\n\
         FROM ${BASE}\n\
         RUN --mount=type=bind,from=tools,source=/tool.txt,target=/mnt/tool.txt \\\n\
             echo final-$((5+6)) && cat /mnt/tool.txt > /bound.txt\n\
         COPY --from=tools /tool.txt /copied.txt\n",
    );
    let cache = format!("{}/cr/other-stages:ci", registry.addr);
    let (_, a_log) = build_ok(
        &Rbuild::new(),
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert!(
        a_log.contains("tool-7") && a_log.contains("final-11"),
        "{a_log}"
    );
    let b = Rbuild::new();
    let (_, log) = build_ok(&b, ctx.path(), &["--cache-from", &cache]);
    assert!(
        !log.contains("tool-7") && !log.contains("final-11"),
        "a RUN ran:\n{log}"
    );
    assert!(!log.contains("cache miss"), "{log}");
    assert!(!log.contains("#0 fetching layer"), "{log}");
    b.ok(&["fsck"]);
}

/// The media types of the layers of the manifest at `reference`.
fn layer_types(reference: &str) -> Vec<String> {
    raw_manifest(reference)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn imported_layers_keep_their_compression_unless_force_compression() {
    let registry = Registry::shared();
    let ctx = context("cr-force", "f=1\n");
    let gzip_cache = format!("{}/cr/force:gzip", registry.addr);
    build_ok(
        &Rbuild::new(),
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={gzip_cache},mode=max"),
        ],
    );
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    assert_eq!(layer_types(&gzip_cache), vec![gzip; 5]);
    // A runner that hit every record re-exports them: as they are without force-compression
    // (nothing fetched), converted with it.
    for (tag, extra, want) in [
        ("kept", "", gzip),
        ("forced", ",force-compression=true", zstd),
    ] {
        let to = format!(
            "type=registry,ref={}/cr/force:{tag},mode=max,compression=zstd{extra}",
            registry.addr
        );
        let (_, log) = build_ok(
            &Rbuild::new(),
            ctx.path(),
            &["--cache-from", &gzip_cache, "--cache-to", &to],
        );
        assert_all_steps_cached(&log);
        assert_eq!(log.contains("#0 fetching layer"), want == zstd, "{log}");
        assert_eq!(
            layer_types(&format!("{}/cr/force:{tag}", registry.addr)),
            vec![want; 5]
        );
    }
}
