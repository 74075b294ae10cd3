//! Hostile `--cache-from` refs: records whose blobs have the wrong digest or size, diffIDs
//! that do not match their layers, layers that are other blobs, nested indexes, huge
//! configs. Each is refused with a warning (at import, or when a layer is first read, after
//! which the build runs again without the cache), and the build gives the image a build
//! without any cache gives.

use std::path::Path;

use super::assert_store_sound;
use crate::util::busybox::busybox;
use crate::util::registry_api::{
    manifest_of, put_blob, put_manifest, put_manifest_as, registry_blob,
};
use crate::util::{show, Rbuild, Registry, TestDir};

const DOCKERFILE: &str = "ARG BASE\n\
FROM ${BASE}\n\
COPY a.txt /a.txt\n\
RUN echo hostile-ran-$((1+1)) && cat /a.txt > /b.txt\n\
COPY c.txt /c.txt\n\
RUN echo hostile-ran-$((2+1)) && cat /b.txt /c.txt > /d.txt\n";

const EPOCH: &str = "1700000000";

fn context(name: &str, c: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.write("Dockerfile", DOCKERFILE);
    dir.write("a.txt", "a1\n");
    dir.write("c.txt", c);
    dir
}

/// A bit-identical build (`SOURCE_DATE_EPOCH`) of `ctx` with `extra` flags: (image id,
/// stderr), panicking unless it succeeds.
fn build_ok(r: &Rbuild, ctx: &Path, extra: &[&str]) -> (String, String) {
    let base = format!("BASE={}", busybox().reference);
    let out = r
        .cmd()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "--progress=plain", "--build-arg", &base])
        .args(extra)
        .arg(ctx)
        .output()
        .expect("spawn rbuild");
    assert!(out.status.success(), "build failed:\n{}", show(&out));
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cache config (records) of `manifest` in `repo`.
fn records_of(addr: &str, repo: &str, manifest: &serde_json::Value) -> serde_json::Value {
    let digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    serde_json::from_slice(&registry_blob(addr, repo, digest)).expect("cache config JSON")
}

/// Pushes `records` as the config of `manifest` (its layers as they are) to `repo:ci`.
fn put_cache(addr: &str, repo: &str, manifest: &serde_json::Value, records: &serde_json::Value) {
    let bytes = records.to_string().into_bytes();
    let digest = put_blob(addr, repo, &bytes);
    let mut m = manifest.clone();
    m["config"]["digest"] = digest.into();
    m["config"]["size"] = bytes.len().into();
    put_manifest(addr, repo, "ci", &m);
}

/// Mounts every blob of `manifest` (config and layers) from `from` into `repo`.
fn mount_blobs(addr: &str, from: &str, repo: &str, manifest: &serde_json::Value) {
    let mut blobs = vec![manifest["config"].clone()];
    blobs.extend(
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .cloned(),
    );
    for b in blobs {
        let digest = b["digest"].as_str().expect("digest");
        let out = std::process::Command::new("curl")
            .args(["-sSf", "-X", "POST", "-o", "/dev/null"])
            .arg(format!(
                "http://{addr}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
            ))
            .output()
            .expect("run curl");
        assert!(out.status.success(), "{}", show(&out));
    }
}

/// A hostile ref and what must happen with it.
struct Case {
    repo: &'static str,
    /// Refused when the cache is read (else when one of its layers is first read).
    at_import: bool,
    /// Words of the warning.
    why: &'static str,
}

