//! Sandbox escapes from a RUN step: mount, mknod'ed host devices, kernel modules, ptrace of
//! host processes, host pids in /proc, writes to /sys and /proc/sys, the host's hostname,
//! inherited fds and files outside the rootfs all fail.

use std::collections::BTreeMap;

use super::{assert_store_sound, build, context};
use crate::util::{show, Rbuild};

/// The first disk in /proc/partitions (major, minor): the host's root disk here.
fn host_disk() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/partitions").expect("/proc/partitions");
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?))
        })
        .next()
        .expect("a disk in /proc/partitions")
}

fn uname_n() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}

#[test]
fn run_step_cannot_escape_the_sandbox() {
    let rb = Rbuild::new();
    escape_attempts_fail(&rb, |ctx| build(&rb, ctx, "escape:v1"));
}

/// The same attempts in a rootless build: a non-root user with /etc/subuid ranges, whose
/// RUN steps are root only inside the user namespace.
#[test]
fn rootless_run_step_cannot_escape_the_sandbox() {
    let user = crate::isolation::rootless_user();
    let rb = Rbuild::new();
    let home = rb.root.parent().expect("the store's test dir");
    std::os::unix::fs::chown(home, Some(user.0), Some(user.1)).unwrap();
    escape_attempts_fail(&rb, |ctx| {
        let args = super::build_args(ctx, "escape:v1");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::isolation::as_user(&rb.root, &args);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("isolation: rootless"), "{}", show(&out));
        out
    });
}

/// The same attempts in a rootless build (root without CAP_SYS_ADMIN) whose store is on an
/// overlayfs, as on a container's overlay root: overlayfs refuses an upper dir there, so the
/// step runs on a copied root the runner binds instead of an overlay.
#[test]
fn rootless_run_step_on_a_copied_root_cannot_escape_the_sandbox() {
    let rb = Rbuild::new();
    // The store's parent is the mount, so that the soundness check's search for mounts
    // and processes that mention the store does not find this one.
    let parent = rb.root.parent().expect("the store's test dir");
    let _overlay = crate::util::overlayfs::OverlayDir::mount(parent);
    escape_attempts_fail(&rb, |ctx| {
        let out = std::process::Command::new("setpriv")
            .args(["--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"])
            .arg(env!("CARGO_BIN_EXE_rbuild"))
            .args(super::build_args(ctx, "escape:v1"))
            .env("RBUILD_ROOT", &rb.root)
            .env_remove("RBUILD_ISOLATION")
            .output()
            .expect("spawn setpriv rbuild");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("overlayfs refused on the store's filesystem: steps run on copied roots"),
            "{}",
            show(&out)
        );
        out
    });
}

