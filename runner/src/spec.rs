//! The sandbox spec: everything the builder decides about one RUN step, serialisable for the init pipe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// docker's default `PATH` for a step whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One RUN step: root filesystem layers, the command and its environment, isolation and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Read-only layers of the root filesystem, top-most first. May be empty (`FROM scratch`).
    pub lowers: Vec<PathBuf>,
    /// The writable layer: everything the step changes lands here, as an overlayfs diff;
    /// with [`RootKind::Copied`], the whole root.
    pub upper: PathBuf,
    /// Whether `upper` is an overlay upper dir or a whole copied root (`FROM scratch` has
    /// no lowers either way, so the two are told apart here, not by `lowers`).
    #[serde(default)]
    pub root: RootKind,
    /// A scratch directory on the same filesystem as `upper`; the runner creates its
    /// overlay work dir and merged mountpoint inside it. Nothing in it is part of the layer.
    pub work: PathBuf,
    /// The command; `argv[0]` is looked up in the step's `PATH` unless it contains a `/`.
    pub argv: Vec<String>,
    /// The environment, `KEY=value` each.
    pub env: Vec<String>,
    /// Working directory inside the sandbox (created if missing, as runc does).
    pub cwd: String,
    /// The user the command runs as.
    pub user: User,
    /// Hostname of the sandbox (UTS namespace), also written to `/etc/hostname`.
    pub hostname: String,
    /// Network isolation.
    pub network: Network,
    /// Extra mounts (`RUN --mount=...`), applied in order after the standard ones.
    pub mounts: Vec<ExtraMount>,
    /// Resource limits enforced through cgroups.
    pub limits: Limits,
    /// Contents bound onto `/etc/hosts`; `None`: localhost and the hostname, as docker writes.
    pub hosts: Option<String>,
    /// Contents bound onto `/etc/resolv.conf`; `None`: the host's `/etc/resolv.conf`.
    pub resolv_conf: Option<String>,
    /// Size of the `/dev/shm` tmpfs in bytes; `None`: 64 MiB, as docker.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Resource limits (`setrlimit`) set before the command is executed.
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
}

/// What a step's `upper` dir is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootKind {
    /// An overlayfs upper dir over the lowers (and the runner's stub layer).
    #[default]
    Overlay,
    /// The whole root, materialised by a copying snapshotter: `lowers` is empty and no
    /// overlay is mounted; the namespaced runner binds it as the new root, chroot enters it.
    Copied,
}

/// One `setrlimit` of a step (`--ulimit nofile=1024:2048`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// docker's name of the resource: one of [`ULIMIT_NAMES`].
    pub name: String,
    /// Soft limit; `u64::MAX` is unlimited.
    pub soft: u64,
    /// Hard limit; `u64::MAX` is unlimited.
    pub hard: u64,
}

/// The resources `--ulimit` knows, by docker's names.
pub const ULIMIT_NAMES: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl Ulimit {
    /// The kernel's resource number for [`Ulimit::name`].
    pub fn resource(&self) -> Option<libc::__rlimit_resource_t> {
        Some(match self.name.as_str() {
            "as" => libc::RLIMIT_AS,
            "core" => libc::RLIMIT_CORE,
            "cpu" => libc::RLIMIT_CPU,
            "data" => libc::RLIMIT_DATA,
            "fsize" => libc::RLIMIT_FSIZE,
            "locks" => libc::RLIMIT_LOCKS,
            "memlock" => libc::RLIMIT_MEMLOCK,
            "msgqueue" => libc::RLIMIT_MSGQUEUE,
            "nice" => libc::RLIMIT_NICE,
            "nofile" => libc::RLIMIT_NOFILE,
            "nproc" => libc::RLIMIT_NPROC,
            "rss" => libc::RLIMIT_RSS,
            "rtprio" => libc::RLIMIT_RTPRIO,
            "rttime" => libc::RLIMIT_RTTIME,
            "sigpending" => libc::RLIMIT_SIGPENDING,
            "stack" => libc::RLIMIT_STACK,
            _ => return None,
        })
    }
}

/// The identity a step runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
}

/// Network isolation of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace (BuildKit's default for RUN).
    #[default]
    Host,
    /// A fresh network namespace with only `lo`, brought up.
    None,
}

/// An extra mount for `RUN --mount=type=cache|bind|tmpfs|secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExtraMount {
    /// Bind a host file or directory at `target`.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path inside the sandbox.
        target: String,
        /// Mount read-only.
        readonly: bool,
    },
    /// A fresh tmpfs at `target`.
    Tmpfs {
        /// Absolute path inside the sandbox.
        target: String,
        /// Size limit in bytes (the kernel's default, half of RAM, if `None`).
        size: Option<u64>,
    },
}

