//! COPY and ADD: sources from the context (after `.dockerignore`), an earlier stage or an
//! image; heredoc sources; ADD's local archives (extracted) and http(s) URLs (with
//! `--checksum`). Keyed by the content digest of each selected source.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::meta::{current_lowers, make_layer};
use super::{commit, lookup, Lookup, StepCx};
use crate::build::cachekey::KeyEncoder;
use crate::build::context_dir::Ignore;
use crate::build::ctx::blocking;
use crate::build::files::{relative, Overrides, SourceRoot};
use crate::build::rootfs::LayeredFs;
use crate::build::state::StageState;
use crate::context::StatCache;
use crate::frontend::Base;
use crate::frontend::{Add, Copy, InlineFile, Source};
use crate::Error;

/// Where the sources of one COPY are read from.
#[derive(Clone)]
enum Origin {
    Context(PathBuf),
    Layers(LayeredFs, String),
}

/// One source after expansion.
enum Item {
    /// A path in the origin (maybe a wildcard).
    Path(String),
    /// A heredoc file.
    Inline { name: String, data: Vec<u8> },
    /// An ADD URL, downloaded.
    Url {
        url: String,
        name: String,
        data: Vec<u8>,
    },
}

/// The shared shape of COPY and ADD.
struct Transfer<'a> {
    kind: &'static str,
    sources: &'a [Source],
    dest: &'a str,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    link: bool,
    exclude: &'a [String],
    /// ADD: extract local archives, download URLs.
    add: Option<&'a Add>,
}

/// COPY.
pub async fn copy(cx: &StepCx<'_>, st: &mut StageState, c: &Copy) -> Result<Lookup, Error> {
    transfer(
        cx,
        st,
        Transfer {
            kind: "COPY",
            sources: &c.sources,
            dest: &c.dest,
            chown: c.chown.as_deref(),
            chmod: c.chmod.as_deref(),
            link: c.link,
            exclude: &c.exclude,
            add: None,
        },
    )
    .await
}

/// ADD.
pub async fn add(cx: &StepCx<'_>, st: &mut StageState, a: &Add) -> Result<Lookup, Error> {
    transfer(
        cx,
        st,
        Transfer {
            kind: "ADD",
            sources: &a.sources,
            dest: &a.dest,
            chown: a.chown.as_deref(),
            chmod: a.chmod.as_deref(),
            link: a.link,
            exclude: &a.exclude,
            add: Some(a),
        },
    )
    .await
}

fn parse_chmod(s: &str) -> Result<u32, Error> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| Error::InvalidFlag {
            flag: "--chmod",
            value: s.to_string(),
            reason: "want octal permission bits such as 0755",
        })
}

/// `--chown=uid[:gid]` numerically (gid defaults to uid), else by name in the image.
async fn resolve_chown(spec: &str, lowers: &[PathBuf]) -> Result<(u32, u32), Error> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if let Ok(uid) = u.parse::<u32>() {
        match g.map(|g| g.parse::<u32>()) {
            None => return Ok((uid, uid)),
            Some(Ok(gid)) => return Ok((uid, gid)),
            Some(Err(_)) => {}
        }
    }
    let spec = spec.to_string();
    let lowers = lowers.to_vec();
    blocking(move || {
        let user = rbuild_runner::resolve_user(&lowers, &spec)
            .map_err(|source| Error::User { spec, source })?;
        Ok((user.uid, user.gid))
    })
    .await
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

