//! `build --output`/`-o`: buildx's export specs parsed and validated, and each one written
//! from the built image (its filesystem, a tar of it, an oci/docker archive, a store name).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rbuild_store::{Image, Store, TarOptions};

use crate::exit::UsageError;

/// Where an archive goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A file, written beside itself and renamed into place.
    File(PathBuf),
    /// Standard output (`dest=-`).
    Stdout,
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::File(p) => write!(f, "{}", p.display()),
            Dest::Stdout => f.write_str("stdout"),
        }
    }
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// `type=local,dest=DIR` (or `-o DIR`): the image's root filesystem in a directory.
    Local(PathBuf),
    /// `type=tar,dest=FILE|-` (or `-o -`): the root filesystem as one tar.
    Tar(Dest),
    /// `type=oci,dest=FILE[,tar=false][,name=N]`: an oci-archive, or an OCI layout directory.
    Oci {
        /// The archive (or the layout directory with `tar=false`).
        dest: Dest,
        /// false: an OCI layout directory instead of a tar.
        tar: bool,
        /// The name in `index.json` (default: the first `-t`).
        name: Option<String>,
    },
    /// `type=docker,dest=FILE[,name=N]`: a docker-archive, as `podman load` reads.
    Docker {
        /// The archive.
        dest: Dest,
        /// The name in `RepoTags` (default: the first `-t`).
        name: Option<String>,
    },
    /// `type=image[,name=N[,N2]][,push=true]` and `type=registry` (push): names in the store.
    Image {
        /// Normalised names; empty: the `-t` names.
        names: Vec<String>,
        /// Push the names after the build.
        push: bool,
    },
}

const TYPES: &str = "local, tar, oci, docker, image, registry";

/// Splits a buildx CSV spec into fields: commas separate, double quotes group (`"name=a,b"`).
fn fields(spec: &str) -> Result<Vec<String>, UsageError> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(UsageError(format!("--output {spec:?}: unclosed quote")));
    }
    out.push(field);
    Ok(out)
}

fn parse_bool(spec: &str, key: &str, value: &str) -> Result<bool, UsageError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(UsageError(format!(
            "--output {spec:?}: {key}={value:?} is not a boolean (want true or false)"
        ))),
    }
}

