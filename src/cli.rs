//! The command line surface: clap definitions for every command, parsed once in `main`.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use rbuild_store::Compression;

/// rbuild builds OCI images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(
    name = "rbuild",
    version,
    about = "Build OCI images from Dockerfiles, without a daemon",
    long_about = "Build OCI images from Dockerfiles, without a daemon.\n\n\
                  `rbuild -t NAME:TAG .` is short for `rbuild build -t NAME:TAG .`"
)]
pub struct Cli {
    /// Store root (default: /var/lib/rbuild for root, else $XDG_DATA_HOME/rbuild)
    #[arg(long, global = true, env = "RBUILD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Every rbuild command.
// Parsed once per process: the size of the build variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context
    Build(BuildArgs),
    /// Push an image from the store to a registry
    Push(PushArgs),
    /// Pull an image from a registry into the store
    Pull(PullArgs),
    /// List the images in the store
    Images(ImagesArgs),
    /// Show an image's manifest and config as JSON
    Inspect(InspectArgs),
    /// Show the steps an image was built with, newest first
    History(HistoryArgs),
    /// Give an image in the store another name
    Tag(TagArgs),
    /// Remove image names from the store
    Rmi(RmiArgs),
    /// Delete blobs, snapshots and cache records no image uses
    Prune(PruneArgs),
    /// Verify every blob and snapshot in the store
    Fsck(FsckArgs),
    /// Show the store's disk usage and what prune would reclaim
    Du(DuArgs),
    /// Store credentials for a registry in the docker config
    Login(LoginArgs),
    /// Remove stored credentials for a registry
    Logout(LogoutArgs),
    /// Write an image to a docker-archive or oci-archive tar file
    Save(SaveArgs),
    /// Read images from a docker-archive or oci-archive tar into the store
    Load(LoadArgs),
    /// Run a command in rbuild's user namespace, as `podman unshare` does: for a non-root
    /// user, files of the store owned by subordinate ids can be removed there
    Unshare(UnshareArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion(CompletionArgs),
    /// Print rbuild's man page, or write one page per command into a directory
    Man(ManArgs),
    /// Developer tools (parse dumps)
    #[command(hide = true, subcommand)]
    Debug(DebugCommand),
}

/// How build progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise
    Auto,
    /// Progress bars
    Tty,
    /// Plain line logs, as in CI
    Plain,
    /// Nothing but errors
    Quiet,
}

/// The values `--compression` takes, parsed into the store's one compression type.
fn compression_parser() -> impl clap::builder::TypedValueParser<Value = Compression> {
    clap::builder::PossibleValuesParser::new(["gzip", "zstd"])
        .try_map(|name| name.parse::<Compression>())
}

/// The store's layer compression for `compression` at `level` (its default when `None`);
/// a level out of the format's range is a usage error.
pub fn layer_compression(
    compression: Compression,
    level: Option<i32>,
) -> Result<rbuild_store::LayerCompression, crate::exit::UsageError> {
    rbuild_store::LayerCompression::new(compression, level)
        .map_err(|e| crate::exit::UsageError(format!("--compression-level: {e}")))
}

/// The manifest format an image is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// OCI manifest, config and layer media types, whatever the base image was
    Oci,
    /// Docker v2 schema 2 (for registries that take nothing else, e.g. old Harbor or Quay)
    Docker,
}

impl Format {
    /// The store's image format, checked against the layer compression: Docker schema2
    /// has no zstd layer type, so `--compression zstd --format docker` is a usage error.
    pub fn checked(
        self,
        compression: Compression,
    ) -> Result<rbuild_store::ImageFormat, crate::exit::UsageError> {
        match (self, compression) {
            (Format::Docker, Compression::Zstd) => Err(crate::exit::UsageError(
                "--compression zstd cannot be used with --format docker: Docker schema2 has \
                 no zstd layer media type (use --format oci, or gzip)"
                    .into(),
            )),
            (Format::Docker, _) => Ok(rbuild_store::ImageFormat::Docker),
            (Format::Oci, _) => Ok(rbuild_store::ImageFormat::Oci),
        }
    }
}