async fn download(url: &str, checksum: Option<&str>) -> Result<Vec<u8>, Error> {
    let err = |source| Error::Download {
        url: url.to_string(),
        source,
    };
    let resp = reqwest::get(url).await.map_err(err)?;
    if !resp.status().is_success() {
        return Err(Error::DownloadStatus {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let bytes = resp.bytes().await.map_err(err)?.to_vec();
    if let Some(expected) = checksum {
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != expected {
            return Err(Error::ChecksumMismatch {
                url: url.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(bytes)
}

async fn transfer(cx: &StepCx<'_>, st: &mut StageState, t: Transfer<'_>) -> Result<Lookup, Error> {
    // Where the files come from.
    let origin = match &cx.step.copy_from {
        None => Origin::Context(cx.ctx.context.root.clone()),
        Some(Base::Stage(i)) => {
            let dep = cx.deps.get(i).ok_or_else(|| Error::SourceNotFound {
                source_path: format!("stage {i}"),
            })?;
            let lowers = cx.ctx.lowers(&dep.layers).await?;
            Origin::Layers(LayeredFs::new(lowers), format!("stage:{}", dep.key.hex()))
        }
        Some(Base::Image(r)) => {
            let base = cx.ctx.base_image(r, cx.id).await?;
            let lowers = cx.ctx.lowers(&base.layers).await?;
            Origin::Layers(LayeredFs::new(lowers), format!("image:{}", base.manifest))
        }
        Some(Base::Scratch) => Origin::Layers(LayeredFs::new(Vec::new()), "scratch".into()),
    };
    // Expand sources and destination.
    let mut items = Vec::new();
    let mut written = Vec::new();
    for s in t.sources {
        match s {
            Source::Path(p) => {
                let p = cx.expand(st, p)?;
                written.push(p.clone());
                if t.add.is_some() && is_url(&p) {
                    let checksum = match t.add.and_then(|a| a.checksum.as_deref()) {
                        Some(c) => Some(cx.expand(st, c)?),
                        None => None,
                    };
                    let data = download(&p, checksum.as_deref()).await?;
                    let name = p
                        .split(['?', '#'])
                        .next()
                        .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
                        .filter(|n| !n.is_empty() && !n.contains(':'))
                        .unwrap_or("download")
                        .to_string();
                    items.push(Item::Url { url: p, name, data });
                } else {
                    items.push(Item::Path(p));
                }
            }
            Source::Inline(InlineFile { name, data, expand }) => {
                let data = if *expand {
                    cx.expand_heredoc(st, data)?
                } else {
                    data.clone()
                };
                written.push(format!("<<{name}"));
                items.push(Item::Inline {
                    name: name.clone(),
                    data: data.into_bytes(),
                });
            }
        }
    }
    let dest = cx.expand(st, t.dest)?;
    let workdir = st
        .config
        .config
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    let dest_abs = if dest.starts_with('/') {
        dest.clone()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let dest_rel = relative(&dest_abs)?;
    let chmod = t.chmod.map(parse_chmod).transpose()?;
    let lowers = current_lowers(cx, st).await?;
    let owner = match t.chown {
        Some(c) => Some(resolve_chown(&cx.expand(st, c)?, &lowers).await?),
        None => None,
    };
    let ov = Overrides { owner, mode: chmod };

    // Select and digest (blocking: reads the files).
    let ignore = Arc::new(cx.ctx.context.ignore_rules().with_patterns(t.exclude)?);
    let exclude = Arc::new(Ignore::default().with_patterns(t.exclude)?);
    let origin_b = origin.clone();
    let (ignore_b, exclude_b) = (ignore.clone(), exclude.clone());
    let stat_cache = cx.ctx.context.stat_cache.clone();
    let stat_cache_b = stat_cache.clone();
    let paths: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Item::Path(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let is_add = t.add.is_some();
    let digests = blocking(move || {
        let root = source_root(&origin_b, &ignore_b, &exclude_b, &stat_cache_b);
        let mut out = BTreeMap::new();
        for p in &paths {
            let mut h = Sha256::new();
            for sel in root.select(p)? {
                h.update(sel.rel.to_string_lossy().as_bytes());
                h.update(root.digest(&sel)?.as_bytes());
            }
            out.insert(p.clone(), hex::encode(h.finalize()));
        }
        Ok(out)
    })
    .await?;
    let mut sources: BTreeMap<String, String> = digests;
    for i in &items {
        match i {
            Item::Inline { name, data } => {
                sources.insert(format!("<<{name}"), hex::encode(Sha256::digest(data)));
            }
            Item::Url { url, data, .. } => {
                sources.insert(url.clone(), hex::encode(Sha256::digest(data)));
            }
            Item::Path(_) => {}
        }
    }
    let origin_id = match &origin {
        Origin::Context(_) => "context".to_string(),
        Origin::Layers(_, id) => id.clone(),
    };
    let encode = |kind: &str| {
        let mut k = KeyEncoder::new(kind, Some(&st.key));
        k.list("sources", &written)
            .str("dest", &dest_abs)
            .opt("chown", owner.map(|(u, g)| format!("{u}:{g}")).as_deref())
            .opt("chmod", chmod.map(|m| format!("{m:o}")).as_deref())
            .str("from", &origin_id)
            .bool("link", t.link)
            .list("exclude", t.exclude)
            .opt("workdir", st.config.config.working_dir.as_deref());
        k
    };
    let lineage = encode(&format!("{}-sources", t.kind)).finish();
    let mut full = encode(t.kind);
    let digest_pairs: Vec<(String, String)> = sources.clone().into_iter().collect();
    full.pairs("digests", &digest_pairs);
    let key = full.finish();
    let created_by = format!("{} {} {} # buildkit", t.kind, written.join(" "), dest);
    if let Lookup::Hit = lookup(cx, st, key, Some((lineage, &sources))).await? {
        return Ok(Lookup::Hit);
    }

    // Run: copy into a fresh snapshot.
    let dest_is_dir_hint = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    let fs = LayeredFs::new(lowers);
    let extract = is_add;
    let layer = make_layer(cx, st, move |upper| {
        let root = source_root(&origin, &ignore, &exclude, &stat_cache);
        let mut selected = Vec::new();
        let mut inline = Vec::new();
        let mut wildcard = false;
        for i in items {
            match i {
                Item::Path(p) => {
                    wildcard |= p.contains(['*', '?', '[']);
                    selected.extend(root.select(&p)?);
                }
                Item::Inline { name, data } | Item::Url { name, data, .. } => {
                    inline.push((name, data))
                }
            }
        }
        let count = selected.len() + inline.len();
        let dest_exists_dir = fs
            .lookup(&dest_rel)
            .map_err(Error::io("look up", &dest_rel))?
            .is_some_and(|f| f.meta.is_dir());
        let into_dir = dest_is_dir_hint || dest_exists_dir || dest_rel.as_os_str().is_empty();
        if (count > 1 || wildcard) && !into_dir {
            return Err(Error::MultipleSourcesNeedDir);
        }
        let mk = |rel: &Path| {
            fs.mkdir_all_in(upper, rel, owner)
                .map_err(Error::io("create", upper.join(rel)))
        };
        for sel in &selected {
            let is_dir = sel.found.meta.is_dir();
            if is_dir {
                // Into an existing directory: its metadata stays. A new one is made from
                // the source directory (with --chown/--chmod).
                if dest_exists_dir || dest_rel.as_os_str().is_empty() {
                    mk(&dest_rel)?;
                } else if let Some(parent) = dest_rel.parent() {
                    mk(parent)?;
                }
                root.copy(sel, upper, &dest_rel, ov)?;
                continue;
            }
            if extract && is_archive(&sel.found.real) {
                mk(&dest_rel)?;
                extract_archive(&sel.found.real, &upper.join(&dest_rel))?;
                continue;
            }
            let target = if into_dir {
                let name = sel.rel.file_name().map(PathBuf::from).unwrap_or_default();
                dest_rel.join(name)
            } else {
                dest_rel.clone()
            };
            if let Some(parent) = target.parent() {
                mk(parent)?;
            }
            root.copy(sel, upper, &target, ov)?;
        }
        for (name, data) in inline {
            let target = if into_dir {
                dest_rel.join(&name)
            } else {
                dest_rel.clone()
            };
            if let Some(parent) = target.parent() {
                mk(parent)?;
            }
            let path = upper.join(&target);
            std::fs::write(&path, &data).map_err(Error::io("write", &path))?;
            let (uid, gid) = owner.unwrap_or((0, 0));
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(Error::io("chown", &path))?;
            // Downloads are 0600 as in docker, heredoc files 0644.
            let default = if is_add { 0o600 } else { 0o644 };
            std::fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(chmod.unwrap_or(default)),
            )
            .map_err(Error::io("chmod", &path))?;
        }
        Ok(())
    })
    .await?;
    commit(
        cx,
        st,
        key,
        Some(layer),
        created_by,
        Some((lineage, sources)),
    )
    .await?;
    Ok(Lookup::Miss)
}

/// The context (`.dockerignore` plus `--exclude`) or a stage's layers (`--exclude`).
fn source_root<'a>(
    origin: &Origin,
    ignore: &'a Ignore,
    exclude: &'a Ignore,
    stat_cache: &Arc<Mutex<StatCache>>,
) -> SourceRoot<'a> {
    match origin {
        Origin::Context(dir) => SourceRoot {
            fs: LayeredFs::new(vec![dir.clone()]),
            ignore: Some(ignore),
            keep_owner: false,
            stat_cache: Some(stat_cache.clone()),
        },
        Origin::Layers(fs, _) => SourceRoot {
            fs: fs.clone(),
            ignore: Some(exclude),
            keep_owner: true,
            stat_cache: None,
        },
    }
}

/// Reads the first bytes of a (maybe compressed) file and says whether it is a tar.
fn is_archive(path: &Path) -> bool {
    let Ok(mut r) = open_maybe_compressed(path) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return false,
        }
    }
    got >= 262 && &head[257..262] == b"ustar"
}

fn open_maybe_compressed(path: &Path) -> std::io::Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 6];
    let n = f.read(&mut magic)?;
    let f = std::fs::File::open(path)?;
    let m = &magic[..n];
    Ok(if m.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(f))
    } else if m.starts_with(b"BZh") {
        Box::new(bzip2::read::BzDecoder::new(f))
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::read::XzDecoder::new(f))
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else {
        Box::new(f)
    })
}

fn extract_archive(path: &Path, into: &Path) -> Result<(), Error> {
    let r = open_maybe_compressed(path).map_err(Error::io("open", path))?;
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    a.unpack(into).map_err(Error::io("extract", path))
}