impl ExtraMount {
    /// The absolute path inside the sandbox this mount covers.
    pub fn target(&self) -> &str {
        match self {
            ExtraMount::Bind { target, .. } | ExtraMount::Tmpfs { target, .. } => target,
        }
    }
}

/// Resource limits of a step; `None` means unlimited (or the kernel's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (no swap on top of it unless `memory_swap` says so).
    pub memory: Option<u64>,
    /// Memory plus swap in bytes (docker's `--memory-swap`); `-1`: unlimited swap.
    #[serde(default)]
    pub memory_swap: Option<i64>,
    /// CPU quota in CPUs (1.5 = one and a half cores), per `cpu_period`.
    pub cpu_quota: Option<f64>,
    /// CFS period in microseconds (default 100000, docker's).
    #[serde(default)]
    pub cpu_period: Option<u64>,
    /// Relative CPU weight, docker's shares (1024 is the default weight).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// CPUs the step may run on (`0-1`, `0,2`).
    #[serde(default)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the step may use (`0`).
    #[serde(default)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
}

impl Limits {
    /// True when no limit is set, so no cgroup is needed.
    pub fn is_unlimited(&self) -> bool {
        self == &Limits::default()
    }

    /// Whether the memory controller is needed.
    pub(crate) fn wants_memory(&self) -> bool {
        self.memory.is_some() || self.memory_swap.is_some()
    }

    /// Whether the cpu controller is needed.
    pub(crate) fn wants_cpu(&self) -> bool {
        self.cpu_quota.is_some() || self.cpu_period.is_some() || self.cpu_shares.is_some()
    }

    /// Whether the cpuset controller is needed.
    pub(crate) fn wants_cpuset(&self) -> bool {
        self.cpuset_cpus.is_some() || self.cpuset_mems.is_some()
    }
}

impl SandboxSpec {
    /// A spec with docker's defaults: root, `/`, default `PATH`, host network,
    /// hostname `rbuild`, a localhost `/etc/hosts` and the host's `/etc/resolv.conf`.
    /// Change the public fields for anything else.
    pub fn new(lowers: Vec<PathBuf>, upper: PathBuf, work: PathBuf, argv: Vec<String>) -> Self {
        SandboxSpec {
            lowers,
            upper,
            root: RootKind::Overlay,
            work,
            argv,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".to_string(),
            user: User::default(),
            hosts: None,
            hostname: "rbuild".to_string(),
            network: Network::Host,
            mounts: Vec::new(),
            limits: Limits::default(),
            resolv_conf: None,
            shm_size: None,
            ulimits: Vec::new(),
        }
    }

    /// Serialises the spec for the init pipe.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(Error::SpecEncode)
    }

    /// Reads a spec written by [`SandboxSpec::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(Error::SpecDecode)
    }

    /// Checks what the kernel would otherwise reject with a vague errno.
    pub fn validate(&self) -> Result<(), Error> {
        if self.argv.is_empty() {
            return Err(Error::EmptyCommand);
        }
        if self.root == RootKind::Copied && !self.lowers.is_empty() {
            return Err(Error::LowersOfCopiedRoot {
                count: self.lowers.len(),
            });
        }
        if self.lowers.len() > MAX_LOWERS {
            return Err(Error::TooManyLayers {
                count: self.lowers.len(),
                max: MAX_LOWERS,
            });
        }
        let dirs = self.lowers.iter().map(|l| ("lower", l));
        for (what, path) in dirs.chain([("upper", &self.upper), ("work", &self.work)]) {
            if !path.is_absolute() {
                return Err(Error::RelativePath {
                    what,
                    path: path.clone(),
                });
            }
        }
        if !self.cwd.starts_with('/') {
            return Err(Error::RelativeCwd {
                cwd: self.cwd.clone(),
            });
        }
        for ulimit in &self.ulimits {
            if ulimit.resource().is_none() || ulimit.soft > ulimit.hard {
                return Err(Error::BadUlimit {
                    name: ulimit.name.clone(),
                });
            }
        }
        for mount in &self.mounts {
            let target = mount.target();
            if !target.starts_with('/') || target.split('/').any(|c| c == "..") || target == "/" {
                return Err(Error::BadMountTarget {
                    target: target.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// overlayfs's stack limit (`OVL_MAX_STACK`), minus the runner's own stub layer.
pub const MAX_LOWERS: usize = 499;

/// The `/etc/hosts` docker writes for a build container.
pub fn default_hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// The host's `/etc/resolv.conf`, or public resolvers when it cannot be read.
pub fn host_resolv_conf() -> String {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_else(|_| "nameserver 8.8.8.8\nnameserver 8.8.4.4\n".to_string())
}
