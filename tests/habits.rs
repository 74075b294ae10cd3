//! Issue 21, "buildx habits": the flags a `docker buildx build` / `buildah bud` user types,
//! run through the real binary and read back with the tools a user would use.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::build::{config, unpack};
use crate::util::{show, Rbuild, TestDir};

/// Runs `rbuild ARGS` with `input` on stdin.
fn run_with_stdin(r: &Rbuild, args: &[&str], input: &[u8]) -> Output {
    let mut child = r
        .cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    let mut stdin = child.stdin.take().unwrap();
    // rbuild may refuse before reading stdin; a closed pipe is then not this test's failure.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait for rbuild")
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dockerfile_on_stdin_with_a_context_directory() {
    let r = Rbuild::new();
    let ctx = TestDir::new("stdin-df");
    ctx.write("hello.txt", "from the context\n");
    ctx.write("ignored.txt", "must not be copied\n");
    ctx.write(".dockerignore", "ignored.txt\n");
    // The context's own Dockerfile must not be the one used.
    ctx.write("Dockerfile", "FROM scratch\nLABEL which=context-file\n");
    let dir = ctx.path().to_string_lossy().into_owned();
    let out = run_with_stdin(
        &r,
        &["build", "-q", "-t", "stdin-df", "-f", "-", &dir],
        b"FROM scratch\nCOPY . /\nLABEL which=stdin\n",
    );
    ok(out, "build -f -");
    assert_eq!(config(&r, "stdin-df")["config"]["Labels"]["which"], "stdin");
    let (_d, fs) = unpack(&r, "stdin-df");
    assert_eq!(
        std::fs::read_to_string(fs.join("hello.txt")).unwrap(),
        "from the context\n"
    );
    assert!(
        !fs.join("ignored.txt").exists(),
        "the context's .dockerignore was not applied"
    );
}

#[test]
fn a_lone_dockerfile_on_stdin_builds_with_an_empty_context() {
    let r = Rbuild::new();
    let out = run_with_stdin(
        &r,
        &["build", "-q", "-t", "lone", "-"],
        b"FROM scratch\nLABEL from=stdin\n",
    );
    ok(out, "build -");
    assert_eq!(config(&r, "lone")["config"]["Labels"]["from"], "stdin");
    // No context: a COPY has nothing to copy.
    let out = run_with_stdin(
        &r,
        &["build", "-q", "-t", "lone-copy", "-"],
        b"FROM scratch\nCOPY hello.txt /\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hello.txt"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_bad_flag_is_reported_without_waiting_for_stdin() {
    let r = Rbuild::new();
    let ctx = TestDir::new("stdin-order");
    let dir = ctx.path().to_string_lossy().into_owned();
    for args in [
        vec!["build", "-f", "-", "--ulimit", "bogus=1", &dir],
        vec!["build", "--shm-size", "x", "-"],
        vec!["build", "-f", "-", "-o", "type=registry", &dir],
    ] {
        // stdin stays open and empty: rbuild must not read it before refusing the flag.
        let mut child = r
            .cmd()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rbuild");
        let stdin = child.stdin.take();
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(out) => out.expect("wait for rbuild"),
            Err(_) => {
                // SAFETY: kill(2) of the child this test spawned.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("rbuild {args:?} waited for stdin before checking its flags");
            }
        };
        drop(stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", show(&out));
    }
}

#[test]
fn dockerfile_and_context_cannot_both_come_from_stdin() {
    let r = Rbuild::new();
    let out = run_with_stdin(&r, &["build", "-f", "-", "-"], b"FROM scratch\n");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-f -"),
        "{}",
        show(&out)
    );
}

/// A context on the busybox base whose image has a file deleted by a later step (a
/// whiteout), a symlink, a nested directory and a COPYed file.
fn outputs_context() -> TestDir {
    let ctx = TestDir::new("outputs");
    ctx.write("hello.txt", "hello from the context\n");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\n\
         RUN echo doomed > /gone && mkdir -p /d/e && echo kept > /d/e/kept\n\
         RUN rm /gone && ln -s d/e/kept /link\n\
         COPY hello.txt /hello.txt\n",
    );
    ctx
}

/// `rbuild build --progress=plain --build-arg BASE=<busybox> ARGS... CONTEXT`.
fn build_args<'a>(base: &'a str, args: &[&'a str], ctx: &'a str) -> Vec<&'a str> {
    let mut all = vec!["build", "--progress=plain", "--build-arg", base];
    all.extend_from_slice(args);
    all.push(ctx);
    all
}

fn base_arg() -> String {
    format!("BASE={}", crate::util::busybox::busybox().reference)
}

fn tar_listing(args: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = crate::util::tool("tar", args)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != ".")
        .collect();
    names.sort();
    names
}