/// Flags shared by every command that talks to a registry.
#[derive(Debug, Clone, Args)]
pub struct RegistryFlags {
    /// Require HTTPS and verify certificates (loopback registries use plain HTTP by default)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: Option<bool>,
    /// Seconds a registry may stay silent (connecting, answering, or mid-body) before the
    /// request fails and is retried
    #[arg(long, value_name = "SECONDS", env = "RBUILD_REGISTRY_TIMEOUT", default_value_t = 120.0,
          value_parser = parse_timeout)]
    pub registry_timeout: f64,
    /// Attempts per registry request or blob transfer before giving up (each retry is logged)
    #[arg(long, value_name = "N", env = "RBUILD_REGISTRY_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub registry_attempts: u32,
}

/// A positive number of seconds, at most a day.
fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 86_400.0 => Ok(t),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// `rbuild build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (name:tag); may be given several times
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Dockerfile to use (default: CONTEXT/Dockerfile; - reads it from stdin)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build up to this stage
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Do not use the build cache
    #[arg(long)]
    pub no_cache: bool,
    /// Always pull base images again
    #[arg(long)]
    pub pull: bool,
    /// Push every tag after the build
    #[arg(long)]
    pub push: bool,
    /// Set an image label
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Write the image ID to this file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// How to show progress
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print only the image ID
    #[arg(short, long)]
    pub quiet: bool,
    /// Target platforms (os/arch[/variant]), comma-separated or repeated; several build an index
    #[arg(long = "platform", value_name = "PLATFORM[,PLATFORM...]")]
    pub platforms: Vec<String>,
    /// Network for RUN steps: default (host), host or none
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Secret for RUN --mount=type=secret (id=ID,src=PATH or id=ID,env=VAR)
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    pub secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: default ($SSH_AUTH_SOCK), ID=SOCKET or ID=KEY[,KEY]
    #[arg(long = "ssh", value_name = "default|ID=SOCKET|ID=KEY[,KEY]")]
    pub ssh: Vec<String>,
    /// Compression for --push: gzip or zstd
    #[arg(long, default_value = "gzip", value_parser = compression_parser())]
    pub compression: Compression,
    /// Compression level for --push (gzip 0-9, default 2; zstd 1-19, default 3)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,
    /// Manifest format for --push
    #[arg(long, value_enum, default_value = "oci")]
    pub format: Format,
    /// Add NAME IP to RUN steps' /etc/hosts (NAME:IP or NAME=IP; [v6] in brackets;
    /// host-gateway is 127.0.0.1, the host, since RUN shares its network)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// How RUN steps are isolated: auto (the strongest that works here), namespaces
    /// (root with CAP_SYS_ADMIN), rootless (not implemented yet) or chroot (no namespaces)
    #[arg(long, value_name = "MODE", env = "RBUILD_ISOLATION")]
    pub isolation: Option<String>,
    /// Size of RUN steps' /dev/shm (default 64m)
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Resource limit of RUN steps, as `ulimit` sets it (nofile=1024:2048, nproc=512, ...)
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Memory limit of RUN steps (e.g. 512m), through their cgroup
    #[arg(short = 'm', long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory plus swap of RUN steps (-1: unlimited swap); needs --memory
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// CPU time of RUN steps per --cpu-period, in microseconds
    #[arg(long, value_name = "MICROSECONDS")]
    pub cpu_quota: Option<u64>,
    /// CFS period of RUN steps, in microseconds (default 100000)
    #[arg(long, value_name = "MICROSECONDS")]
    pub cpu_period: Option<u64>,
    /// Relative CPU weight of RUN steps (1024 is the default)
    #[arg(long, value_name = "SHARES")]
    pub cpu_shares: Option<u64>,
    /// CPUs RUN steps may use (0-1, 0,2)
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes RUN steps may use (0, 0-1)
    #[arg(long, value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// cgroup limits of RUN steps as KEY=VALUE,...: memory, memory-swap, cpu-quota,
    /// cpu-period, cpu-shares, cpuset-cpus, cpuset-mems
    #[arg(long = "resource", value_name = "KEY=VALUE,...")]
    pub resources: Vec<String>,
    /// Export the image: type=local|tar|oci|docker|image|registry[,dest=..][,name=..]
    /// (several allowed); -o DIR is type=local, -o - a tar of the files on stdout
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Add an OCI annotation: KEY=VALUE or manifest:KEY=VALUE (the manifest),
    /// manifest-descriptor:KEY=VALUE (its descriptor), index:KEY=VALUE (the index.json of
    /// type=oci outputs)
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Accepted as docker does; rbuild has no daemon: the image is in the store already
    #[arg(long)]
    pub load: bool,
    /// Only run the build checks (BuildKit's Dockerfile lint rules) and build nothing;
    /// exits 1 when any check warns
    #[arg(long)]
    pub check: bool,
    /// Write the image's digests and names as JSON, with buildx's keys
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Export the build cache: type=registry,ref=REF[,mode=min|max][,compression=gzip|zstd]
    /// [,compression-level=N][,force-compression=true][,ignore-error=true],
    /// type=local,dest=DIR or type=inline (BuildKit's syntax)
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF")]
    pub cache_to: Vec<String>,
    /// Import a build cache: type=registry,ref=REF, type=local,src=DIR, or a bare REF
    /// (repeatable)
    #[arg(long = "cache-from", value_name = "REF")]
    pub cache_from: Vec<String>,
    /// A named context for FROM NAME and COPY --from=NAME (wins over a stage of that
    /// name): NAME=DIR, NAME=docker-image://REF, NAME=oci-layout://PATH[:TAG|@DIGEST] or
    /// NAME=https://HOST/CONTEXT.tar.gz (repeatable)
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_context: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Build context: a directory, - for a tar (or a lone Dockerfile) on stdin, or a git URL
    /// (https://host/repo.git#ref:subdir, git@host:repo.git, git://...)
    #[arg(value_name = "CONTEXT")]
    pub context: String,
}

