//! Typed instructions: each AST node checked and turned into an [`Instruction`] with its
//! flags parsed. Words stay unexpanded; see [`crate::frontend`] for who expands what.

use std::time::Duration;

use super::error::ErrorKind;
use super::flags::{FlagKind, Flags};
use super::heredoc::{chomp_heredoc, parse_heredoc, Heredoc};
use super::parser::Node;

/// The 18 Dockerfile instructions, upper case.
pub const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A command in shell form (run through the stage's SHELL) or exec form (argv).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellOrExec {
    /// `RUN echo hi`: the text, continuations joined.
    Shell(String),
    /// `RUN ["echo", "hi"]`.
    Exec(Vec<String>),
}

/// `key=value` from ENV or LABEL, as written (quotes and `$` kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key word.
    pub key: String,
    /// The value word.
    pub value: String,
}

/// One name from an `ARG` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The argument's name.
    pub name: String,
    /// `ARG name=default`: the default as written.
    pub default: Option<String>,
}

/// A file whose content is written in the Dockerfile (a heredoc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc's delimiter, used as the file name.
    pub name: String,
    /// The content, with leading tabs already stripped for `<<-`.
    pub data: String,
    /// Whether `$VAR` in `data` is expanded (delimiter unquoted).
    pub expand: bool,
}

/// A COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path (or URL for ADD), unexpanded.
    Path(String),
    /// A heredoc.
    Inline(InlineFile),
}

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A read-only (by default) view of the context or a stage/image.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file or env var.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// `RUN --mount=...`, options as written (values unexpanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `type=`.
    pub kind: MountKind,
    /// `target=` / `dst=` / `destination=`.
    pub target: Option<String>,
    /// `source=` / `src=`.
    pub source: Option<String>,
    /// `from=`: a stage name or index, or an image.
    pub from: Option<String>,
    /// `ro` / `readonly` (default true for bind, false otherwise); `rw` sets false.
    pub readonly: bool,
    /// Every other `key=value` option (`id`, `sharing`, `mode`, `uid`, `gid`, `size`,
    /// `required`, `env`...), in order.
    pub options: Vec<(String, String)>,
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The default (sandboxed, with network).
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub command: ShellOrExec,
    /// `--mount`s.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Network,
    /// `--security=insecure`.
    pub insecure: bool,
    /// Heredocs, in order. As in BuildKit, when the shell-form command is a single heredoc
    /// word (`RUN <<EOF`) the engine runs that heredoc's content as the script; otherwise each
    /// heredoc is fed to its file descriptor (stdin for `<<EOF`) of the shell command.
    pub heredocs: Vec<InlineFile>,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Sources, in order.
    pub sources: Vec<Source>,
    /// The destination, unexpanded.
    pub dest: String,
    /// `--from`: stage name, index or image (unexpanded; see the step graph for the edge).
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// Sources and destination were given as a JSON array.
    pub json: bool,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Sources (paths, URLs, git refs, heredocs).
    pub sources: Vec<Source>,
    /// The destination, unexpanded.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--unpack` (`None`: the default, unpack local archives).
    pub unpack: Option<bool>,
    /// Sources and destination were given as a JSON array.
    pub json: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [options] CMD ...`.
    Check {
        /// The test command.
        command: ShellOrExec,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// A typed instruction. Words are as written; see the module docs for expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=p] image [AS name]`.
    From {
        /// The image (or stage name), unexpanded.
        image: String,
        /// `AS name`, lower case.
        name: Option<String>,
        /// `--platform`, unexpanded.
        platform: Option<String>,
    },
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(ShellOrExec),
    /// `ENTRYPOINT`.
    Entrypoint(ShellOrExec),
    /// `LABEL k=v ...`.
    Label(Vec<KeyValue>),
    /// `MAINTAINER text` (sets the author).
    Maintainer(String),
    /// `EXPOSE port[/proto] ...`.
    Expose(Vec<String>),
    /// `ENV k=v ...`.
    Env(Vec<KeyValue>),
    /// `ADD`.
    Add(Add),
    /// `COPY`.
    Copy(Copy),
    /// `VOLUME path ...`.
    Volume(Vec<String>),
    /// `USER user[:group]`.
    User(String),
    /// `WORKDIR path`.
    Workdir(String),
    /// `ARG name[=default] ...`.
    Arg(Vec<ArgDecl>),
    /// `ONBUILD instruction`: the trigger's text, stored in the image config.
    Onbuild(String),
    /// `STOPSIGNAL signal`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL ["exe", "arg"]`.
    Shell(Vec<String>),
}