#[test]
fn output_local_and_tar_hold_the_final_filesystem() {
    let r = Rbuild::new();
    let ctx = outputs_context();
    let out_dir = TestDir::new("outputs-dest");
    let local = out_dir.path().join("rootfs");
    let short = out_dir.path().join("short");
    let tar = out_dir.path().join("fs.tar");
    let base = base_arg();
    let c = ctx.path().to_string_lossy().into_owned();
    let local_spec = format!("type=local,dest={}", local.display());
    let tar_spec = format!("type=tar,dest={}", tar.display());
    let short_s = short.to_string_lossy().into_owned();
    r.ok(&build_args(
        &base,
        &[
            "-t",
            "outputs",
            "-o",
            &local_spec,
            "--output",
            &tar_spec,
            "-o",
            &short_s,
        ],
        &c,
    ));
    for dir in [&local, &short] {
        assert_eq!(
            std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
            "hello from the context\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("d/e/kept")).unwrap(),
            "kept\n"
        );
        assert!(
            dir.join("bin/busybox").is_file(),
            "the base layer is missing"
        );
        assert!(
            std::fs::symlink_metadata(dir.join("gone")).is_err(),
            "a file deleted by a later step is in {}",
            dir.display()
        );
        assert_eq!(
            std::fs::read_link(dir.join("link")).unwrap(),
            Path::new("d/e/kept")
        );
        let stray = walk(dir)
            .into_iter()
            .filter(|p| {
                use std::os::unix::fs::FileTypeExt;
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(".wh.")
                    || std::fs::symlink_metadata(p)
                        .unwrap()
                        .file_type()
                        .is_char_device()
            })
            .collect::<Vec<_>>();
        assert!(stray.is_empty(), "whiteouts left in the output: {stray:?}");
    }
    let listed = tar_listing(&["-tf", &tar.to_string_lossy()]);
    for want in ["hello.txt", "d/e/kept", "link", "bin/busybox"] {
        assert!(
            listed.iter().any(|n| n == want),
            "{want} not in tar: {listed:?}"
        );
    }
    assert!(
        !listed.iter().any(|n| n == "gone" || n.contains(".wh.")),
        "{listed:?}"
    );

    // -o - writes the same tar to stdout, and nothing else goes there.
    let out = r.run(&build_args(&base, &["-q", "-o", "-"], &c));
    assert!(out.status.success(), "{}", show(&out));
    let piped = out_dir.write("piped.tar", &out.stdout);
    assert_eq!(
        tar_listing(&["-tf", &piped.to_string_lossy()]),
        listed,
        "-o - differs from type=tar"
    );
    assert_eq!(std::fs::read(&piped).unwrap(), std::fs::read(&tar).unwrap());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// podman with its own storage under `dir` (vfs, runc), as a user's `podman load` would.
fn podman_in(dir: &Path) -> impl Fn(&[&str]) -> String {
    let proot = dir.join("podman-root");
    // podman refuses a runroot longer than 50 characters: keep it in a short temp dir.
    let prun = tempfile::Builder::new()
        .prefix("prun")
        .tempdir_in("/tmp")
        .expect("runroot");
    move |args: &[&str]| {
        let mut all = vec![
            "--root",
            proot.to_str().unwrap(),
            "--runroot",
            prun.path().to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
        ];
        all.extend_from_slice(args);
        crate::util::tool("podman", &all)
    }
}

#[test]
fn output_oci_and_docker_archives_read_back_with_skopeo_umoci_and_podman() {
    use crate::util::tool;
    let r = Rbuild::new();
    let ctx = outputs_context();
    let dir = TestDir::new("archives");
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (oci, layout, docker, meta) = (p("oci.tar"), p("layout"), p("docker.tar"), p("meta.json"));
    let base = base_arg();
    let c = ctx.path().to_string_lossy().into_owned();
    let oci_spec = format!("type=oci,dest={oci}");
    let layout_spec =
        format!("type=oci,dest={layout},tar=false,name=127.0.0.1:5000/habits/layout:v2");
    let docker_spec = format!("type=docker,dest={docker},name=127.0.0.1:5000/habits/docker:v3");
    let out = r.ok(&build_args(
        &base,
        &[
            "-t",
            "127.0.0.1:5000/habits/archives:v1",
            "-o",
            &oci_spec,
            "-o",
            &layout_spec,
            "-o",
            &docker_spec,
            "--metadata-file",
            &meta,
        ],
        &c,
    ));
    let image_id = out.trim().to_string();

    // --metadata-file: buildx's keys, agreeing with what skopeo reads from the store.
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci:{}:127.0.0.1:5000/habits/archives:v1", r.root.display()),
        ],
    ))
    .unwrap();
    assert_eq!(m["containerimage.digest"], stored["Digest"], "{m}");
    assert_eq!(m["containerimage.config.digest"], image_id.as_str(), "{m}");
    assert_eq!(m["image.name"], "127.0.0.1:5000/habits/archives:v1", "{m}");
    assert_eq!(
        m["containerimage.descriptor"]["digest"], stored["Digest"],
        "{m}"
    );
    assert_eq!(
        m["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(m["containerimage.descriptor"]["size"].as_u64().unwrap() > 0);

    // type=oci: an oci-archive named by the first -t, the same manifest as in the store.
    let v: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{oci}:127.0.0.1:5000/habits/archives:v1"),
        ],
    ))
    .unwrap();
    assert_eq!(v["Digest"], stored["Digest"]);
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4, "{v}");

    // type=oci,tar=false: an OCI layout directory umoci unpacks, under its name=.
    let bundle = dir.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{layout}:127.0.0.1:5000/habits/layout:v2"),
            &bundle.to_string_lossy(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
        "hello from the context\n"
    );
    assert!(!bundle.join("rootfs/gone").exists());

    // type=docker: skopeo reads it, podman loads it under its name=, with our files.
    let v: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &["inspect", &format!("docker-archive:{docker}")],
    ))
    .unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4, "{v}");
    let podman = podman_in(dir.path());
    let loaded = podman(&["load", "-i", &docker]);
    assert!(
        loaded.contains("127.0.0.1:5000/habits/docker:v3"),
        "{loaded}"
    );
    let mount = podman(&["image", "mount", "127.0.0.1:5000/habits/docker:v3"]);
    let rootfs = Path::new(mount.trim());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "hello from the context\n"
    );
    assert!(!rootfs.join("gone").exists());
    podman(&["image", "unmount", "127.0.0.1:5000/habits/docker:v3"]);
}