/// `rbuild push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image to push (a name in the store)
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Destination, when it differs from IMAGE
    #[arg(value_name = "DESTINATION")]
    pub destination: Option<String>,
    /// Layer compression: gzip or zstd
    #[arg(long, default_value = "gzip", value_parser = compression_parser())]
    pub compression: Compression,
    /// Compression level (gzip 0-9, default 2; zstd 1-19, default 3)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,
    /// Manifest format
    #[arg(long, value_enum, default_value = "oci")]
    pub format: Format,
    /// How to show progress
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print only the pushed digest
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `rbuild pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference to pull
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Platform to pick from a multi-platform image (os/arch[/variant])
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// How to show progress
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Print only the image ID
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `rbuild images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print only image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full image IDs
    #[arg(long)]
    pub no_trunc: bool,
    /// Output: table, json (one object per line), or a template such as
    /// '{{.Repository}}:{{.Tag}}' (fields: Repository, Tag, ID, Digest, CreatedAt,
    /// CreatedSince, Size; 'table ...' adds a header)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// `rbuild inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images to inspect (name or ID)
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Output: json (the default), or a template over its keys such as '{{.id}}' or
    /// '{{json .config.Env}}'
    #[arg(short, long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// `rbuild history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Image (name or ID)
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Print only the IDs (<missing> for the steps below the image)
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate IDs and commands
    #[arg(long)]
    pub no_trunc: bool,
    /// Output: table, json (one object per line), or a template such as
    /// '{{.CreatedBy}}' (fields: ID, CreatedAt, CreatedSince, CreatedBy, Size, Comment)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// `rbuild tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image (name or ID)
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// New name
    #[arg(value_name = "TARGET")]
    pub target: String,
}