/// Parses one `--output` value; `normalize` turns a name into the store's full form.
pub fn parse(
    spec: &str,
    normalize: impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<Export> {
    if spec == "-" {
        return Ok(Export::Tar(Dest::Stdout));
    }
    if spec.is_empty() {
        return Err(UsageError("--output: empty value".into()).into());
    }
    if !spec.contains('=') {
        return Ok(Export::Local(PathBuf::from(spec)));
    }
    let mut kind = None;
    let mut dest = None;
    let mut tar = None;
    let mut names = Vec::new();
    let mut push = None;
    for field in fields(spec)? {
        let Some((key, value)) = field.split_once('=') else {
            return Err(
                UsageError(format!("--output {spec:?}: {field:?} is not KEY=VALUE")).into(),
            );
        };
        match key {
            "type" => kind = Some(value.to_string()),
            "dest" => dest = Some(value.to_string()),
            "tar" => tar = Some(parse_bool(spec, key, value)?),
            "push" => push = Some(parse_bool(spec, key, value)?),
            "name" => {
                for n in value.split(',').filter(|n| !n.is_empty()) {
                    names.push(normalize(n).map_err(|e| {
                        UsageError(format!("--output {spec:?}: name {n:?}: {e:#}"))
                    })?);
                }
            }
            _ => {
                return Err(UsageError(format!(
                    "--output {spec:?}: unknown field {key:?} (want type, dest, name, tar, push)"
                ))
                .into())
            }
        }
    }
    let Some(kind) = kind else {
        return Err(UsageError(format!("--output {spec:?}: type= is required ({TYPES})")).into());
    };
    let only = |allowed: &[&str]| -> Result<(), UsageError> {
        for (key, given) in [
            ("dest", dest.is_some()),
            ("tar", tar.is_some()),
            ("name", !names.is_empty()),
            ("push", push.is_some()),
        ] {
            if given && !allowed.contains(&key) {
                return Err(UsageError(format!(
                    "--output {spec:?}: type={kind} takes no {key}="
                )));
            }
        }
        Ok(())
    };
    let need_dest = |dest: &Option<String>| -> Result<Dest, UsageError> {
        match dest.as_deref() {
            None | Some("") => Err(UsageError(format!(
                "--output {spec:?}: type={kind} needs dest=FILE (or dest=- for stdout)"
            ))),
            Some("-") => Ok(Dest::Stdout),
            Some(p) => Ok(Dest::File(PathBuf::from(p))),
        }
    };
    let single_name = |names: &[String]| -> Result<Option<String>, UsageError> {
        match names {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(UsageError(format!(
                "--output {spec:?}: type={kind} takes one name="
            ))),
        }
    };
    Ok(match kind.as_str() {
        "local" => {
            only(&["dest"])?;
            match dest.as_deref() {
                None | Some("") | Some("-") => {
                    return Err(UsageError(format!(
                        "--output {spec:?}: type=local needs dest=DIR (a directory)"
                    ))
                    .into())
                }
                Some(d) => Export::Local(PathBuf::from(d)),
            }
        }
        "tar" => {
            only(&["dest"])?;
            Export::Tar(need_dest(&dest)?)
        }
        "oci" => {
            only(&["dest", "tar", "name"])?;
            let dest = need_dest(&dest)?;
            let tar = tar.unwrap_or(true);
            if !tar && dest == Dest::Stdout {
                return Err(UsageError(format!(
                    "--output {spec:?}: tar=false writes a directory, not stdout"
                ))
                .into());
            }
            Export::Oci {
                dest,
                tar,
                name: single_name(&names)?,
            }
        }
        "docker" => {
            only(&["dest", "name"])?;
            Export::Docker {
                dest: need_dest(&dest)?,
                name: single_name(&names)?,
            }
        }
        "image" => {
            only(&["name", "push"])?;
            Export::Image {
                names,
                push: push.unwrap_or(false),
            }
        }
        "registry" => {
            only(&["name", "push"])?;
            if push == Some(false) {
                return Err(UsageError(format!(
                    "--output {spec:?}: type=registry always pushes (use type=image)"
                ))
                .into());
            }
            Export::Image { names, push: true }
        }
        other => {
            return Err(
                UsageError(format!("--output: unknown type {other:?} (want {TYPES})")).into(),
            )
        }
    })
}

/// `--annotation`s sorted by where buildx puts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// `KEY=VALUE`, `manifest:KEY=VALUE`: in the image manifest.
    pub manifest: BTreeMap<String, String>,
    /// `manifest-descriptor:KEY=VALUE`: on the manifest's descriptor.
    pub manifest_descriptor: BTreeMap<String, String>,
    /// `index:KEY=VALUE`: on the image index (the `index.json` of `type=oci` outputs).
    pub index: BTreeMap<String, String>,
}