#[test]
fn output_image_and_registry_name_and_push() {
    use crate::util::{tool, Registry};
    let r = Rbuild::new();
    let registry = Registry::shared();
    let ctx = outputs_context();
    let base = base_arg();
    let c = ctx.path().to_string_lossy().into_owned();
    let pushed = format!("{}/habits/registry:v1", registry.addr);
    let registry_spec = format!("type=registry,name={pushed}");
    let out = r.run(&build_args(
        &base,
        &[
            "-o",
            "type=image,\"name=127.0.0.1:5000/habits/one:v1,127.0.0.1:5000/habits/two:v1\"",
            "-o",
            &registry_spec,
            "--load",
        ],
        &c,
    ));
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--load") && stderr.contains(&r.root.display().to_string()),
        "--load does not say where the image is:\n{stderr}"
    );
    let images = r.ok(&["images"]);
    for name in [
        "127.0.0.1:5000/habits/one",
        "127.0.0.1:5000/habits/two",
        pushed.trim_end_matches(":v1"),
    ] {
        assert!(images.contains(name), "{name} not in:\n{images}");
    }
    // Pushed: skopeo reads it from the registry, with the store's manifest digest.
    let remote: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{pushed}"),
        ],
    ))
    .unwrap();
    assert_eq!(remote["Layers"].as_array().unwrap().len(), 4, "{remote}");
    // type=image without push=true pushes nothing.
    assert!(
        !registry.log_text().contains("/v2/habits/one/"),
        "type=image pushed"
    );
}

#[test]
fn output_flag_errors_are_usage_errors_naming_the_flag() {
    let r = Rbuild::new();
    let ctx = TestDir::new("output-errors");
    ctx.write("Dockerfile", "FROM scratch\n");
    let c = ctx.path().to_string_lossy().into_owned();
    for (args, want) in [
        (
            vec!["-o", "type=foo"],
            "--output: unknown type \"foo\" (want local, tar, oci, docker, image, registry)",
        ),
        (vec!["-o", "type=tar"], "type=tar needs dest="),
        (
            vec!["-o", "type=local,dest=x,color=red"],
            "unknown field \"color\"",
        ),
        (
            vec!["-o", "-", "-o", "type=oci,dest=-"],
            "only one output can go to stdout",
        ),
        (vec!["-o", "type=registry"], "needs name= or -t NAME"),
    ] {
        let mut all = vec!["build"];
        all.extend_from_slice(&args);
        all.push(&c);
        let out = r.run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: want {want:?}:\n{}",
            show(&out)
        );
    }
}

#[test]
fn load_reads_docker_and_oci_archives_from_skopeo_and_save() {
    use crate::util::tool;
    let src = Rbuild::new();
    let name = "127.0.0.1:5000/load/img:v1";
    crate::store::make_image(&src.root, name, "loaded");
    let image_id = serde_json::from_str::<serde_json::Value>(&src.ok(&["inspect", name])).unwrap()
        [0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = TestDir::new("load");
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let from = format!("oci:{}:{name}", src.root.display());
    // Archives written by skopeo (another tool) and by `rbuild save`.
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &from,
            &format!(
                "docker-archive:{}:127.0.0.1:5000/load/docker:v1",
                p("skopeo-docker.tar")
            ),
        ],
    );
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &from,
            &format!(
                "oci-archive:{}:127.0.0.1:5000/load/oci:v1",
                p("skopeo-oci.tar")
            ),
        ],
    );
    src.ok(&["save", "-o", &p("saved-docker.tar"), name]);
    src.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &p("saved-oci.tar"),
        name,
    ]);

    let dst = Rbuild::new();
    for (file, want) in [
        ("skopeo-docker.tar", "127.0.0.1:5000/load/docker:v1"),
        ("skopeo-oci.tar", "127.0.0.1:5000/load/oci:v1"),
        ("saved-oci.tar", name),
    ] {
        let out = dst.ok(&["load", "-i", &p(file)]);
        assert_eq!(out.trim(), format!("Loaded image: {want}"), "{file}");
        let v: serde_json::Value = serde_json::from_str(&dst.ok(&["inspect", want])).unwrap();
        assert_eq!(v[0]["id"], image_id.as_str(), "{file}: another image ID");
    }
    // stdin, as `docker load < file`; -q prints the ID only.
    let out = run_with_stdin(
        &dst,
        &["load", "-q"],
        &std::fs::read(p("saved-docker.tar")).unwrap(),
    );
    assert_eq!(ok(out, "load from stdin").trim(), image_id);
    // The loaded image is whole: umoci unpacks it from the store, the whiteout applied.
    let bundle = dir.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:127.0.0.1:5000/load/docker:v1", dst.root.display()),
            &bundle.to_string_lossy(),
        ],
    );
    assert_eq!(
        std::fs::read(bundle.join("rootfs/etc/marker")).unwrap(),
        b"loaded"
    );
    assert!(!bundle.join("rootfs/etc/gone").exists());
    assert!(dst.ok(&["fsck"]).starts_with("ok"));

    // An oci-archive naming only a tag (`v1`, no repository) cannot be kept: exit 1.
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &from,
            &format!("oci-archive:{}:v1", p("bare.tar")),
        ],
    );
    let out = dst.run(&["load", "-i", &p("bare.tar")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("names no repository"),
        "{}",
        show(&out)
    );
}

