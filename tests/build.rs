//! `rbuild build` end to end: every Dockerfile under `testdata/` built by the real binary
//! on the busybox base pulled from a real registry, RUN steps in the real sandbox, and the
//! result read back with skopeo (config, manifest) and umoci (the unpacked rootfs).

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::util::busybox::{BaseFormat, Busybox};
use crate::util::{show, tool, Rbuild, TestDir};

/// `testdata/<name>` in the repository.
pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

thread_local! {
    static BASE: Cell<BaseFormat> = const { Cell::new(BaseFormat::Oci) };
}

/// The busybox base the running test body builds on (see [`on_both_bases`]; OCI otherwise).
pub fn base() -> &'static Busybox {
    BASE.with(|b| b.get()).busybox()
}

/// Runs `body` on the busybox base pushed as OCI, then on the same image pushed as Docker
/// v2s2: every test that reads an image back with umoci or skopeo runs on both.
pub fn on_both_bases(body: impl Fn()) {
    for format in BaseFormat::BOTH {
        BASE.with(|b| b.set(format));
        eprintln!("--- on the {format:?} busybox base");
        body();
    }
    BASE.with(|b| b.set(BaseFormat::Oci));
}

/// `rbuild build --progress=plain --build-arg BASE=<busybox> -t TAG EXTRA... CONTEXT`.
pub fn build(r: &Rbuild, context: &Path, tag: &str, extra: &[&str]) -> Output {
    let base = format!("BASE={}", base().reference);
    let mut args = vec!["build", "--progress=plain", "--build-arg", &base, "-t", tag];
    args.extend_from_slice(extra);
    let ctx = context.to_string_lossy().into_owned();
    args.push(&ctx);
    r.run(&args)
}

/// Like [`build`], panicking unless it succeeds; returns (image id, stderr).
pub fn build_ok(r: &Rbuild, context: &Path, tag: &str, extra: &[&str]) -> (String, String) {
    let out = build(r, context, tag, extra);
    assert!(
        out.status.success(),
        "build of {tag} failed:\n{}",
        show(&out)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "not an image id: {id:?}"
    );
    (id, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The store's tag for a short name: docker's normalization.
pub fn full_name(tag: &str) -> String {
    let (name, t) = match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
        _ => (tag.to_string(), "latest".to_string()),
    };
    let name = if name.contains('/') {
        name
    } else {
        format!("library/{name}")
    };
    format!("docker.io/{name}:{t}")
}

/// `oci:<store>:<full name>` for skopeo.
pub fn oci_ref(r: &Rbuild, tag: &str) -> String {
    format!("oci:{}:{}", r.root.display(), full_name(tag))
}

/// The raw config blob as skopeo reads it from the store's OCI layout.
pub fn raw_config(r: &Rbuild, tag: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--config", "--raw", &oci_ref(r, tag)])
        .output()
        .expect("run skopeo (Debian package skopeo)");
    assert!(out.status.success(), "skopeo failed:\n{}", show(&out));
    out.stdout
}

/// The image config, parsed.
pub fn config(r: &Rbuild, tag: &str) -> serde_json::Value {
    serde_json::from_slice(&raw_config(r, tag)).expect("config is json")
}

/// The manifest as skopeo reads it.
pub fn manifest(r: &Rbuild, tag: &str) -> serde_json::Value {
    let raw = tool("skopeo", &["inspect", "--raw", &oci_ref(r, tag)]);
    serde_json::from_str(&raw).expect("manifest is json")
}

/// The image unpacked with umoci; `.path().join("bundle/rootfs")` is its filesystem.
pub fn unpack(r: &Rbuild, tag: &str) -> (TestDir, PathBuf) {
    let dir = TestDir::new("unpack");
    let bundle = dir.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{}", r.root.display(), full_name(tag)),
            &bundle.to_string_lossy(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    (dir, rootfs)
}

fn read(path: impl AsRef<Path>) -> String {
    let p = path.as_ref();
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn httpserver_example_builds_and_serves_its_page() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let (id, _) = build_ok(&r, &testdata("httpserver"), "cncamp/httpserver:v1", &[]);
        // The image ID is the config's digest, as docker defines it.
        assert_eq!(
            id,
            format!(
                "sha256:{}",
                sha256_hex(&raw_config(&r, "cncamp/httpserver:v1"))
            )
        );
        let cfg = config(&r, "cncamp/httpserver:v1");
        assert_eq!(cfg["config"]["User"], "www");
        assert_eq!(cfg["config"]["Entrypoint"][0], "httpd");
        let (_dir, rootfs) = unpack(&r, "cncamp/httpserver:v1");
        assert_eq!(read(rootfs.join("var/www/build.txt")), "built by rbuild\n");

        // Run its httpd as the image's user in a chroot of the unpacked rootfs.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut httpd = Command::new("chroot")
            .args([
                "--userspec=1000:1000",
                &rootfs.to_string_lossy(),
                "httpd",
                "-f",
                "-p",
                &format!("127.0.0.1:{port}"),
                "-h",
                "/var/www",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn chroot httpd");
        let deadline = Instant::now() + Duration::from_secs(10);
        let page = loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                if !body.is_empty() {
                    break body;
                }
            }
            assert!(Instant::now() < deadline, "httpd never answered");
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = httpd.kill();
        let _ = httpd.wait();
        let index = read(testdata("httpserver/index.html"));
        assert!(
            page.starts_with("HTTP/1.") && page.contains(" 200 "),
            "{page}"
        );
        assert!(page.ends_with(&index), "page served:\n{page}");
    });
}

#[test]
fn run_shell_form_exec_form_and_shell_instruction() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("run-forms"), "run-forms", &[]);
        let (_d, fs) = unpack(&r, "run-forms");
        assert_eq!(read(fs.join("shell.txt")), "shell form 3\n");
        assert_eq!(read(fs.join("exec.txt")), "exec form\n");
        // The SHELL instruction's argv ran the later shell-form RUN.
        assert_eq!(read(fs.join("shell-instr.txt")), "from-shell-instruction\n");
        assert_eq!(read(fs.join("after.txt")), "after-shell\n");
        let cfg = config(&r, "run-forms");
        assert_eq!(cfg["config"]["Shell"][0], "/bin/sh");
    });
}

