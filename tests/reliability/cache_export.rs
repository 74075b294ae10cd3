//! `--cache-to` under faults: exporters killed with SIGKILL at random moments, two runners
//! exporting to one ref at once, and the fault proxy cutting, stalling and corrupting
//! uploads, manifest PUTs and the downloads of a later `--cache-from`. After each, the ref
//! is absent, the old one, or a new one whose every blob the registry holds, and the next
//! build with `--cache-from` succeeds.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{assert_store_sound, rng, trials};
use crate::util::busybox::busybox;
use crate::util::faultproxy::{Fault, FaultProxy, Target};
use crate::util::registry_api::{blob_size, manifest_of};
use crate::util::{show, Rbuild, Registry, TestDir};

/// Two RUN layers of 1 MiB of random bytes each (new bytes for every `N`), and a COPY.
const DOCKERFILE: &str = "ARG BASE\n\
FROM ${BASE}\n\
ARG N\n\
RUN echo export-ran-$((40+2)) $N && dd if=/dev/urandom of=/r1 bs=64k count=16 2>/dev/null\n\
COPY a.txt /a.txt\n\
RUN echo export-ran-$((40+2)) $N && dd if=/dev/urandom of=/r2 bs=64k count=16 2>/dev/null\n";

fn context(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.write("Dockerfile", DOCKERFILE);
    dir.write("a.txt", format!("{name}\n"));
    dir
}