#[test]
fn load_refuses_what_is_not_an_archive_and_members_outside_it() {
    let r = Rbuild::new();
    let dir = TestDir::new("load-bad");
    let junk = dir.write("junk.tar", vec![7u8; 4096]);
    let out = r.run(&["load", "-i", &junk.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("hello"), "x").unwrap();
    let empty_tar = dir.path().join("empty.tar");
    crate::util::tool(
        "tar",
        &[
            "-C",
            &empty.to_string_lossy(),
            "-cf",
            &empty_tar.to_string_lossy(),
            ".",
        ],
    );
    let out = r.run(&["load", "-i", &empty_tar.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither a docker-archive"),
        "{}",
        show(&out)
    );

    // A docker-archive whose layer is a symlink to a host file, and one naming `..`.
    let canary = dir.write("canary", "host secret\n");
    let diff_id = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"host secret\n"))
    );
    for (layer, link) in [("l/layer.tar", true), ("../../canary", false)] {
        let a = dir.path().join(format!("a-{link}"));
        std::fs::create_dir_all(a.join("l")).unwrap();
        std::fs::write(
            a.join("config.json"),
            format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#),
        )
        .unwrap();
        std::fs::write(
            a.join("manifest.json"),
            format!(r#"[{{"Config":"config.json","RepoTags":["evil:v1"],"Layers":["{layer}"]}}]"#),
        )
        .unwrap();
        if link {
            std::os::unix::fs::symlink(&canary, a.join("l/layer.tar")).unwrap();
        }
        let t = dir.path().join(format!("evil-{link}.tar"));
        crate::util::tool(
            "tar",
            &["-C", &a.to_string_lossy(), "-cf", &t.to_string_lossy(), "."],
        );
        let out = r.run(&["load", "-i", &t.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("symlink") || err.contains("not a relative path"),
            "{}",
            show(&out)
        );
        let blob = r
            .root
            .join("blobs/sha256")
            .join(diff_id.trim_start_matches("sha256:"));
        assert!(!blob.exists(), "the host file was read into the store");
    }
    let out = r.run(&["load", "-i", "/no/such/file"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

/// Builds `run` (a RUN step writing files under /out) on busybox with `flags`, exports the
/// image's files with `-o` and returns the exported `/out` (and the dir that holds it).
fn run_step_sees(flags: &[&str], run: &str) -> (TestDir, std::path::PathBuf) {
    run_step_sees_in(&Rbuild::new(), flags, run)
}

/// [`run_step_sees`] in the store of `r`.
fn run_step_sees_in(r: &Rbuild, flags: &[&str], run: &str) -> (TestDir, std::path::PathBuf) {
    let ctx = TestDir::new("run-flags");
    ctx.write(
        "Dockerfile",
        format!("ARG BASE\nFROM $BASE\nRUN mkdir /out && {run}\n"),
    );
    let dest = TestDir::new("run-flags-out");
    let files = dest.path().join("fs");
    let base = base_arg();
    let c = ctx.path().to_string_lossy().into_owned();
    let f = files.to_string_lossy().into_owned();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["-o", &f]);
    r.ok(&build_args(&base, &args, &c));
    (dest, files.join("out"))
}

fn read_out(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn add_host_lines_reach_the_run_step_s_etc_hosts() {
    let (_d, out) = run_step_sees(
        &[
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "cache=10.1.2.4",
            "--add-host",
            "v6:[2001:db8::7]",
            "--add-host",
            "gw:host-gateway",
        ],
        "cat /etc/hosts > /out/hosts",
    );
    let hosts = read_out(&out, "hosts");
    let lines: Vec<Vec<&str>> = hosts
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for want in [
        ["10.1.2.3", "db"],
        ["10.1.2.4", "cache"],
        ["2001:db8::7", "v6"],
        ["127.0.0.1", "gw"],
    ] {
        assert!(
            lines.iter().any(|l| l == &want),
            "{want:?} not in /etc/hosts:\n{hosts}"
        );
    }
    assert!(
        hosts.contains("localhost"),
        "docker's defaults are gone:\n{hosts}"
    );

    // Another --add-host is another RUN step (it keys the cache), the same one is cached.
    let r = Rbuild::new();
    let step = "cat /etc/hosts > /out/hosts";
    run_step_sees_in(&r, &["--add-host", "db:10.9.9.1"], step);
    let (_d, out) = run_step_sees_in(&r, &["--add-host", "db:10.9.9.2"], step);
    assert!(
        read_out(&out, "hosts").contains("10.9.9.2\tdb"),
        "a stale cached step"
    );
    let (_d, out) = run_step_sees_in(&r, &["--add-host", "db:10.9.9.1"], step);
    assert!(read_out(&out, "hosts").contains("10.9.9.1\tdb"));
}

#[test]
fn shm_size_and_ulimit_reach_the_run_step() {
    let (_d, out) = run_step_sees(
        &[
            "--shm-size",
            "32m",
            "--ulimit",
            "nofile=1234:2345",
            "--ulimit",
            "nproc=777",
        ],
        "df -k /dev/shm | tail -1 > /out/shm && ulimit -n > /out/nofile && \
         ulimit -Hn > /out/nofile-hard && ulimit -u > /out/nproc",
    );
    let shm = read_out(&out, "shm");
    assert_eq!(
        shm.split_whitespace().nth(1),
        Some("32768"),
        "/dev/shm is not 32 MiB: {shm}"
    );
    assert_eq!(read_out(&out, "nofile"), "1234");
    assert_eq!(read_out(&out, "nofile-hard"), "2345");
    assert_eq!(read_out(&out, "nproc"), "777");

    // Without the flags: docker's 64 MiB /dev/shm.
    let (_d, out) = run_step_sees(&[], "df -k /dev/shm | tail -1 > /out/shm");
    assert_eq!(
        read_out(&out, "shm").split_whitespace().nth(1),
        Some("65536")
    );
}

/// The cgroup files a RUN step reads (v1 layout, this machine's).
const CGROUP_FILES: &str = "cd /sys/fs/cgroup && \
     cat memory/memory.limit_in_bytes > /out/mem && \
     cat memory/memory.memsw.limit_in_bytes > /out/memsw && \
     cat cpu/cpu.cfs_quota_us > /out/quota && cat cpu/cpu.cfs_period_us > /out/period && \
     cat cpu/cpu.shares > /out/shares && cat cpuset/cpuset.cpus > /out/cpus && \
     cat cpuset/cpuset.mems > /out/mems";

#[test]
fn buildah_cgroup_flags_reach_the_run_step_s_cgroup() {
    let (_d, out) = run_step_sees(
        &[
            "--memory",
            "96m",
            "--memory-swap",
            "128m",
            "--cpu-quota",
            "50000",
            "--cpu-period",
            "200000",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
            "--cpuset-mems",
            "0",
        ],
        CGROUP_FILES,
    );
    assert_eq!(read_out(&out, "mem"), (96u64 << 20).to_string());
    assert_eq!(read_out(&out, "memsw"), (128u64 << 20).to_string());
    assert_eq!(read_out(&out, "quota"), "50000");
    assert_eq!(read_out(&out, "period"), "200000");
    assert_eq!(read_out(&out, "shares"), "512");
    assert_eq!(read_out(&out, "cpus"), "0");
    assert_eq!(read_out(&out, "mems"), "0");
}

#[test]
fn buildx_resource_flag_reaches_the_run_step_s_cgroup() {
    let (_d, out) = run_step_sees(
        &[
            "--resource",
            "memory=80m,cpu-quota=30000,cpu-shares=256",
            "--resource",
            "cpuset-cpus=1",
        ],
        CGROUP_FILES,
    );
    assert_eq!(read_out(&out, "mem"), (80u64 << 20).to_string());
    // No --memory-swap: no swap on top of the memory limit.
    assert_eq!(read_out(&out, "memsw"), (80u64 << 20).to_string());
    assert_eq!(read_out(&out, "quota"), "30000");
    assert_eq!(read_out(&out, "period"), "100000");
    assert_eq!(read_out(&out, "shares"), "256");
    assert_eq!(read_out(&out, "cpus"), "1");
    // The nodes were taken from the parent cgroup.
    assert_eq!(read_out(&out, "mems"), "0");
}

#[test]
fn run_step_flag_errors_are_usage_errors_naming_the_flag() {
    let r = Rbuild::new();
    let ctx = TestDir::new("run-flag-errors");
    ctx.write("Dockerfile", "FROM scratch\n");
    let c = ctx.path().to_string_lossy().into_owned();
    for (args, want) in [
        (
            vec!["--add-host", "db"],
            "--add-host \"db\": want NAME:IP or NAME=IP",
        ),
        (vec!["--add-host", "db:nowhere"], "is not an IP address"),
        (
            vec!["--shm-size", "lots"],
            "--shm-size \"lots\": want a size",
        ),
        (vec!["--ulimit", "files=10"], "unknown resource \"files\""),
        (
            vec!["--ulimit", "nofile=20:10"],
            "soft limit is above the hard limit",
        ),
        (vec!["--memory-swap", "1g"], "--memory-swap needs --memory"),
        (
            vec!["--memory", "1g", "--memory-swap", "512m"],
            "cannot be below --memory",
        ),
        (vec!["--cpu-quota", "10"], "--cpu-quota 10"),
        (vec!["--cpu-shares", "1"], "--cpu-shares 1"),
        (vec!["--cpuset-cpus", "a-b"], "--cpuset-cpus"),
        (vec!["--resource", "gpu=1"], "unknown key \"gpu\""),
        (
            vec!["--memory", "1g", "--resource", "memory=2g"],
            "both given",
        ),
    ] {
        let mut all = vec!["build"];
        all.extend_from_slice(&args);
        all.push(&c);
        let out = r.run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: want {want:?}:\n{}",
            show(&out)
        );
    }
}

#[test]
fn images_inspect_and_history_take_json_and_go_templates() {
    const FMT: &str = "127.0.0.1:5000/library/fmt:v1";
    use crate::util::tool;
    let r = Rbuild::new();
    crate::store::make_image(&r.root, "127.0.0.1:5000/library/fmt:v1", "x");
    crate::store::make_image(&r.root, "127.0.0.1:5000/fmt/other:v2", "y");

    let names = r.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "127.0.0.1:5000/fmt/other:v2",
            "127.0.0.1:5000/library/fmt:v1"
        ]
    );
    let json = r.ok(&["images", "--format", "json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 2, "{json}");
    assert_eq!(rows[1]["Repository"], "127.0.0.1:5000/library/fmt");
    assert_eq!(rows[1]["Tag"], "v1");
    assert_eq!(rows[1]["ID"].as_str().unwrap().len(), 12);
    let table = r.ok(&["images", "--format", "table {{.Repository}}\\t{{.Tag}}"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["REPOSITORY", "TAG"], "{table}");
    assert!(table.lines().nth(2).unwrap().ends_with("   v1"), "{table}");

    // inspect: the config's own (OCI) keys, as skopeo shows them, plus ours in that style.
    let doc: serde_json::Value = serde_json::from_str(&r.ok(&["inspect", FMT])).unwrap();
    let doc = &doc[0];
    let skopeo: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            &format!("oci:{}:127.0.0.1:5000/library/fmt:v1", r.root.display()),
        ],
    ))
    .unwrap();
    for (key, value) in skopeo.as_object().unwrap() {
        assert_eq!(&doc[key], value, "inspect's {key:?} differs from skopeo's");
    }
    let id = r.ok(&["inspect", "--format", "{{.id}}", FMT]);
    assert_eq!(id.trim(), doc["id"].as_str().unwrap());
    assert!(id.trim().starts_with("sha256:"));
    assert_eq!(
        r.ok(&[
            "inspect",
            "-f",
            "{{json .config.Cmd}} {{.architecture}}",
            FMT
        ])
        .trim(),
        r#"["/bin/sh"] amd64"#
    );

    // history: newest first, the image ID on the top step only, each with its layer.
    let by = r.ok(&["history", "--format", "{{.CreatedBy}}|{{.ID}}", FMT]);
    let short = &doc["id"].as_str().unwrap()[7..19];
    assert_eq!(
        by.lines().collect::<Vec<_>>(),
        [format!("top|{short}"), "base|<missing>".to_string()]
    );
    let table = r.ok(&["history", FMT]);
    assert!(
        table.starts_with("IMAGE") && table.contains("CREATED BY") && table.contains("top"),
        "{table}"
    );
    let json = r.ok(&["history", "--format", "json", FMT]);
    let top: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(top["CreatedBy"], "top");
    assert!(top["Size"].as_str().unwrap().ends_with('B'), "{top}");
    assert_eq!(
        r.ok(&["history", "-q", FMT]).lines().collect::<Vec<_>>(),
        [short, "<missing>"]
    );

    // Unknown fields are usage errors naming the field.
    for (args, want) in [
        (
            vec!["images", "--format", "{{.Repo}}"],
            "unknown field \"Repo\"",
        ),
        (
            vec!["history", "--format", "{{.Author}}", FMT],
            "unknown field \"Author\"",
        ),
        (
            vec!["inspect", "--format", "{{.Id}}", FMT],
            "unknown field \"Id\"",
        ),
        (
            vec!["inspect", "--format", "{{.config.Bogus}}", FMT],
            "\"config.Bogus\"",
        ),
        (vec!["images", "--format", "{{range .}}"], "not supported"),
    ] {
        let out = r.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: want {want:?}:\n{}",
            show(&out)
        );
    }
}

