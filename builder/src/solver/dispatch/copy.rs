//! COPY and ADD in the engine: where the sources come from (the walked context or a
//! `--build-context` directory, or the merged layers of a stage or image), the cache key
//! (over the content digests of context files; over the origin's key for `--from`; without
//! the parent for `--link`), and the layer the `copy` module writes (on an empty directory
//! for `--link`). Selection, digests and copying are the `context` and `copy` modules'.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rbuild_store::ExternalFiles;
use sha2::{Digest as _, Sha256};

use super::meta::{current_lowers, make_layer};
use super::{commit, linked_state_key, lookup, lookup_linked, Lookup, StepCx};
use crate::context::pathclean::leaves_root;
use crate::context::{
    digest_sources, select_sources, ContextError, ContextFiles, IgnoreRules, SelectedSource,
};
use crate::copy::{
    copy_into, fetch_url, CopyError, CopySource, CopySpec, Layers, DEFAULT_ARCHIVE_LIMIT,
};
use crate::frontend::Base;
use crate::frontend::{Add, Copy, InlineFile, Source};
use crate::git::{parse_git_ref, resolve_commit, GitRef};
use crate::solver::cachekey::{CacheKey, KeyEncoder};
use crate::solver::context_dir::ContextDir;
use crate::solver::ctx::blocking;
use crate::solver::named_context::OpenedContext;
use crate::solver::state::{LayerRef, StageState};
use crate::Error;

/// The shared shape of COPY and ADD.
struct Transfer<'a> {
    kind: &'static str,
    sources: &'a [Source],
    dest: &'a str,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    link: bool,
    /// COPY `--parents`.
    parents: bool,
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
            parents: c.parents,
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
            parents: false,
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

/// `--chown=uid[:gid]` when both are numbers (gid defaults to uid).
fn numeric_chown(spec: &str) -> Option<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = u.parse::<u32>().ok()?;
    match g.map(|g| g.parse::<u32>()) {
        None => Some((uid, uid)),
        Some(Ok(gid)) => Some((uid, gid)),
        Some(Err(_)) => None,
    }
}

