//! `--isolation`: the same Dockerfile built as root with namespaces and as root without
//! CAP_SYS_ADMIN (rootless, over overlayfs or on copied roots; chroot over the copying
//! snapshotter) gives the same diffIDs; `auto` says which mode it picked and why; chroot
//! says what it does not isolate; rootless limits without a delegated cgroup are a warning.

use std::process::{Command, Output};

use crate::util::busybox::busybox;
use crate::util::{show, Rbuild, TestDir};

/// A RUN that writes, chowns to 1000, makes a setuid file, deletes a base file (a
/// whiteout) and makes a base directory anew (an opaque dir); a `COPY --chown`.
const DOCKERFILE: &str = "ARG BASE\n\
FROM $BASE\n\
RUN mkdir -p /app/owned && echo ran > /app/run.txt && echo o > /app/owned/x \
 && chown 1000:1000 /app/run.txt && chown -R 1000:1000 /app/owned \
 && cp /bin/busybox /app/suid && chmod 4755 /app/suid && rm /etc/group \
 && rm -rf /tmp && mkdir /tmp && echo t > /tmp/t\n\
COPY --chown=1000:1000 f.txt /app/f.txt\n\
RUN cat /app/f.txt /app/run.txt > /app/both && stat -c '%u:%g %a %n' /app/* > /app/listing\n";

fn context() -> TestDir {
    let dir = TestDir::new("isolation");
    dir.write("Dockerfile", DOCKERFILE);
    dir.write("f.txt", "copied\n");
    dir
}

/// `rbuild build` of `ctx` with `SOURCE_DATE_EPOCH=0`, run through `wrapper` (a command
/// prefix, empty for none) and with `extra` flags.
fn build(rb: &Rbuild, ctx: &TestDir, wrapper: &[&str], extra: &[&str]) -> Output {
    let exe = env!("CARGO_BIN_EXE_rbuild");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.env("RBUILD_ROOT", &rb.root)
        .env("SOURCE_DATE_EPOCH", "0")
        .env_remove("RBUILD_ISOLATION")
        .args(["build", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={}", busybox().reference))
        .args(extra)
        .args(["-t", "iso", &ctx.path().display().to_string()]);
    cmd.output().expect("spawn rbuild")
}

fn diff_ids(rb: &Rbuild) -> Vec<String> {
    let config = rb.ok(&["inspect", "-f", "{{json .rootfs.diff_ids}}", "iso"]);
    serde_json::from_str(config.trim()).expect("diff_ids as JSON")
}

/// `setpriv` dropping CAP_SYS_ADMIN from the bounding and inheritable sets: the exec'ed
/// rbuild (root) has every capability but that one.
const WITHOUT_SYS_ADMIN: [&str; 5] = [
    "setpriv",
    "--bounding-set",
    "-sys_admin",
    "--inh-caps",
    "-sys_admin",
];

/// The diffIDs of the privileged build of [`DOCKERFILE`]; the default says nothing.
fn privileged_diff_ids(ctx: &TestDir) -> Vec<String> {
    let privileged = Rbuild::new();
    let out = build(&privileged, ctx, &[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let plain = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !plain.contains("isolation:"),
        "the default says nothing: {plain}"
    );
    diff_ids(&privileged)
}

#[test]
fn root_without_cap_sys_admin_builds_the_same_layers_in_a_user_namespace() {
    let ctx = context();
    let expected = privileged_diff_ids(&ctx);
    let rb = Rbuild::new();
    let out = build(&rb, &ctx, &WITHOUT_SYS_ADMIN, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains(
            "isolation: rootless (no CAP_SYS_ADMIN; a user namespace mapping root's ids onto themselves)"
        ),
        "auto says what it picked and why: {log}"
    );
    assert_eq!(diff_ids(&rb), expected, "{log}");
    let fsck = rb.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", show(&fsck));
}

#[test]
fn root_without_cap_sys_admin_builds_the_same_layers_with_chroot() {
    let ctx = context();
    let expected = privileged_diff_ids(&ctx);
    let chrooted = Rbuild::new();
    let out = build(
        &chrooted,
        &ctx,
        &WITHOUT_SYS_ADMIN,
        &["--isolation", "chroot"],
    );
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("WARNING: --isolation chroot: RUN steps share the host's processes, network"),
        "chroot says what it does not isolate: {log}"
    );
    assert_eq!(diff_ids(&chrooted), expected, "{log}");
    let fsck = chrooted.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", show(&fsck));

    // What the last RUN saw: owners from the COPY and the first RUN, the setuid bit.
    let layout = TestDir::new("isolation-out");
    let dest = layout.path().join("fs");
    let dest_s = dest.display().to_string();
    let base = format!("BASE={}", busybox().reference);
    let ctx_s = ctx.path().display().to_string();
    chrooted.ok(&[
        "build",
        "-q",
        "--isolation",
        "chroot",
        "-o",
        &dest_s,
        "--build-arg",
        &base,
        &ctx_s,
    ]);
    let listing = std::fs::read_to_string(dest.join("app/listing")).unwrap();
    for line in [
        "1000:1000 644 /app/f.txt",
        "1000:1000 644 /app/run.txt",
        "0:0 4755 /app/suid",
    ] {
        assert!(listing.lines().any(|l| l == line), "{line} in {listing}");
    }
    assert!(!dest.join("etc/group").exists());
}

#[test]
fn explicit_modes_that_cannot_work_say_what_is_missing() {
    let ctx = context();
    let rb = Rbuild::new();
    let out = build(
        &rb,
        &ctx,
        &WITHOUT_SYS_ADMIN,
        &["--isolation", "namespaces"],
    );
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("isolation namespaces is not possible here: no CAP_SYS_ADMIN"),
        "{err}"
    );

    let out = build(&rb, &ctx, &[], &["--isolation", "vm"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown isolation \"vm\""),
        "{}",
        show(&out)
    );
}

#[test]
fn auto_by_name_says_namespaces_for_root() {
    let ctx = context();
    let rb = Rbuild::new();
    let out = build(&rb, &ctx, &[], &["--isolation", "auto"]);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("isolation: namespaces (root with CAP_SYS_ADMIN)"),
        "{log}"
    );
}