#[test]
fn env_and_build_args_reach_run_and_env_wins() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(
            &r,
            &testdata("env-arg"),
            "env-arg",
            &["--build-arg", "WHO=from-arg"],
        );
        let (_d, fs) = unpack(&r, "env-arg");
        assert_eq!(read(fs.join("greeting.txt")), "hello env-wins\n");
        assert_eq!(read(fs.join("spaced.txt")), "a b  c\n");
        assert_eq!(read(fs.join("subst.txt")), "hello-x\n");
        let env = config(&r, "env-arg")["config"]["Env"].to_string();
        assert!(
            env.contains("SUBST=hello-x") && env.contains("WHO=env-wins"),
            "{env}"
        );
        // Build args are not persisted in the image's ENV.
        assert!(!env.contains("GREETING="), "{env}");
        // RUN history names the args it saw, as docker does.
        let history = config(&r, "env-arg")["history"].to_string();
        assert!(
            history.contains("RUN |2 GREETING=hello WHO=from-arg"),
            "{history}"
        );
    });
}

#[test]
fn workdir_is_created_and_relative_paths_follow_it() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("workdir"), "workdir", &[]);
        let (_d, fs) = unpack(&r, "workdir");
        assert_eq!(read(fs.join("pwd.txt")), "/srv/app/sub\n");
        assert_eq!(
            read(fs.join("srv/app/sub/hello.txt")),
            "hello from workdir\n"
        );
        assert_eq!(
            read(fs.join("srv/app/sub/rel/hello.txt")),
            "hello from workdir\n"
        );
        let cfg = config(&r, "workdir");
        assert_eq!(cfg["config"]["WorkingDir"], "/tmp");
        // WORKDIR /srv/app made a layer; WORKDIR /tmp (exists) did not.
        let h = cfg["history"].as_array().unwrap();
        let entry = |by: &str| {
            h.iter()
                .find(|e| e["created_by"] == by)
                .unwrap_or_else(|| panic!("no history {by}: {h:?}"))
        };
        assert_eq!(
            entry("WORKDIR /srv/app")["empty_layer"],
            serde_json::Value::Null
        );
        assert_eq!(entry("WORKDIR /tmp")["empty_layer"], true);
        let layers = manifest(&r, "workdir")["layers"].as_array().unwrap().len();
        let non_empty = h.iter().filter(|e| e["empty_layer"] != true).count();
        assert_eq!(layers, non_empty, "one layer per non-empty history entry");
    });
}