/// Builds `FROM scratch` + `COPY f /f` with `f` of `size` bytes of `byte` into `r`'s store,
/// tagged `tag`; returns the context (kept for rebuilds).
fn scratch_image(r: &Rbuild, tag: &str, byte: u8, size: usize) -> TestDir {
    let ctx = TestDir::new("du-ctx");
    ctx.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    ctx.write("f", vec![byte; size]);
    r.ok(&["build", "-q", "-t", tag, &ctx.path().to_string_lossy()]);
    ctx
}

/// Whether a rebuild of `ctx` takes its COPY from the cache.
fn copy_is_cached(r: &Rbuild, ctx: &TestDir) -> bool {
    let out = r.run(&["build", "--progress=plain", &ctx.path().to_string_lossy()]);
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stderr).contains("CACHED")
}

/// The cache records written so far (files directly under `cache/`).
fn cache_records(r: &Rbuild) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(r.root.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect()
}

/// `du`'s (count, reclaimable by prune, reclaimable by prune --all) for a row.
fn du_counts(du: &str, row: &str) -> (u64, u64, u64) {
    let line = du
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} row:\n{du}"));
    let cells: Vec<&str> = line[row.len()..]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let paren = |c: &str| -> u64 {
        c.split_once('(')
            .unwrap()
            .1
            .trim_end_matches(')')
            .parse()
            .unwrap()
    };
    (cells[0].parse().unwrap(), paren(cells[2]), paren(cells[3]))
}