/// Runs the escape attempts as one RUN step built by `run_build` (given the context) into
/// `rb`'s store as `escape:v1`, then checks that every one failed.
fn escape_attempts_fail(
    rb: &Rbuild,
    run_build: impl FnOnce(&std::path::Path) -> std::process::Output,
) {
    let canary_dir = std::path::PathBuf::from(format!("/tmp/rbc-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&canary_dir).unwrap();
    let _cleanup = RemoveOnDrop(canary_dir.clone());
    let canary = canary_dir.join("canary");
    std::fs::write(&canary, "host secret\n").unwrap();
    let host_name = uname_n();
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_ratio").unwrap();
    let (maj, min) = host_disk();
    let script = format!(
        "set +e; mkdir -p /r; \
         mount -t tmpfs none /mnt; echo $? > /r/mount; \
         mknod /tmp/disk b {maj} {min}; echo $? > /r/mknod; \
         dd if=/tmp/disk of=/r/disk-bytes bs=512 count=1; echo $? > /r/read-disk; \
         mknod /tmp/mem c 1 1; head -c 64 /tmp/mem > /r/mem-bytes; echo $? > /r/read-mem; \
         mknod /tmp/zero c 1 5; head -c 1 /tmp/zero | wc -c > /r/zero-bytes; \
         mknod /dev/zero2 c 1 5; head -c 1 /dev/zero2 | wc -c > /r/dev-zero-bytes; \
         mknod /dev/kmsg2 c 1 11; [ -c /dev/kmsg2 ] && echo pwned > /dev/kmsg2; echo $? > /r/dev-kmsg; \
         head -c 1 /dev/zero | wc -c > /r/bound-zero-bytes; \
         printf 'not a module' > /tmp/m.ko; insmod /tmp/m.ko; echo $? > /r/insmod; \
         modprobe dummy; echo $? > /r/modprobe; \
         ls /proc | grep -c '^[0-9]' > /r/pids; \
         cat /proc/1/comm > /r/pid1-comm; \
         cat /proc/sys/vm/overcommit_ratio > /tmp/o; cat /tmp/o > /proc/sys/vm/overcommit_ratio; echo $? > /r/proc-sys; \
         touch /sys/rbuild-escape; echo $? > /r/sys-touch; \
         cat /sys/kernel/profiling > /tmp/p; cat /tmp/p > /sys/kernel/profiling; echo $? > /r/sys-write; \
         hostname evil-{pid}; hostname > /r/hostname-inside; \
         ls /proc/self/fd > /r/fds; \
         cat {canary} > /r/canary 2>/dev/null; echo $? > /r/canary-rc; \
         ls /proc/*/root/{canary} > /r/canary-via-proc 2>/dev/null; echo $? > /r/canary-via-proc-rc; \
         true",
        pid = std::process::id(),
        canary = canary.display(),
    );
    let ctx = context(
        "sandbox-escape",
        &format!("ARG BASE\nFROM ${{BASE}}\nRUN {script}\n"),
    );
    let out = run_build(ctx.path());
    assert!(out.status.success(), "{}", show(&out));
    let (_d, fs) = crate::build::unpack(rb, "escape:v1");
    let r: BTreeMap<String, String> = std::fs::read_dir(fs.join("r"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&std::fs::read(e.path()).unwrap())
                    .trim()
                    .to_string(),
            )
        })
        .collect();
    eprintln!("escape attempts: {r:#?}");
    let failed = |k: &str| {
        let v = r.get(k).unwrap_or_else(|| panic!("no result for {k}"));
        assert_ne!(v, "0", "{k} succeeded inside the sandbox: {r:#?}");
    };
    failed("mount");
    failed("read-disk");
    failed("read-mem");
    failed("insmod");
    failed("modprobe");
    failed("proc-sys");
    failed("sys-touch");
    failed("sys-write");
    failed("canary-rc");
    failed("dev-kmsg");
    assert_eq!(
        r["zero-bytes"], "0",
        "a node made with mknod in the rootfs works"
    );
    assert_eq!(
        r["dev-zero-bytes"], "0",
        "a node made with mknod in /dev works"
    );
    assert_eq!(
        r["bound-zero-bytes"], "1",
        "the sandbox's own /dev/zero is broken"
    );
    failed("canary-via-proc-rc");
    let empty = |k: &str| r.get(k).is_none_or(|v| v.is_empty());
    assert!(empty("disk-bytes"), "the host disk was read");
    assert!(empty("mem-bytes"), "host memory was read");
    assert!(r["canary"].is_empty(), "the host canary was read");
    let pids: usize = r["pids"].parse().unwrap();
    assert!(
        pids <= 4,
        "the sandbox sees {pids} processes (host pids leak into /proc)"
    );
    assert!(
        r["pid1-comm"].starts_with("rbuild"),
        "pid 1 is {}",
        r["pid1-comm"]
    );
    let fds: Vec<&str> = r["fds"].split_whitespace().collect();
    assert!(
        fds.iter().all(|f| ["0", "1", "2", "3"].contains(f)),
        "inherited fds in the sandbox: {fds:?}"
    );
    assert_eq!(uname_n(), host_name, "the host's hostname changed");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/overcommit_ratio").unwrap(),
        overcommit
    );
    assert_store_sound(rb, "", "after the escape attempts");
}

/// Removes a directory when dropped, also when the test panics.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