#[test]
fn user_by_name_and_by_id_runs_as_that_user() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("user"), "user", &[]);
        let (_d, fs) = unpack(&r, "user");
        let id = read(fs.join("out/id-name.txt"));
        assert!(id.starts_with("uid=4321(app) gid=4322(app)"), "{id}");
        assert!(
            id.contains("999(extra)"),
            "supplementary group missing: {id}"
        );
        assert_eq!(read(fs.join("out/id-num.txt")), "4000\n4001\n");
        assert_eq!(read(fs.join("owner.txt")), "4321:4322\n");
        let md = std::fs::metadata(fs.join("out/id-name.txt")).unwrap();
        assert_eq!((md.uid(), md.gid()), (4321, 4322));
        assert_eq!(config(&r, "user")["config"]["User"], "root");
    });
}

#[test]
fn copy_follows_docker_destination_rules() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("copy-rules"), "copy-rules", &[]);
        let (_d, fs) = unpack(&r, "copy-rules");
        let dst = fs.join("dst");
        assert_eq!(read(dst.join("dir-contents/top.txt")), "file in dir\n");
        assert_eq!(read(dst.join("dir-contents/sub/nested.txt")), "nested\n");
        assert!(
            !dst.join("dir-contents/dir").exists(),
            "a directory copies its contents"
        );
        assert_eq!(read(dst.join("confs/a.conf")), "a\n");
        assert_eq!(read(dst.join("confs/b.conf")), "b\n");
        assert!(!dst.join("confs/c.txt").exists(), "wildcard matched c.txt");
        assert_eq!(read(dst.join("deep/er/renamed.conf")), "a\n");
        assert_eq!(read(dst.join("multi/a.conf")), "a\n");
        let link = std::fs::read_link(dst.join("links/link.txt")).unwrap();
        assert_eq!(link, PathBuf::from("target.txt"));
        // Files from the context belong to root, whatever their owner on the host.
        assert_eq!(
            std::fs::metadata(dst.join("confs/a.conf")).unwrap().uid(),
            0
        );
    });
}

#[test]
fn copy_of_several_sources_needs_a_directory() {
    let r = Rbuild::new();
    let out = build(&r, &testdata("copy-multi-needs-dir"), "multi", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:3: COPY a.txt b.txt /not-a-dir"),
        "{err}"
    );
    assert!(err.contains("must be a directory"), "{err}");
}

#[test]
fn copy_never_reads_outside_the_context() {
    let r = Rbuild::new();
    let out = build(&r, &testdata("copy-outside-context"), "outside", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("outside of the build context"), "{err}");
}

#[test]
fn copy_chown_by_name_and_id_and_chmod() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("copy-chown-chmod"), "chown", &[]);
        let (_d, fs) = unpack(&r, "chown");
        let owner = |p: &str| {
            let m = std::fs::symlink_metadata(fs.join(p)).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(owner("owned-by-name.txt"), (65534, 65534, 0o644));
        assert_eq!(owner("owned-by-id.txt"), (1234, 5678, 0o644));
        assert_eq!(owner("owned-by-uid.txt"), (1234, 1234, 0o644));
        assert_eq!(owner("mode.txt"), (0, 0, 0o640));
        assert_eq!(owner("tree"), (77, 88, 0o700));
        assert_eq!(owner("tree/leaf.txt"), (77, 88, 0o700));
    });
}

#[test]
fn add_extracts_local_archives_and_copies_plain_files() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("add-archive"), "add-archive", &[]);
        let (_d, fs) = unpack(&r, "add-archive");
        assert_eq!(read(fs.join("opt/app/bin/run.sh")), "echo packed\n");
        let mode = std::fs::metadata(fs.join("opt/app/bin/run.sh"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(
            !fs.join("opt/app.tar.gz").exists(),
            "the archive was copied, not extracted"
        );
        assert_eq!(read(fs.join("opt/notes.txt")), "not an archive\n");
    });
}

