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
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the build variant does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// Give an image in the store another name
    Tag(TagArgs),
    /// Remove image names from the store
    Rmi(RmiArgs),
    /// Delete blobs, snapshots and cache records no image uses
    Prune(PruneArgs),
    /// Verify every blob and snapshot in the store
    Fsck(FsckArgs),
    /// Store credentials for a registry in the docker config
    Login(LoginArgs),
    /// Remove stored credentials for a registry
    Logout(LogoutArgs),
    /// Write an image to a docker-archive or oci-archive tar file
    Save(SaveArgs),
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

/// Flags shared by every command that talks to a registry.
#[derive(Debug, Clone, Args)]
pub struct RegistryFlags {
    /// Require HTTPS and verify certificates (loopback registries use plain HTTP by default)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: Option<bool>,
}

/// `rbuild build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (name:tag); may be given several times
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Dockerfile to use (default: CONTEXT/Dockerfile)
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
    /// Target platform (os/arch[/variant]) for base images
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Network for RUN steps: default (host), host or none
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// Secret for RUN --mount=type=secret (id=ID,src=PATH or id=ID,env=VAR)
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    pub secrets: Vec<String>,
    /// Compression for --push: gzip or zstd
    #[arg(long, default_value = "gzip", value_parser = compression_parser())]
    pub compression: Compression,
    /// Compression level for --push (gzip 0-9, default 2; zstd 1-19, default 3)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,
    /// Export the build cache: type=registry,ref=REF[,mode=min|max][,compression=gzip|zstd]
    /// [,compression-level=N][,force-compression=true][,ignore-error=true],
    /// type=local,dest=DIR or type=inline (BuildKit's syntax)
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF")]
    pub cache_to: Vec<String>,
    /// Import a build cache: type=registry,ref=REF, type=local,src=DIR, or a bare REF
    /// (repeatable)
    #[arg(long = "cache-from", value_name = "REF")]
    pub cache_from: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Build context: a directory, or - for a tar on stdin
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
}

/// `rbuild inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images to inspect (name or ID)
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
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
}

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
    DockerArchive,
    /// oci-archive: an OCI image layout in a tar
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

/// `rbuild debug ...`.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's AST in BuildKit's dump format
    Parse {
        /// Dockerfile to parse
        file: PathBuf,
    },
}

/// Names of the subcommands, for the `rbuild -t TAG CONTEXT` shorthand.
const SUBCOMMANDS: &[&str] = &[
    "build", "push", "pull", "images", "inspect", "tag", "rmi", "prune", "fsck", "login", "logout",
    "save", "debug", "help",
];

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
    let is_meta = matches!(first.as_str(), "-h" | "--help" | "-V" | "--version");
    if !is_meta && !SUBCOMMANDS.contains(&first.as_str()) {
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
    }
}