/// Parses buildx's `--annotation [TYPE[PLATFORM]:]KEY=VALUE`.
pub fn annotations(specs: &[String]) -> Result<Annotations, UsageError> {
    let mut out = Annotations::default();
    for spec in specs {
        let (key, value) = spec
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--annotation {spec:?}: want [TYPE:]KEY=VALUE")))?;
        // Keys have no ':' of their own only when typed (`org.opencontainers...` has none;
        // buildx splits the same way).
        let (kind, key) = match key.split_once(':') {
            Some((kind, key)) => (kind, key),
            None => ("manifest", key),
        };
        if kind.contains('[') {
            return Err(UsageError(format!(
                "--annotation {spec:?}: per-platform annotations are not supported \
                 (every platform's manifest gets the same ones; drop the [PLATFORM])"
            )));
        }
        let map = match kind {
            "manifest" => &mut out.manifest,
            "manifest-descriptor" => &mut out.manifest_descriptor,
            "index" => &mut out.index,
            "index-descriptor" => {
                return Err(UsageError(format!(
                    "--annotation {spec:?}: rbuild writes no nested image index (one \
                     platform), so there is no index descriptor; use manifest-descriptor:"
                )))
            }
            other => {
                return Err(UsageError(format!(
                    "--annotation {spec:?}: unknown type {other:?} (want manifest, \
                     manifest-descriptor, index, index-descriptor)"
                )))
            }
        };
        if key.is_empty() {
            return Err(UsageError(format!("--annotation {spec:?}: empty key")));
        }
        map.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// Writes `write`'s bytes to `dest`: a file through a temporary sibling renamed into place
/// (nothing is left behind on failure), or stdout.
pub fn write_to(
    dest: &Dest,
    write: impl FnOnce(&mut dyn Write) -> Result<(), rbuild_store::Error>,
) -> anyhow::Result<()> {
    match dest {
        Dest::Stdout => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            write(&mut out)?;
            out.flush()?;
            Ok(())
        }
        Dest::File(path) => {
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let written = write(&mut out)
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(out.flush()?));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
        }
    }
}

/// Writes one export of `image` (whose `-t` names are `tags`). `Image` exports need no
/// writing: the build tagged them; pushes are the caller's.
pub fn write(
    store: &Store,
    image: &Image,
    tags: &[String],
    export: &Export,
    source_date_epoch: Option<i64>,
    index_annotations: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let named = |name: &Option<String>| Image {
        name: name.clone().or_else(|| tags.first().cloned()),
        ..image.clone()
    };
    match export {
        Export::Local(dir) => store
            .write_rootfs(image, dir)
            .with_context(|| format!("cannot write the image's files to {}", dir.display())),
        Export::Tar(dest) => {
            let tmp = store.tmp_dir()?;
            let rootfs = tmp.path().join("rootfs");
            store.write_rootfs(image, &rootfs)?;
            let options = TarOptions {
                source_date_epoch: source_date_epoch.and_then(|e| u64::try_from(e).ok()),
            };
            write_to(dest, |out| {
                rbuild_store::write_layer_tar(&rootfs, out, &options).map(|_| ())
            })
            .with_context(|| format!("cannot write the image's files as a tar to {dest}"))
        }
        Export::Oci {
            dest,
            tar: true,
            name,
        } => write_to(dest, |out| {
            store.save_oci_archive_annotated(&[named(name)], index_annotations, out)
        })
        .with_context(|| format!("cannot write the oci archive {dest}")),
        Export::Oci {
            dest: Dest::File(dir),
            tar: false,
            name,
        } => oci_layout_dir(store, &named(name), index_annotations, dir)
            .with_context(|| format!("cannot write the OCI layout {}", dir.display())),
        Export::Oci {
            dest: Dest::Stdout,
            tar: false,
            ..
        } => unreachable!("refused when parsed"),
        Export::Docker { dest, name } => {
            write_to(dest, |out| store.save_docker_archive(&[named(name)], out))
                .with_context(|| format!("cannot write the docker archive {dest}"))
        }
        Export::Image { .. } => Ok(()),
    }
}

/// What an export wrote, for the progress line (`None` for store names).
pub fn describe(export: &Export) -> Option<String> {
    match export {
        Export::Local(dir) => Some(format!("the files to {}", dir.display())),
        Export::Tar(dest) => Some(format!("a tar of the files to {dest}")),
        Export::Oci {
            dest, tar: true, ..
        } => Some(format!("an oci archive to {dest}")),
        Export::Oci { dest, .. } => Some(format!("an OCI layout to {dest}")),
        Export::Docker { dest, .. } => Some(format!("a docker archive to {dest}")),
        Export::Image { .. } => None,
    }
}