/// Serves `body` at any path on 127.0.0.1 for `requests` requests.
pub fn serve(body: &'static [u8], requests: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    port
}

#[test]
fn add_downloads_a_url_and_checks_its_checksum() {
    on_both_bases(|| {
        let body: &'static [u8] = b"downloaded payload\n";
        let port = serve(body, 2);
        let url = format!("URL=http://127.0.0.1:{port}/files/payload.txt");
        let good = format!("SUM=sha256:{}", sha256_hex(body));
        let r = Rbuild::new();
        build_ok(
            &r,
            &testdata("add-url"),
            "add-url",
            &["--build-arg", &url, "--build-arg", &good],
        );
        let (_d, fs) = unpack(&r, "add-url");
        assert_eq!(
            read(fs.join("downloads/payload.txt")),
            "downloaded payload\n"
        );
        let mode = std::fs::metadata(fs.join("downloads/payload.txt"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "ADD of a URL gives 0600 as in docker");

        let bad = format!("SUM=sha256:{}", sha256_hex(b"something else"));
        let out = build(
            &r,
            &testdata("add-url"),
            "add-url-bad",
            &["--build-arg", &url, "--build-arg", &bad],
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("digest mismatch"),
            "{}",
            show(&out)
        );
    });
}

#[test]
fn multistage_builds_only_the_stages_the_target_needs() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let (_, log) = build_ok(&r, &testdata("multistage"), "multistage", &[]);
        // The `unused` stage would fail (exit 1): it was never started.
        assert!(!log.contains("[unused"), "{log}");
        let (_d, fs) = unpack(&r, "multistage");
        assert_eq!(read(fs.join("artifact.txt")), "built in builder\n");
        assert_eq!(read(fs.join("other.txt")), "other stage\n");
        assert!(!fs.join("out").exists(), "the builder's filesystem leaked");
    });
}

#[test]
fn copy_from_a_stage_index_and_from_an_image() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("copy-from-index-image"), "copy-from", &[]);
        let (_d, fs) = unpack(&r, "copy-from");
        assert_eq!(read(fs.join("zero.txt")), "stage zero\n");
        let copied = std::fs::read(fs.join("bin/busybox")).unwrap();
        assert_eq!(copied, std::fs::read("/bin/busybox").unwrap());
        let mut entries: Vec<_> = std::fs::read_dir(&fs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            vec!["bin", "zero.txt"],
            "FROM scratch holds only what was copied"
        );
    });
}

#[test]
fn heredocs_in_run_and_copy() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("heredoc"), "heredoc", &[]);
        let (_d, fs) = unpack(&r, "heredoc");
        assert_eq!(
            read(fs.join("script.txt")),
            "script line 1\nscript line 2 heredoc\n"
        );
        assert_eq!(read(fs.join("etc/app.conf")), "name=heredoc\n");
        assert_eq!(read(fs.join("raw.txt")), "kept $NAME as written\n");
        assert_eq!(read(fs.join("stdin.txt")), "fed on stdin\n");
    });
}

#[test]
fn metadata_instructions_land_in_config_and_history() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(
            &r,
            &testdata("metadata"),
            "metadata",
            &["--label", "from.cli=yes"],
        );
        let cfg = config(&r, "metadata");
        let c = &cfg["config"];
        assert_eq!(cfg["author"], "rbuild tests <tests@example.com>");
        assert_eq!(c["Labels"]["org.example.one"], "1");
        assert_eq!(c["Labels"]["org.example.two"], "two words");
        assert_eq!(c["Labels"]["from.cli"], "yes");
        assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
        assert!(c["ExposedPorts"]["53/udp"].is_object(), "{c}");
        assert!(c["Volumes"]["/data"].is_object(), "{c}");
        assert_eq!(c["StopSignal"], "SIGTERM");
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["Cmd"], serde_json::json!(["serve", "--port", "8080"]));
        let hc = &c["Healthcheck"];
        assert_eq!(hc["Test"][0], "CMD-SHELL");
        assert_eq!(hc["Interval"], 30_000_000_000u64);
        assert_eq!(hc["Timeout"], 5_000_000_000u64);
        assert_eq!(hc["Retries"], 3);
        let history = cfg["history"].as_array().unwrap();
        let env = history
            .iter()
            .find(|h| h["created_by"] == "ENV MODE=production")
            .unwrap();
        assert_eq!(env["empty_layer"], true);
        // busybox's own history entry is kept below ours.
        assert!(history.len() >= 10, "{history:?}");
    });
}

