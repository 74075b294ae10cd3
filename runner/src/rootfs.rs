//! The sandbox's root filesystem: overlay (or a bound copied root), /proc, /dev, /sys, /etc
//! files, extra mounts, pivot.
//!
//! Runs in PID 1 of the new namespaces, so every mount lives in the sandbox's own mount
//! namespace and disappears with it. Mountpoints the image lacks (`/proc`, `/etc/hosts`,
//! an extra mount's target) come from a stub layer the runner puts at the bottom of the
//! overlay stack, on a tmpfs: mounting over a lower's entry never copies it up, so the
//! upper dir only ever holds what the command wrote.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rustix::fs::{Mode as FsMode, OFlags, ResolveFlags};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags,
    MountAttrFlags, MoveMountFlags,
};

use crate::error::os;
use crate::spec::{default_hosts, host_resolv_conf, ExtraMount, RootKind, SandboxSpec, MAX_LOWERS};
use crate::Error;

/// Host device nodes bound into the sandbox's /dev.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the root filesystem for `spec` and pivots into it; the caller is then at `/`.
/// `legacy_overlay` forces the `mount(2)` path that kernels before 6.8 need.
pub(crate) fn enter(
    spec: &SandboxSpec,
    legacy_overlay: bool,
    userxattr: bool,
) -> Result<(), Error> {
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

    match spec.root {
        RootKind::Overlay => {
            align_upper_root(spec)?;
            let mut lowers: Vec<&Path> = spec.lowers.iter().map(PathBuf::as_path).collect();
            lowers.push(&stubs);
            let mounted = !legacy_overlay
                && mount_overlay(&lowers, &spec.upper, &ovl_work, &root, userxattr)?;
            if !mounted {
                mount_overlay_legacy(&lowers, &spec.upper, &ovl_work, &root, userxattr)?;
            }
        }
        // The copying snapshotter's root, whose mountpoints the runner made beforehand
        // (`crate::mountpoints`): bound as it is, nodev as the overlay would be.
        RootKind::Copied => bind_copied_root(&spec.upper, &root)?,
    }

    // Every target below is resolved inside the new root first: a symlink in the image
    // (`/proc -> /`, `/etc/hosts -> /etc/shadow`) must not send a mount outside it.
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc = resolve_in_root(&root, "/proc")?;
    if mount_legacy(Some("proc"), &proc, Some("proc"), nosuid_nodev_noexec, None).is_err() {
        // A container's masked /proc paths forbid a fresh procfs in a user namespace; a
        // recursive bind of the container's own works (it shows the container's pids).
        bind(Path::new("/proc"), &proc, false)?;
    }
    mount_dev(&resolve_in_root(&root, "/dev")?, spec.shm_size)?;
    let sys = resolve_in_root(&root, "/sys")?;
    mount_sys(&sys)?;
    mount_cgroups(&sys);
    protect_kernel_files(&proc, &sys)?;
    for name in ETC_FILES {
        let target = resolve_in_root(&root, &format!("/etc/{name}"))?;
        bind(&files.join(name), &target, false)?;
    }
    for extra in &spec.mounts {
        let target = resolve_in_root(&root, extra.target())?;
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

/// Binds the copied root `upper` at `root`, `nodev` (device nodes a step makes stay
/// inert), keeping the flags the mount below already has (locked in a user namespace).
fn bind_copied_root(upper: &Path, root: &Path) -> Result<(), Error> {
    mount(
        Some(upper),
        root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::Mount {
        what: format!("copied root {}", upper.display()),
        target: root.to_path_buf(),
        source: os(e),
    })?;
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NODEV | locked_flags(root);
    mount(None::<&str>, root, None::<&str>, flags, None::<&str>).map_err(|e| Error::Mount {
        what: format!("copied root {} nodev", upper.display()),
        target: root.to_path_buf(),
        source: os(e),
    })
}

/// The merged root directory takes its mode and owner from the upper dir, so the upper dir
/// gets the image's (the top-most lower's; `0755 root` for `FROM scratch`). A `0700` upper
/// dir, as temp-dir helpers make, would otherwise lock every non-root user out of `/`.
fn align_upper_root(spec: &SandboxSpec) -> Result<(), Error> {
    let (mode, uid, gid) = match spec.lowers.first() {
        Some(top) => {
            let meta = fs::metadata(top).map_err(|source| Error::Create {
                path: top.clone(),
                source,
            })?;
            (meta.mode() & 0o7777, meta.uid(), meta.gid())
        }
        None => (0o755, 0, 0),
    };
    let failed = |source: io::Error| Error::Create {
        path: spec.upper.clone(),
        source,
    };
    fs::set_permissions(&spec.upper, fs::Permissions::from_mode(mode)).map_err(failed)?;
    std::os::unix::fs::chown(&spec.upper, Some(uid), Some(gid)).map_err(failed)
}

/// The files bound over /etc.
pub(crate) const ETC_FILES: [&str; 3] = ["hosts", "resolv.conf", "hostname"];

/// The files bound over /etc, by name and contents.
fn etc_files(spec: &SandboxSpec) -> [(&'static str, String); 3] {
    [
        (
            "hosts",
            spec.hosts
                .clone()
                .unwrap_or_else(|| default_hosts(&spec.hostname)),
        ),
        (
            "resolv.conf",
            spec.resolv_conf.clone().unwrap_or_else(host_resolv_conf),
        ),
        ("hostname", format!("{}\n", spec.hostname)),
    ]
}

/// The real path of the absolute sandbox path `target`, following the image's symlinks as
/// if `root` were `/` (`openat2` with `RESOLVE_IN_ROOT`). Nothing in the sandbox runs yet,
/// so the path cannot change between this lookup and the mount.
fn resolve_in_root(root: &Path, target: &str) -> Result<PathBuf, Error> {
    let failed = |source: io::Error| Error::Resolve {
        path: target.to_string(),
        root: root.to_path_buf(),
        source,
    };
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        FsMode::empty(),
    )
    .map_err(|e| failed(e.into()))?;
    let fd = match rustix::fs::openat2(
        &root_fd,
        target.trim_start_matches('/'),
        OFlags::PATH | OFlags::CLOEXEC,
        FsMode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // Before Linux 5.6: no openat2, so symlinks on the way are refused instead.
        Err(rustix::io::Errno::NOSYS) => return resolve_without_symlinks(root, target),
        Err(err) => return Err(failed(err.into())),
    };
    let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(failed)?;
    if real.starts_with(root) {
        Ok(real)
    } else {
        // Not reachable with RESOLVE_IN_ROOT; kept as the invariant the mounts rely on.
        Err(failed(io::Error::from_raw_os_error(libc::EXDEV)))
    }
}

/// [`resolve_in_root`] for kernels without `openat2`: `target` must not pass a symlink.
fn resolve_without_symlinks(root: &Path, target: &str) -> Result<PathBuf, Error> {
    let mut path = root.to_path_buf();
    for component in target.split('/').filter(|c| !c.is_empty()) {
        path.push(component);
        let is_link = fs::symlink_metadata(&path).map(|m| m.file_type().is_symlink());
        match is_link {
            Ok(false) => {}
            Ok(true) => {
                return Err(Error::Resolve {
                    path: target.to_string(),
                    root: root.to_path_buf(),
                    source: io::Error::from_raw_os_error(libc::ELOOP),
                })
            }
            Err(source) => {
                return Err(Error::Resolve {
                    path: target.to_string(),
                    root: root.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(path)
}

/// A path inside the new root for an absolute sandbox path.
fn inside(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

/// Every path the runner mounts on, with whether it is a file: what the stub layer holds
/// for an overlay root, and what [`crate::mountpoints`] makes in a copied one.
pub(crate) fn mount_targets(spec: &SandboxSpec) -> Vec<(String, bool)> {
    let mut targets: Vec<(String, bool)> = ["/proc", "/dev", "/sys"]
        .iter()
        .map(|dir| (dir.to_string(), false))
        .collect();
    targets.extend(ETC_FILES.iter().map(|name| (format!("/etc/{name}"), true)));
    for extra in &spec.mounts {
        let file = matches!(extra, ExtraMount::Bind { source, .. } if !source.is_dir());
        targets.push((extra.target().to_string(), file));
    }
    targets
}

/// Fills the stub layer with every mountpoint the runner will need.
fn write_stubs(spec: &SandboxSpec, stubs: &Path) -> Result<(), Error> {
    for (target, file) in mount_targets(spec) {
        let stub = inside(stubs, &target);
        if file {
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

/// Options that keep the upper dir a plain layer diff: no metadata-only copy-ups, no
/// redirects, no index or inode-number xattrs. With `userxattr` (a user namespace) the
/// kernel takes only `redirect_dir=nofollow`, which creates no redirect either.
/// `userxattr`: the overlay is mounted in a user namespace (rootless), where overlayfs
/// keeps its marks in `user.overlay.*` xattrs, the only ones it may write there.
pub(crate) fn overlay_options(userxattr: bool) -> [(&'static str, &'static str); 4] {
    let redirect = if userxattr { "nofollow" } else { "off" };
    [
        ("redirect_dir", redirect),
        ("index", "off"),
        ("metacopy", "off"),
        ("xino", "off"),
    ]
}

/// Mounts overlayfs with the new mount API: one `lowerdir+` per layer, so the stack is not
/// limited by the one-page option string of `mount(2)`. `Ok(false)` when the kernel has
/// no `lowerdir+` (before 6.8) or no `fsopen` (before 5.2).
fn mount_overlay(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
    userxattr: bool,
) -> Result<bool, Error> {
    let failed = |source: rustix::io::Errno| Error::Mount {
        what: "overlay".into(),
        target: target.to_path_buf(),
        source: source.into(),
    };
    let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fs) => fs,
        Err(rustix::io::Errno::NOSYS) => return Ok(false),
        Err(err) => return Err(failed(err)),
    };
    for (i, lower) in lowers.iter().enumerate() {
        let result = fsconfig_set_string(&fs, "lowerdir+", *lower);
        if i == 0 && result == Err(rustix::io::Errno::INVAL) {
            return Ok(false);
        }
        result.map_err(|source| Error::Mount {
            what: format!("overlay lower {}", lower.display()),
            target: target.to_path_buf(),
            source: source.into(),
        })?;
    }
    fsconfig_set_string(&fs, "upperdir", upper).map_err(|source| {
        if userxattr && source == rustix::io::Errno::INVAL {
            // A container's own overlay root cannot hold an overlay upper dir.
            return Error::OverlayUpperRefused {
                upper: upper.to_path_buf(),
            };
        }
        Error::Mount {
            what: format!("overlay upper {}", upper.display()),
            target: target.to_path_buf(),
            source: source.into(),
        }
    })?;
    fsconfig_set_string(&fs, "workdir", work).map_err(|source| Error::Mount {
        what: format!("overlay work dir {}", work.display()),
        target: target.to_path_buf(),
        source: source.into(),
    })?;
    // Keep the upper dir a plain layer diff: no metadata-only copy-ups, no redirects,
    // no index or inode-number xattrs.
    for (key, value) in overlay_options(userxattr) {
        fsconfig_set_string(&fs, key, value).map_err(|source| Error::Mount {
            what: format!("overlay option {key}={value}"),
            target: target.to_path_buf(),
            source: source.into(),
        })?;
    }
    if userxattr {
        rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(|source| Error::Mount {
            what: "overlay option userxattr".into(),
            target: target.to_path_buf(),
            source: source.into(),
        })?;
    }
    fsconfig_create(&fs).map_err(failed)?;
    // nodev: device nodes shipped in a layer or made with mknod in a step are inert; the
    // few a step needs are bind-mounted into /dev.
    let mnt = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(failed)?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(failed)?;
    Ok(true)
}

/// Mounts overlayfs with `mount(2)`, whose options are cut at one page. Every directory is
/// passed as the number of an `O_PATH` fd, resolved relative to `/proc/self/fd` (the cwd
/// during the mount): about 4 bytes a layer instead of ~100, so 500 layers fit.
fn mount_overlay_legacy(
    lowers: &[&Path],
    upper: &Path,
    work: &Path,
    target: &Path,
    userxattr: bool,
) -> Result<(), Error> {
    let open = |dir: &Path| {
        nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::Mount {
            what: format!("overlay layer {}", dir.display()),
            target: target.to_path_buf(),
            source: os(e),
        })
    };
    let lower_fds = lowers
        .iter()
        .map(|l| open(l))
        .collect::<Result<Vec<OwnedFd>, Error>>()?;
    let upper_fd = open(upper)?;
    let work_fd = open(work)?;
    let names: Vec<String> = lower_fds
        .iter()
        .map(|fd| fd.as_raw_fd().to_string())
        .collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        names.join(":"),
        upper_fd.as_raw_fd(),
        work_fd.as_raw_fd()
    );
    for (key, value) in overlay_options(userxattr) {
        data.push_str(&format!(",{key}={value}"));
    }
    if userxattr {
        data.push_str(",userxattr");
    }
    if data.len() >= 4096 {
        return Err(Error::TooManyLayers {
            count: lowers.len(),
            max: MAX_LOWERS,
        });
    }
    let failed = |e| Error::Mount {
        what: "overlay".into(),
        target: target.to_path_buf(),
        source: os(e),
    };
    let cwd = std::env::current_dir().map_err(|source| Error::Mount {
        what: "overlay".into(),
        target: target.to_path_buf(),
        source,
    })?;
    nix::unistd::chdir("/proc/self/fd").map_err(failed)?;
    let result = mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(data.as_str()),
    );
    nix::unistd::chdir(&cwd).map_err(failed)?;
    result.map_err(failed)
}

/// A minimal /dev: tmpfs, the host's basic device nodes, a private devpts, /dev/shm, links.
fn mount_dev(dev: &Path, shm_size: Option<u64>) -> Result<(), Error> {
    mount_legacy(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        // nodev: the bound host nodes are mounts of their own and keep working; nodes a
        // step makes with mknod here do not.
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
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
        Some(&format!(
            "mode=1777,size={}",
            shm_size.unwrap_or(DEFAULT_SHM_SIZE)
        )),
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

/// docker's default size of `/dev/shm`: 64 MiB.
const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// The step's own cgroups, read-only under `/sys/fs/cgroup` as docker shows them: the init
/// joined them before unsharing the cgroup namespace, so each hierarchy's root is the
/// step's cgroup and a RUN step reads its limits (`memory/memory.limit_in_bytes` on v1,
/// `memory.max` on v2). Best effort: a hierarchy the kernel will not mount is left out.
fn mount_cgroups(sys: &Path) {
    let base = sys.join("fs/cgroup");
    let Ok(own) = fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let v1: Vec<&str> = own
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .filter(|c| !c.is_empty())
        .collect();
    if v1.is_empty() {
        let _ = mount_legacy(Some("cgroup2"), &base, Some("cgroup2"), ro, None);
        return;
    }
    let writable = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if mount_legacy(
        Some("tmpfs"),
        &base,
        Some("tmpfs"),
        writable,
        Some("mode=755"),
    )
    .is_err()
    {
        return;
    }
    for controllers in v1 {
        let (dir, options) = match controllers.strip_prefix("name=") {
            Some(name) => (name.to_string(), format!("none,name={name}")),
            None => (controllers.to_string(), controllers.to_string()),
        };
        let target = base.join(&dir);
        if create_dir(&target).is_ok() {
            let _ = mount_legacy(Some("cgroup"), &target, Some("cgroup"), ro, Some(&options));
        }
    }
    let _ = mount_legacy(
        None,
        &base,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | ro,
        None,
    );
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

/// Parts of /proc that stay read-only (docker's list): a root step could otherwise write
/// host sysctls or `/proc/sysrq-trigger` without any capability.
const READONLY_PATHS: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// Files and directories of /proc hidden entirely (docker's list).
const MASKED_PROC_PATHS: [&str; 8] = [
    "acpi",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "scsi",
];

/// Directories of /sys hidden entirely (docker's list).
const MASKED_SYS_PATHS: [&str; 2] = ["firmware", "devices/virtual/powercap"];

/// Makes [`READONLY_PATHS`] read-only and hides the masked paths (files under /dev/null,
/// directories under an empty read-only tmpfs); paths this kernel lacks are skipped.
fn protect_kernel_files(proc: &Path, sys: &Path) -> Result<(), Error> {
    for rel in READONLY_PATHS {
        let path = proc.join(rel);
        if path.exists() {
            bind(&path, &path, true)?;
        }
    }
    let masked = MASKED_PROC_PATHS.iter().map(|rel| proc.join(rel));
    for path in masked.chain(MASKED_SYS_PATHS.iter().map(|rel| sys.join(rel))) {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => mount_legacy(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=555"),
            )?,
            Ok(_) => bind(Path::new("/dev/null"), &path, false)?,
            Err(_) => {}
        }
    }
    Ok(())
}

/// Bind-mounts `source` at `target` (recursively), read-only if asked.
/// The nosuid, nodev, noexec and atime flags of the mount at `path` (empty if unknown).
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(stat) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    let have = stat.flags();
    [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st, _)| have.contains(*st))
    .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms)
}

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
        // The flags the mount already has are kept: in a user namespace, a container's
        // locked nosuid/nodev/noexec cannot be dropped, and a remount without them fails.
        let flags =
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | locked_flags(target);
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
