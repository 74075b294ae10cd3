//! `RUN --mount=type=ssh` with `--ssh` end to end: a real `ssh-agent` holding a generated
//! key, the host's `ssh-add` bound into the step (with its libraries) to list the forwarded
//! identities; no key byte in the log, the store (layers, cache records) or the image.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::build::{base, unpack};
use crate::util::{show, tool, Rbuild, TestDir};

/// An `ssh-agent -D` listening on `<dir>/agent.sock`; killed when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, key: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let mut child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run ssh-agent (install openssh-client)");
        // It prints SSH_AUTH_SOCK=... once it listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("SSH_AUTH_SOCK="), "{line}");
        let out = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        Agent { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A context with the Dockerfile and `sshroot/`: the host's `ssh-add`, its libraries and
/// loader, to run in a busybox step as `/sshroot/lib/ld.so --library-path /sshroot/lib`.
fn context(dockerfile: &str) -> TestDir {
    let dir = TestDir::new("ssh-ctx");
    dir.write("Dockerfile", dockerfile);
    let ssh_add = tool("sh", &["-c", "command -v ssh-add"]);
    let ssh_add = ssh_add.trim();
    std::fs::create_dir_all(dir.path().join("sshroot/lib")).unwrap();
    std::fs::copy(ssh_add, dir.path().join("sshroot/ssh-add")).unwrap();
    for line in tool("ldd", &[ssh_add]).lines() {
        let Some(lib) = line.split_whitespace().find(|w| w.starts_with('/')) else {
            continue;
        };
        let name = if lib.contains("ld-linux") {
            "ld.so".to_string()
        } else {
            Path::new(lib)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        std::fs::copy(lib, dir.path().join("sshroot/lib").join(name)).unwrap();
    }
    dir
}

const SSH_ADD: &str = "/sshroot/lib/ld.so --library-path /sshroot/lib /sshroot/ssh-add";

/// A new ed25519 key: (private key file, its fingerprint, the private and public base64).
fn keygen(dir: &Path) -> (PathBuf, String, Vec<String>) {
    let key = dir.join("id_test");
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rbuild-ssh-test",
            "-f",
            &key.to_string_lossy(),
        ],
    );
    let fp = tool("ssh-keygen", &["-lf", &key.to_string_lossy()]);
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    let private = std::fs::read_to_string(&key).unwrap();
    let mut secrets: Vec<String> = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_string)
        .collect();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    secrets.push(public.split_whitespace().nth(1).unwrap().to_string());
    (key, fp, secrets)
}

