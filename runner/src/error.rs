//! The runner's error type: one variant per step that can fail, in the runner or inside the sandbox.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while setting up or running a sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec has no command.
    #[error("the command to run is empty")]
    EmptyCommand,
    /// More lower layers than overlayfs can stack.
    #[error("{count} layers exceed overlayfs's limit of {max}")]
    TooManyLayers {
        /// Layers asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The working directory is relative.
    #[error("working directory {cwd:?} is not absolute")]
    RelativeCwd {
        /// The offending directory.
        cwd: String,
    },
    /// An extra mount's target is not a plain absolute path.
    #[error("mount target {target:?} must be an absolute path below /, without '..'")]
    BadMountTarget {
        /// The offending target.
        target: String,
    },
    /// A layer, upper or work directory is given as a relative path.
    #[error("{what} {path} is not an absolute path")]
    RelativePath {
        /// Which directory: `lower`, `upper` or `work`.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The spec could not be serialised.
    #[error("cannot encode the sandbox spec")]
    SpecEncode(#[source] serde_json::Error),
    /// The spec read by the init process is not valid.
    #[error("cannot decode the sandbox spec")]
    SpecDecode(#[source] serde_json::Error),
    /// Creating a pipe to the sandbox failed.
    #[error("cannot create a pipe to the sandbox")]
    Pipe(#[source] io::Error),
    /// Starting the sandbox child failed.
    #[error("cannot start the sandbox init {exe}")]
    Spawn {
        /// The binary re-executed as init.
        exe: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Talking to the sandbox over its pipes failed.
    #[error("cannot talk to the sandbox init")]
    Channel(#[source] io::Error),
    /// Waiting for the sandbox failed.
    #[error("cannot wait for the sandbox init")]
    Wait(#[source] io::Error),
    /// The init died without reporting the command's status.
    #[error("the sandbox init exited ({status}) without reporting the command's status")]
    InitDied {
        /// How the init ended.
        status: std::process::ExitStatus,
    },
    /// The step was stopped through its [`crate::Cancel`] handle.
    #[error("the step was cancelled")]
    Cancelled,
    /// A setup step inside the sandbox failed (reported by the init over the pipe).
    #[error("sandbox setup failed: {step}")]
    Setup {
        /// The step, e.g. `mount overlay at /x/root`.
        step: String,
        /// The OS error, when the step was a system call.
        #[source]
        source: Option<io::Error>,
    },
    /// Creating or writing a cgroup file failed.
    #[error("cannot set up cgroup {path}")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A limit needs a cgroup controller this machine does not have.
    #[error(
        "the {controller} cgroup controller is not available (needed for a {controller} limit)"
    )]
    NoController {
        /// Controller name: `memory`, `cpu` or `pids`.
        controller: &'static str,
    },
    /// Removing overlayfs's own traces from the upper dir after the step failed.
    #[error("cannot tidy the upper dir at {path}")]
    TidyUpper {
        /// The entry being tidied.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading the image's passwd or group file failed.
    #[error("cannot read {path}")]
    ReadUserDb {
        /// The file, in the layer it was found in.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A user name has no entry in the image's /etc/passwd.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// A group name has no entry in the image's /etc/group.
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup {
        /// The name.
        name: String,
    },
    // The steps below happen inside the sandbox; their Display is the step name sent to the runner.
    /// A `--ulimit` the kernel does not know, or whose soft limit is above its hard one.
    #[error("ulimit {name}: unknown resource or soft limit above the hard limit")]
    BadUlimit {
        /// docker's name of the resource.
        name: String,
    },
    /// `setrlimit` failed.
    #[error("setrlimit {name}")]
    Setrlimit {
        /// docker's name of the resource.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--isolation` named no mode rbuild has.
    #[error("unknown isolation {name:?} (expected auto, namespaces, rootless or chroot)")]
    UnknownIsolation {
        /// What was given.
        name: String,
    },
    /// The isolation asked for cannot work in this process.
    #[error("isolation {isolation} is not possible here: {why}")]
    IsolationUnavailable {
        /// The mode.
        isolation: crate::Isolation,
        /// What is missing and how to get it.
        why: String,
    },
    /// A tool rootless builds need is not installed.
    #[error("{tool} not found: install the uidmap package (apt-get install uidmap)")]
    RootlessTool {
        /// `newuidmap` or `newgidmap`.
        tool: &'static str,
    },
    /// Writing the user namespace's id maps failed.
    #[error("cannot write the user namespace's {what}")]
    IdMap {
        /// What was being written or run.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// newuidmap or newgidmap refused the mapping.
    #[error("{tool} refused the mapping: {stderr}")]
    IdMapRefused {
        /// The tool.
        tool: &'static str,
        /// What it said.
        stderr: String,
    },
    /// The store's filesystem refuses an overlay upper dir in a user namespace (a
    /// container's own overlay root filesystem).
    #[error(
        "the filesystem of {upper} cannot hold an overlay upper dir (a container's overlay \
         root?): put the store on a volume (--root, RBUILD_ROOT) or use --isolation chroot"
    )]
    OverlayUpperRefused {
        /// The upper dir.
        upper: PathBuf,
    },
    /// A spec whose root is a copy also named overlay lowers.
    #[error("a copied root takes no overlay lowers ({count} given): the copying snapshotter materialises the whole root in the upper dir")]
    LowersOfCopiedRoot {
        /// How many lowers the spec named.
        count: usize,
    },
    /// A step asked for something the chroot isolation cannot give.
    #[error("{what} is not possible with --isolation chroot")]
    NotInChroot {
        /// What was asked for.
        what: &'static str,
    },
    /// `chroot` into the step's root failed.
    #[error("chroot into {root}")]
    Chroot {
        /// The root.
        root: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `unshare` of the namespaces failed.
    #[error("unshare namespaces")]
    Unshare(#[source] io::Error),
    /// A `fork` inside the sandbox failed.
    #[error("fork {what}")]
    Fork {
        /// Which process was being created.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A mount failed.
    #[error("mount {what} at {target}")]
    Mount {
        /// What was being mounted (`overlay`, `proc`, a source path).
        what: String,
        /// The mountpoint.
        target: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A mount target could not be resolved inside the new root.
    #[error("resolve mount target {path} inside {root}")]
    Resolve {
        /// The target, as a path in the sandbox.
        path: String,
        /// The new root.
        root: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating a mountpoint, stub or /dev entry failed.
    #[error("create {path}")]
    Create {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `pivot_root` into the new root failed.
    #[error("pivot_root into {root}")]
    PivotRoot {
        /// The new root.
        root: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting the hostname failed.
    #[error("set hostname {hostname:?}")]
    Hostname {
        /// The hostname.
        hostname: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Bringing up the loopback interface failed.
    #[error("bring up lo")]
    Loopback(#[source] io::Error),
    /// Joining the step's cgroup failed.
    #[error("join cgroup {path}")]
    JoinCgroup {
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Changing to the working directory failed.
    #[error("change to working directory {cwd}")]
    Chdir {
        /// The directory.
        cwd: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Switching to the step's user failed.
    #[error("switch to uid {uid} gid {gid}")]
    SwitchUser {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Dropping capabilities failed.
    #[error("drop capabilities")]
    Capabilities(#[source] io::Error),
    /// Setting no_new_privs failed.
    #[error("set no_new_privs")]
    NoNewPrivs(#[source] io::Error),
    /// The command was not found in the sandbox.
    #[error("executable {name:?} not found in $PATH")]
    NotFound {
        /// `argv[0]`.
        name: String,
    },
    /// `execve` of the command failed.
    #[error("exec {path}")]
    Exec {
        /// The resolved program path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The errno to report over the pipe for a failure inside the sandbox (0 if none).
    pub(crate) fn errno(&self) -> i32 {
        let source: Option<&io::Error> = match self {
            Error::Unshare(e)
            | Error::Loopback(e)
            | Error::Capabilities(e)
            | Error::NoNewPrivs(e) => Some(e),
            Error::Fork { source, .. }
            | Error::Mount { source, .. }
            | Error::Create { source, .. }
            | Error::Resolve { source, .. }
            | Error::PivotRoot { source, .. }
            | Error::Hostname { source, .. }
            | Error::JoinCgroup { source, .. }
            | Error::Chdir { source, .. }
            | Error::SwitchUser { source, .. }
            | Error::Exec { source, .. }
            | Error::Chroot { source, .. } => Some(source),
            Error::NotFound { .. } => return libc::ENOENT,
            Error::OverlayUpperRefused { .. } => return libc::EINVAL,
            _ => None,
        };
        source.and_then(io::Error::raw_os_error).unwrap_or(0)
    }
}

/// Turns a nix errno into the `io::Error` kept in [`Error`]'s sources.
pub(crate) fn os(errno: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}