/// The instruction closest to `word` by edit distance, when close enough to suggest.
pub fn suggest(word: &str) -> Option<&'static str> {
    let upper = word.to_ascii_uppercase();
    INSTRUCTIONS
        .iter()
        .map(|i| (edit_distance(&upper, i), *i))
        .filter(|(d, i)| *d <= 2 && *d < i.len())
        .min()
        .map(|(_, i)| i)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Checks one AST node and types it.
pub fn parse_instruction(node: &Node) -> Result<Instruction, ErrorKind> {
    let name = node.name();
    let no_flags = || Flags::parse(&name, &node.flags, &[]);
    let args = &node.args;
    let need = |expected: &str| ErrorKind::Arguments {
        instruction: name.clone(),
        expected: expected.to_string(),
    };
    Ok(match name.as_str() {
        "FROM" => parse_from(node)?,
        "RUN" => parse_run(node)?,
        "CMD" => {
            no_flags()?;
            Instruction::Cmd(command(node).ok_or_else(|| need("at least one argument"))?)
        }
        "ENTRYPOINT" => {
            no_flags()?;
            Instruction::Entrypoint(command(node).ok_or_else(|| need("at least one argument"))?)
        }
        "LABEL" | "ENV" => {
            no_flags()?;
            if args.is_empty() {
                return Err(need("at least one argument"));
            }
            let pairs: Vec<KeyValue> = args
                .chunks(3)
                .map(|c| KeyValue {
                    key: c[0].clone(),
                    value: c.get(1).cloned().unwrap_or_default(),
                })
                .collect();
            if let Some(empty) = pairs.iter().find(|kv| kv.key.is_empty()) {
                return Err(invalid("empty key for value", &empty.value));
            }
            if name == "ENV" {
                Instruction::Env(pairs)
            } else {
                Instruction::Label(pairs)
            }
        }
        "MAINTAINER" | "USER" | "WORKDIR" | "STOPSIGNAL" => {
            no_flags()?;
            let [value] = args.as_slice() else {
                return Err(need("exactly one argument"));
            };
            match name.as_str() {
                "MAINTAINER" => Instruction::Maintainer(value.clone()),
                "USER" => Instruction::User(value.clone()),
                "WORKDIR" => Instruction::Workdir(value.clone()),
                _ => Instruction::StopSignal(value.clone()),
            }
        }
        "EXPOSE" => {
            no_flags()?;
            if args.is_empty() {
                return Err(need("at least one argument"));
            }
            Instruction::Expose(args.clone())
        }
        "VOLUME" => {
            no_flags()?;
            if args.is_empty() {
                return Err(need("at least one argument"));
            }
            if args.iter().any(|a| a.trim().is_empty()) {
                return Err(invalid("volume", ""));
            }
            Instruction::Volume(args.clone())
        }
        "ARG" => {
            no_flags()?;
            if args.is_empty() {
                return Err(need("at least one argument"));
            }
            let mut decls = Vec::new();
            for word in args {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (word.clone(), None),
                };
                if name.is_empty() {
                    return Err(invalid("ARG name", word));
                }
                decls.push(ArgDecl { name, default });
            }
            Instruction::Arg(decls)
        }
        "ONBUILD" => {
            no_flags()?;
            let Some(inner) = &node.inner else {
                return Err(need("at least one argument"));
            };
            let inner_name = inner.name();
            if matches!(inner_name.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(invalid("ONBUILD trigger", &inner_name));
            }
            parse_instruction(inner)?;
            let text = node.original.trim_start();
            let rest = text
                .get(node.keyword.len()..)
                .map(str::trim)
                .unwrap_or_default();
            Instruction::Onbuild(rest.to_string())
        }
        "HEALTHCHECK" => parse_healthcheck(node)?,
        "SHELL" => {
            no_flags()?;
            if !node.json {
                return Err(need("the arguments to be in JSON form"));
            }
            if args.is_empty() {
                return Err(need("at least one argument"));
            }
            Instruction::Shell(args.clone())
        }
        "COPY" => parse_copy(node)?,
        "ADD" => parse_add(node)?,
        _ => {
            return Err(ErrorKind::UnknownInstruction {
                name: node.keyword.clone(),
                suggestion: suggest(&node.keyword).map(str::to_string),
            })
        }
    })
}