/// `--metadata-file`'s document, with buildx's keys (a multi-platform image: its index's
/// digest and descriptor, and no config digest).
pub fn metadata(image: &Image, names: &[String]) -> serde_json::Value {
    let top = image.index.as_ref().unwrap_or(&image.manifest);
    let mut doc = serde_json::json!({
        "containerimage.digest": top.digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": top.media_type,
            "digest": top.digest.to_string(),
            "size": top.size,
        },
    });
    if image.index.is_none() {
        doc["containerimage.config.digest"] =
            serde_json::Value::String(image.config.digest.to_string());
    }
    if !names.is_empty() {
        doc["image.name"] = serde_json::Value::String(names.join(","));
    }
    doc
}

/// `type=oci,tar=false`: the oci-archive `save` writes, unpacked into `dir`.
fn oci_layout_dir(
    store: &Store,
    image: &Image,
    index_annotations: &BTreeMap<String, String>,
    dir: &Path,
) -> anyhow::Result<()> {
    let tmp = store.tmp_dir()?;
    let archive = tmp.path().join("oci.tar");
    write_to(&Dest::File(archive.clone()), |out| {
        store.save_oci_archive_annotated(std::slice::from_ref(image), index_annotations, out)
    })?;
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::open(&archive)?;
    tar::Archive::new(std::io::BufReader::new(file)).unpack(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: &str) -> anyhow::Result<Export> {
        parse(spec, |n| Ok(format!("full/{n}")))
    }

    fn err(spec: &str) -> String {
        format!("{:#}", p(spec).unwrap_err())
    }

    #[test]
    fn parses_buildx_specs() {
        assert_eq!(p("out").unwrap(), Export::Local("out".into()));
        assert_eq!(p("-").unwrap(), Export::Tar(Dest::Stdout));
        assert_eq!(p("type=local,dest=d").unwrap(), Export::Local("d".into()));
        assert_eq!(p("type=tar,dest=-").unwrap(), Export::Tar(Dest::Stdout));
        assert_eq!(
            p("type=oci,dest=x.tar,tar=false").unwrap(),
            Export::Oci {
                dest: Dest::File("x.tar".into()),
                tar: false,
                name: None
            }
        );
        assert_eq!(
            p("type=image,\"name=a,b\",push=true").unwrap(),
            Export::Image {
                names: vec!["full/a".into(), "full/b".into()],
                push: true
            }
        );
        assert_eq!(
            p("type=registry").unwrap(),
            Export::Image {
                names: vec![],
                push: true
            }
        );
    }

    #[test]
    fn annotations_by_type() {
        let a = annotations(&[
            "a=1".into(),
            "manifest:b=2".into(),
            "manifest-descriptor:c=3".into(),
            "index:org.opencontainers.image.title=t=x".into(),
        ])
        .unwrap();
        assert_eq!(a.manifest.len(), 2);
        assert_eq!(a.manifest["b"], "2");
        assert_eq!(a.manifest_descriptor["c"], "3");
        assert_eq!(a.index["org.opencontainers.image.title"], "t=x");
        assert!(annotations(&["index-descriptor:d=4".into()]).is_err());
        assert!(annotations(&["manifest[linux/amd64]:d=4".into()]).is_err());
        assert!(annotations(&["bogus:d=4".into()]).is_err());
        assert!(annotations(&["nokey".into()]).is_err());
    }

    #[test]
    fn refuses_with_the_flag_and_the_reason() {
        assert_eq!(
            err("type=foo"),
            "--output: unknown type \"foo\" (want local, tar, oci, docker, image, registry)"
        );
        assert!(
            err("type=tar").contains("needs dest="),
            "{}",
            err("type=tar")
        );
        assert!(err("type=local,dest=-").contains("directory"));
        assert!(err("type=oci,dest=-,tar=false").contains("not stdout"));
        assert!(err("type=tar,dest=x,bogus=1").contains("unknown field \"bogus\""));
        assert!(err("type=image,dest=x").contains("takes no dest="));
        assert!(err("type=oci,dest=x,tar=maybe").contains("not a boolean"));
        assert!(err("dest=x").contains("type= is required"));
        assert!(err("type=registry,push=false").contains("always pushes"));
    }
}