#[test]
fn chroot_refuses_run_mounts_and_network_none_by_name() {
    let ctx = TestDir::new("isolation-refused");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\nRUN --network=none true\n",
    );
    let rb = Rbuild::new();
    let out = build(&rb, &ctx, &[], &["--isolation", "chroot"]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "RUN --network=none (a network namespace) is not possible with --isolation chroot"
        ),
        "{err}"
    );
    let fsck = rb.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", show(&fsck));
}

#[test]
fn kill_9_of_a_chroot_build_leaves_no_process_of_the_step() {
    let marker = format!("iso-kill-{}", std::process::id());
    let ctx = TestDir::new("isolation-kill");
    // A background subshell (a grandchild of the init) and a foreground sleep.
    ctx.write(
        "Dockerfile",
        format!(
            "ARG BASE\nFROM $BASE\nRUN ( sleep 1000; echo {marker} ) & sleep 1001; echo {marker}\n"
        ),
    );
    let rb = Rbuild::new();
    let mut child = {
        let exe = env!("CARGO_BIN_EXE_rbuild");
        Command::new(WITHOUT_SYS_ADMIN[0])
            .args(&WITHOUT_SYS_ADMIN[1..])
            .arg(exe)
            .env("RBUILD_ROOT", &rb.root)
            .args([
                "build",
                "--isolation",
                "chroot",
                "--progress=plain",
                "--build-arg",
            ])
            .arg(format!("BASE={}", busybox().reference))
            .arg(ctx.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn rbuild")
    };
    // Both shells of the step run once two processes carry the marker.
    let running = crate::reliability::poll(std::time::Duration::from_secs(60), || {
        crate::reliability::leftover_processes(&rb.root, &marker)
            .iter()
            .filter(|p| p.cmdline.contains(&marker) && !p.cmdline.contains("rbuild"))
            .count()
            >= 2
    });
    assert!(running, "the step never started");
    child.kill().expect("kill -9 rbuild");
    child.wait().expect("reap rbuild");
    crate::reliability::assert_store_sound(&rb, &marker, "kill -9 of a chroot build");
}

/// The non-root user rootless builds run as, made here with a /etc/subuid and /etc/subgid
/// range when missing.
const ROOTLESS_USER: &str = "rbuild-rootless";

/// The rootless test user's (uid, gid), made first when missing.
pub fn rootless_user() -> (u32, u32) {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, ROOTLESS_USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    if id("-u").is_none() {
        crate::util::tool("useradd", &["--create-home", ROOTLESS_USER]);
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuid
        .lines()
        .any(|l| l.starts_with(&format!("{ROOTLESS_USER}:")))
    {
        crate::util::tool(
            "usermod",
            &[
                "--add-subuids",
                "500000-565535",
                "--add-subgids",
                "500000-565535",
                ROOTLESS_USER,
            ],
        );
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

/// A directory under /tmp that `owner` owns (others may read it), removed on drop.
struct OwnedDir(std::path::PathBuf);

impl OwnedDir {
    fn new(name: &str, (uid, gid): (u32, u32)) -> OwnedDir {
        let path = std::path::PathBuf::from(format!("/tmp/rbiso-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        OwnedDir(path)
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rbuild ARGS` as the rootless user, with its store at `root`.
pub fn as_user(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", ROOTLESS_USER, "--", "env"])
        .arg(format!("HOME=/home/{ROOTLESS_USER}"))
        .arg(format!("RBUILD_ROOT={}", root.display()))
        .arg("SOURCE_DATE_EPOCH=0")
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        .args(args)
        .current_dir("/")
        .output()
        .expect("spawn runuser")
}

#[test]
fn rootless_user_builds_the_root_layers_and_can_delete_the_store() {
    let user = rootless_user();
    let ctx = OwnedDir::new("ctx", user);
    std::fs::write(ctx.0.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.0.join("f.txt"), "copied\n").unwrap();
    let privileged = Rbuild::new();
    let out = build(&privileged, &context(), &[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let expected = diff_ids(&privileged);

    let home = OwnedDir::new("store", user);
    let root = home.0.join("store");
    let base = format!("BASE={}", busybox().reference);
    let ctx_s = ctx.0.display().to_string();
    let args = [
        "build",
        "--progress=plain",
        "--build-arg",
        &base,
        "-t",
        "iso",
        &ctx_s,
    ];
    let out = as_user(&root, &args);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("isolation: rootless (no CAP_SYS_ADMIN; 65536 ids from /etc/subuid)"),
        "{log}"
    );
    let out = as_user(
        &root,
        &["inspect", "-f", "{{json .rootfs.diff_ids}}", "iso"],
    );
    assert!(out.status.success(), "{}", show(&out));
    let got: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, expected, "{log}");
    let out = as_user(&root, &["fsck"]);
    assert!(out.status.success(), "{}", show(&out));

    // /app/owned belongs to a subordinate id (1000 inside): a plain rm cannot empty it,
    // the same rm in rbuild's user namespace can.
    let root_s = root.display().to_string();
    let plain_rm = Command::new("runuser")
        .args(["-u", ROOTLESS_USER, "--", "rm", "-rf", &root_s])
        .output()
        .unwrap();
    assert!(!plain_rm.status.success(), "{}", show(&plain_rm));
    let out = as_user(&root, &["unshare", "rm", "-rf", &root_s]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!root.exists());
}

/// The pid of the rbuild the user started (not the one re-executed in the user namespace,
/// whose environment carries `RBUILD_USERNS`) for the store at `root`.
fn outer_rbuild(root: &std::path::Path) -> Option<i32> {
    let env_needle = format!("RBUILD_ROOT={}", root.display());
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let environ = String::from_utf8_lossy(&environ);
            let vars: Vec<&str> = environ.split('\0').collect();
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "rbuild"
                && vars.contains(&env_needle.as_str())
                && !vars.iter().any(|v| v.starts_with("RBUILD_USERNS=")))
            .then_some(pid)
        })
}

#[test]
fn kill_9_of_a_rootless_build_leaves_nothing_and_the_store_stays_removable() {
    let user = rootless_user();
    let marker = format!("iso-rootless-kill-{}", std::process::id());
    let ctx = OwnedDir::new("kill-ctx", user);
    std::fs::write(
        ctx.0.join("Dockerfile"),
        format!("ARG BASE\nFROM $BASE\nRUN mkdir /o && chown 1000 /o && touch /o/f && chown 1000 /o/f\nRUN ( sleep 1000; echo {marker} ) & sleep 1001; echo {marker}\n"),
    )
    .unwrap();
    let home = OwnedDir::new("kill-store", user);
    let root = home.0.join("store");
    let base = format!("BASE={}", busybox().reference);
    let ctx_s = ctx.0.display().to_string();
    let mut child = Command::new("runuser")
        .args(["-u", ROOTLESS_USER, "--", "env"])
        .arg(format!("RBUILD_ROOT={}", root.display()))
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        .args(["build", "--progress=plain", "--build-arg", &base, &ctx_s])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn runuser");
    let running = crate::reliability::poll(std::time::Duration::from_secs(60), || {
        crate::reliability::leftover_processes(&root, &marker)
            .iter()
            .filter(|p| p.cmdline.contains(&marker))
            .count()
            >= 2
    });
    assert!(running, "the step never started");
    let outer = outer_rbuild(&root).expect("the user's rbuild process");
    // SAFETY: kill(2) of a pid read from /proc just now.
    assert_eq!(unsafe { libc::kill(outer, libc::SIGKILL) }, 0);
    let _ = child.wait();
    let gone = crate::reliability::poll(std::time::Duration::from_secs(5), || {
        crate::reliability::leftover_processes(&root, &marker).is_empty()
    });
    assert!(
        gone,
        "processes left: {:#?}",
        crate::reliability::leftover_processes(&root, &marker)
    );
    let mounts = crate::util::mounts_mentioning(&root.display().to_string());
    assert!(mounts.is_empty(), "{mounts:#?}");
    let out = as_user(&root, &["fsck"]);
    assert!(out.status.success(), "{}", show(&out));
    let root_s = root.display().to_string();
    let out = as_user(&root, &["unshare", "rm", "-rf", &root_s]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!root.exists());
}

/// A root filesystem for `podman run --rootfs`: busybox and the libraries `ldd` lists for
/// the rbuild binary (bind-mounted at /rbuild), so that rbuild runs in the container.
fn container_rootfs(dir: &std::path::Path) {
    let copy = |from: &std::path::Path| {
        let to = dir.join(from.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    let ldd = crate::util::tool("ldd", &[env!("CARGO_BIN_EXE_rbuild")]);
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        copy(std::path::Path::new(lib));
    }
    copy(std::path::Path::new("/bin/busybox"));
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    for d in ["tmp", "proc", "sys", "dev", "etc", "store", "ctx"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
}

/// `rbuild build` of [`DOCKERFILE`] inside a default `podman run --runtime runc`
/// (default capabilities and seccomp) of the root filesystem `rootfs` (a plain directory),
/// its store at `store` inside the container, and `extra` podman flags (a volume).
fn build_in_container(rootfs: &std::path::Path, store: &str, extra: &[&str]) -> Output {
    let podman = crate::util::podman::Podman::new();
    let rootfs = rootfs.display().to_string();
    run_in_container(&podman, &["--rootfs", &rootfs], store, extra, (&[], &[]))
}

/// `podman run` (as [`build_in_container`]) of `root` (`--rootfs DIR` or an image) running
/// `rbuild build FLAGS` of [`DOCKERFILE`] as `iso`, with its store at `store`, then `after`
/// (a shell command, run only if the build succeeded; empty: none). Flags and `after` are
/// joined into a shell command line: no quoting.
fn run_in_container(
    podman: &crate::util::podman::Podman,
    root: &[&str],
    store: &str,
    extra: &[&str],
    (flags, after): (&[&str], &[&str]),
) -> Output {
    let ctx = context();
    let base = format!("BASE={}", busybox().reference);
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "--runtime".into(),
        "runc".into(),
        "--network".into(),
        "host".into(),
        "--ulimit".into(),
        "nofile=4096:4096".into(),
        "--ulimit".into(),
        "nproc=8192:8192".into(),
        "-e".into(),
        "SOURCE_DATE_EPOCH=0".into(),
        "-e".into(),
        format!("RBUILD_ROOT={store}"),
        "-v".into(),
        format!("{}:/rbuild:ro", env!("CARGO_BIN_EXE_rbuild")),
        "-v".into(),
        format!("{}:/ctx:ro", ctx.path().display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(root.iter().map(|s| s.to_string()));
    let mut build = vec!["/rbuild", "build", "--progress=plain", "--build-arg", &base];
    build.extend_from_slice(flags);
    build.extend(["-t", "iso", "/ctx"]);
    if after.is_empty() {
        args.extend(build.iter().map(|s| s.to_string()));
    } else {
        // The build's log on stderr, `after`'s output on stdout.
        let script = format!("{} && {}", build.join(" "), after.join(" "));
        args.extend(["/bin/sh".to_string(), "-c".into(), script]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman.run(&args)
}

/// The diffIDs of `iso` in the store at `root` (read by the host's rbuild).
fn diff_ids_at(root: &std::path::Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .env("RBUILD_ROOT", root)
        .args(["inspect", "-f", "{{json .rootfs.diff_ids}}", "iso"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `podman run --rootfs DIR`: the container's root is the plain directory DIR, not an
/// overlay (that case is the next test), so the store works on a volume and at /store.
#[test]
fn default_podman_container_builds_the_root_layers_with_the_store_on_a_volume_or_a_plain_rootfs() {
    let expected = privileged_diff_ids(&context());
    let dir = TestDir::new("isolation-container");
    let rootfs = dir.path().join("rootfs");
    container_rootfs(&rootfs);

    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let mount = format!("{}:/vol", volume.display());
    let out = build_in_container(&rootfs, "/vol/store", &["-v", &mount]);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("isolation: rootless (no CAP_SYS_ADMIN; a user namespace"),
        "{log}"
    );
    assert_eq!(diff_ids_at(&volume.join("store")), expected, "{log}");

    let out = build_in_container(&rootfs, "/store", &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(diff_ids_at(&rootfs.join("store")), expected);
}

/// A podman image (unique name) of [`container_rootfs`], imported into `podman`'s store:
/// a container of it runs on the overlay driver's overlayfs root. Removed on drop.
struct ContainerImage<'a> {
    podman: &'a crate::util::podman::Podman,
    name: String,
}

impl<'a> ContainerImage<'a> {
    fn import(podman: &'a crate::util::podman::Podman, dir: &std::path::Path) -> Self {
        let rootfs = dir.join("rootfs");
        container_rootfs(&rootfs);
        let tar = dir.join("rootfs.tar");
        crate::util::tool(
            "tar",
            &[
                "-C",
                &rootfs.display().to_string(),
                "-cf",
                &tar.display().to_string(),
                ".",
            ],
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("localhost/rbuild-iso-{}-{nanos}:latest", std::process::id());
        podman.ok(&["import", "--quiet", &tar.display().to_string(), &name]);
        ContainerImage { podman, name }
    }
}

impl Drop for ContainerImage<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rmi", "--force", &self.name]);
    }
}

#[test]
fn default_podman_container_builds_the_root_layers_with_the_store_on_its_overlay_root() {
    let expected = privileged_diff_ids(&context());
    let dir = TestDir::new("isolation-overlay-root");
    let podman = crate::util::podman::Podman::overlay();
    let driver = podman.ok(&["info", "--format", "{{.Store.GraphDriverName}}"]);
    assert_eq!(
        driver.trim(),
        "overlay",
        "the container's root is an overlayfs"
    );
    let image = ContainerImage::import(&podman, dir.path());

    let out = run_in_container(
        &podman,
        &[&image.name],
        "/store",
        &[],
        (
            &[],
            &[
                "grep -q '^overlay / overlay' /proc/mounts",
                "&& /rbuild inspect -f '{{json .rootfs.diff_ids}}' iso",
                "&& /rbuild fsck >&2",
            ],
        ),
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        log.contains(
            "isolation: rootless (no CAP_SYS_ADMIN; a user namespace mapping root's ids onto \
             themselves; overlayfs refused on the store's filesystem: steps run on copied roots)"
        ),
        "the build says it ran on copied roots: {log}"
    );
    // The build prints the image id first; inspect's line is the last.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let diff_ids: Vec<String> = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("diff_ids as JSON ({e}): {}", show(&out)));
    assert_eq!(diff_ids, expected, "{log}");
}

#[test]
fn chroot_limits_in_a_container_without_a_writable_cgroupfs_are_a_warning_that_says_why() {
    let dir = TestDir::new("isolation-chroot-limits");
    let rootfs = dir.path().join("rootfs");
    container_rootfs(&rootfs);
    let rootfs_s = rootfs.display().to_string();
    let podman = crate::util::podman::Podman::new();
    let out = run_in_container(
        &podman,
        &["--rootfs", &rootfs_s],
        "/store",
        &[],
        (&["--isolation", "chroot", "--memory", "64m"], &[]),
    );
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let warning = "WARNING: --memory not applied: --isolation chroot cannot make the steps' \
                   cgroups here (cannot set up cgroup /sys/fs/cgroup/";
    assert_eq!(
        log.lines().filter(|l| l.contains(warning)).count(),
        1,
        "one warning naming the flag and the cgroup it could not make: {log}"
    );
}

/// podman's default seccomp profile, refusing what makes namespaces: `unshare`, `clone`
/// with a namespace flag, and `clone3` (ENOSYS, so that libc falls back to `clone`), as
/// docker's default profile does for a container without CAP_SYS_ADMIN.
fn seccomp_without_namespaces(path: &std::path::Path) {
    let text = std::fs::read_to_string("/usr/share/containers/seccomp.json")
        .expect("podman's seccomp.json (package golang-github-containers-common)");
    let mut profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    let refused = ["unshare", "clone", "clone3", "setns"];
    for rule in profile["syscalls"].as_array_mut().unwrap() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| !refused.contains(&n.as_str().unwrap_or("")));
        }
    }
    let namespace_flags: u64 = 0x7E02_0000;
    let rules = profile["syscalls"].as_array_mut().unwrap();
    rules.push(serde_json::json!({"names": ["unshare", "setns"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}));
    rules
        .push(serde_json::json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    rules.push(serde_json::json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": namespace_flags, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    }));
    std::fs::write(path, serde_json::to_vec(&profile).unwrap()).unwrap();
}

#[test]
fn container_whose_seccomp_refuses_namespaces_builds_the_root_layers_with_chroot() {
    let expected = privileged_diff_ids(&context());
    let dir = TestDir::new("isolation-seccomp");
    let rootfs = dir.path().join("rootfs");
    container_rootfs(&rootfs);
    let profile = dir.path().join("seccomp.json");
    seccomp_without_namespaces(&profile);
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let mount = format!("{}:/vol", volume.display());
    let seccomp = format!("seccomp={}", profile.display());
    let out = build_in_container(
        &rootfs,
        "/vol/store",
        &["-v", &mount, "--security-opt", &seccomp],
    );
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("isolation: chroot (no CAP_SYS_ADMIN)"),
        "{log}"
    );
    assert!(
        log.contains("WARNING: --isolation chroot: RUN steps share the host's processes"),
        "{log}"
    );
    assert_eq!(diff_ids_at(&volume.join("store")), expected, "{log}");
}

#[test]
fn rootless_steps_see_opaque_dirs_of_snapshots_a_privileged_build_made() {
    let ctx = TestDir::new("isolation-opaque");
    let first = "ARG BASE\nFROM $BASE\nRUN mkdir /d && echo old > /d/old\n\
                 RUN rm -rf /d && mkdir /d && echo new > /d/new\n";
    ctx.write("Dockerfile", first);
    let rb = Rbuild::new();
    let out = build(&rb, &ctx, &[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    // The same steps (cached: their snapshots are the privileged build's) and one more,
    // run in a user namespace whose overlay reads only `user.overlay.*` marks.
    ctx.write("Dockerfile", format!("{first}RUN ls /d > /listing\n"));
    let dest = ctx.path().join("fs");
    let dest_s = dest.display().to_string();
    let out = build(&rb, &ctx, &WITHOUT_SYS_ADMIN, &["-o", &dest_s]);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("isolation: rootless"), "{log}");
    assert_eq!(
        std::fs::read_to_string(dest.join("listing")).unwrap(),
        "new\n",
        "the opaque /d hides the old one: {log}"
    );
}

/// Why this machine has no delegated cgroup v2 subtree for a rootless build, as rbuild
/// words it, when /proc/self/cgroup shows v1 controllers (hybrid here); `None` on a
/// cgroup v2 machine, where the reason depends on the delegation.
fn cgroup_v1_reason() -> Option<&'static str> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let v1 = text
        .lines()
        .any(|l| l.split(':').nth(1).is_some_and(|c| !c.is_empty()));
    let unified = text.lines().any(|l| l.starts_with("0::"));
    match (v1, unified) {
        (true, true) => Some("(hybrid cgroups here: the controllers are on cgroup v1)"),
        (true, false) => Some("(cgroup v1 here)"),
        _ => None,
    }
}

#[test]
fn rootless_limits_without_a_delegated_cgroup_are_a_warning_that_says_why() {
    let ctx = TestDir::new("isolation-limits");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\nRUN cat /sys/fs/cgroup/memory/memory.limit_in_bytes \
         /sys/fs/cgroup/memory.max > /limit 2>/dev/null; echo ran > /ran\n",
    );
    let rb = Rbuild::new();
    let dest = ctx.path().join("fs");
    let dest_s = dest.display().to_string();
    let out = build(
        &rb,
        &ctx,
        &WITHOUT_SYS_ADMIN,
        &["--memory", "64m", "--cpu-shares", "512", "-o", &dest_s],
    );
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("isolation: rootless"), "{log}");
    let warning = "WARNING: --memory, --cpu-shares not applied: rootless isolation has no \
                   delegated cgroup v2 subtree";
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(warning)).collect();
    assert_eq!(lines.len(), 1, "one warning naming the flags: {log}");
    if let Some(reason) = cgroup_v1_reason() {
        assert!(lines[0].ends_with(reason), "it says why: {}", lines[0]);
    }
    assert_eq!(std::fs::read_to_string(dest.join("ran")).unwrap(), "ran\n");
    // No 64 MiB limit reached the step.
    let limit = std::fs::read_to_string(dest.join("limit")).unwrap_or_default();
    assert!(!limit.lines().any(|l| l.trim() == "67108864"), "{limit}");
}

#[test]
fn kill_9_of_a_build_on_copied_roots_leaves_nothing_and_the_store_sound() {
    let rb = Rbuild::new();
    // The store on an overlayfs (its parent is the mount, so that the soundness check's
    // search for mounts that mention the store does not find this one).
    let _overlay =
        crate::util::overlayfs::OverlayDir::mount(rb.root.parent().expect("the store's dir"));
    let marker = format!("iso-copied-kill-{}", std::process::id());
    let ctx = TestDir::new("isolation-copied-kill");
    ctx.write(
        "Dockerfile",
        format!(
            "ARG BASE\nFROM $BASE\nRUN --mount=type=tmpfs,target=/scratch/tmp \
             ( sleep 1000; echo {marker} ) & sleep 1001; echo {marker}\n"
        ),
    );
    let child = Command::new(WITHOUT_SYS_ADMIN[0])
        .args(&WITHOUT_SYS_ADMIN[1..])
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        .env("RBUILD_ROOT", &rb.root)
        .env_remove("RBUILD_ISOLATION")
        .args(["build", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={}", busybox().reference))
        .arg(ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn setpriv rbuild");
    let running = crate::reliability::poll(std::time::Duration::from_secs(60), || {
        crate::reliability::leftover_processes(&rb.root, &marker)
            .iter()
            .filter(|p| p.cmdline.contains(&marker))
            .count()
            >= 2
    });
    assert!(running, "the step never started");
    let outer = outer_rbuild(&rb.root).expect("the outer rbuild process");
    // SAFETY: kill(2) of a pid read from /proc just now.
    assert_eq!(unsafe { libc::kill(outer, libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("steps run on copied roots"), "{log}");
    crate::reliability::assert_store_sound(&rb, &marker, "after kill -9 on copied roots");
}

/// Builds `ctx` as root without CAP_SYS_ADMIN with the store on an overlayfs, so rootless
/// steps run on copied roots, exported to `ctx/fs`. Returns the overlay (keep it while the
/// store is used), the export and the build's log.
fn build_on_copied_roots(
    rb: &Rbuild,
    ctx: &TestDir,
) -> (
    crate::util::overlayfs::OverlayDir,
    std::path::PathBuf,
    String,
) {
    let overlay =
        crate::util::overlayfs::OverlayDir::mount(rb.root.parent().expect("the store's dir"));
    let dest = ctx.path().join("fs");
    let dest_s = dest.display().to_string();
    let out = build(rb, ctx, &WITHOUT_SYS_ADMIN, &["-o", &dest_s]);
    assert!(out.status.success(), "{}", show(&out));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("steps run on copied roots"), "{log}");
    (overlay, dest, log)
}

#[test]
fn rootless_steps_on_copied_roots_leave_no_mountpoint_in_their_layers() {
    let ctx = TestDir::new("isolation-copied-mounts");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=tmpfs,target=/new/dir/tmp --mount=type=cache,target=/var/cache/x \
         echo hi > /new/dir/tmp/gone && echo kept > /kept && cat /etc/hosts /proc/1/comm >/dev/null\n",
    );
    let privileged = Rbuild::new();
    let out = build(&privileged, &ctx, &[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    let expected = diff_ids(&privileged);

    let rb = Rbuild::new();
    let (_overlay, dest, log) = build_on_copied_roots(&rb, &ctx);
    assert_eq!(diff_ids(&rb), expected, "{log}");
    assert_eq!(
        std::fs::read_to_string(dest.join("kept")).unwrap(),
        "kept\n"
    );
    assert!(!dest.join("new").exists(), "a mountpoint reached the image");
    let fsck = rb.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", show(&fsck));
}

#[test]
fn copy_from_a_stage_built_on_copied_roots_honours_its_whiteouts() {
    // The stage's `rm` becomes a whiteout in the xattr form (overlayfs refuses a 0:0
    // device there); COPY --from reads the stage's layers without mounting them.
    let ctx = TestDir::new("isolation-copied-whiteout");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE AS stage\nRUN mkdir -p /t && echo a > /t/gone && echo b > /t/kept\n\
         RUN rm /t/gone\n\
         FROM $BASE\nCOPY --from=stage /t /copied\n",
    );
    let rb = Rbuild::new();
    let (_overlay, dest, log) = build_on_copied_roots(&rb, &ctx);
    assert_eq!(
        std::fs::read_to_string(dest.join("copied/kept")).unwrap(),
        "b\n"
    );
    assert!(
        !dest.join("copied/gone").exists(),
        "a whiteout of the stage was copied as a file: {log}"
    );
}