/// `rbuild build` args for `ctx` with `N=n` and `extra` flags.
fn args(ctx: &Path, n: u64, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "build",
        "--progress=plain",
        "--build-arg",
        &format!("BASE={}", busybox().reference),
        "--build-arg",
        &format!("N={n}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push(ctx.display().to_string());
    a
}

fn run(r: &Rbuild, args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    r.run(&a)
}

fn run_ok(r: &Rbuild, args: &[String]) -> String {
    let out = run(r, args);
    assert!(out.status.success(), "rbuild {args:?}:\n{}", show(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a cache ref is after an export was interrupted.
#[derive(Debug, PartialEq, Eq)]
enum RefState {
    Absent,
    Old,
    New,
}

/// Reads `repo:ci` through the registry API and checks the rule: absent, `old`, or a new
/// manifest whose config and layers the repository holds with the sizes it states.
fn ref_state(addr: &str, repo: &str, old: Option<&str>, what: &str) -> RefState {
    let Some((manifest, digest)) = manifest_of(addr, repo, "ci") else {
        return RefState::Absent;
    };
    if Some(digest.as_str()) == old {
        return RefState::Old;
    }
    let mut blobs = vec![manifest["config"].clone()];
    blobs.extend(
        manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .cloned(),
    );
    for b in blobs {
        let d = b["digest"].as_str().expect("digest");
        let size = blob_size(addr, repo, d);
        assert_eq!(
            size,
            b["size"].as_u64(),
            "{what}: the new ref {digest} names blob {d} the registry holds as {size:?}"
        );
    }
    RefState::New
}

/// A fresh store builds `ctx` with `--cache-from` the ref (whatever it holds) and succeeds.
fn next_build_succeeds(ctx: &Path, n: u64, cache: &str) -> String {
    run_ok(&Rbuild::new(), &args(ctx, n, &["--cache-from", cache]))
}

#[test]
fn kill_9_during_cache_exports() {
    let mut rng = rng("kill_9_during_cache_exports");
    let registry = Registry::shared();
    let repo = format!("rel/export-kill-{}", std::process::id());
    let cache = format!("{}/{repo}:ci", registry.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let ctx = context("rel-export-kill");
    let r = Rbuild::new();
    // The old ref, and how long an export alone takes (the steps cached in the store).
    run_ok(&r, &args(ctx.path(), 0, &["--cache-to", &to]));
    run_ok(&r, &args(ctx.path(), 1, &[]));
    let start = Instant::now();
    run_ok(&r, &args(ctx.path(), 1, &["--cache-to", &to]));
    let export = start.elapsed();
    eprintln!("an export of fresh layers takes {export:?}");
    let n_trials = trials(20);
    let (mut killed, mut seen) = (0, Vec::new());
    for trial in 0..n_trials {
        let n = 100 + trial as u64;
        let (_, old) = manifest_of(&registry.addr, &repo, "ci").expect("the ref");
        // The steps first (cached), then the export alone, killed at a random moment.
        run_ok(&r, &args(ctx.path(), n, &[]));
        let delay = export.mul_f64(rng.random_range(0.0..1.2));
        let mut child = r
            .cmd()
            .args(args(ctx.path(), n, &["--cache-to", &to]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rbuild");
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().expect("wait rbuild");
        use std::os::unix::process::ExitStatusExt;
        killed += usize::from(status.signal() == Some(libc::SIGKILL));
        let what = format!("trial {trial} (kill after {delay:?})");
        let state = ref_state(&registry.addr, &repo, Some(&old), &what);
        assert_ne!(state, RefState::Absent, "{what}");
        seen.push(state);
        assert_store_sound(&r, "export-ran", &what);
        next_build_succeeds(ctx.path(), n, &cache);
    }
    eprintln!(
        "{killed}/{n_trials} exporters killed mid-way; ref after each: {} old, {} new",
        seen.iter().filter(|s| **s == RefState::Old).count(),
        seen.iter().filter(|s| **s == RefState::New).count()
    );
}

#[test]
fn two_runners_export_to_one_ref_at_once() {
    let registry = Registry::shared();
    let repo = format!("rel/export-race-{}", std::process::id());
    let cache = format!("{}/{repo}:ci", registry.addr);
    let to = format!("type=registry,ref={cache},mode=max");
    let ctxs = [context("rel-export-race-a"), context("rel-export-race-b")];
    let stores = [Rbuild::new(), Rbuild::new()];
    let mut old: Option<String> = None;
    for round in 0..trials(3) as u64 {
        // Steps cached first, so that the two exports overlap.
        for (r, c) in stores.iter().zip(&ctxs) {
            run_ok(r, &args(c.path(), round, &[]));
        }
        let children: Vec<_> = stores
            .iter()
            .zip(&ctxs)
            .map(|(r, c)| {
                r.cmd()
                    .args(args(c.path(), round, &["--cache-to", &to]))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn rbuild")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait rbuild");
            assert!(out.status.success(), "round {round}:\n{}", show(&out));
        }
        let what = format!("round {round}");
        let state = ref_state(&registry.addr, &repo, old.as_deref(), &what);
        assert_eq!(state, RefState::New, "{what}");
        // The ref is one runner's complete cache: that runner's context is all cached.
        let hits: Vec<usize> = (0..2)
            .filter(|&i| {
                let log = next_build_succeeds(ctxs[i].path(), round, &cache);
                // The RUN lines print this only when they run.
                !log.contains("export-ran-42")
            })
            .collect();
        assert_eq!(hits.len(), 1, "{what}: runners whose records the ref holds");
        old = manifest_of(&registry.addr, &repo, "ci").map(|(_, d)| d);
    }
}

/// One fault of the export matrix and what must come of it.
struct ExportCase {
    name: &'static str,
    fault: Fault,
    times: usize,
    /// Whether the export must succeed (the fault recovered by a retry).
    succeeds: bool,
}

#[test]
fn cache_export_through_registry_faults() {
    use Target::{BlobUpload, ManifestPut};
    let stall = Duration::from_secs(4);
    let cases = [
        (
            "blob upload cut once",
            Fault::CutRequest(BlobUpload),
            1,
            true,
        ),
        (
            "blob upload answer lost once",
            Fault::CutResponse(BlobUpload),
            1,
            true,
        ),
        (
            "blob upload stalled once",
            Fault::StallRequest(BlobUpload, stall),
            1,
            true,
        ),
        (
            "blob upload corrupted once",
            Fault::CorruptRequest(BlobUpload),
            1,
            true,
        ),
        (
            "blob upload always corrupted",
            Fault::CorruptRequest(BlobUpload),
            usize::MAX,
            false,
        ),
        (
            "blob upload always cut",
            Fault::CutRequest(BlobUpload),
            usize::MAX,
            false,
        ),
        (
            "manifest PUT cut once",
            Fault::CutRequest(ManifestPut),
            1,
            true,
        ),
        (
            "manifest PUT answer lost once",
            Fault::CutResponse(ManifestPut),
            1,
            true,
        ),
        (
            "manifest PUT stalled once",
            Fault::StallRequest(ManifestPut, stall),
            1,
            true,
        ),
        (
            "manifest PUT always corrupted",
            Fault::CorruptRequest(ManifestPut),
            usize::MAX,
            false,
        ),
        (
            "manifest PUT always cut",
            Fault::CutRequest(ManifestPut),
            usize::MAX,
            false,
        ),
        ("every request 503", Fault::Status(503), usize::MAX, false),
    ]
    .map(|(name, fault, times, succeeds)| ExportCase {
        name,
        fault,
        times,
        succeeds,
    });
    let registry = Registry::shared();
    let ctx = context("rel-export-faults");
    let r = Rbuild::new();
    for (i, case) in cases.iter().enumerate() {
        let n = 1000 + i as u64;
        let repo = format!("rel/export-faults-{}-{i}", std::process::id());
        let cache = format!("{}/{repo}:ci", registry.addr);
        // An old ref made without faults, then a new export through the proxy.
        run_ok(
            &r,
            &args(
                ctx.path(),
                n,
                &["--cache-to", &format!("type=registry,ref={cache}")],
            ),
        );
        let (_, old) = manifest_of(&registry.addr, &repo, "ci").expect("the old ref");
        let n = n + 500;
        run_ok(&r, &args(ctx.path(), n, &[]));
        let proxy = FaultProxy::start(&registry.addr, case.fault, case.times);
        let to = format!("type=registry,ref={}/{repo}:ci,mode=max", proxy.addr);
        let start = Instant::now();
        let out = r
            .cmd()
            .env("RBUILD_REGISTRY_TIMEOUT", "2")
            .env("RBUILD_REGISTRY_ATTEMPTS", "3")
            .args(args(ctx.path(), n, &["--cache-to", &to]))
            .output()
            .expect("spawn rbuild");
        let took = start.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("");
        eprintln!(
            "{}: exit {:?} in {took:.1?}, {} faults injected; {last}",
            case.name,
            out.status.code(),
            proxy.injected()
        );
        assert!(proxy.injected() > 0, "{}: no fault was injected", case.name);
        assert_eq!(
            out.status.success(),
            case.succeeds,
            "{}:\n{}",
            case.name,
            show(&out)
        );
        if !case.succeeds {
            assert_eq!(out.status.code(), Some(1), "{}", case.name);
            assert!(
                err.contains("cannot export the build cache to"),
                "{}:\n{}",
                case.name,
                show(&out)
            );
        }
        assert!(
            took < Duration::from_secs(60),
            "{}: took {took:?}",
            case.name
        );
        let state = ref_state(&registry.addr, &repo, Some(&old), case.name);
        let want = if case.succeeds {
            RefState::New
        } else {
            RefState::Old
        };
        // A manifest PUT that took effect before its answer was lost may leave the new ref.
        let lost_answer = matches!(case.fault, Fault::CutResponse(ManifestPut));
        assert!(state == want || lost_answer, "{}: {state:?}", case.name);
        assert_store_sound(&r, "export-ran", case.name);
        next_build_succeeds(ctx.path(), n, &cache);
    }
}

#[test]
fn cache_import_through_registry_faults_still_builds() {
    let registry = Registry::shared();
    let repo = format!("rel/import-faults-{}", std::process::id());
    let cache = format!("{}/{repo}:ci", registry.addr);
    let ctx = context("rel-import-faults");
    run_ok(
        &Rbuild::new(),
        &args(
            ctx.path(),
            7,
            &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
        ),
    );
    // A later step changes, so the RUN on top of the cached layers needs their bytes.
    let changed = context("rel-import-faults");
    changed.write(
        "Dockerfile",
        format!("{DOCKERFILE}RUN echo export-ran $N && cat /a.txt > /b.txt\n"),
    );
    changed.write("a.txt", "rel-import-faults\n");
    let cases = [
        ("blob cut once", Fault::DropAfter(1000), 1),
        ("blob always cut", Fault::DropAfter(1000), usize::MAX),
        (
            "blob stalled once",
            Fault::Stall(1000, Duration::from_secs(4)),
            1,
        ),
        ("blob corrupted once", Fault::Corrupt, 1),
        ("blob always corrupted", Fault::Corrupt, usize::MAX),
        ("blob truncated always", Fault::Truncate, usize::MAX),
        ("manifest corrupted", Fault::CorruptManifest, usize::MAX),
        ("manifest sizes halved", Fault::LieSizes(500), usize::MAX),
    ];
    for (name, fault, times) in cases {
        let proxy = FaultProxy::start(&registry.addr, fault, times);
        let from = format!("{}/{repo}:ci", proxy.addr);
        let r = Rbuild::new();
        let out = r
            .cmd()
            .env("RBUILD_REGISTRY_TIMEOUT", "2")
            .env("RBUILD_REGISTRY_ATTEMPTS", "3")
            .args(args(changed.path(), 7, &["--cache-from", &from]))
            .output()
            .expect("spawn rbuild");
        let err = String::from_utf8_lossy(&out.stderr);
        let warning = err
            .lines()
            .find(|l| l.starts_with("WARNING: cache"))
            .unwrap_or("(no warning)");
        eprintln!("{name}: {} faults injected; {warning}", proxy.injected());
        assert!(out.status.success(), "{name}:\n{}", show(&out));
        assert!(proxy.injected() > 0, "{name}: no fault was injected");
        assert_store_sound(&r, "export-ran", name);
    }
}