/// `FROM image [AS name]` with `--platform`.
fn parse_from(node: &Node) -> Result<Instruction, ErrorKind> {
    let name = node.name();
    let args = &node.args;
    let need = |expected: &str| ErrorKind::Arguments {
        instruction: name.clone(),
        expected: expected.to_string(),
    };
    Ok({
        let flags = Flags::parse(&name, &node.flags, &[("platform", FlagKind::Str)])?;
        let stage = match args.as_slice() {
            [image] => (image.clone(), None),
            [image, as_, stage] if as_.eq_ignore_ascii_case("as") => {
                let stage = stage.to_ascii_lowercase();
                let valid = stage.starts_with(|c: char| c.is_ascii_lowercase())
                    && stage
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
                if !valid {
                    return Err(ErrorKind::InvalidStageName(stage));
                }
                (image.clone(), Some(stage))
            }
            _ => return Err(need("either one or three arguments (image [AS name])")),
        };
        Instruction::From {
            image: stage.0,
            name: stage.1,
            platform: flags.string("platform"),
        }
    })
}

/// `RUN` with `--mount`, `--network`, `--security` and heredocs.
fn parse_run(node: &Node) -> Result<Instruction, ErrorKind> {
    let name = node.name();
    let need = |expected: &str| ErrorKind::Arguments {
        instruction: name.clone(),
        expected: expected.to_string(),
    };
    Ok({
        let flags = Flags::parse(
            &name,
            &node.flags,
            &[
                ("mount", FlagKind::List),
                ("network", FlagKind::Str),
                ("security", FlagKind::Str),
            ],
        )?;
        let mounts = flags
            .list("mount")
            .iter()
            .map(|m| parse_mount(m))
            .collect::<Result<_, _>>()?;
        let network = match flags.string("network").as_deref() {
            None | Some("default") => Network::Default,
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(other) => return Err(invalid("network mode", other)),
        };
        let insecure = match flags.string("security").as_deref() {
            None | Some("sandbox") => false,
            Some("insecure") => true,
            Some(other) => return Err(invalid("security mode", other)),
        };
        let heredocs = inline_files(node);
        Instruction::Run(Run {
            command: command(node).ok_or_else(|| need("at least one argument"))?,
            mounts,
            network,
            insecure,
            heredocs,
        })
    })
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD ...`.
fn parse_healthcheck(node: &Node) -> Result<Instruction, ErrorKind> {
    let name = node.name();
    let args = &node.args;
    let need = |expected: &str| ErrorKind::Arguments {
        instruction: name.clone(),
        expected: expected.to_string(),
    };
    Ok({
        let flags = Flags::parse(
            &name,
            &node.flags,
            &[
                ("interval", FlagKind::Str),
                ("timeout", FlagKind::Str),
                ("start-period", FlagKind::Str),
                ("start-interval", FlagKind::Str),
                ("retries", FlagKind::Str),
            ],
        )?;
        let Some(kind) = args.first() else {
            return Err(need("at least one argument"));
        };
        match kind.to_ascii_uppercase().as_str() {
            "NONE" if args.len() == 1 => Instruction::Healthcheck(Healthcheck::None),
            "NONE" => return Err(need("no other arguments with NONE")),
            "CMD" => {
                let rest = &args[1..];
                let command = if node.json {
                    ShellOrExec::Exec(rest.to_vec())
                } else {
                    match rest {
                        [s] => ShellOrExec::Shell(s.clone()),
                        _ => return Err(need("a command after CMD")),
                    }
                };
                let duration = |flag: &str| -> Result<Option<Duration>, ErrorKind> {
                    flags
                        .string(flag)
                        .map(|v| parse_duration(&v).ok_or_else(|| invalid(flag, &v)))
                        .transpose()
                };
                let retries = flags
                    .string("retries")
                    .map(|v| v.parse::<u32>().map_err(|_| invalid("retries", &v)))
                    .transpose()?;
                Instruction::Healthcheck(Healthcheck::Check {
                    command,
                    interval: duration("interval")?,
                    timeout: duration("timeout")?,
                    start_period: duration("start-period")?,
                    start_interval: duration("start-interval")?,
                    retries,
                })
            }
            other => return Err(invalid("HEALTHCHECK type (want CMD or NONE)", other)),
        }
    })
}

/// `COPY` and its flags.
fn parse_copy(node: &Node) -> Result<Instruction, ErrorKind> {
    let name = node.name();
    Ok({
        let flags = Flags::parse(
            &name,
            &node.flags,
            &[
                ("from", FlagKind::Str),
                ("chown", FlagKind::Str),
                ("chmod", FlagKind::Str),
                ("link", FlagKind::Bool),
                ("parents", FlagKind::Bool),
                ("exclude", FlagKind::List),
            ],
        )?;
        let (sources, dest) = sources_and_dest(node)?;
        Instruction::Copy(Copy {
            sources,
            dest,
            from: flags.string("from").filter(|f| !f.is_empty()),
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.boolean("link"),
            parents: flags.boolean("parents"),
            exclude: flags.list("exclude"),
            json: node.json,
        })
    })
}

/// `ADD` and its flags.
fn parse_add(node: &Node) -> Result<Instruction, ErrorKind> {
    let name = node.name();
    Ok({
        let flags = Flags::parse(
            &name,
            &node.flags,
            &[
                ("chown", FlagKind::Str),
                ("chmod", FlagKind::Str),
                ("link", FlagKind::Bool),
                ("keep-git-dir", FlagKind::Bool),
                ("checksum", FlagKind::Str),
                ("exclude", FlagKind::List),
                ("unpack", FlagKind::Bool),
            ],
        )?;
        let (sources, dest) = sources_and_dest(node)?;
        Instruction::Add(Add {
            sources,
            dest,
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.boolean("link"),
            keep_git_dir: flags.boolean("keep-git-dir"),
            checksum: flags.string("checksum"),
            exclude: flags.list("exclude"),
            unpack: node
                .flags
                .iter()
                .any(|f| f.starts_with("--unpack"))
                .then(|| flags.boolean("unpack")),
            json: node.json,
        })
    })
}

fn invalid(what: &str, value: &str) -> ErrorKind {
    ErrorKind::InvalidValue {
        what: what.to_string(),
        value: value.to_string(),
    }
}

/// Shell or exec form of RUN/CMD/ENTRYPOINT; `None` when there is no command at all.
fn command(node: &Node) -> Option<ShellOrExec> {
    if node.json {
        return Some(ShellOrExec::Exec(node.args.clone()));
    }
    match node.args.first() {
        Some(s) if !s.is_empty() => Some(ShellOrExec::Shell(s.clone())),
        _ => None,
    }
}

/// The node's heredocs as files, `<<-` bodies with tabs stripped.
fn inline_files(node: &Node) -> Vec<InlineFile> {
    node.heredocs.iter().map(inline_file).collect()
}

fn inline_file(h: &Heredoc) -> InlineFile {
    InlineFile {
        name: h.name.clone(),
        data: if h.chomp {
            chomp_heredoc(&h.content)
        } else {
            h.content.clone()
        },
        expand: h.expand,
    }
}

fn sources_and_dest(node: &Node) -> Result<(Vec<Source>, String), ErrorKind> {
    let name = node.name();
    let Some((dest, sources)) = node.args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(ErrorKind::Arguments {
            instruction: name,
            expected: "at least two arguments (source and destination)".into(),
        });
    };
    let heredoc_of = |word: &str| {
        if node.json {
            return None;
        }
        parse_heredoc(word).ok().flatten()
    };
    if heredoc_of(dest).is_some() {
        return Err(invalid("destination (a heredoc cannot be one)", dest));
    }
    let mut out = Vec::new();
    for src in sources {
        match heredoc_of(src) {
            Some(h) => {
                let body = node.heredocs.iter().find(|d| d.name == h.name);
                let Some(body) = body else {
                    return Err(ErrorKind::UnterminatedHeredoc { name: h.name });
                };
                out.push(Source::Inline(inline_file(body)));
            }
            None => out.push(Source::Path(src.clone())),
        }
    }
    Ok((out, dest.clone()))
}

/// Parses `type=cache,target=/x,...`.
pub fn parse_mount(spec: &str) -> Result<Mount, ErrorKind> {
    let mut kind = MountKind::Bind;
    let mut fields = Vec::new();
    for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        if key == "type" {
            kind = match value.as_deref() {
                Some("bind") => MountKind::Bind,
                Some("cache") => MountKind::Cache,
                Some("tmpfs") => MountKind::Tmpfs,
                Some("secret") => MountKind::Secret,
                Some("ssh") => MountKind::Ssh,
                _ => return Err(invalid("mount type", value.as_deref().unwrap_or(""))),
            };
        } else {
            fields.push((key, value));
        }
    }
    let mut mount = Mount {
        kind,
        target: None,
        source: None,
        from: None,
        readonly: kind == MountKind::Bind,
        options: Vec::new(),
    };
    for (key, value) in fields {
        let need_value = || {
            value
                .clone()
                .ok_or_else(|| invalid("mount option (missing value)", &key))
        };
        let flag = |v: &Option<String>| -> Result<bool, ErrorKind> {
            match v.as_deref() {
                None => Ok(true),
                Some(s) if s.eq_ignore_ascii_case("true") => Ok(true),
                Some(s) if s.eq_ignore_ascii_case("false") => Ok(false),
                Some(s) => Err(invalid("mount option value", s)),
            }
        };
        match key.as_str() {
            "target" | "dst" | "destination" => mount.target = Some(need_value()?),
            "source" | "src" => mount.source = Some(need_value()?),
            "from" => mount.from = Some(need_value()?),
            "ro" | "readonly" => mount.readonly = flag(&value)?,
            "rw" | "readwrite" => mount.readonly = !flag(&value)?,
            "id" | "sharing" | "mode" | "uid" | "gid" | "size" | "required" | "env" => mount
                .options
                .push((key.clone(), value.clone().unwrap_or_else(|| "true".into()))),
            _ => return Err(invalid("mount option", &key)),
        }
    }
    if mount.target.is_none() && !matches!(kind, MountKind::Secret | MountKind::Ssh) {
        return Err(invalid("mount (target is required)", spec));
    }
    Ok(mount)
}

/// Parses a Go duration such as `30s`, `1m30s`, `1.5h`, `500ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        assert_eq!(suggest("RUNN"), Some("RUN"));
        assert_eq!(suggest("coppy"), Some("COPY"));
        assert_eq!(suggest("FOOBARBAZ"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn mounts() {
        let m = parse_mount("type=cache,target=/root/.cache,id=x").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert!(!m.readonly);
        assert_eq!(m.options, [("id".to_string(), "x".to_string())]);
        assert!(parse_mount("type=bind").is_err());
    }
}
