//! The sandbox's root filesystem: overlay, /proc, /dev, /sys, /etc files, extra mounts, pivot.
//!
//! Runs in PID 1 of the new namespaces, so every mount lives in the sandbox's own mount
//! namespace and disappears with it. Mountpoints the image lacks (`/proc`, `/etc/hosts`,
//! an extra mount's target) come from a stub layer the runner puts at the bottom of the
//! overlay stack, on a tmpfs: mounting over a lower's entry never copies it up, so the
//! upper dir only ever holds what the command wrote.

use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags,
    MountAttrFlags, MoveMountFlags,
};

use crate::error::os;
use crate::spec::{ExtraMount, SandboxSpec};
use crate::Error;

/// Host device nodes bound into the sandbox's /dev.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the root filesystem for `spec` and pivots into it; the caller is then at `/`.
pub(crate) fn enter(spec: &SandboxSpec) -> Result<(), Error> {
    let root = spec.work.join("root");
    let ovl_work = spec.work.join("ovl");
    let runtime = spec.work.join("runtime");
    for dir in [&root, &ovl_work, &runtime] {
        create_dir(dir)?;
    }
    mount_legacy(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;

    // The runner's own small tmpfs: the stub layer and the /etc files' contents.
    mount_legacy(
        Some("tmpfs"),
        &runtime,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755,size=16m"),
    )?;
    let stubs = runtime.join("stubs");
    let files = runtime.join("files");
    create_dir(&stubs)?;
    create_dir(&files)?;
    write_stubs(spec, &stubs)?;
    for (name, contents) in etc_files(spec) {
        write_file(&files.join(name), contents.as_bytes())?;
    }

    let mut lowers: Vec<&Path> = spec.lowers.iter().map(PathBuf::as_path).collect();
    lowers.push(&stubs);
    mount_overlay(&lowers, &spec.upper, &ovl_work, &root)?;

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_legacy(
        Some("proc"),
        &root.join("proc"),
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;
    mount_dev(&root.join("dev"))?;
    mount_sys(&root.join("sys"))?;
    for (name, _) in etc_files(spec) {
        bind(&files.join(name), &root.join("etc").join(name), false)?;
    }
    for extra in &spec.mounts {
        let target = inside(&root, extra.target());
        match extra {
            ExtraMount::Bind {
                source, readonly, ..
            } => bind(source, &target, *readonly)?,
            ExtraMount::Tmpfs { size, .. } => {
                let data = match size {
                    Some(bytes) => format!("mode=1777,size={bytes}"),
                    None => "mode=1777".to_string(),
                };
                mount_legacy(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(&data),
                )?;
            }
        }
    }
    pivot_into(&root)
}

/// The files bound over /etc, by name and contents.
fn etc_files(spec: &SandboxSpec) -> [(&'static str, String); 3] {
    [
        ("hosts", spec.hosts.clone()),
        ("resolv.conf", spec.resolv_conf.clone()),
        ("hostname", format!("{}\n", spec.hostname)),
    ]
}

/// A path inside the new root for an absolute sandbox path.
fn inside(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

/// Fills the stub layer with every mountpoint the runner will need.
fn write_stubs(spec: &SandboxSpec, stubs: &Path) -> Result<(), Error> {
    for dir in ["proc", "dev", "sys", "etc"] {
        create_dir(&stubs.join(dir))?;
    }
    for (name, _) in etc_files(spec) {
        write_file(&stubs.join("etc").join(name), b"")?;
    }
    for extra in &spec.mounts {
        let stub = inside(stubs, extra.target());
        let file_source = matches!(extra, ExtraMount::Bind { source, .. } if !source.is_dir());
        if file_source {
            if let Some(parent) = stub.parent() {
                create_dir(parent)?;
            }
            write_file(&stub, b"")?;
        } else {
            create_dir(&stub)?;
        }
    }
    Ok(())
}

/// Mounts overlayfs with the new mount API: one `lowerdir+` per layer, so the stack is not
/// limited by the one-page option string of `mount(2)`.
fn mount_overlay(lowers: &[&Path], upper: &Path, work: &Path, target: &Path) -> Result<(), Error> {
    let failed = |source: rustix::io::Errno| Error::Mount {
        what: "overlay".into(),
        target: target.to_path_buf(),
        source: source.into(),
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(failed)?;
    for lower in lowers {
        fsconfig_set_string(&fs, "lowerdir+", *lower).map_err(|source| Error::Mount {
            what: format!("overlay lower {}", lower.display()),
            target: target.to_path_buf(),
            source: source.into(),
        })?;
    }
    fsconfig_set_string(&fs, "upperdir", upper).map_err(|source| Error::Mount {
        what: format!("overlay upper {}", upper.display()),
        target: target.to_path_buf(),
        source: source.into(),
    })?;
    fsconfig_set_string(&fs, "workdir", work).map_err(|source| Error::Mount {
        what: format!("overlay work dir {}", work.display()),
        target: target.to_path_buf(),
        source: source.into(),
    })?;
    // Keep the upper dir a plain layer diff: no metadata-only copy-ups, no redirects,
    // no index or inode-number xattrs.
    for (key, value) in [
        ("redirect_dir", "off"),
        ("index", "off"),
        ("metacopy", "off"),
        ("xino", "off"),
    ] {
        fsconfig_set_string(&fs, key, value).map_err(|source| Error::Mount {
            what: format!("overlay option {key}={value}"),
            target: target.to_path_buf(),
            source: source.into(),
        })?;
    }
    fsconfig_create(&fs).map_err(failed)?;
    let mnt =
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).map_err(failed)?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(failed)
}

/// A minimal /dev: tmpfs, the host's basic device nodes, a private devpts, /dev/shm, links.
fn mount_dev(dev: &Path) -> Result<(), Error> {
    mount_legacy(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let node = dev.join(name);
        write_file(&node, b"")?;
        bind(&Path::new("/dev").join(name), &node, false)?;
    }
    let pts = dev.join("pts");
    create_dir(&pts)?;
    mount_legacy(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    create_dir(&shm)?;
    mount_legacy(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        symlink(to, &path).map_err(|source| Error::Create { path, source })?;
    }
    Ok(())
}

/// A read-only /sys: a fresh sysfs (it shows the sandbox's own network namespace), or a
/// read-only bind of the host's where sysfs cannot be mounted.
fn mount_sys(sys: &Path) -> Result<(), Error> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if mount_legacy(Some("sysfs"), sys, Some("sysfs"), flags, None).is_ok() {
        return Ok(());
    }
    bind(Path::new("/sys"), sys, true)
}

/// Bind-mounts `source` at `target` (recursively), read-only if asked.
fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), Error> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::Mount {
        what: source.display().to_string(),
        target: target.to_path_buf(),
        source: os(e),
    })?;
    if readonly {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(|e| {
            Error::Mount {
                what: format!("{} read-only", source.display()),
                target: target.to_path_buf(),
                source: os(e),
            }
        })?;
    }
    Ok(())
}

/// `mount(2)` with the error naming what and where.
fn mount_legacy(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Error> {
    mount(source, target, fstype, flags, data).map_err(|e| Error::Mount {
        what: fstype.or(source).unwrap_or("propagation").to_string(),
        target: target.to_path_buf(),
        source: os(e),
    })
}

/// Makes `root` the process's `/` and detaches the old root.
fn pivot_into(root: &Path) -> Result<(), Error> {
    let pivot_failed = |e| Error::PivotRoot {
        root: root.to_path_buf(),
        source: os(e),
    };
    nix::unistd::chdir(root).map_err(pivot_failed)?;
    // pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
    // removes the old root without needing a directory for it inside the image.
    nix::unistd::pivot_root(".", ".").map_err(pivot_failed)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(pivot_failed)?;
    nix::unistd::chdir("/").map_err(pivot_failed)
}

fn create_dir(path: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|source| Error::Create {
            path: path.to_path_buf(),
            source,
        })
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    fs::write(path, contents).map_err(|source| Error::Create {
        path: path.to_path_buf(),
        source,
    })
}
