//! The step's cgroups: created under the runner's own cgroup (a rootless build's delegated
//! one, `crate::delegation`), limits written, removed after.
//!
//! Supports both layouts: v1 (one hierarchy per controller under `/sys/fs/cgroup/<ctrl>`,
//! as on hybrid machines) and v2 (unified /sys/fs/cgroup with cgroup.subtree_control).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::spec::Limits;
use crate::Error;

const ROOT: &str = "/sys/fs/cgroup";
/// CFS period used for CPU quotas (docker's default).
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroups of one running step.
#[derive(Debug)]
pub(crate) struct StepCgroup {
    layout: Layout,
    /// Every directory created, one per v1 controller or the single v2 one.
    dirs: Vec<PathBuf>,
    /// The directory holding the memory controller's files, if a memory limit is set.
    memory: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    V1,
    V2,
}

fn layout() -> Layout {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Layout::V2
    } else {
        Layout::V1
    }
}

/// A unique name for a step's cgroup in this process.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "rbuild-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn cgroup_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Cgroup {
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(cgroup_err(path))
}

/// The runner's own cgroup path for a v1 controller (`None` for the v2 entry).
fn own_path(controller: Option<&'static str>) -> Result<(String, String), Error> {
    let self_cgroup = Path::new("/proc/self/cgroup");
    let text = fs::read_to_string(self_cgroup).map_err(cgroup_err(self_cgroup))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let matches = match controller {
            None => controllers.is_empty(),
            Some(wanted) => controllers.split(',').any(|c| c == wanted),
        };
        if matches {
            return Ok((controllers.to_string(), path.to_string()));
        }
    }
    Err(Error::NoController {
        controller: controller.unwrap_or("unified"),
    })
}

impl StepCgroup {
    /// Creates the step's cgroups and writes `limits`; `None` when there is nothing to limit.
    pub(crate) fn create(limits: &Limits) -> Result<Option<StepCgroup>, Error> {
        if limits.is_unlimited() {
            return Ok(None);
        }
        let name = unique_name();
        match layout() {
            Layout::V1 => Self::create_v1(limits, &name).map(Some),
            Layout::V2 => Self::create_v2(limits, &name).map(Some),
        }
    }