/// `rbuild rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image names (or IDs) to remove
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

/// `rbuild prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also drop the build cache
    #[arg(short, long)]
    pub all: bool,
    /// Drop build-cache records, oldest first, until the store takes at most SIZE (e.g. 10g)
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// The same as --keep-storage (buildx's newer name)
    #[arg(long, value_name = "SIZE")]
    pub max_used_space: Option<String>,
    /// Which build cache to drop: until=DURATION drops records older than it (24h, 90m,
    /// 1h30m, 45s)
    #[arg(long, value_name = "until=DURATION")]
    pub filter: Vec<String>,
}

/// `rbuild du`.
#[derive(Debug, Args)]
pub struct DuArgs {}

/// `rbuild fsck`.
#[derive(Debug, Args)]
pub struct FsckArgs {}

/// `rbuild login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (default: docker.io)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `rbuild logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host (default: docker.io)
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// Archive formats for `rbuild save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// docker-archive, as `docker save` writes and `docker load`/`podman load` read
    #[value(alias = "docker")]
    DockerArchive,
    /// oci-archive: an OCI image layout in a tar, with pure OCI manifests
    #[value(alias = "oci")]
    OciArchive,
}

/// `rbuild save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images to save
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Output file
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Archive format
    #[arg(long, value_enum, default_value = "docker-archive")]
    pub format: SaveFormat,
}

/// `rbuild load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive to read (docker-archive or oci-archive; default: stdin)
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print only the loaded image IDs
    #[arg(short, long)]
    pub quiet: bool,
}

/// `rbuild completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: `source <(rbuild completion bash)`, or save it where the shell loads
    /// completions (`~/.local/share/bash-completion/completions/rbuild`,
    /// `~/.config/fish/completions/rbuild.fish`, a `_rbuild` file on zsh's `$fpath`)
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `rbuild unshare`.
#[derive(Debug, Args)]
pub struct UnshareArgs {
    /// The command and its arguments (`rm -rf ~/.local/share/rbuild`)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// `rbuild man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write rbuild.1 and rbuild-COMMAND.1 for every command here instead of printing
    /// rbuild(1)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `rbuild debug ...`.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's AST in BuildKit's dump format
    Parse {
        /// Dockerfile to parse
        file: PathBuf,
    },
}

/// Inserts `build` when the first word after the global flags is not a command, so that
/// `rbuild -t name .` means `rbuild build -t name .`, as users type it.
pub fn insert_default_command(mut args: Vec<String>) -> Vec<String> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--root" {
            i += 2;
            continue;
        }
        if a.starts_with("--root=") {
            i += 1;
            continue;
        }
        break;
    }
    let Some(first) = args.get(i) else {
        return args;
    };
    let is_meta = matches!(
        first.as_str(),
        "-h" | "--help" | "-V" | "--version" | "help"
    );
    let is_command = <Cli as clap::CommandFactory>::command()
        .get_subcommands()
        .any(|c| c.get_name() == first);
    if !is_meta && !is_command {
        args.insert(i, "build".to_string());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn shorthand_becomes_build() {
        assert_eq!(
            insert_default_command(v("rbuild -t a:b .")),
            v("rbuild build -t a:b .")
        );
        assert_eq!(
            insert_default_command(v("rbuild --root /r .")),
            v("rbuild --root /r build .")
        );
        assert_eq!(
            insert_default_command(v("rbuild push x")),
            v("rbuild push x")
        );
        assert_eq!(
            insert_default_command(v("rbuild --help")),
            v("rbuild --help")
        );
        assert_eq!(insert_default_command(v("rbuild")), v("rbuild"));
        // Every command is known, from the clap definition itself.
        for cmd in [
            "du",
            "history",
            "load",
            "completion",
            "man",
            "debug",
            "help",
        ] {
            assert_eq!(
                insert_default_command(v(&format!("rbuild {cmd} x"))),
                v(&format!("rbuild {cmd} x"))
            );
        }
    }
}