#[test]
fn hostile_cache_refs_are_refused_and_the_build_builds() {
    let registry = Registry::start("rel-hostile-cache", Default::default());
    let addr = registry.addr.clone();
    let ctx_producer = context("rel-hostile-producer", "c1\n");
    build_ok(
        &Rbuild::new(),
        ctx_producer.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={addr}/hostile/good:ci,mode=max"),
        ],
    );
    let (good, _) = manifest_of(&addr, "hostile/good", "ci").expect("the good cache");
    let records = records_of(&addr, "hostile/good", &good);
    let layers = good["layers"].as_array().expect("layers").clone();
    assert_eq!(layers.len(), 4, "{good}");
    let mut cases = Vec::new();

    // The size a manifest gives a layer is not the blob's.
    let mut m = good.clone();
    m["layers"][0]["size"] = (layers[0]["size"].as_u64().unwrap() + 1).into();
    mount_blobs(&addr, "hostile/good", "hostile/wrong-size", &good);
    put_manifest(&addr, "hostile/wrong-size", "ci", &m);
    cases.push(Case {
        repo: "hostile/wrong-size",
        at_import: true,
        why: "the manifest says",
    });

    // One blob listed twice, with two diffIDs.
    let mut m = good.clone();
    m["layers"].as_array_mut().unwrap().push(layers[0].clone());
    let mut r = records.clone();
    let twin = serde_json::json!({
        "key": "ab".repeat(32), "layer": 4,
        "diffID": format!("sha256:{}", "cd".repeat(32)), "config": {}
    });
    r["records"].as_array_mut().unwrap().push(twin);
    mount_blobs(&addr, "hostile/good", "hostile/two-diffids", &good);
    put_cache(&addr, "hostile/two-diffids", &m, &r);
    cases.push(Case {
        repo: "hostile/two-diffids",
        at_import: true,
        why: "has two diffIDs",
    });

    let good_digest = {
        use sha2::Digest as _;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(good.to_string()))
        )
    };
    // An index naming an index naming the cache (the nearest thing to a cycle that
    // content addressing allows).
    let inner = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": good_digest, "size": good.to_string().len()}]
    });
    mount_blobs(&addr, "hostile/good", "hostile/nested", &good);
    put_manifest(&addr, "hostile/nested", &good_digest, &good);
    put_manifest_as(
        &addr,
        "hostile/nested",
        "inner",
        "application/vnd.oci.image.index.v1+json",
        &inner,
    );
    let (_, inner_digest) = manifest_of(&addr, "hostile/nested", "inner").expect("inner index");
    let outer = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": inner_digest, "size": inner.to_string().len()}]
    });
    put_manifest_as(
        &addr,
        "hostile/nested",
        "ci",
        "application/vnd.oci.image.index.v1+json",
        &outer,
    );
    cases.push(Case {
        repo: "hostile/nested",
        at_import: true,
        why: "index",
    });

    // A config of 1 GiB by its descriptor (never downloaded), and one of 8 MiB whose
    // descriptor says 100 bytes (read no further than the cap).
    let mut m = good.clone();
    m["config"]["size"] = (1u64 << 30).into();
    mount_blobs(&addr, "hostile/good", "hostile/huge-config", &good);
    put_manifest(&addr, "hostile/huge-config", "ci", &m);
    cases.push(Case {
        repo: "hostile/huge-config",
        at_import: true,
        why: "larger than",
    });
    let big = vec![b' '; 8 << 20];
    let big_digest = put_blob(&addr, "hostile/understated-config", &big);
    let mut m = good.clone();
    m["config"]["digest"] = big_digest.into();
    m["config"]["size"] = 100.into();
    mount_blobs(&addr, "hostile/good", "hostile/understated-config", &good);
    put_manifest(&addr, "hostile/understated-config", "ci", &m);
    cases.push(Case {
        repo: "hostile/understated-config",
        at_import: true,
        why: "config",
    });

    // Every record's diffID replaced (consistently per layer): found when unpacked.
    let mut r = records.clone();
    for e in r["records"].as_array_mut().unwrap() {
        if let Some(i) = e["layer"].as_u64() {
            e["diffID"] = format!("sha256:{}", format!("{i:02}").repeat(32)).into();
        }
    }
    mount_blobs(&addr, "hostile/good", "hostile/wrong-diffid", &good);
    put_cache(&addr, "hostile/wrong-diffid", &good, &r);
    cases.push(Case {
        repo: "hostile/wrong-diffid",
        at_import: false,
        why: "is unusable",
    });

    // Every record names the next layer (diffIDs kept): found when unpacked.
    let mut r = records.clone();
    for e in r["records"].as_array_mut().unwrap() {
        if let Some(i) = e["layer"].as_u64() {
            e["layer"] = ((i + 1) % layers.len() as u64).into();
        }
    }
    mount_blobs(&addr, "hostile/good", "hostile/swapped", &good);
    put_cache(&addr, "hostile/swapped", &good, &r);
    cases.push(Case {
        repo: "hostile/swapped",
        at_import: false,
        why: "is unusable",
    });

    // The first layer is the cache's own config blob: not a tar at all.
    let mut m = good.clone();
    m["layers"][0]["digest"] = good["config"]["digest"].clone();
    m["layers"][0]["size"] = good["config"]["size"].clone();
    mount_blobs(&addr, "hostile/good", "hostile/config-as-layer", &good);
    put_manifest(&addr, "hostile/config-as-layer", "ci", &m);
    cases.push(Case {
        repo: "hostile/config-as-layer",
        at_import: false,
        why: "is unusable",
    });

    // The reference: the same context built with no cache at all.
    let ctx = context("rel-hostile-consumer", "c2\n");
    let (clean_id, _) = build_ok(&Rbuild::new(), ctx.path(), &[]);

    let check = |case: &Case| {
        let cache = format!("{addr}/{}:ci", case.repo);
        let r = Rbuild::new();
        let out = TestDir::new("rel-hostile-out");
        let dest = format!("type=local,dest={}", out.path().join("fs").display());
        let (id, log) = build_ok(&r, ctx.path(), &["--cache-from", &cache, "-o", &dest]);
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("WARNING: cache {cache} not used: ")))
            .collect();
        eprintln!("{}: {warnings:?}", case.repo);
        assert_eq!(warnings.len(), 1, "{}:\n{log}", case.repo);
        assert!(
            warnings[0].contains(case.why),
            "{}: {}",
            case.repo,
            warnings[0]
        );
        assert_eq!(
            warnings[0].contains("building again without it"),
            !case.at_import,
            "{}: {}",
            case.repo,
            warnings[0]
        );
        // Nothing of the cache was trusted: the image is the one a build without it gives.
        assert_eq!(id, clean_id, "{}:\n{log}", case.repo);
        let d = std::fs::read_to_string(out.path().join("fs/d.txt")).expect("d.txt");
        assert_eq!(d, "a1\nc2\n", "{}", case.repo);
        // Nothing unverified was kept: fsck re-hashes every blob and snapshot.
        assert_store_sound(&r, "hostile-ran", case.repo);
    };
    for case in &cases {
        check(case);
    }

    // Last (it breaks the good cache too): the registry serves other bytes of the same
    // size for every layer blob, so the digests no longer match.
    for l in &layers {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let data = registry
            .storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let len = std::fs::metadata(&data).expect("blob data").len() as usize;
        std::fs::write(&data, vec![0x5a; len]).expect("overwrite blob data");
    }
    check(&Case {
        repo: "hostile/good",
        at_import: false,
        why: "is unusable",
    });
}