    fn create_v1(limits: &Limits, name: &str) -> Result<StepCgroup, Error> {
        let mut cgroup = StepCgroup {
            layout: Layout::V1,
            dirs: Vec::new(),
            memory: None,
        };
        let mut wanted: Vec<&'static str> = Vec::new();
        if limits.wants_memory() {
            wanted.push("memory");
        }
        if limits.wants_cpu() {
            wanted.push("cpu");
        }
        if limits.wants_cpuset() {
            wanted.push("cpuset");
        }
        if limits.pids.is_some() {
            wanted.push("pids");
        }
        for controller in wanted {
            let (mount, own) =
                own_path(Some(controller)).map_err(|_| Error::NoController { controller })?;
            let mut base = Path::new(ROOT).join(&mount);
            if !base.exists() {
                base = Path::new(ROOT).join(controller);
            }
            if !base.exists() {
                return Err(Error::NoController { controller });
            }
            let parent = base.join(own.trim_start_matches('/'));
            sweep_stale(Layout::V1, &parent);
            let dir = parent.join(name);
            fs::create_dir(&dir).map_err(cgroup_err(&dir))?;
            // Registered first, so a failed limit still removes the directory.
            cgroup.dirs.push(dir.clone());
            match controller {
                "memory" => {
                    if let Some(bytes) = limits.memory {
                        write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    }
                    // docker's --memory-swap: memory plus swap (-1 unlimited); without it,
                    // no swap on top of the limit, where swap is accounted.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    let swap = match (limits.memory_swap, limits.memory) {
                        (Some(total), _) => Some(total.to_string()),
                        (None, Some(bytes)) => Some(bytes.to_string()),
                        (None, None) => None,
                    };
                    if let (Some(value), true) = (swap, memsw.exists()) {
                        write(&memsw, &value)?;
                    }
                    cgroup.memory = Some(dir);
                }
                "cpu" => {
                    let period = limits.cpu_period.unwrap_or(CPU_PERIOD_US);
                    if limits.cpu_period.is_some() || limits.cpu_quota.is_some() {
                        write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    }
                    if let Some(cpus) = limits.cpu_quota {
                        let quota = (cpus * period as f64).round().max(1000.0) as u64;
                        write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    }
                    if let Some(shares) = limits.cpu_shares {
                        write(&dir.join("cpu.shares"), &shares.to_string())?;
                    }
                }
                "cpuset" => {
                    // A new v1 cpuset is empty: it takes the parent's CPUs and nodes unless
                    // the step names its own, and must have both before a task joins.
                    for (file, value) in [
                        ("cpuset.cpus", &limits.cpuset_cpus),
                        ("cpuset.mems", &limits.cpuset_mems),
                    ] {
                        let value = match value {
                            Some(v) => v.clone(),
                            None => fs::read_to_string(parent.join(file))
                                .map_err(cgroup_err(&parent.join(file)))?
                                .trim()
                                .to_string(),
                        };
                        write(&dir.join(file), &value)?;
                    }
                }
                _ => {
                    if let Some(pids) = limits.pids {
                        write(&dir.join("pids.max"), &pids.to_string())?;
                    }
                }
            }
        }
        Ok(cgroup)
    }

    fn create_v2(limits: &Limits, name: &str) -> Result<StepCgroup, Error> {
        // A rootless build's steps go in the subtree delegated to it, beside the leaf the
        // build moved into ([`crate::delegation`]).
        let own = match crate::delegation::delegated_parent() {
            Some(delegated) => delegated.to_path_buf(),
            None => Path::new(ROOT).join(own_path(None)?.1.trim_start_matches('/')),
        };
        let available_file = Path::new(ROOT).join("cgroup.controllers");
        let available = fs::read_to_string(&available_file).map_err(cgroup_err(&available_file))?;
        let mut enable = Vec::new();
        for (wanted, controller) in [
            (limits.wants_memory(), "memory"),
            (limits.wants_cpu(), "cpu"),
            (limits.wants_cpuset(), "cpuset"),
            (limits.pids.is_some(), "pids"),
        ] {
            if wanted {
                if !available.split_whitespace().any(|c| c == controller) {
                    return Err(Error::NoController { controller });
                }
                enable.push(format!("+{controller}"));
            }
        }
        let parent = v2_parent(&own, &enable.join(" "))?;
        sweep_stale(Layout::V2, &parent);
        let dir = parent.join(name);
        fs::create_dir(&dir).map_err(cgroup_err(&dir))?;
        let mut cgroup = StepCgroup {
            layout: Layout::V2,
            dirs: vec![dir.clone()],
            memory: None,
        };
        if let Some(bytes) = limits.memory {
            write(&dir.join("memory.max"), &bytes.to_string())?;
        }
        if limits.wants_memory() {
            // v2 limits swap alone: docker's memory+swap total minus the memory limit.
            let swap_max = match (limits.memory_swap, limits.memory) {
                (Some(total), _) if total < 0 => "max".to_string(),
                (Some(total), Some(bytes)) => (total as u64).saturating_sub(bytes).to_string(),
                (Some(total), None) => total.to_string(),
                (None, _) => "0".to_string(),
            };
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, &swap_max)?;
            }
            cgroup.memory = Some(dir.clone());
        }
        let period = limits.cpu_period.unwrap_or(CPU_PERIOD_US);
        if let Some(cpus) = limits.cpu_quota {
            let quota = (cpus * period as f64).round().max(1000.0) as u64;
            write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        } else if limits.cpu_period.is_some() {
            write(&dir.join("cpu.max"), &format!("max {period}"))?;
        }
        if let Some(shares) = limits.cpu_shares {
            // runc's conversion of shares (2..262144) to a weight (1..10000).
            let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
            write(&dir.join("cpu.weight"), &weight.to_string())?;
        }
        if let Some(cpus) = &limits.cpuset_cpus {
            write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = &limits.cpuset_mems {
            write(&dir.join("cpuset.mems"), mems)?;
        }
        if let Some(pids) = limits.pids {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(cgroup)
    }

    /// The `cgroup.procs` files the init must join.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether the kernel's OOM killer killed a process of this step.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory else {
            return false;
        };
        let (file, key) = match self.layout {
            Layout::V1 => ("memory.oom_control", "oom_kill"),
            Layout::V2 => ("memory.events", "oom_kill"),
        };
        let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(key)
                && words
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
                    > 0
        })
    }

    /// Kills whatever is left in the step's cgroups and removes them.
    pub(crate) fn destroy(self) -> Result<(), Error> {
        let mut first_error = None;
        for dir in &self.dirs {
            if let Err(err) = remove(self.layout, dir) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Creates and removes a step cgroup with `limits`: whether steps can get them here (a
/// container's read-only or foreign `/sys/fs/cgroup` cannot). Nothing to limit is `Ok`.
pub fn trial_limits(limits: &Limits) -> Result<(), Error> {
    match StepCgroup::create(limits)? {
        Some(cgroup) => cgroup.destroy(),
        None => Ok(()),
    }
}

/// Where v2 step cgroups go. The "no internal processes" rule lets a cgroup enable
/// controllers for its children only while it has no processes of its own (the root is
/// exempt), so the runner's own cgroup works only when it is the root or a delegated,
/// empty parent; otherwise the steps go under a shared `rbuild` cgroup below the root.
fn v2_parent(own: &Path, enable: &str) -> Result<PathBuf, Error> {
    if fs::write(own.join("cgroup.subtree_control"), enable).is_ok() {
        return Ok(own.to_path_buf());
    }
    let root = Path::new(ROOT);
    write(&root.join("cgroup.subtree_control"), enable)?;
    let shared = root.join("rbuild");
    match fs::create_dir(&shared) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(cgroup_err(&shared)(err)),
    }
    write(&shared.join("cgroup.subtree_control"), enable)?;
    Ok(shared)
}

/// Removes the cgroups of runners that were killed before they could clean up
/// (`rbuild-<pid>-<n>` whose pid is gone). Best effort: a failure leaves an empty cgroup.
fn sweep_stale(layout: Layout, parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("rbuild-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = remove(layout, &entry.path());
        }
    }
}

fn remove(layout: Layout, dir: &Path) -> Result<(), Error> {
    let kill = dir.join("cgroup.kill");
    if layout == Layout::V2 && kill.exists() {
        let _ = fs::write(&kill, "1");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a pid read from the step's own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if Instant::now() >= deadline => return Err(cgroup_err(dir)(err)),
            // Killed processes leave the cgroup asynchronously; poll until it is empty.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