/// `--chown=uid[:gid]` numerically (gid defaults to uid), else by name in the image.
async fn resolve_chown(spec: &str, lowers: &[PathBuf]) -> Result<(u32, u32), Error> {
    if let Some(ids) = numeric_chown(spec) {
        return Ok(ids);
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

/// Where COPY reads from.
enum Origin<'c> {
    /// The build context or a `--build-context` directory (files become 0:0).
    Context(&'c ContextDir),
    /// The merged layers of a stage or an image (owners kept).
    Layers(Vec<LayerRef>),
}

/// Where COPY reads from, with an id for the cache key (no path: keys are shared).
async fn source_origin<'c>(cx: &StepCx<'c>) -> Result<(Origin<'c>, String), Error> {
    Ok(match &cx.step.copy_from {
        None => (Origin::Context(&cx.ctx.context), "context".into()),
        Some(Base::Stage(i)) => {
            let dep = cx.deps.get(i).ok_or_else(|| Error::SourceNotFound {
                source_path: format!("stage {i}"),
            })?;
            let id = format!("stage:{}", dep.key.hex());
            (Origin::Layers(dep.layers.clone()), id)
        }
        Some(Base::Image(r)) => {
            let base = cx.ctx.base_image(r, &cx.ctx.platform, cx.id).await?;
            (
                Origin::Layers(base.layers),
                format!("image:{}", base.manifest),
            )
        }
        Some(Base::Context(name)) => match cx.ctx.named.get(&name.to_ascii_lowercase()) {
            Some(OpenedContext::Dir(dir)) => (Origin::Context(dir), format!("context:{name}")),
            _ => {
                let base = cx.ctx.context_image(name, &cx.ctx.platform, cx.id).await?;
                (
                    Origin::Layers(base.layers),
                    format!("image:{}", base.manifest),
                )
            }
        },
        Some(Base::Scratch) => (Origin::Layers(Vec::new()), "scratch".into()),
    })
}

/// Selects the sources; with `--parents` a wildcard that matches nothing selects nothing,
/// as in BuildKit (a plain path must still exist).
fn select(
    files: &ContextFiles,
    paths: &[String],
    parents: bool,
) -> Result<Vec<SelectedSource>, ContextError> {
    if !parents {
        return select_sources(files, paths);
    }
    let mut all = Vec::new();
    for p in paths {
        match select_sources(files, std::slice::from_ref(p)) {
            Ok(found) => all.extend(found),
            Err(ContextError::NoSourceFiles { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(all)
}

/// The merged tree of `layers` (fetched and unpacked when they are not yet).
async fn layer_tree(cx: &StepCx<'_>, layers: &[LayerRef]) -> Result<Arc<ContextFiles>, Error> {
    let lowers = cx.ctx.lowers(layers).await?;
    let files = blocking(move || Ok(ContextFiles::walk_layers(&lowers)?)).await?;
    Ok(Arc::new(files))
}

/// A COPY/ADD's source arguments after expansion.
struct Sources {
    /// Context (or stage) paths, to select from the source tree.
    paths: Vec<String>,
    /// Heredoc files: name and contents.
    inline: Vec<(String, Vec<u8>)>,
    /// ADD's URLs, downloaded.
    fetched: Vec<crate::copy::FetchedFile>,
    /// ADD's git repositories, resolved to a commit (fetched only on a cache miss).
    git: Vec<GitSource>,
    /// The sources as the history entry and cache key show them.
    written: Vec<String>,
}

/// Expands the source arguments; ADD's URLs are downloaded into `scratch`, which the
/// caller keeps until the copy.
async fn expand_sources(
    cx: &StepCx<'_>,
    st: &StageState,
    t: &Transfer<'_>,
    scratch: &std::path::Path,
) -> Result<Sources, Error> {
    let mut paths = Vec::new();
    let mut inline = Vec::new();
    let mut fetched = Vec::new();
    let mut git = Vec::new();
    let mut written = Vec::new();
    for s in t.sources {
        match s {
            Source::Path(p) => {
                let p = cx.expand(st, p)?;
                written.push(p.clone());
                if let Some(g) = parse_git_ref(&p)? {
                    let Some(add) = t.add else {
                        return Err(Error::GitForCopy { url: p });
                    };
                    let checksum = match add.checksum.as_deref() {
                        Some(c) => Some(cx.expand(st, c)?),
                        None => None,
                    };
                    git.push(GitSource::resolve(p, g, add.keep_git_dir, checksum).await?);
                } else if t.add.is_some() && is_url(&p) {
                    let checksum = match t.add.and_then(|a| a.checksum.as_deref()) {
                        Some(c) => Some(cx.expand(st, c)?),
                        None => None,
                    };
                    let client = reqwest::Client::new();
                    let file = fetch_url(&client, &p, scratch, checksum.as_deref()).await?;
                    fetched.push(file);
                } else if leaves_root(&p) {
                    return Err(Error::OutsideContext { source_path: p });
                } else {
                    paths.push(p);
                }
            }
            Source::Inline(InlineFile { name, data, expand }) => {
                let data = if *expand {
                    cx.expand_heredoc(st, data)?
                } else {
                    data.clone()
                };
                written.push(format!("<<{name}"));
                inline.push((name.clone(), data.into_bytes()));
            }
        }
    }
    Ok(Sources {
        paths,
        inline,
        fetched,
        git,
        written,
    })
}

/// The keys of one COPY/ADD before its sources are known: the step's (parent left out
/// for `--link`) and its lineage's, and the digests of inline and downloaded sources.
struct StepKeys {
    step: KeyEncoder,
    lineage: KeyEncoder,
    extra_digests: BTreeMap<String, String>,
    link: bool,
}

/// What to select from the origin.
struct Selection {
    paths: Vec<String>,
    parents: bool,
    exclude: IgnoreRules,
}

/// A step that missed the cache: the origin's files, the selected sources, the key and
/// the lineage record to write.
struct Keyed {
    files: Arc<ContextFiles>,
    selected: Vec<SelectedSource>,
    key: CacheKey,
    lineage: Option<(CacheKey, BTreeMap<String, String>)>,
}

/// From a stage or an image, the key is the origin's (its last step's key, or its
/// manifest digest), as BuildKit's definition-based key: a hit (`None`) needs none of the
/// origin's files, so layers imported from a remote cache stay unfetched.
async fn keyed_from_layers(
    cx: &StepCx<'_>,
    st: &mut StageState,
    layers: &[LayerRef],
    sel: Selection,
    keys: StepKeys,
) -> Result<Option<Keyed>, Error> {
    let mut k = keys.step;
    let pairs: Vec<(String, String)> = keys.extra_digests.into_iter().collect();
    k.pairs("digests", &pairs);
    let key = k.finish();
    if let Lookup::Hit = lookup_step(cx, st, key, None, keys.link).await? {
        return Ok(None);
    }
    let files = layer_tree(cx, layers).await?;
    let (files_b, Selection { paths, parents, .. }) = (files.clone(), sel);
    let selected = blocking(move || Ok(select(&files_b, &paths, parents)?)).await?;
    Ok(Some(Keyed {
        files,
        selected,
        key,
        lineage: None,
    }))
}

/// From the context (or a `--build-context` directory), the key covers the selected
/// files' contents; `None` is a hit.
async fn keyed_from_context(
    cx: &StepCx<'_>,
    st: &mut StageState,
    context: &ContextDir,
    sel: Selection,
    keys: StepKeys,
) -> Result<Option<Keyed>, Error> {
    let files = context.files().await?;
    // Select and digest (blocking: reads the files the stat cache does not know).
    let stat_cache = context.stat_cache.clone();
    let files_b = files.clone();
    let (selected, content) = blocking(move || {
        let selected = select(&files_b, &sel.paths, sel.parents)?;
        let mut cache = stat_cache.lock().unwrap_or_else(|e| e.into_inner());
        let content = digest_sources(&files_b, &selected, &sel.exclude, &mut cache)?;
        Ok((selected, content))
    })
    .await?;
    // Per-source digests, so a later miss can name what changed.
    let mut sources: BTreeMap<String, String> = content
        .sources
        .iter()
        .map(|s| (s.name.clone(), s.digest.clone()))
        .collect();
    sources.extend(keys.extra_digests);
    let lineage = keys.lineage.finish();
    let mut full = keys.step;
    let digest_pairs: Vec<(String, String)> = sources.clone().into_iter().collect();
    full.str("content", &content.digest)
        .pairs("digests", &digest_pairs);
    let key = full.finish();
    let found = lookup_step(cx, st, key, Some((lineage, &sources)), keys.link).await?;
    if let Lookup::Hit = found {
        return Ok(None);
    }
    Ok(Some(Keyed {
        files,
        selected,
        key,
        lineage: Some((lineage, sources)),
    }))
}

/// Everything the copy module needs to write one COPY/ADD layer.
struct Fill {
    files: Arc<ContextFiles>,
    selected: Vec<SelectedSource>,
    inline: Vec<(String, Vec<u8>)>,
    fetched: Vec<crate::copy::FetchedFile>,
    dest: String,
    workdir: String,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
    from_layers: bool,
    is_add: bool,
    exclude: IgnoreRules,
    parents: bool,
    lowers: Vec<PathBuf>,
    /// ADD's git repositories, checked out: each one's files and its whole tree selected.
    repos: Vec<(Arc<ContextFiles>, Vec<SelectedSource>)>,
    /// Holds ADD's downloads and checkouts until the copy.
    _scratch: rbuild_store::TmpDir,
}

impl Fill {
    /// Writes the layer's upper dir. COPY leaves regular files where they are: the layer
    /// tar reads them from the sources, and the snapshot is unpacked from the blob only if
    /// a later step stacks on it. ADD writes everything (archives extract over what the
    /// copy wrote).
    fn write(self, mounts: &rbuild_store::Mounts) -> Result<ExternalFiles, Error> {
        let deferred = RefCell::new(ExternalFiles::new());
        let layers = Layers {
            upper: &mounts.upper,
            lowers: &self.lowers,
            deferred: (!self.is_add).then_some(&deferred),
        };
        let spec = |source| CopySpec {
            source,
            dest: self.dest.clone(),
            workdir: self.workdir.clone(),
            chown: self.owner,
            chmod: self.chmod,
            preserve_owner: self.from_layers,
            unpack_archives: self.is_add,
            archive_limit: DEFAULT_ARCHIVE_LIMIT,
            exclude: self.exclude.clone(),
            parents: self.parents,
        };
        if !self.selected.is_empty() || self.parents {
            let tree = CopySource::Tree {
                files: &self.files,
                selected: &self.selected,
            };
            copy_into(&spec(tree), &layers)?;
        }
        if !self.inline.is_empty() {
            copy_into(&spec(CopySource::Inline(&self.inline)), &layers)?;
        }
        for f in &self.fetched {
            copy_into(&spec(CopySource::Fetched(f)), &layers)?;
        }
        // A repository is copied as a directory: owned by root (or --chown), its
        // archives left as they are, as BuildKit's copy from a git source.
        for (files, selected) in &self.repos {
            let mut s = spec(CopySource::Tree { files, selected });
            s.preserve_owner = false;
            s.unpack_archives = false;
            copy_into(&s, &layers)?;
        }
        Ok(deferred.into_inner())
    }
}

/// A git repository ADD copies: the URL as written, and the commit its ref resolved to
/// (the cache key input, so a moved branch misses and an unchanged one hits).
struct GitSource {
    url: String,
    git: GitRef,
    resolved: crate::git::Resolved,
    keep_git_dir: bool,
}

impl GitSource {
    /// Resolves the ref; `ADD --keep-git-dir` and `--checksum` (the commit) must agree
    /// with the URL's `keep-git-dir=` and `checksum=`.
    async fn resolve(
        url: String,
        mut git: GitRef,
        keep_flag: bool,
        checksum: Option<String>,
    ) -> Result<Self, Error> {
        let keep_git_dir = match git.keep_git_dir {
            Some(false) if keep_flag => return Err(Error::KeepGitDirConflict { url }),
            Some(keep) => keep,
            None => keep_flag,
        };
        if let Some(c) = checksum {
            if git.checksum.as_ref().is_some_and(|q| *q != c) {
                return Err(Error::InvalidFlag {
                    flag: "--checksum",
                    value: c,
                    reason: "differs from the git URL's checksum=",
                });
            }
            git.checksum = Some(c);
        }
        let g = git.clone();
        let resolved = blocking(move || Ok(resolve_commit(&g)?)).await?;
        Ok(Self {
            url,
            git,
            resolved,
            keep_git_dir,
        })
    }

    /// What enters the key: the commit, the directory and whether `.git` is kept.
    fn key_digest(&self) -> String {
        format!(
            "git:{}:{}:keep={}",
            self.resolved.commit, self.git.subdir, self.keep_git_dir
        )
    }

    /// Fetches and checks out the commit into `<scratch>/git-<n>`, then walks it.
    async fn fetch(&self, scratch: &std::path::Path, n: usize) -> Result<Arc<ContextFiles>, Error> {
        let (g, resolved, keep) = (self.git.clone(), self.resolved.clone(), self.keep_git_dir);
        let dir = scratch.join(format!("git-{n}"));
        blocking(move || {
            let tree = crate::git::checkout(&g, &resolved, &dir, keep)?;
            Ok(Arc::new(ContextFiles::walk(
                &tree,
                &IgnoreRules::default(),
            )?))
        })
        .await
    }
}

async fn transfer(cx: &StepCx<'_>, st: &mut StageState, t: Transfer<'_>) -> Result<Lookup, Error> {
    let (origin, origin_id) = source_origin(cx).await?;
    let from_layers = matches!(origin, Origin::Layers(_));
    // Expand sources; ADD's URLs are downloaded into a scratch dir kept until the copy.
    let scratch = cx
        .ctx
        .store
        .tmp_dir()
        .map_err(Error::store("create a scratch directory"))?;
    let Sources {
        paths,
        inline,
        fetched,
        git,
        written,
    } = expand_sources(cx, st, &t, scratch.path()).await?;
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
    let chmod = t.chmod.map(parse_chmod).transpose()?;
    // The lowers are needed before the cache look-up only to resolve a --chown by name
    // (a hit on a remote record must not fetch the layers below it).
    let owner = match t.chown {
        Some(c) => {
            let spec = cx.expand(st, c)?;
            match numeric_chown(&spec) {
                Some(ids) => Some(ids),
                None => Some(resolve_chown(&spec, &current_lowers(cx, st).await?).await?),
            }
        }
        None => None,
    };
    let exclude = IgnoreRules::new(t.exclude)?;

    // Inline and downloaded sources enter the key by their digests.
    let mut extra_digests: BTreeMap<String, String> = BTreeMap::new();
    for (name, data) in &inline {
        extra_digests.insert(format!("<<{name}"), hex::encode(Sha256::digest(data)));
    }
    for f in &fetched {
        extra_digests.insert(f.url.clone(), f.digest.clone());
    }
    for g in &git {
        extra_digests.insert(g.url.clone(), g.key_digest());
    }
    let encode = |kind: &str| {
        // A --link layer is made without the parent: its key leaves the parent out.
        let parent = (!t.link).then_some(&st.key);
        let mut k = KeyEncoder::new(kind, parent);
        k.list("sources", &written)
            .str("dest", &dest_abs)
            .opt("chown", owner.map(|(u, g)| format!("{u}:{g}")).as_deref())
            .opt("chmod", chmod.map(|m| format!("{m:o}")).as_deref())
            .str("from", &origin_id)
            .bool("link", t.link)
            .bool("parents", t.parents)
            .list("exclude", t.exclude)
            .opt("workdir", st.config.config.working_dir.as_deref());
        k
    };
    let flags = if t.parents { " --parents" } else { "" };
    let created_by = format!(
        "{}{flags} {} {} # buildkit",
        t.kind,
        written.join(" "),
        dest
    );
    let parents = t.parents;
    let keys = StepKeys {
        step: encode(t.kind),
        lineage: encode(&format!("{}-sources", t.kind)),
        extra_digests,
        link: t.link,
    };
    let selection = Selection {
        paths,
        parents,
        exclude: exclude.clone(),
    };
    let Some(Keyed {
        files,
        selected,
        key,
        lineage,
    }) = (match origin {
        Origin::Layers(layers) => keyed_from_layers(cx, st, &layers, selection, keys).await?,
        Origin::Context(context) => keyed_from_context(cx, st, context, selection, keys).await?,
    })
    else {
        return Ok(Lookup::Hit);
    };

    // A --link layer is written on an empty directory: nothing of the parent is seen.
    let lowers = if t.link {
        Vec::new()
    } else {
        current_lowers(cx, st).await?
    };
    // Run: the copy module writes a fresh snapshot's upper dir.
    let sources = selected.len() + inline.len() + fetched.len() + git.len();
    if !parents && sources > 1 && !dest.ends_with('/') {
        return Err(CopyError::DestNotDirectory { dest }.into());
    }
    let mut repos = Vec::new();
    for (n, g) in git.iter().enumerate() {
        let files = g.fetch(scratch.path(), n).await?;
        let f = files.clone();
        let selected = blocking(move || Ok(select_sources(&f, &["."])?)).await?;
        repos.push((files, selected));
    }
    let fill = Fill {
        files,
        selected,
        inline,
        fetched,
        dest,
        workdir,
        owner,
        chmod,
        from_layers,
        is_add: t.add.is_some(),
        exclude,
        parents,
        lowers: lowers.clone(),
        repos,
        _scratch: scratch,
    };
    let layer = make_layer(cx, st, lowers, move |mounts| fill.write(mounts)).await?;
    let parent = st.key;
    commit(cx, st, key, Some(layer), created_by, lineage).await?;
    if t.link {
        st.key = linked_state_key(&parent, &key);
    }
    Ok(Lookup::Miss)
}

/// [`lookup`], or [`lookup_linked`] for a `--link` step.
async fn lookup_step(
    cx: &StepCx<'_>,
    st: &mut StageState,
    key: CacheKey,
    lineage: Option<(CacheKey, &BTreeMap<String, String>)>,
    link: bool,
) -> Result<Lookup, Error> {
    if link {
        lookup_linked(cx, st, key, lineage).await
    } else {
        lookup(cx, st, key, lineage).await
    }
}