#[test]
fn du_counts_what_prune_then_deletes() {
    let r = Rbuild::new();
    let _kept = scratch_image(&r, "du/kept:v1", b'k', 100_000);
    let _gone = scratch_image(&r, "du/gone:v1", b'g', 200_000);
    r.ok(&["rmi", "du/gone:v1"]);
    let du = r.ok(&["du"]);
    let blob_files = std::fs::read_dir(r.root.join("blobs/sha256"))
        .unwrap()
        .count() as u64;
    let (blobs, blobs_prune, blobs_all) = du_counts(&du, "blobs");
    assert_eq!(blobs, blob_files, "{du}");
    // The untagged image's manifest and config go with prune; its layer is the cache's.
    assert_eq!(blobs_prune, 2, "{du}");
    assert!(blobs_all > blobs_prune, "{du}");
    let (records, _, records_all) = du_counts(&du, "cache records");
    assert_eq!(records, cache_records(&r).len() as u64, "{du}");
    assert_eq!(records_all, records, "{du}");
    assert!(du.contains("Total: "), "{du}");

    let pruned = r.ok(&["prune"]);
    let deleted = pruned
        .lines()
        .filter(|l| l.starts_with("deleted blob"))
        .count() as u64;
    assert_eq!(
        deleted, blobs_prune,
        "du said {blobs_prune}, prune deleted:\n{pruned}"
    );
    let du = r.ok(&["du"]);
    let (_, now_prune, now_all) = du_counts(&du, "blobs");
    assert_eq!(now_prune, 0, "{du}");
    let pruned = r.ok(&["prune", "--all"]);
    let deleted = pruned
        .lines()
        .filter(|l| l.starts_with("deleted blob"))
        .count() as u64;
    assert_eq!(
        deleted, now_all,
        "du said {now_all}, prune --all deleted:\n{pruned}"
    );
    // The tagged image is whole.
    assert!(r.ok(&["fsck"]).starts_with("ok"));
    assert_eq!(du_counts(&r.ok(&["du"]), "blobs").2, 0);
}

