//! Registry faults through the fault-injecting proxy: pull and push either complete
//! correctly or fail with a clear error in bounded time, and a blob that does not match its
//! digest is never stored.

use std::process::Output;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{assert_store_sound, files_under};
use crate::util::busybox::busybox;
use crate::util::faultproxy::{Fault, FaultProxy};
use crate::util::{show, Rbuild, Registry};

/// How a faulty transfer may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// It must succeed (the fault is transient and the client retries or resumes).
    Success,
    /// It must fail, with an error mentioning one of the words.
    Failure(&'static [&'static str]),
    /// Either, but a failure must be clear (mention one of the words).
    Either(&'static [&'static str]),
}

/// The longest a failing transfer may take (retries with backoff included).
const FAIL_BOUND: Duration = Duration::from_secs(60);

/// Every blob in the store matches its name.
fn assert_blobs_match_digests(rb: &Rbuild, what: &str) {
    for path in files_under(&rb.root.join("blobs/sha256")) {
        let bytes = std::fs::read(&path).expect("read blob");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            name,
            "{what}: stored blob {} does not match its digest",
            path.display()
        );
    }
}

fn judge(out: &Output, took: Duration, expect: Expect, what: &str) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && out.status.code().is_some_and(|c| c == 0 || c == 1),
        "{what}: crashed:\n{}",
        show(out)
    );
    let clear = |words: &[&str]| {
        let lower = err.to_lowercase();
        words.iter().any(|w| lower.contains(&w.to_lowercase()))
    };
    match (expect, out.status.success()) {
        (Expect::Success, ok) => assert!(ok, "{what}: did not recover:\n{}", show(out)),
        (Expect::Failure(_), true) => panic!("{what}: succeeded despite the fault:\n{}", show(out)),
        (Expect::Failure(w) | Expect::Either(w), false) => {
            assert!(
                clear(w),
                "{what}: unclear error (wanted one of {w:?}):\n{}",
                show(out)
            );
            assert!(took < FAIL_BOUND, "{what}: took {took:?} to fail");
        }
        (Expect::Either(_), true) => {}
    }
    out.status.success()
}

#[test]
fn pull_through_registry_faults() {
    let _ = busybox();
    let registry = Registry::shared();
    let digest_words: &[&str] = &["digest", "sha256"];
    let cases: Vec<(Fault, usize, Expect)> = vec![
        (Fault::None, 0, Expect::Success),
        (Fault::DropAfter(100_000), 2, Expect::Success),
        (
            Fault::Stall(100_000, Duration::from_secs(3)),
            1,
            Expect::Success,
        ),
        (Fault::Status(503), 3, Expect::Success),
        (Fault::Status(500), 2, Expect::Success),
        (Fault::Status(500), usize::MAX, Expect::Failure(&["500"])),
        (Fault::Status(503), usize::MAX, Expect::Failure(&["503"])),
        (Fault::Truncate, 1, Expect::Success),
        (
            Fault::Truncate,
            usize::MAX,
            Expect::Failure(&[
                "digest",
                "size",
                "short",
                "eof",
                "end of file",
                "truncat",
                "closed",
            ]),
        ),
        (Fault::Corrupt, 1, Expect::Either(digest_words)),
        (Fault::Corrupt, usize::MAX, Expect::Failure(digest_words)),
        (
            Fault::LieSizes(500),
            usize::MAX,
            Expect::Failure(&["size", "digest", "larger"]),
        ),
        (
            Fault::LieSizes(2000),
            usize::MAX,
            // The truth is shorter than declared: the resumed range is past the end (416).
            Expect::Either(&["size", "digest", "smaller", "short", "end of file", "416"]),
        ),
    ];
    for (fault, times, expect) in cases {
        let what = format!("pull with {fault:?} x{times}");
        let proxy = FaultProxy::start(&registry.addr, fault, times);
        let rb = Rbuild::new();
        let reference = format!("{}/library/busybox:latest", proxy.addr);
        let start = Instant::now();
        let out = rb.run(&["pull", "--progress=plain", &reference]);
        let took = start.elapsed();
        let ok = judge(&out, took, expect, &what);
        eprintln!(
            "{what}: {} after {took:?}, {} faults in {} requests",
            if ok { "pulled" } else { "failed" },
            proxy.injected(),
            proxy.requests()
        );
        if fault != Fault::None {
            assert!(proxy.injected() > 0, "{what}: the proxy injected nothing");
        }
        assert_blobs_match_digests(&rb, &what);
        assert_store_sound(&rb, "", &what);
        if ok {
            // The pulled image is whole: its layer is there, with the fixture's content.
            let layer = std::fs::read_dir(rb.root.join("blobs/sha256"))
                .map(|d| d.count())
                .unwrap_or(0);
            assert!(
                layer >= 3,
                "{what}: only {layer} blobs after a successful pull"
            );
        } else if matches!(fault, Fault::Corrupt) {
            // A corrupted layer never lands in the store under its name.
            let stored: Vec<String> = files_under(&rb.root.join("blobs/sha256"))
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            eprintln!("{what}: store holds {} verified blobs", stored.len());
        }
    }
}

#[test]
fn push_through_registry_faults() {
    let registry = Registry::shared();
    let rb = Rbuild::new();
    rb.ok(&["pull", "--progress=plain", &busybox().reference]);
    let cases: Vec<(Fault, usize, Expect)> = vec![
        (Fault::Status(503), 3, Expect::Success),
        (Fault::Status(500), 2, Expect::Success),
        (Fault::Status(500), usize::MAX, Expect::Failure(&["500"])),
        (Fault::Status(503), usize::MAX, Expect::Failure(&["503"])),
    ];
    for (n, (fault, times, expect)) in cases.into_iter().enumerate() {
        let what = format!("push with {fault:?} x{times}");
        let proxy = FaultProxy::start(&registry.addr, fault, times);
        let dest = format!("{}/faulty-push/n{n}:v1", proxy.addr);
        let start = Instant::now();
        let out = rb.run(&["push", "--progress=plain", &busybox().reference, &dest]);
        let took = start.elapsed();
        let ok = judge(&out, took, expect, &what);
        eprintln!(
            "{what}: {} after {took:?}",
            if ok { "pushed" } else { "failed" }
        );
        assert!(proxy.injected() > 0, "{what}: the proxy injected nothing");
        if ok {
            // What the registry holds is whole: skopeo copies it out, verifying digests.
            let dir = crate::util::TestDir::new("faulty-push-copy");
            crate::util::tool(
                "skopeo",
                &[
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    &format!("docker://{}/faulty-push/n{n}:v1", registry.addr),
                    &format!("oci:{}:x", dir.path().join("l").display()),
                ],
            );
        }
        assert_store_sound(&rb, "", &what);
    }
}
