//! Registry timeouts: a registry that accepts connections and never answers, or stops in
//! the middle of a blob, gives a clear error within the configured bound (no hang), and
//! every retry is logged.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::assert_store_sound;
use crate::util::busybox::busybox;
use crate::util::faultproxy::{Fault, FaultProxy};
use crate::util::{show, Rbuild, Registry};

/// A listener that accepts every connection and never sends a byte; connections are held
/// open until the test process exits.
fn silent_registry() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            held.lock().unwrap().push(stream);
        }
    });
    addr
}

#[test]
fn a_registry_that_never_answers_fails_within_the_timeout() {
    let rb = Rbuild::new();
    let reference = format!("{}/silent/app:1", silent_registry());
    let start = Instant::now();
    let out = rb.run(&[
        "pull",
        "--progress=plain",
        "--registry-timeout",
        "1",
        "--registry-attempts",
        "2",
        &reference,
    ]);
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(err.contains("did not answer in time"), "{}", show(&out));
    assert!(err.contains("--registry-timeout"), "{}", show(&out));
    assert!(
        err.contains("warning: retrying GET") && err.contains("attempt 2 of 2"),
        "retries are not logged:\n{}",
        show(&out)
    );
    // https then plain http, two attempts each, 1 s apiece, plus backoff: far below the
    // 120 s default, which is what would show if the flag were ignored.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_store_sound(&rb, "", "pull from a silent registry");
}

#[test]
fn a_blob_that_stalls_mid_body_times_out_and_resumes() {
    let _ = busybox();
    let registry = Registry::shared();
    // The proxy sends 100 kB of the layer, then stays silent for 60 s.
    let stall = Fault::Stall(100_000, Duration::from_secs(60));
    let pull = |proxy: &FaultProxy, rb: &Rbuild| {
        let reference = format!("{}/library/busybox:latest", proxy.addr);
        let start = Instant::now();
        let out = rb
            .cmd()
            .env("RBUILD_REGISTRY_TIMEOUT", "2")
            .env("RBUILD_REGISTRY_ATTEMPTS", "3")
            .args(["pull", "--progress=plain", &reference])
            .output()
            .expect("run rbuild");
        (out, start.elapsed())
    };

    // Once: the stalled download times out and the next attempt resumes it.
    let once = FaultProxy::start(&registry.addr, stall, 1);
    let rb = Rbuild::new();
    let (out, took) = pull(&once, &rb);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(once.injected(), 1, "the proxy did not stall");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: retrying download of sha256:"),
        "the retry is not logged:\n{}",
        show(&out)
    );
    assert!(
        took < Duration::from_secs(60),
        "waited for the stall: {took:?}"
    );
    assert_store_sound(&rb, "", "pull after a stall");

    // Always: it fails clearly, long before the stall would end.
    let always = FaultProxy::start(&registry.addr, stall, usize::MAX);
    let rb = Rbuild::new();
    let (out, took) = pull(&always, &rb);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer in time"),
        "{}",
        show(&out)
    );
    assert!(
        took < Duration::from_secs(60),
        "waited for the stall: {took:?}"
    );
    assert_store_sound(&rb, "", "pull that always stalls");
}
