//! Registry passwords never appear in output, errors, the store or the registry, even when
//! pushes and pulls fail; a `--secret` is in no layer, config or history.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;

use super::{assert_store_sound, build_args, contains_bytes, context, files_under};
use crate::util::busybox::busybox;
use crate::util::faultproxy::{Fault, FaultProxy};
use crate::util::registry::RegistryOptions;
use crate::util::{show, Rbuild, Registry, TestDir};

/// A bcrypt htpasswd line made with perl's crypt() (as tests/registry.rs does).
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
        "no bcrypt in crypt(): {hash:?}"
    );
    format!("{user}:{hash}\n")
}

/// The forms a leaked password could take.
fn needles(user: &str, password: &str) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    vec![password.as_bytes().to_vec(), b64.into_bytes()]
}

fn assert_no_leak(what: &str, hay: &[u8], needles: &[Vec<u8>]) {
    for n in needles {
        assert!(
            !contains_bytes(hay, n),
            "{what} contains the credential {:?}",
            String::from_utf8_lossy(n)
        );
    }
}

/// Every file under `dir`, gunzipped when it is gzip, checked for the needles.
fn assert_tree_clean(dir: &Path, needles: &[Vec<u8>]) -> usize {
    let files = files_under(dir);
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert_no_leak(&f.display().to_string(), &bytes, needles);
        let mut plain = Vec::new();
        if bytes.starts_with(&[0x1f, 0x8b])
            && flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .is_ok()
        {
            assert_no_leak(&format!("{} (gunzipped)", f.display()), &plain, needles);
        }
    }
    files.len()
}

fn run(rb: &Rbuild, env: &[(&str, &Path)], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = rb.cmd();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn rbuild");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().expect("wait rbuild")
}

#[test]
fn registry_password_never_leaks() {
    let dir = TestDir::new("secret-registry");
    let user = "leaktest";
    let password = format!("Pw-{}-kV9xQ", std::process::id());
    let htpasswd = dir.write("htpasswd", htpasswd_line(user, &password));
    let registry = Registry::start(
        "leak",
        RegistryOptions {
            extra_yaml: format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                htpasswd.display()
            ),
            ..Default::default()
        },
    );
    let needles = needles(user, &password);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let docker = dir.path().join("docker");
    let env: Vec<(&str, &Path)> = vec![("HOME", &home), ("DOCKER_CONFIG", &docker)];
    let rb = Rbuild::new();
    rb.ok(&["pull", "--progress=plain", &busybox().reference]);
    let mut outputs: Vec<(String, Output)> = Vec::new();

    // A wrong password, then the right one.
    let wrong = format!("{password}-wrong");
    outputs.push((
        "login wrong".into(),
        run(
            &rb,
            &env,
            &["login", "-u", user, "--password-stdin", &registry.addr],
            Some(&wrong),
        ),
    ));
    let out = run(
        &rb,
        &env,
        &["login", "-u", user, "--password-stdin", &registry.addr],
        Some(&format!("{password}\n")),
    );
    assert!(out.status.success(), "{}", show(&out));
    outputs.push(("login".into(), out));

    // Failing pushes and pulls through a proxy that answers 500, 503 or cuts blobs. The
    // proxy's address is a different registry name, so give it the same credentials.
    let proxies = [
        FaultProxy::start(&registry.addr, Fault::Status(500), usize::MAX),
        FaultProxy::start(&registry.addr, Fault::Status(503), 2),
        FaultProxy::start(&registry.addr, Fault::Corrupt, usize::MAX),
        FaultProxy::start(&registry.addr, Fault::DropAfter(1000), usize::MAX),
    ];
    for p in &proxies {
        let out = run(
            &rb,
            &env,
            &["login", "-u", user, "--password-stdin", &p.addr],
            Some(&format!("{password}\n")),
        );
        outputs.push((format!("login via {}", p.addr), out));
    }
    let dest = format!("{}/secret/app:v1", registry.addr);
    let out = run(
        &rb,
        &env,
        &["push", "--progress=plain", &busybox().reference, &dest],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));
    outputs.push(("push".into(), out));
    for (i, p) in proxies.iter().enumerate() {
        let via = format!("{}/secret/app:v1", p.addr);
        let push_dest = format!("{}/secret/p{i}:v1", p.addr);
        outputs.push((
            format!("push via {}", p.addr),
            run(
                &rb,
                &env,
                &["push", "--progress=plain", &busybox().reference, &push_dest],
                None,
            ),
        ));
        let fresh = Rbuild::new();
        let out = run(&fresh, &env, &["pull", "--progress=plain", &via], None);
        assert_tree_clean(&fresh.root, &needles);
        outputs.push((format!("pull via {}", p.addr), out));
    }
    // A pull of an image that does not exist, with and without credentials.
    outputs.push((
        "pull missing".into(),
        run(
            &rb,
            &env,
            &["pull", &format!("{}/secret/none:v1", registry.addr)],
            None,
        ),
    ));
    let failures = outputs.iter().filter(|(_, o)| !o.status.success()).count();
    for (what, out) in &outputs {
        assert_no_leak(&format!("stdout of {what}"), &out.stdout, &needles);
        assert_no_leak(&format!("stderr of {what}"), &out.stderr, &needles);
    }
    let store_files = assert_tree_clean(&rb.root, &needles);
    let registry_files = assert_tree_clean(&registry.storage, &needles);
    assert_no_leak("the registry log", registry.log_text().as_bytes(), &needles);
    eprintln!(
        "{} commands ({failures} failed), {store_files} store files, {registry_files} registry files: no credential",
        outputs.len()
    );
    assert!(failures >= 4, "the faults did not make anything fail");
    assert_store_sound(&rb, "", "after the credential runs");
}

#[test]
fn build_secret_is_in_no_layer_or_history() {
    let secret = format!("build-secret-{}-Zq7", std::process::id());
    let dir = TestDir::new("build-secret");
    let src = dir.write("token", &secret);
    let ctx = context(
        "build-secret-ctx",
        "ARG BASE\nFROM ${BASE}\n\
         RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /len\n\
         RUN --mount=type=secret,id=token,target=/etc/tok cp /etc/tok /copied; rm /copied\n\
         RUN --mount=type=secret,id=token echo done > /done\n",
    );
    let rb = Rbuild::new();
    let mut args = build_args(ctx.path(), "secret:v1");
    let c = args.pop().unwrap();
    args.push("--secret".into());
    args.push(format!("id=token,src={}", src.display()));
    args.push(c);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = rb.run(&a);
    assert!(out.status.success(), "{}", show(&out));
    let needles = vec![secret.clone().into_bytes()];
    assert_no_leak("build output", &out.stdout, &needles);
    assert_no_leak("build stderr", &out.stderr, &needles);
    let files = assert_tree_clean(&rb.root, &needles);
    let (_d, fs) = crate::build::unpack(&rb, "secret:v1");
    assert_eq!(
        std::fs::read_to_string(fs.join("len")).unwrap().trim(),
        secret.len().to_string(),
        "the secret was not readable in the step"
    );
    assert_tree_clean(&fs, &needles);
    let history = crate::util::tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &crate::build::oci_ref(&rb, "secret:v1"),
        ],
    );
    assert_no_leak("the image config and history", history.as_bytes(), &needles);
    // Pushed: the registry's copy has no secret either.
    let reg = Registry::shared();
    rb.ok(&[
        "push",
        "secret:v1",
        &format!("{}/secret/build:v1", reg.addr),
    ]);
    assert_tree_clean(&reg.storage, &needles);
    eprintln!("secret checked in {files} store files, the rootfs, config and registry");
}