#[test]
fn entrypoint_resets_an_inherited_cmd_but_keeps_its_own() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("entrypoint-resets-cmd"), "ep-reset", &[]);
        let c = config(&r, "ep-reset")["config"].clone();
        assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/echo", "entry"]));
        assert!(c["Cmd"].is_null(), "busybox's CMD survived: {c}");
        build_ok(&r, &testdata("entrypoint-keeps-own-cmd"), "ep-keep", &[]);
        let c = config(&r, "ep-keep")["config"].clone();
        assert_eq!(c["Cmd"], serde_json::json!(["own"]));
    });
}

#[test]
fn onbuild_triggers_run_in_the_child_and_are_not_inherited() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("onbuild-base"), "onbuild-base", &[]);
        let base = config(&r, "onbuild-base");
        assert_eq!(base["config"]["OnBuild"].as_array().unwrap().len(), 2);
        build_ok(
            &r,
            &testdata("onbuild-child"),
            "onbuild-child",
            &["--build-arg", "PARENT=onbuild-base"],
        );
        let (_d, fs) = unpack(&r, "onbuild-child");
        assert_eq!(
            read(fs.join("both.txt")),
            "trigger ran\nfrom the child's context\n"
        );
        assert!(config(&r, "onbuild-child")["config"]["OnBuild"].is_null());
    });
}

#[test]
fn dockerignore_and_the_dockerfiles_own_ignore_file() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("dockerignore"), "ignore", &[]);
        let (_d, fs) = unpack(&r, "ignore");
        let app = fs.join("app");
        assert!(app.join("app.txt").exists());
        assert!(app.join("keep.log").exists(), "!keep.log re-includes it");
        assert!(!app.join("secret.txt").exists());
        assert!(!app.join("debug.log").exists());
        assert!(!app.join("build").exists());

        let file = testdata("dockerfile-ignore/app.Dockerfile");
        build_ok(
            &r,
            &testdata("dockerfile-ignore"),
            "ignore2",
            &["-f", &file.to_string_lossy()],
        );
        let (_d2, fs) = unpack(&r, "ignore2");
        // <Dockerfile>.dockerignore replaces .dockerignore.
        assert!(!fs.join("app/only-specific.txt").exists());
        assert!(fs.join("app/only-general.txt").exists());
    });
}

#[test]
fn cache_mounts_persist_across_builds_and_stay_out_of_layers() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let ctx = testdata("run-cache-mount");
        build_ok(&r, &ctx, "cachemount", &["--build-arg", "RUN_ID=1"]);
        build_ok(&r, &ctx, "cachemount", &["--build-arg", "RUN_ID=2"]);
        let (_d, fs) = unpack(&r, "cachemount");
        assert_eq!(read(fs.join("seen.txt")), "run 1\nrun 2\n");
        assert!(
            !fs.join("var/cache/app/log").exists(),
            "the cache leaked into the layer"
        );
        let mounts = std::fs::read_dir(r.root.join("cache/mounts"))
            .unwrap()
            .count();
        assert_eq!(mounts, 1, "one persistent directory for id=counter");
    });
}

#[test]
fn secrets_are_readable_in_run_and_never_stored() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let dir = TestDir::new("secret");
        let value = format!("secret-{}", std::process::id());
        let file = dir.write("token", &value);
        let spec = format!("id=token,src={}", file.display());
        build_ok(&r, &testdata("run-secret"), "secret", &["--secret", &spec]);
        let (_d, fs) = unpack(&r, "secret");
        let md5 = tool("sh", &["-c", &format!("md5sum < {}", file.display())]);
        assert_eq!(read(fs.join("secret-md5.txt")), md5);
        assert_eq!(
            read(fs.join("secret-len.txt")).trim(),
            value.len().to_string()
        );
        assert!(!fs.join("run/secrets").exists() && !fs.join("etc/token.conf").exists());
        // No blob (layers, config, manifest) holds the secret.
        for blob in std::fs::read_dir(r.root.join("blobs/sha256")).unwrap() {
            let bytes = std::fs::read(blob.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "a blob contains the secret"
            );
        }
        // Without the secret, a required secret mount fails.
        let out = build(&r, &testdata("run-secret"), "secret2", &["--no-cache"]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    });
}