#[test]
fn prune_filter_until_drops_only_old_cache() {
    let r = Rbuild::new();
    let old = scratch_image(&r, "until/old:v1", b'o', 10_000);
    for record in cache_records(&r) {
        crate::util::tool("touch", &["-d", "2 days ago", &record.to_string_lossy()]);
    }
    let new = scratch_image(&r, "until/new:v1", b'n', 10_000);
    r.ok(&["rmi", "until/old:v1", "until/new:v1"]);
    r.ok(&["prune", "--filter", "until=24h"]);
    assert!(
        !copy_is_cached(&r, &old),
        "a 2-day-old cache record survived until=24h"
    );
    assert!(
        copy_is_cached(&r, &new),
        "a new cache record was dropped by until=24h"
    );
}

#[test]
fn prune_keep_storage_drops_the_oldest_cache_first() {
    let r = Rbuild::new();
    let old = scratch_image(&r, "keep/old:v1", b'o', 1_000_000);
    for record in cache_records(&r) {
        crate::util::tool("touch", &["-d", "1 hour ago", &record.to_string_lossy()]);
    }
    let new = scratch_image(&r, "keep/new:v1", b'n', 1_000_000);
    r.ok(&["rmi", "keep/old:v1", "keep/new:v1"]);
    // Room for one 1 MB layer, not two: the newer one stays.
    r.ok(&["prune", "--keep-storage", "1.5m"]);
    let blob_bytes: u64 = std::fs::read_dir(r.root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(blob_bytes <= 1_572_864, "{blob_bytes} bytes of blobs left");
    assert!(copy_is_cached(&r, &new), "the newest cache was dropped");
    assert!(!copy_is_cached(&r, &old), "the oldest cache was kept");
    // The rebuilds above (untagged) made cache again; --max-used-space 0 drops all of it.
    r.ok(&["prune", "--max-used-space", "0"]);
    assert!(cache_records(&r).is_empty(), "cache records left");
}

#[test]
fn prune_flag_errors_are_usage_errors() {
    let r = Rbuild::new();
    for (args, want) in [
        (vec!["prune", "--filter", "until=3d"], "want a duration"),
        (vec!["prune", "--filter", "label=x"], "unknown filter"),
        (
            vec!["prune", "--keep-storage", "lots"],
            "--keep-storage \"lots\"",
        ),
    ] {
        let out = r.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: want {want:?}:\n{}",
            show(&out)
        );
    }
}

