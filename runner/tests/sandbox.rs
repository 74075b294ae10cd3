//! Runner tests against real namespaces, overlayfs and cgroups. `harness = false`: this
//! binary is also the sandbox's init (argv[1] == INIT_ARG), like the `rbuild` binary.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use rbuild_runner::{ExitStatus, Sandbox, SandboxSpec, Stream};

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

fn sees_only_its_rootfs() -> TestResult {
    let step = Step::new();
    let mut spec = step.spec(
        "hostname; cat /etc/hostname; echo pid=$$; ls /; ls /proc | grep -c '^[0-9]' ; test -e /work && echo HOSTWORK; cat /etc/hosts",
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
    check!(out.stdout.contains("steppy"), "/etc/hosts {:?}", out.stdout);
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

type Test = (&'static str, fn() -> TestResult);

const TESTS: &[Test] = &[
    ("exit_code_and_output_stream", exit_code_and_output_stream),
    ("writes_land_in_upper_only", writes_land_in_upper_only),
    ("deletion_becomes_whiteout", deletion_becomes_whiteout),
    ("sees_only_its_rootfs", sees_only_its_rootfs),
];

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(rbuild_runner::INIT_ARG))
    {
        return ExitCode::from(rbuild_runner::sandbox_init_main());
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
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