#[test]
fn bind_and_tmpfs_mounts_leave_context_and_layer_alone() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("run-bind-tmpfs"), "binds", &[]);
        let (_d, fs) = unpack(&r, "binds");
        assert_eq!(read(fs.join("copied.txt")), "bound from the context\n");
        assert_eq!(read(fs.join("tmpfs-used.txt")), "temp\n");
        assert!(read(fs.join("ctx-listing.txt")).contains("new.txt"));
        assert!(
            !fs.join("scratch").exists()
                && !fs.join("ctx").exists()
                && !fs.join("mnt/input.txt").exists()
        );
        assert!(
            !testdata("run-bind-tmpfs/new.txt").exists(),
            "a rw bind wrote into the context"
        );
    });
}

#[test]
fn run_network_none_has_only_loopback() {
    on_both_bases(|| {
        let r = Rbuild::new();
        build_ok(&r, &testdata("network-none"), "net", &[]);
        let (_d, fs) = unpack(&r, "net");
        assert_eq!(read(fs.join("net-none.txt")), "lo\n");
        assert_ne!(
            read(fs.join("net-default.txt")),
            "lo\n",
            "default network is the host's"
        );
    });
}

#[test]
fn a_failed_step_names_line_and_exit_code_shows_output_and_tags_nothing() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let out = build(&r, &testdata("failing-step"), "failing", &[]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
        err.contains("error: Dockerfile:5: RUN echo \"some output\" && echo \"last words\" >&2 && exit 3: process \"/bin/sh -c echo \"some output\" && echo \"last words\" >&2 && exit 3\" did not complete successfully: exit code: 3"),
        "{err}"
    );
        assert!(
            err.contains(" > last words"),
            "the output's tail is not shown: {err}"
        );
        assert!(!err.contains("never runs"), "{err}");
        let index = read(r.root.join("index.json"));
        assert!(
            !index.contains("failing"),
            "the failed build was tagged: {index}"
        );
        let out = Command::new("skopeo")
            .args(["inspect", &oci_ref(&r, "failing")])
            .output()
            .unwrap();
        assert!(!out.status.success(), "the failed build was tagged");
    });
}

#[test]
fn target_picks_a_stage() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let (_, log) = build_ok(&r, &testdata("target"), "target", &["--target", "dev"]);
        assert!(!log.contains("[prod"), "{log}");
        let (_d, fs) = unpack(&r, "target");
        assert_eq!(read(fs.join("flavour.txt")), "dev\n");
    });
}

#[test]
fn scratch_image_has_exactly_what_was_copied() {
    let r = Rbuild::new();
    build_ok(&r, &testdata("scratch"), "scratch-img", &[]);
    let m = manifest(&r, "scratch-img");
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let cfg = config(&r, "scratch-img");
    assert_eq!(cfg["os"], "linux");
    // Like BuildKit, a stage whose base has no PATH gets docker's default one.
    assert_eq!(
        cfg["config"]["Env"],
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
        "{cfg}"
    );
    let (_d, fs) = unpack(&r, "scratch-img");
    assert_eq!(read(fs.join("hello.txt")), "from scratch\n");
}

#[test]
fn dockerfile_outside_the_context() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let file = testdata("dockerfile-outside/build.Dockerfile");
        build_ok(
            &r,
            &testdata("dockerfile-outside/context"),
            "outside-file",
            &["-f", &file.to_string_lossy()],
        );
        let (_d, fs) = unpack(&r, "outside-file");
        assert_eq!(read(fs.join("in-context.txt")), "inside\n");
    });
}