fn build_with(r: &Rbuild, ctx: &Path, sock: &Path, extra: &[&str]) -> std::process::Output {
    r.cmd()
        .env("SSH_AUTH_SOCK", sock)
        .args(["build", "--progress=plain", "-t", "sshimg", "--build-arg"])
        .arg(format!("BASE={}", base().reference))
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

/// Whether any file under `dir` contains one of `needles`.
fn files_containing(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                found.push(format!("{}: {n}", entry.path().display()));
            }
        }
    }
    found
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[test]
fn ssh_mounts_forward_the_agent_and_no_key_is_kept() {
    let keys = TestDir::new("ssh-keys");
    let (key, fingerprint, secrets) = keygen(keys.path());
    let agent_dir = TestDir::new("ssh-agent-a");
    let agent = Agent::start(agent_dir.path(), &key);
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=bind,source=sshroot,target=/sshroot --mount=type=ssh \
         {SSH_ADD} -l && echo \"sock=$SSH_AUTH_SOCK\" && stat -c 'default=%u:%g:%a' \"$SSH_AUTH_SOCK\"\n\
         RUN --mount=type=bind,source=sshroot,target=/sshroot \
         --mount=type=ssh,id=deploy,target=/agent,uid=1000,gid=1000,mode=0640,required=true \
         stat -c 'deploy=%u:%g:%a' /agent && SSH_AUTH_SOCK=/agent {SSH_ADD} -l | sed 's/^/own: /'\n\
         RUN --mount=type=ssh,id=absent echo \"absent=${{SSH_AUTH_SOCK:-unset}}\"\n"
    ));
    let r = Rbuild::new();
    let key_arg = format!("deploy={}", key.display());
    let out = build_with(
        &r,
        ctx.path(),
        &agent.socket,
        &["--ssh", "default", "--ssh", &key_arg],
    );
    assert!(out.status.success(), "{}", show(&out));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The step saw the agent (the host's) and the own agent holding the key file.
    assert!(log.contains(&fingerprint), "{log}");
    assert!(log.contains(&format!("own: 256 {fingerprint}")), "{log}");
    assert!(log.contains("sock=/run/buildkit/ssh_agent.0"), "{log}");
    assert!(log.contains("default=0:0:600"), "{log}");
    assert!(log.contains("deploy=1000:1000:640"), "{log}");
    assert!(log.contains("absent=unset"), "{log}");

    // No key in the log, the store, or the image; no socket stub in the image.
    let leaks: Vec<&String> = secrets
        .iter()
        .filter(|s| log.contains(s.as_str()))
        .collect();
    assert!(leaks.is_empty(), "key material in the log: {leaks:?}");
    assert_eq!(files_containing(&r.root, &secrets), Vec::<String>::new());
    let (_d, fs) = unpack(&r, "sshimg");
    assert!(!fs.join("agent").exists() && !fs.join("run/buildkit").exists());
    assert_eq!(files_containing(&fs, &secrets), Vec::<String>::new());
    // The agent started for the key file is gone with the build.
    assert_eq!(
        processes_mentioning(&r.root.to_string_lossy()),
        Vec::<String>::new()
    );

    // Another agent at another path: the socket path is in no key, every step is CACHED.
    drop(agent);
    let agent_dir = TestDir::new("ssh-agent-b");
    let agent = Agent::start(agent_dir.path(), &key);
    let out = build_with(
        &r,
        ctx.path(),
        &agent.socket,
        &["--ssh", "default", "--ssh", &key_arg],
    );
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches(" CACHED").count(), 3, "{log}");
}

#[test]
fn a_required_ssh_mount_without_ssh_fails_and_bad_ssh_flags_are_usage_errors() {
    let ctx = context("ARG BASE\nFROM $BASE\nRUN --mount=type=ssh,id=deploy,required=true true\n");
    let r = Rbuild::new();
    let out = build_with(&r, ctx.path(), Path::new("/nonexistent"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        err.contains("Dockerfile:3")
            && err.contains("id \"deploy\"")
            && err.contains("--ssh deploy="),
        "{err}"
    );
    let out = build_with(
        &r,
        ctx.path(),
        Path::new("/nonexistent"),
        &["--ssh", "deploy=/nonexistent/key"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(err.contains("/nonexistent/key"), "{err}");
    let out = r
        .cmd()
        .env_remove("SSH_AUTH_SOCK")
        .args(["build", "--ssh", "default"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSH_AUTH_SOCK is not set"));
}

#[test]
fn a_killed_build_leaves_no_agent_process_or_mount() {
    let keys = TestDir::new("ssh-keys");
    let (key, _, _) = keygen(keys.path());
    let ctx = context(
        "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=ssh,id=deploy,required=true echo ssh-step-started; sleep 30\n",
    );
    let r = Rbuild::new();
    let mut child = r
        .cmd()
        .args(["build", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={}", base().reference))
        .arg("--ssh")
        .arg(format!("deploy={}", key.display()))
        .arg(ctx.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The step runs once its output arrives; the agent for the key file runs with it.
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("ssh-step-started") && !line.contains("RUN") {
            break;
        }
    }
    let agents = processes_mentioning(&r.root.to_string_lossy());
    assert!(
        agents.iter().any(|p| p.starts_with("ssh-agent")),
        "no agent while the step runs: {agents:?}\n{log}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    crate::reliability::assert_store_sound(&r, "ssh-step-started", "a build killed in an ssh step");
}
