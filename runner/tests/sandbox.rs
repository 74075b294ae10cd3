//! Runner tests against real namespaces, overlayfs and cgroups. `harness = false`: this
//! binary is also the sandbox's init (argv[1] == INIT_ARG), like the `rbuild` binary.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use rbuild_runner::{
    ExitStatus, ExtraMount, Limits, Network, RootKind, Sandbox, SandboxSpec, Stream, User,
    DEFAULT_CAPABILITIES,
};

type TestResult = Result<(), String>;

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// A busybox root filesystem shared by all tests (read-only lower).
fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rbuild-runner-rootfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::create_dir_all(dir.join("tmp")).unwrap();
        fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                symlink("busybox", dir.join("bin").join(applet)).unwrap();
            }
        }
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        fs::write(dir.join("etc/motd"), "from the image\n").unwrap();
        dir
    })
}

/// One step's scratch: upper and work dirs, removed on drop.
struct Step {
    dir: tempfile::TempDir,
}

impl Step {
    fn new() -> Step {
        Step {
            dir: tempfile::Builder::new()
                .prefix("rbuild-runner-step")
                .tempdir()
                .unwrap(),
        }
    }
    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }
    fn spec(&self, script: &str) -> SandboxSpec {
        fs::create_dir_all(self.upper()).unwrap();
        fs::create_dir_all(self.dir.path().join("work")).unwrap();
        SandboxSpec::new(
            vec![busybox_rootfs().to_path_buf()],
            self.upper(),
            self.dir.path().join("work"),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    }
    /// Every path in the upper dir, relative, sorted.
    fn upper_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        walk(&self.upper(), &self.upper(), &mut paths);
        paths.sort();
        paths
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        out.push(path.strip_prefix(base).unwrap().display().to_string());
        if entry.file_type().unwrap().is_dir() {
            walk(base, &path, out);
        }
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run_with(sandbox: &Sandbox, spec: &SandboxSpec) -> Result<Output, rbuild_runner::Error> {
    let mut stdout = String::new();
    let mut stderr = String::new();
    let status = sandbox.run(spec, &mut |stream, line| {
        let text = String::from_utf8_lossy(line);
        match stream {
            Stream::Stdout => stdout.push_str(&text),
            Stream::Stderr => stderr.push_str(&text),
        }
    })?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn sandbox() -> Sandbox {
    Sandbox::with_init_exe(std::env::current_exe().unwrap())
}

fn run(spec: &SandboxSpec) -> Result<Output, String> {
    run_with(&sandbox(), spec).map_err(|e| error_chain(&e))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

// ---- tests ----

fn exit_code_and_output_stream() -> TestResult {
    let step = Step::new();
    let out = run(&step.spec("echo hello; echo oops >&2; echo world; exit 3"))?;
    check!(out.status.code == Some(3), "status {:?}", out.status);
    check!(out.stdout == "hello\nworld\n", "stdout {:?}", out.stdout);
    check!(out.stderr == "oops\n", "stderr {:?}", out.stderr);
    Ok(())
}

fn writes_land_in_upper_only() -> TestResult {
    let step = Step::new();
    let out =
        run(&step.spec("mkdir -p /opt/app && echo data > /opt/app/file && echo new > /etc/motd"))?;
    check!(
        out.status.success(),
        "status {:?} {}",
        out.status,
        out.stderr
    );
    let paths = step.upper_paths();
    check!(
        paths == ["etc", "etc/motd", "opt", "opt/app", "opt/app/file"],
        "upper holds {paths:?}"
    );
    check!(
        fs::read_to_string(step.upper().join("opt/app/file")).unwrap() == "data\n",
        "content"
    );
    check!(
        fs::read_to_string(busybox_rootfs().join("etc/motd")).unwrap() == "from the image\n",
        "the lower was modified"
    );
    Ok(())
}

fn deletion_becomes_whiteout() -> TestResult {
    let step = Step::new();
    let out = run(&step.spec("rm /etc/motd"))?;
    check!(
        out.status.success(),
        "status {:?} {}",
        out.status,
        out.stderr
    );
    let meta = fs::symlink_metadata(step.upper().join("etc/motd")).map_err(|e| e.to_string())?;
    check!(
        meta.file_type().is_char_device() && meta.rdev() == 0,
        "not a whiteout: {meta:?}"
    );
    check!(
        busybox_rootfs().join("etc/motd").exists(),
        "the lower lost the file"
    );
    Ok(())
}

fn dev_sys_and_proc_are_minimal_and_protected() -> TestResult {
    let step = Step::new();
    let out = run(&step.spec(
        "ls /dev | tr '\\n' ' '; echo; \
         echo x > /dev/null && echo null-ok; \
         head -c 16 /dev/urandom | wc -c; \
         test -c /dev/pts/ptmx && echo pts-ok; \
         echo x > /dev/shm/x && echo shm-ok; \
         touch /sys/x 2>/dev/null || echo sys-ro; \
         echo 1 > /proc/sys/vm/drop_caches 2>/dev/null || echo sysctl-ro; \
         wc -c < /proc/timer_list",
    ))?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    // This kernel has no /proc/kcore or /proc/sysrq-trigger; /proc/timer_list (7 KB on
    // the host) stands for the masked paths.
    let host_timer_list = fs::read("/proc/timer_list").map(|b| b.len()).unwrap_or(0);
    check!(host_timer_list > 0, "/proc/timer_list is empty on the host");
    check!(lines.len() == 8, "output {:?} {}", out.stdout, out.stderr);
    let dev: Vec<&str> = lines[0].split_whitespace().collect();
    let expected = [
        "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
        "urandom", "zero",
    ];
    check!(dev == expected, "/dev holds {dev:?}");
    check!(
        lines[1..7] == ["null-ok", "16", "pts-ok", "shm-ok", "sys-ro", "sysctl-ro"],
        "{lines:?}"
    );
    check!(
        lines[7].trim() == "0",
        "/proc/timer_list not masked: {:?}",
        lines[7]
    );
    Ok(())
}

fn concurrent_steps_stay_apart() -> TestResult {
    let steps: Vec<Step> = (0..4).map(|_| Step::new()).collect();
    let results: Vec<Result<Output, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mut spec = step.spec(&format!("echo {i} > /mine; ls /proc | grep -c '^[0-9]'"));
                spec.limits.pids = Some(50);
                scope.spawn(move || run(&spec))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (step, result)) in steps.iter().zip(results).enumerate() {
        let out = result?;
        check!(
            out.status.success(),
            "step {i}: {:?} {}",
            out.status,
            out.stderr
        );
        // PID 1, the shell, ls and grep: no process of another step is visible.
        check!(
            out.stdout.trim().parse::<u32>().is_ok_and(|n| n <= 4),
            "step {i} sees {:?} pids",
            out.stdout
        );
        let mine = fs::read_to_string(step.upper().join("mine")).unwrap_or_default();
        check!(mine == format!("{i}\n"), "step {i} wrote {mine:?}");
        check!(
            step.upper_paths() == ["mine"],
            "step {i} upper {:?}",
            step.upper_paths()
        );
    }
    Ok(())
}

fn image_symlinks_resolve_inside_the_root() -> TestResult {
    // An image whose mount targets are absolute symlinks: they must resolve in the image,
    // never on the host (where these paths do not exist).
    let image = tempfile::tempdir().unwrap();
    let unique = format!("rbuild-{}", std::process::id());
    fs::create_dir_all(image.path().join("etc")).unwrap();
    fs::create_dir_all(image.path().join(format!("srv/{unique}"))).unwrap();
    fs::write(image.path().join(format!("etc/{unique}-hosts")), "image\n").unwrap();
    symlink(
        format!("/etc/{unique}-hosts"),
        image.path().join("etc/hosts"),
    )
    .unwrap();
    symlink(format!("/srv/{unique}"), image.path().join("cache")).unwrap();
    check!(
        !Path::new("/etc").join(format!("{unique}-hosts")).exists(),
        "host has the target"
    );
    let step = Step::new();
    let cache = tempfile::tempdir().unwrap();
    let mut spec = step.spec("grep -c steppy /etc/hosts; echo c > /cache/c");
    spec.hostname = "steppy".into();
    spec.lowers.insert(0, image.path().to_path_buf());
    spec.mounts.push(ExtraMount::Bind {
        source: cache.path().to_path_buf(),
        target: "/cache".into(),
        readonly: false,
    });
    let out = run(&spec)?;
    check!(
        out.stdout == "1\n",
        "output {:?} {}",
        out.stdout,
        out.stderr
    );
    check!(
        fs::read_to_string(cache.path().join("c")).unwrap_or_default() == "c\n",
        "cache write lost"
    );
    check!(
        step.upper_paths().is_empty(),
        "upper holds {:?}",
        step.upper_paths()
    );
    Ok(())
}

fn upper_is_a_plain_diff() -> TestResult {
    let step = Step::new();
    let out = run(&step.spec(
        "echo x > /bin/newfile; rm /bin/true /bin/false; rm -rf /tmp; mkdir /tmp; echo y > /tmp/z",
    ))?;
    check!(
        out.status.success(),
        "status {:?} {}",
        out.status,
        out.stderr
    );
    let paths = step.upper_paths();
    check!(
        paths
            == [
                "bin",
                "bin/false",
                "bin/newfile",
                "bin/true",
                "tmp",
                "tmp/z"
            ],
        "upper holds {paths:?}"
    );
    for rel in ["bin/true", "bin/false"] {
        let meta = fs::symlink_metadata(step.upper().join(rel)).unwrap();
        check!(
            meta.file_type().is_char_device() && meta.rdev() == 0,
            "{rel} is no whiteout"
        );
        check!(
            meta.nlink() == 1,
            "{rel} shares its inode ({} links)",
            meta.nlink()
        );
    }
    let opaque = xattr::get(step.upper().join("tmp"), "trusted.overlay.opaque").unwrap();
    check!(
        opaque.as_deref() == Some(b"y".as_slice()),
        "/tmp is not opaque: {opaque:?}"
    );
    for rel in ["", "bin", "bin/newfile", "tmp", "tmp/z"] {
        let names: Vec<String> = xattr::list(step.upper().join(rel))
            .unwrap()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.starts_with("trusted.overlay.") && n != "trusted.overlay.opaque")
            .collect();
        check!(names.is_empty(), "{rel:?} keeps overlay xattrs {names:?}");
    }
    Ok(())
}

fn sees_only_its_rootfs() -> TestResult {
    let step = Step::new();
    let mut spec = step.spec(
        "hostname; cat /etc/hostname; echo pid=$$; ls /; ls /proc | grep -c '^[0-9]' ; test -e /work && echo HOSTWORK; grep -c steppy /etc/hosts",
    );
    spec.hostname = "steppy".into();
    let out = run(&spec)?;
    check!(
        out.status.success(),
        "status {:?} {}",
        out.status,
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    check!(
        lines[0] == "steppy" && lines[1] == "steppy",
        "hostname {:?}",
        out.stdout
    );
    // PID 1 is our init, the shell is its child.
    check!(lines[2] == "pid=2", "pid {:?}", lines[2]);
    check!(!out.stdout.contains("HOSTWORK"), "host's /work visible");
    check!(
        lines.last() == Some(&"1"),
        "/etc/hosts lacks the hostname: {:?}",
        out.stdout
    );
    let nprocs_line = lines.iter().rev().find(|l| l.parse::<u32>().is_ok());
    check!(
        nprocs_line.is_some_and(|n| n.parse::<u32>().unwrap() <= 4),
        "host pids visible: {}",
        out.stdout
    );
    check!(
        step.upper_paths().is_empty(),
        "stubs leaked into upper: {:?}",
        step.upper_paths()
    );
    Ok(())
}

fn host_mountinfo() -> Vec<String> {
    // Mount ids and the optional fields are stable; compare whole lines.
    let mut lines: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// A copied root (what the copying snapshotter gives a rootless step where overlayfs is
/// refused): bound as `/`, with the standard and extra mounts, and none of the mountpoints
/// the image lacks left in it afterwards.
fn copied_root_gets_the_mounts_and_keeps_no_mountpoint() -> TestResult {
    let step = Step::new();
    let mut spec = step.spec(
        "cat /proc/1/comm; test -c /dev/null && echo dev; grep -c localhost /etc/hosts; \
         echo t > /new/tmp/t; grep ' / ' /proc/self/mounts | grep -c nodev; echo w > /written",
    );
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", busybox_rootfs().display()))
        .arg(step.upper())
        .status()
        .map_err(|e| e.to_string())?;
    check!(copy.success(), "cp -a of the rootfs failed");
    spec.lowers.clear();
    spec.root = RootKind::Copied;
    spec.mounts.push(ExtraMount::Tmpfs {
        target: "/new/tmp".into(),
        size: None,
    });
    let before = host_mountinfo();
    let out = run(&spec)?;
    check!(
        out.status.success(),
        "status {:?} {}",
        out.status,
        out.stderr
    );
    check!(
        out.stdout == "rbuild:[pid1]\ndev\n2\n1\n",
        "the step saw {:?}",
        out.stdout
    );
    let mut expected: Vec<String> = {
        let mut image = Vec::new();
        walk(busybox_rootfs(), busybox_rootfs(), &mut image);
        image
    };
    expected.push("written".into());
    expected.sort();
    check!(
        step.upper_paths() == expected,
        "the root holds more than the image and the step's file: {:?}",
        step.upper_paths()
            .iter()
            .filter(|p| !expected.contains(p))
            .collect::<Vec<_>>()
    );
    check!(host_mountinfo() == before, "a mount was left on the host");
    spec.lowers.push(busybox_rootfs().to_path_buf());
    check!(
        run(&spec).is_err_and(|e| e.contains("a copied root takes no overlay lowers")),
        "a copied root with lowers is refused"
    );
    Ok(())
}

fn zero_lowers_from_scratch() -> TestResult {
    let step = Step::new();
    let mut spec = step.spec("");
    spec.lowers.clear();
    spec.mounts.push(ExtraMount::Bind {
        source: "/bin/busybox".into(),
        target: "/busybox".into(),
        readonly: true,
    });
    spec.argv = vec![
        "/busybox".into(),
        "sh".into(),
        "-c".into(),
        "/busybox ls -a / | /busybox tr '\\n' ' '; echo hi > /x".into(),
    ];
    let out = run(&spec)?;
    check!(
        out.status.success(),
        "status {:?} {}",
        out.status,
        out.stderr
    );
    check!(
        out.stdout.contains("busybox") && out.stdout.contains("proc"),
        "root {:?}",
        out.stdout
    );
    check!(
        step.upper_paths() == ["x"],
        "upper holds {:?}",
        step.upper_paths()
    );
    Ok(())
}

fn memory_limit_kills_with_oom() -> TestResult {
    let step = Step::new();
    // dd allocates its 200 MiB block buffer and fills it: far above 64 MiB.
    let mut spec = step.spec("dd if=/dev/zero of=/dev/null bs=200M count=1 && echo survived");
    spec.limits = Limits {
        memory: Some(64 << 20),
        ..Limits::default()
    };
    let out = run(&spec)?;
    check!(
        out.status.oom_killed,
        "not OOM-killed: {:?} {} {}",
        out.status,
        out.stdout,
        out.stderr
    );
    check!(
        out.status.code == Some(137),
        "dd was not killed: {:?}",
        out.status
    );
    check!(!out.stdout.contains("survived"), "dd survived");
    check!(
        out.status.to_string() == "out of memory (limit 64MiB)",
        "message {:?}",
        out.status.to_string()
    );
    // Without the limit the same step succeeds, so the limit is what killed it.
    let free = Step::new();
    let out =
        run(&free.spec("dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null && echo ok"))?;
    check!(
        out.status.success() && out.stdout == "ok\n",
        "unlimited run: {:?}",
        out.status
    );
    Ok(())
}

fn pids_limit_stops_forks() -> TestResult {
    let step = Step::new();
    // ash gives up on a failed fork, hence the subshell. Counting uses builtins only (no
    // fork is left once the limit is reached): every process but PID 1 and the shell.
    let script = "(i=0; while [ $i -lt 30 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; \
                  n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $((n-2))";
    let mut spec = step.spec(script);
    spec.limits = Limits {
        pids: Some(10),
        ..Limits::default()
    };
    let out = run(&spec)?;
    let count: u32 = out
        .stdout
        .trim()
        .parse()
        .map_err(|_| format!("output {:?} {}", out.stdout, out.stderr))?;
    // The init processes and the shell count too, so fewer than 10 sleeps fit.
    check!(
        count > 0 && count < 10,
        "{count} sleeps started under pids.max=10"
    );
    let free = Step::new();
    let out = run(&free.spec(script))?;
    check!(
        out.stdout.trim() == "30",
        "unlimited run started {:?}",
        out.stdout
    );
    Ok(())
}

fn capabilities_are_dockers_set() -> TestResult {
    let expected: u64 = DEFAULT_CAPABILITIES.iter().map(|c| 1u64 << c.index()).sum();
    let step = Step::new();
    let out = run(&step.spec("grep -E '^Cap(Eff|Prm|Bnd|Inh|Amb)' /proc/self/status; mount -t tmpfs none /tmp && echo MOUNTED; echo rc=$?"))?;
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    check!(
        field("CapEff") == Some(expected),
        "CapEff {:?} != {expected:016x}\n{}",
        field("CapEff"),
        out.stdout
    );
    check!(
        field("CapBnd") == Some(expected),
        "CapBnd {:?}",
        field("CapBnd")
    );
    check!(
        field("CapPrm") == Some(expected),
        "CapPrm {:?}",
        field("CapPrm")
    );
    check!(
        field("CapInh") == Some(0) && field("CapAmb") == Some(0),
        "{}",
        out.stdout
    );
    check!(
        !out.stdout.contains("MOUNTED"),
        "mount succeeded inside the sandbox"
    );
    check!(
        expected == 0xa80425fb,
        "docker's default set is 0xa80425fb, got {expected:x}"
    );
    Ok(())
}

fn runs_as_user_without_caps() -> TestResult {
    let step = Step::new();
    // A 0700 upper dir (as temp-dir helpers make) must not lock the user out of `/`.
    fs::create_dir_all(step.upper()).unwrap();
    fs::set_permissions(step.upper(), fs::Permissions::from_mode(0o700)).unwrap();
    let mut spec = step.spec("id -u; id -g; id -G; grep CapEff /proc/self/status; touch /etc/x 2>/dev/null || echo denied");
    spec.user = User {
        uid: 65534,
        gid: 65534,
        groups: vec![65534, 4242],
    };
    let out = run(&spec)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    check!(lines.len() >= 5, "output {:?} {}", out.stdout, out.stderr);
    check!(lines[0] == "65534" && lines[1] == "65534", "ids {lines:?}");
    check!(
        lines[2].split(' ').any(|g| g == "4242"),
        "groups {:?}",
        lines[2]
    );
    check!(
        lines[3].ends_with("0000000000000000"),
        "caps {:?}",
        lines[3]
    );
    check!(lines[4] == "denied", "nobody wrote to /etc");
    Ok(())
}

fn network_none_has_only_lo_up() -> TestResult {
    let step = Step::new();
    let mut spec = step.spec("ls /sys/class/net; ip link show lo");
    spec.network = Network::None;
    let out = run(&spec)?;
    check!(
        out.status.success(),
        "status {:?} {}",
        out.status,
        out.stderr
    );
    let first = out.stdout.lines().next().unwrap_or_default();
    check!(first == "lo", "interfaces {:?}", out.stdout);
    check!(out.stdout.contains(",UP"), "lo is down: {}", out.stdout);
    let host = Step::new();
    let out = run(&host.spec("ls /sys/class/net | wc -l"))?;
    check!(
        out.stdout.trim() != "1" || fs::read_dir("/sys/class/net").unwrap().count() == 1,
        "host network not shared"
    );
    Ok(())
}

fn extra_mounts_do_not_leak_into_upper() -> TestResult {
    let step = Step::new();
    let cache = tempfile::tempdir().unwrap();
    let secret = step.dir.path().join("secret");
    fs::write(&secret, "s3cret\n").unwrap();
    let mut spec = step.spec(
        "echo cached > /root/.cache/c; cat /run/secrets/token; echo t > /scratch/t; echo hi > /var/log/x 2>/dev/null; echo >> /run/secrets/token 2>/dev/null || echo ro",
    );
    spec.mounts = vec![
        ExtraMount::Bind {
            source: cache.path().to_path_buf(),
            target: "/root/.cache".into(),
            readonly: false,
        },
        ExtraMount::Bind {
            source: secret.clone(),
            target: "/run/secrets/token".into(),
            readonly: true,
        },
        ExtraMount::Tmpfs {
            target: "/scratch".into(),
            size: Some(1 << 20),
        },
    ];
    let out = run(&spec)?;
    check!(
        out.stdout == "s3cret\nro\n",
        "output {:?} {}",
        out.stdout,
        out.stderr
    );
    check!(
        fs::read_to_string(cache.path().join("c")).unwrap_or_default() == "cached\n",
        "cache write lost"
    );
    check!(
        step.upper_paths().is_empty(),
        "upper holds {:?}",
        step.upper_paths()
    );
    Ok(())
}

fn many_lowers_mount() -> TestResult {
    many_lowers(&sandbox())
}

/// The `mount(2)` path of kernels before 6.8, forced: 200 long paths would overflow its
/// one-page option string if they were passed as paths.
fn many_lowers_mount_legacy() -> TestResult {
    many_lowers(&sandbox().with_legacy_overlay(true))
}

fn many_lowers(sandbox: &Sandbox) -> TestResult {
    let layers = tempfile::tempdir().unwrap();
    let step = Step::new();
    let mut spec =
        step.spec("ls /layers | wc -l; cat /layers/top; rm /layers/0; echo new > /layers/new");
    let mut lowers = Vec::new();
    for i in 0..200 {
        // Long paths, like the store's snapshots/<64 hex>/fs.
        let dir = layers.path().join(format!("{i:064}")).join("fs");
        fs::create_dir_all(dir.join("layers")).unwrap();
        fs::write(dir.join("layers").join(i.to_string()), "").unwrap();
        fs::write(dir.join("layers/top"), format!("{i}\n")).unwrap();
        lowers.push(dir);
    }
    lowers.reverse(); // top-most first: layer 199 on top
    lowers.push(busybox_rootfs().to_path_buf());
    spec.lowers = lowers;
    let out = run_with(sandbox, &spec).map_err(|e| error_chain(&e))?;
    check!(
        out.stdout == "201\n199\n",
        "output {:?} {}",
        out.stdout,
        out.stderr
    );
    check!(
        step.upper_paths() == ["layers", "layers/0", "layers/new"],
        "upper holds {:?}",
        step.upper_paths()
    );
    let whiteout =
        fs::symlink_metadata(step.upper().join("layers/0")).map_err(|e| e.to_string())?;
    check!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "no whiteout"
    );
    Ok(())
}

fn setup_failure_is_an_error() -> TestResult {
    let step = Step::new();
    let mut spec = step.spec("");
    spec.argv = vec!["no-such-program".into()];
    match run_with(&sandbox(), &spec) {
        Err(err) => {
            let text = error_chain(&err);
            check!(text.contains("no-such-program"), "error {text}");
        }
        Ok(out) => return Err(format!("ran: {:?}", out.status)),
    }
    check!(
        step.upper_paths().is_empty(),
        "upper holds {:?}",
        step.upper_paths()
    );
    Ok(())
}

fn no_fds_leak_into_the_step() -> TestResult {
    // An fd the runner's process holds without close-on-exec must not reach the command.
    let leaked = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    check!(leaked > 2, "open failed");
    let step = Step::new();
    let out = run(&step.spec("ls /proc/self/fd | tr '\\n' ' '"));
    unsafe { libc::close(leaked) };
    let out = out?;
    // ls's own directory fd is 3.
    check!(out.stdout.trim() == "0 1 2 3", "fds {:?}", out.stdout);
    Ok(())
}

fn host_mounts_unchanged_after_success_and_failure() -> TestResult {
    let before = host_mountinfo();
    let step = Step::new();
    run(&step.spec("true"))?;
    let out = run(&step.spec("exit 7"))?;
    check!(out.status.code == Some(7), "status {:?}", out.status);
    let mut spec = step.spec("");
    spec.argv = vec!["/nonexistent".into()];
    check!(run(&spec).is_err(), "exec of a missing program succeeded");
    let mut spec = step.spec("true");
    spec.lowers.push("/nonexistent-layer".into());
    check!(run(&spec).is_err(), "a missing lower mounted");
    check!(host_mountinfo() == before, "host mounts changed");
    Ok(())
}

/// Cgroup directories (any v1 hierarchy or v2) whose name starts with `prefix`.
fn cgroups_named(prefix: &str) -> Vec<PathBuf> {
    fn visit(dir: &Path, prefix: &str, depth: u32, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                out.push(entry.path());
            } else if depth > 0 {
                visit(&entry.path(), prefix, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    visit(Path::new("/sys/fs/cgroup"), prefix, 4, &mut out);
    out
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

fn poll(what: &str, mut done: impl FnMut() -> bool) -> TestResult {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        if std::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

fn kill_of_runner_kills_step_and_leaves_no_mount() -> TestResult {
    let before = host_mountinfo();
    let step = Step::new();
    let marker = format!(
        "marker-{}-{}",
        std::process::id(),
        step.dir.path().display()
    );
    let mut spec = step.spec(&format!("touch /ready; sleep 1000; : {marker}"));
    spec.limits.pids = Some(100);
    let spec_file = step.dir.path().join("spec.json");
    fs::write(&spec_file, spec.to_json().unwrap()).unwrap();
    let mut runner = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(RUN_STEP_ARG)
        .arg(&spec_file)
        .spawn()
        .unwrap();
    let started = poll("the step to start", || step.upper().join("ready").exists());
    let visible = !processes_with(&marker).is_empty();
    let _ = runner.kill();
    let _ = runner.wait();
    started?;
    check!(visible, "step not visible");
    poll("the step's processes to die", || {
        processes_with(&marker).is_empty()
    })?;
    check!(host_mountinfo() == before, "host mounts changed");
    // The killed runner's cgroup is swept by the next step that needs one.
    let prefix = format!("rbuild-{}-", runner.id());
    check!(
        !cgroups_named(&prefix).is_empty(),
        "no cgroup was left to sweep"
    );
    let mut spec = step.spec("true");
    spec.limits.pids = Some(100);
    run(&spec)?;
    check!(
        cgroups_named(&prefix).is_empty(),
        "stale cgroups {:?}",
        cgroups_named(&prefix)
    );
    Ok(())
}

/// The pids of this process's children re-executed as sandbox init.
fn own_inits() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let parent = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(str::trim);
        let is_init = cmdline.split(|b| *b == 0).nth(1) == Some(rbuild_runner::INIT_ARG.as_bytes());
        if is_init && parent == Some(me.as_str()) {
            found.push(pid);
        }
    }
    found
}

fn sigterm_is_forwarded_to_the_command() -> TestResult {
    let step = Step::new();
    let spec =
        step.spec("trap 'echo got-term; exit 42' TERM; touch /ready; while :; do sleep 0.05; done");
    let ready = step.upper().join("ready");
    let out = std::thread::scope(|scope| {
        let handle = scope.spawn(|| run(&spec));
        let started = poll("the step to start", || ready.exists());
        for pid in own_inits() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let out = handle.join().unwrap();
        started.and(out)
    })?;
    check!(
        out.status.code == Some(42),
        "status {:?} {}",
        out.status,
        out.stderr
    );
    check!(out.stdout == "got-term\n", "stdout {:?}", out.stdout);
    Ok(())
}

/// The step's v1 cgroup dir of `controller`, or its v2 cgroup, while a step of this process runs.
fn step_cgroup(controller: &str) -> Option<PathBuf> {
    let prefix = format!("rbuild-{}-", std::process::id());
    cgroups_named(&prefix).into_iter().find(|dir| {
        let v1 = dir.starts_with(Path::new("/sys/fs/cgroup").join(controller));
        v1 || !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    })
}

fn cpu_quota_is_applied_to_the_step() -> TestResult {
    let step = Step::new();
    let ctl = tempfile::tempdir().unwrap();
    let mut spec =
        step.spec("touch /ctl/ready; while [ ! -e /ctl/go ]; do sleep 0.02; done; echo done");
    spec.mounts.push(ExtraMount::Bind {
        source: ctl.path().to_path_buf(),
        target: "/ctl".into(),
        readonly: false,
    });
    spec.limits.cpu_quota = Some(0.5);
    let (out, seen) = std::thread::scope(|scope| {
        let handle = scope.spawn(|| run(&spec));
        let started = poll("the step to start", || ctl.path().join("ready").exists());
        let seen = step_cgroup("cpu").map(|dir| {
            let v2 = dir.join("cpu.max").exists();
            let quota = if v2 {
                fs::read_to_string(dir.join("cpu.max")).unwrap_or_default()
            } else {
                fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap_or_default()
            };
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            (quota.trim().to_string(), procs.lines().count())
        });
        fs::write(ctl.path().join("go"), "").unwrap();
        let out = handle.join().unwrap();
        (started.and(out), seen)
    });
    let out = out?;
    check!(
        out.stdout == "done\n",
        "output {:?} {}",
        out.stdout,
        out.stderr
    );
    let Some((quota, procs)) = seen else {
        return Err("no step cgroup while the step ran".into());
    };
    check!(
        quota == "50000" || quota == "50000 100000",
        "quota {quota:?}"
    );
    // init, pid 1, the shell (and maybe a sleep).
    check!(procs >= 3, "{procs} processes in the step's cgroup");
    check!(step_cgroup("cpu").is_none(), "cgroup left behind");
    Ok(())
}

fn cancel_kills_the_step() -> TestResult {
    let before = host_mountinfo();
    let step = Step::new();
    let marker = format!("cancel-{}", step.dir.path().display());
    let spec = step.spec(&format!("touch /ready; sleep 1000; : {marker}"));
    let cancel = rbuild_runner::Cancel::new();
    let result = std::thread::scope(|scope| {
        let handle = scope.spawn(|| sandbox().run_cancellable(&spec, &mut |_, _| {}, &cancel));
        let started = poll("the step to start", || step.upper().join("ready").exists());
        cancel.cancel();
        started.map(|()| handle.join().unwrap())
    })?;
    check!(
        matches!(result, Err(rbuild_runner::Error::Cancelled)),
        "result {result:?}"
    );
    // PID 1 dies with the init (PR_SET_PDEATHSIG), asynchronously.
    poll("the step's processes to die", || {
        processes_with(&marker).is_empty()
    })?;
    check!(host_mountinfo() == before, "host mounts changed");
    // A cancelled handle stops the next step before it starts.
    let result = sandbox().run_cancellable(&step.spec("true"), &mut |_, _| {}, &cancel);
    check!(
        matches!(result, Err(rbuild_runner::Error::Cancelled)),
        "result {result:?}"
    );
    Ok(())
}

fn long_lines_are_cut() -> TestResult {
    let step = Step::new();
    let mut pieces = Vec::new();
    let status = sandbox()
        .run(
            &step.spec("head -c 200000 /dev/zero | tr '\\0' x; echo; echo end"),
            &mut |_, line| pieces.push(line.len()),
        )
        .map_err(|e| error_chain(&e))?;
    check!(status.success(), "status {status:?}");
    check!(
        pieces == [65536, 65536, 65536, 3393, 4],
        "pieces {pieces:?}"
    );
    Ok(())
}

/// Helper mode for the kill test and benchmarks: run the spec in file argv[2].
const RUN_STEP_ARG: &str = "run-step";

fn run_step_main(spec_file: &str) -> ExitCode {
    let spec = SandboxSpec::from_json(&fs::read(spec_file).unwrap()).unwrap();
    let mut out = std::io::stdout();
    match sandbox().run(&spec, &mut |_, line| {
        let _ = std::io::Write::write_all(&mut out, line);
    }) {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{status}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("{}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

type Test = (&'static str, fn() -> TestResult);

const TESTS: &[Test] = &[
    (
        "copied_root_gets_the_mounts_and_keeps_no_mountpoint",
        copied_root_gets_the_mounts_and_keeps_no_mountpoint,
    ),
    ("exit_code_and_output_stream", exit_code_and_output_stream),
    ("writes_land_in_upper_only", writes_land_in_upper_only),
    ("deletion_becomes_whiteout", deletion_becomes_whiteout),
    ("sees_only_its_rootfs", sees_only_its_rootfs),
    ("upper_is_a_plain_diff", upper_is_a_plain_diff),
    (
        "image_symlinks_resolve_inside_the_root",
        image_symlinks_resolve_inside_the_root,
    ),
    ("concurrent_steps_stay_apart", concurrent_steps_stay_apart),
    ("cancel_kills_the_step", cancel_kills_the_step),
    ("long_lines_are_cut", long_lines_are_cut),
    (
        "dev_sys_and_proc_are_minimal_and_protected",
        dev_sys_and_proc_are_minimal_and_protected,
    ),
    ("zero_lowers_from_scratch", zero_lowers_from_scratch),
    ("memory_limit_kills_with_oom", memory_limit_kills_with_oom),
    ("pids_limit_stops_forks", pids_limit_stops_forks),
    ("capabilities_are_dockers_set", capabilities_are_dockers_set),
    ("runs_as_user_without_caps", runs_as_user_without_caps),
    ("network_none_has_only_lo_up", network_none_has_only_lo_up),
    (
        "extra_mounts_do_not_leak_into_upper",
        extra_mounts_do_not_leak_into_upper,
    ),
    ("many_lowers_mount", many_lowers_mount),
    ("many_lowers_mount_legacy", many_lowers_mount_legacy),
    (
        "cpu_quota_is_applied_to_the_step",
        cpu_quota_is_applied_to_the_step,
    ),
    (
        "sigterm_is_forwarded_to_the_command",
        sigterm_is_forwarded_to_the_command,
    ),
    ("setup_failure_is_an_error", setup_failure_is_an_error),
    ("no_fds_leak_into_the_step", no_fds_leak_into_the_step),
    (
        "host_mounts_unchanged_after_success_and_failure",
        host_mounts_unchanged_after_success_and_failure,
    ),
    (
        "kill_of_runner_kills_step_and_leaves_no_mount",
        kill_of_runner_kills_step_and_leaves_no_mount,
    ),
];

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(rbuild_runner::INIT_ARG))
    {
        return ExitCode::from(rbuild_runner::sandbox_init_main());
    }
    if std::env::args().nth(1).as_deref() == Some(RUN_STEP_ARG) {
        return run_step_main(&std::env::args().nth(2).unwrap_or_default());
    }
    // libtest's flags are accepted and ignored (tests run one by one); the rest filter.
    let mut filter = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if [
            "--test-threads",
            "--skip",
            "--format",
            "--color",
            "--logfile",
            "-Z",
        ]
        .contains(&arg.as_str())
        {
            args.next();
        } else if !arg.starts_with('-') {
            filter.push(arg);
        }
    }
    let selected: Vec<_> = TESTS
        .iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in selected {
        match test() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(msg) => {
                failed += 1;
                println!("test {name} ... FAILED\n    {msg}");
            }
        }
    }
    let _ = fs::remove_dir_all(busybox_rootfs());
    println!("\n{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