#[test]
fn annotations_land_in_the_manifest_its_descriptor_and_the_index() {
    use crate::util::{tool, Registry};
    let r = Rbuild::new();
    let ctx = TestDir::new("annotations");
    ctx.write("Dockerfile", "FROM scratch\nCOPY f /f\n");
    ctx.write("f", "annotated\n");
    let out_dir = TestDir::new("annotations-out");
    let archive = out_dir
        .path()
        .join("img.tar")
        .to_string_lossy()
        .into_owned();
    let layout = out_dir.path().join("layout").to_string_lossy().into_owned();
    let pushed = format!("{}/habits/annotated:v1", Registry::shared().addr);
    let (a, b) = (
        format!("type=oci,dest={archive}"),
        format!("type=oci,dest={layout},tar=false"),
    );
    let reg = format!("type=registry,name={pushed}");
    r.ok(&[
        "build",
        "-q",
        "-t",
        "habits/annotated:v1",
        "--annotation",
        "org.example.plain=1",
        "--annotation",
        "manifest:org.example.manifest=2",
        "--annotation",
        "manifest-descriptor:org.example.descriptor=3",
        "--annotation",
        "index:org.example.index=4",
        "-o",
        &a,
        "-o",
        &b,
        "-o",
        &reg,
        &ctx.path().to_string_lossy(),
    ]);
    let manifest_of = |reference: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["inspect", "--raw"];
        args.extend_from_slice(extra);
        args.push(reference);
        serde_json::from_str(&tool("skopeo", &args)).unwrap()
    };
    for (what, m) in [
        (
            "store",
            manifest_of(&crate::build::oci_ref(&r, "habits/annotated:v1"), &[]),
        ),
        (
            "oci archive",
            manifest_of(&format!("oci-archive:{archive}"), &[]),
        ),
        (
            "registry",
            manifest_of(&format!("docker://{pushed}"), &["--tls-verify=false"]),
        ),
    ] {
        assert_eq!(m["annotations"]["org.example.plain"], "1", "{what}: {m}");
        assert_eq!(m["annotations"]["org.example.manifest"], "2", "{what}: {m}");
        assert!(
            m["annotations"].get("org.example.descriptor").is_none(),
            "{what}: {m}"
        );
    }
    // The descriptor: the store's index.json entry and the exported layout's.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.root.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.example.descriptor"], "3",
        "{index}"
    );
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&layout).join("index.json")).unwrap())
            .unwrap();
    assert_eq!(
        exported["annotations"]["org.example.index"], "4",
        "{exported}"
    );
    assert_eq!(
        exported["manifests"][0]["annotations"]["org.example.descriptor"], "3",
        "{exported}"
    );
    assert!(
        index.get("annotations").is_none(),
        "index: reached the store: {index}"
    );

    let c = ctx.path().to_string_lossy().into_owned();
    for (args, want) in [
        (
            vec!["--annotation", "index-descriptor:k=v"],
            "no nested image index",
        ),
        (
            vec!["--annotation", "index:k=v"],
            "only a type=oci output has an index",
        ),
        (vec!["--annotation", "layer:k=v"], "unknown type \"layer\""),
        (
            vec!["--annotation", "manifest[linux/amd64]:k=v"],
            "per-platform",
        ),
    ] {
        let mut all = vec!["build"];
        all.extend_from_slice(&args);
        all.push(&c);
        let out = r.run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: want {want:?}:\n{}",
            show(&out)
        );
    }
}

#[test]
fn output_local_applies_opaque_directories_and_keeps_hard_links() {
    use std::os::unix::fs::MetadataExt;
    let r = Rbuild::new();
    let ctx = TestDir::new("opaque");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\n\
         RUN mkdir -p /d/e && echo old > /d/e/old && echo old > /d/old\n\
         RUN rm -rf /d && mkdir /d && echo new > /d/new && ln /d/new /d/link && \
             chown 123:45 /d/new && chmod 640 /d/new\n",
    );
    let dest = TestDir::new("opaque-out");
    let fs = dest.path().join("fs");
    let base = base_arg();
    let (c, f) = (
        ctx.path().to_string_lossy().into_owned(),
        fs.to_string_lossy().into_owned(),
    );
    r.ok(&build_args(&base, &["-o", &f], &c));
    let mut names: Vec<String> = std::fs::read_dir(fs.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["link", "new"],
        "the recreated /d shows the old one's files"
    );
    let new = std::fs::metadata(fs.join("d/new")).unwrap();
    let link = std::fs::metadata(fs.join("d/link")).unwrap();
    assert_eq!(new.ino(), link.ino(), "the hard link became a copy");
    assert_eq!((new.uid(), new.gid(), new.mode() & 0o777), (123, 45, 0o640));
}

/// Serves `body` with `status` to every request on 127.0.0.1 until the process exits;
/// returns the address.
fn serve_once_per_request(status: &'static str, body: &'static str) -> String {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    addr
}

#[test]
fn dockerfile_from_a_url_with_a_context_directory() {
    let r = Rbuild::new();
    let ctx = TestDir::new("url-df");
    ctx.write("hello.txt", "from the context\n");
    ctx.write("Dockerfile", "FROM scratch\nLABEL which=context-file\n");
    let dir = ctx.path().to_string_lossy().into_owned();
    let addr = serve_once_per_request(
        "200 OK",
        "FROM scratch\nCOPY hello.txt /\nLABEL which=url\n",
    );
    let url = format!("http://{addr}/app/Dockerfile");
    ok(
        r.run(&["build", "-q", "-t", "url-df", "-f", &url, &dir]),
        "build -f URL",
    );
    assert_eq!(config(&r, "url-df")["config"]["Labels"]["which"], "url");
    let (_d, fs) = unpack(&r, "url-df");
    assert_eq!(
        std::fs::read_to_string(fs.join("hello.txt")).unwrap(),
        "from the context\n"
    );
    // A URL that answers 404 is an error naming it.
    let missing = format!(
        "http://{}/nope",
        serve_once_per_request("404 Not Found", "")
    );
    let out = r.run(&["build", "-q", "-t", "url-df2", "-f", &missing, &dir]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&missing) && err.contains("404"),
        "{}",
        show(&out)
    );
}