#[test]
fn a_local_cache_whose_layer_bytes_changed_is_dropped_and_the_build_builds() {
    let dir = TestDir::new("rel-hostile-local");
    let cache = dir.path().join("cache");
    let producer = context("rel-hostile-local-producer", "c1\n");
    build_ok(
        &Rbuild::new(),
        producer.path(),
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    // Every layer file keeps its name and size, with other bytes.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("index.json")).expect("index.json"))
            .expect("index JSON");
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .expect("manifest digest")
        .trim_start_matches("sha256:")
        .to_string();
    let blobs = cache.join("blobs/sha256");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&manifest_hex)).expect("manifest"))
            .expect("manifest JSON");
    for l in manifest["layers"].as_array().expect("layers") {
        let path = blobs.join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let len = std::fs::metadata(&path).expect("layer file").len() as usize;
        std::fs::write(&path, vec![0x5a; len]).expect("overwrite layer");
    }
    let ctx = context("rel-hostile-local-consumer", "c2\n");
    let (clean_id, _) = build_ok(&Rbuild::new(), ctx.path(), &[]);
    let r = Rbuild::new();
    let from = format!("type=local,src={}", cache.display());
    let (id, log) = build_ok(&r, ctx.path(), &["--cache-from", &from]);
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("WARNING: cache ") && l.contains("not used: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("is unusable") && warnings[0].contains("building again without it"),
        "{}",
        warnings[0]
    );
    assert_eq!(id, clean_id, "{log}");
    assert_store_sound(&r, "hostile-ran", "local cache");
}