#[test]
fn context_from_a_tar_on_stdin() {
    let r = Rbuild::new();
    let tar = Command::new("tar")
        .args([
            "-C",
            &testdata("scratch").to_string_lossy(),
            "-cf",
            "-",
            ".",
        ])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut child = r
        .cmd()
        .args(["build", "-q", "-t", "from-stdin", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "-q prints only the id: {id:?}");
    let (_d, fs) = unpack(&r, "from-stdin");
    assert_eq!(read(fs.join("hello.txt")), "from scratch\n");
}

#[test]
fn independent_stages_build_in_parallel() {
    let r = Rbuild::new();
    let (_, log) = build_ok(&r, &testdata("multistage-parallel"), "parallel", &[]);
    // Each RUN sleeps one second: the second stage's RUN starts before the first's ends.
    let pos = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
    };
    let a_start = pos("[a 2/2] RUN");
    let b_start = pos("[b 2/2] RUN");
    let a_num = log[..a_start]
        .rsplit('#')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let b_num = log[..b_start]
        .rsplit('#')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let a_done = pos(&format!("#{a_num} DONE"));
    let b_done = pos(&format!("#{b_num} DONE"));
    assert!(
        b_start < a_done && a_start < b_done,
        "stages ran one after the other:\n{log}"
    );
}

#[test]
fn iidfile_quiet_and_push() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let dir = TestDir::new("iid");
        let iid = dir.path().join("iid");
        let registry = crate::util::Registry::shared();
        let tag = format!("{}/built/httpserver:pushed", registry.addr);
        let base = format!("BASE={}", base().reference);
        let out = r.run(&[
            "build",
            "-q",
            "--push",
            "--iidfile",
            &iid.to_string_lossy(),
            "--build-arg",
            &base,
            "-t",
            &tag,
            &testdata("httpserver").to_string_lossy(),
        ]);
        assert!(out.status.success(), "{}", show(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(stdout, read(&iid), "-q prints only the image id");
        assert!(out.stderr.is_empty(), "-q printed progress: {}", show(&out));
        // The registry has it, with the same config.
        let remote = tool(
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                "--config",
                "--raw",
                &format!("docker://{tag}"),
            ],
        );
        assert_eq!(format!("sha256:{}", sha256_hex(remote.as_bytes())), stdout);
    });
}

#[test]
fn dockerignore_follows_moby_semantics_not_gitignore_or_a_naive_matcher() {
    on_both_bases(|| {
        let ctx = TestDir::new("moby-ignore");
        ctx.write("Dockerfile", b"ARG BASE\nFROM ${BASE}\nCOPY . /ctx/\n");
        ctx.write(
        ".dockerignore",
        b"# moby's patternmatcher, not gitignore\n*.md\n!README*.md\nsecret\n**/*.bak\nbuild\n!build/keep\n",
    );
        for (rel, body) in [
            ("app.txt", "app"),
            ("README.md", "readme"),
            ("NOTES.md", "notes"),
            ("docs/guide.md", "guide"),
            ("docs/secret", "not the root one"),
            ("secret/key", "key"),
            ("a.bak", "bak"),
            ("docs/old.bak", "old"),
            ("build/out.o", "obj"),
            ("build/keep/x.txt", "kept"),
        ] {
            ctx.write(rel, body.as_bytes());
        }
        let r = Rbuild::new();
        build_ok(&r, ctx.path(), "moby-ignore", &[]);
        let (_d, fs) = unpack(&r, "moby-ignore");
        let root = fs.join("ctx");
        let present = |rel: &str| root.join(rel).exists();
        assert!(present("app.txt"));
        // `*.md` matches at the root only (gitignore would also drop docs/guide.md).
        assert!(!present("NOTES.md"), "*.md excludes NOTES.md");
        assert!(present("README.md"), "!README*.md re-includes README.md");
        assert!(
            present("docs/guide.md"),
            "*.md must not match docs/guide.md"
        );
        // `secret` names the root entry and everything below it, not docs/secret.
        assert!(!present("secret/key"), "secret excludes what is below it");
        assert!(present("docs/secret"), "secret must not match docs/secret");
        // `**/` matches zero or more directories.
        assert!(!present("a.bak") && !present("docs/old.bak"));
        // An exception re-includes a directory below an excluded one, contents and all
        // (a matcher that checks parents for exclusions only keeps it out).
        assert!(!present("build/out.o"), "build excludes build/out.o");
        assert_eq!(read(root.join("build/keep/x.txt")), "kept");
    });
}
