//! The file side of COPY/ADD and bind mounts, over a [`LayeredFs`] (the context is a
//! one-layer stack): source selection with wildcards and `.dockerignore`, content digests
//! (names, modes, owners, symlink targets, bytes; not mtimes), and copying a selection
//! into a snapshot's upper dir with docker's ownership and mode rules.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use std::sync::{Arc, Mutex};

use super::context_dir::Ignore;
use super::rootfs::{Found, LayeredFs};
use crate::context::{hash_file, StatCache};
use crate::Error;

/// Where COPY reads from.
pub struct SourceRoot<'a> {
    /// The files.
    pub fs: LayeredFs,
    /// `.dockerignore` (the context only).
    pub ignore: Option<&'a Ignore>,
    /// Keep the files' owners (COPY --from a stage or image) instead of 0:0.
    pub keep_owner: bool,
    /// Remembered file digests (the context only), so unchanged files are not read.
    pub stat_cache: Option<Arc<Mutex<StatCache>>>,
}

/// One selected source.
#[derive(Debug)]
pub struct Selected {
    /// Its path relative to the root.
    pub rel: PathBuf,
    /// Where it is.
    pub found: Found,
}

/// Ownership and mode overrides (`--chown`, `--chmod`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// uid, gid.
    pub owner: Option<(u32, u32)>,
    /// Permission bits.
    pub mode: Option<u32>,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `path` relative to the root; an error when `..` climbs out of it.
pub fn relative(path: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => {
                return Err(Error::OutsideContext {
                    source_path: path.to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// filepath.Match for one path component.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| rec(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && rec(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|&c| c == ']') else {
                    return !n.is_empty() && n[0] == '[' && rec(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let mut class = &p[1..end];
                let negate = matches!(class.first(), Some('^') | Some('!'));
                if negate {
                    class = &class[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && rec(&p[end + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => !n.is_empty() && n[0] == p[1] && rec(&p[2..], &n[1..]),
            Some(&c) => !n.is_empty() && n[0] == c && rec(&p[1..], &n[1..]),
        }
    }
    rec(&p, &n)
}

impl SourceRoot<'_> {
    fn excluded(&self, rel: &Path) -> bool {
        match self.ignore {
            Some(i) if !rel.as_os_str().is_empty() => i.excluded(&rel.to_string_lossy()),
            _ => false,
        }
    }

    /// The entries `pattern` names (a path, possibly with wildcards). A missing path, or a
    /// wildcard matching nothing, is an error naming the pattern.
    pub fn select(&self, pattern: &str) -> Result<Vec<Selected>, Error> {
        let rel = relative(pattern)?;
        let io_err = |e: io::Error| Error::Io {
            op: "read",
            path: PathBuf::from(pattern),
            source: e,
        };
        let mut out = Vec::new();
        if !has_glob(pattern) {
            if !self.excluded(&rel) {
                if let Some(found) = self.follow(&rel).map_err(io_err)? {
                    out.push(Selected { rel, found });
                }
            }
        } else {
            let mut partial = vec![PathBuf::new()];
            let comps: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            for comp in &comps {
                let mut next = Vec::new();
                for base in &partial {
                    if has_glob(comp) {
                        for (name, _) in self.fs.read_dir(base).map_err(io_err)? {
                            if glob_match(comp, &name) {
                                next.push(base.join(name));
                            }
                        }
                    } else {
                        next.push(base.join(comp));
                    }
                }
                partial = next;
            }
            for rel in partial {
                if self.excluded(&rel) {
                    continue;
                }
                if let Some(found) = self.follow(&rel).map_err(io_err)? {
                    out.push(Selected { rel, found });
                }
            }
        }
        if out.is_empty() {
            return Err(Error::SourceNotFound {
                source_path: pattern.to_string(),
            });
        }
        Ok(out)
    }

    /// Looks `rel` up, following a symlink named by the source itself (as docker does)
    /// while it stays inside the root.
    fn follow(&self, rel: &Path) -> io::Result<Option<Found>> {
        let mut rel = rel.to_path_buf();
        for _ in 0..32 {
            let Some(found) = self.fs.lookup(&rel)? else {
                return Ok(None);
            };
            if !found.meta.file_type().is_symlink() {
                return Ok(Some(found));
            }
            let target = fs::read_link(&found.real)?;
            let joined = if target.is_absolute() {
                target
            } else {
                rel.parent().unwrap_or(Path::new("")).join(target)
            };
            match relative(&joined.to_string_lossy()) {
                Ok(r) => rel = r,
                Err(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// A digest of `sel`: for each entry under it (sorted), its relative name, type, mode,
    /// owner (when kept), symlink target and content.
    pub fn digest(&self, sel: &Selected) -> Result<String, Error> {
        let mut h = Sha256::new();
        self.digest_into(&mut h, &sel.rel, Path::new(""), &sel.found)?;
        Ok(hex::encode(h.finalize()))
    }

    fn digest_into(&self, h: &mut Sha256, rel: &Path, name: &Path, f: &Found) -> Result<(), Error> {
        let m = &f.meta;
        let field = |h: &mut Sha256, b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        field(h, name.to_string_lossy().as_bytes());
        field(h, &(m.mode()).to_be_bytes());
        if self.keep_owner {
            field(h, &m.uid().to_be_bytes());
            field(h, &m.gid().to_be_bytes());
        }
        let ft = m.file_type();
        if ft.is_symlink() {
            let t = fs::read_link(&f.real).map_err(Error::io("read link", &f.real))?;
            field(h, t.to_string_lossy().as_bytes());
        } else if ft.is_file() {
            field(h, &self.file_digest(&f.real, m)?);
        } else if ft.is_dir() {
            let children = self.fs.read_dir(rel).map_err(Error::io("read", &f.real))?;
            for (child, found) in children {
                let crel = rel.join(&child);
                if self.excluded(&crel) {
                    continue;
                }
                self.digest_into(h, &crel, &name.join(&child), &found)?;
            }
        }
        Ok(())
    }

    /// A file's sha256, from the stat cache when its metadata is unchanged.
    fn file_digest(&self, path: &Path, meta: &fs::Metadata) -> Result<[u8; 32], Error> {
        let Some(cache) = &self.stat_cache else {
            return Ok(hash_file(path)?);
        };
        let cached = cache.lock().ok().and_then(|mut c| c.lookup(path, meta));
        if let Some(d) = cached {
            return Ok(d);
        }
        let d = hash_file(path)?;
        if let Ok(mut c) = cache.lock() {
            c.insert(path, meta, d);
        }
        Ok(d)
    }

    /// Copies `sel` to `dest` in `upper`: a directory's contents into `dest`, anything else
    /// to `dest` itself. Parent directories must exist.
    pub fn copy(
        &self,
        sel: &Selected,
        upper: &Path,
        dest: &Path,
        ov: Overrides,
    ) -> Result<(), Error> {
        self.copy_entry(&sel.rel, &sel.found, &upper.join(dest), ov, true)
    }

    fn copy_entry(
        &self,
        rel: &Path,
        f: &Found,
        target: &Path,
        ov: Overrides,
        top: bool,
    ) -> Result<(), Error> {
        let m = &f.meta;
        let ft = m.file_type();
        let (uid, gid) = ov.owner.unwrap_or(if self.keep_owner {
            (m.uid(), m.gid())
        } else {
            (0, 0)
        });
        if ft.is_dir() {
            let existed = fs::symlink_metadata(target).is_ok_and(|t| t.is_dir());
            if !existed {
                let _ = fs::remove_file(target);
                fs::create_dir(target).map_err(Error::io("create", target))?;
            }
            let children = self.fs.read_dir(rel).map_err(Error::io("read", &f.real))?;
            for (child, found) in children {
                let crel = rel.join(&child);
                if self.excluded(&crel) {
                    continue;
                }
                self.copy_entry(&crel, &found, &target.join(&child), ov, false)?;
            }
            // The top directory's own metadata is the destination's when it existed.
            if !(top && existed) {
                set_owner_mode_time(target, m, uid, gid, ov.mode)?;
            }
            return Ok(());
        }
        if fs::symlink_metadata(target).is_ok() {
            if fs::symlink_metadata(target).is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(target).map_err(Error::io("replace", target))?;
            } else {
                fs::remove_file(target).map_err(Error::io("replace", target))?;
            }
        }
        if ft.is_symlink() {
            let link = fs::read_link(&f.real).map_err(Error::io("read link", &f.real))?;
            std::os::unix::fs::symlink(&link, target).map_err(Error::io("create", target))?;
            std::os::unix::fs::lchown(target, Some(uid), Some(gid))
                .map_err(Error::io("chown", target))?;
            let mtime = filetime::FileTime::from_last_modification_time(m);
            filetime::set_symlink_file_times(target, mtime, mtime)
                .map_err(Error::io("set times of", target))?;
            return Ok(());
        }
        if ft.is_file() {
            fs::copy(&f.real, target).map_err(Error::io("copy to", target))?;
            return set_owner_mode_time(target, m, uid, gid, ov.mode);
        }
        // Devices, fifos and sockets are not copied (docker copies them from images only;
        // the layer tar would carry them, but a context never needs them).
        Ok(())
    }
}

fn set_owner_mode_time(
    target: &Path,
    m: &fs::Metadata,
    uid: u32,
    gid: u32,
    mode: Option<u32>,
) -> Result<(), Error> {
    std::os::unix::fs::lchown(target, Some(uid), Some(gid)).map_err(Error::io("chown", target))?;
    let bits = mode.unwrap_or(m.mode() & 0o7777);
    fs::set_permissions(target, fs::Permissions::from_mode(bits))
        .map_err(Error::io("chmod", target))?;
    let mtime = filetime::FileTime::from_last_modification_time(m);
    filetime::set_file_times(target, mtime, mtime).map_err(Error::io("set times of", target))
}

/// Copies a whole layered tree into `dest` (a plain directory), for bind mounts of a stage.
pub fn materialize(fs_: &LayeredFs, rel: &Path, dest: &Path) -> Result<(), Error> {
    let root = SourceRoot {
        fs: fs_.clone(),
        ignore: None,
        keep_owner: true,
        stat_cache: None,
    };
    let Some(found) = fs_.lookup(rel).map_err(Error::io("read", rel))? else {
        return Err(Error::SourceNotFound {
            source_path: format!("/{}", rel.display()),
        });
    };
    let sel = Selected {
        rel: rel.to_path_buf(),
        found,
    };
    root.copy_entry(&sel.rel, &sel.found, dest, Overrides::default(), true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "app.conf"));
        assert!(!glob_match("*.conf", "app.conf.bak"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(relative("../x").is_err());
        assert_eq!(relative("./a/../b").unwrap(), PathBuf::from("b"));
    }

    #[test]
    fn select_copy_and_digest() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        fs::create_dir_all(ctx.join("d/sub")).unwrap();
        fs::write(ctx.join("a.conf"), "a").unwrap();
        fs::write(ctx.join("b.conf"), "b").unwrap();
        fs::write(ctx.join("d/sub/f"), "f").unwrap();
        std::os::unix::fs::symlink("../a.conf", ctx.join("d/link")).unwrap();
        let root = SourceRoot {
            fs: LayeredFs::new(vec![ctx.clone()]),
            ignore: None,
            keep_owner: false,
            stat_cache: None,
        };
        let sel = root.select("*.conf").unwrap();
        assert_eq!(sel.len(), 2);
        assert!(matches!(
            root.select("nope"),
            Err(Error::SourceNotFound { .. })
        ));
        let d = root.select("d").unwrap();
        let before = root.digest(&d[0]).unwrap();
        let upper = t.path().join("upper");
        fs::create_dir_all(upper.join("dst")).unwrap();
        root.copy(
            &d[0],
            &upper,
            Path::new("dst"),
            Overrides {
                owner: Some((7, 8)),
                mode: None,
            },
        )
        .unwrap();
        assert_eq!(fs::read_to_string(upper.join("dst/sub/f")).unwrap(), "f");
        assert_eq!(
            fs::read_link(upper.join("dst/link")).unwrap(),
            PathBuf::from("../a.conf")
        );
        assert_eq!(fs::metadata(upper.join("dst/sub/f")).unwrap().uid(), 7);
        fs::write(ctx.join("d/sub/f"), "g").unwrap();
        assert_ne!(root.digest(&d[0]).unwrap(), before);
    }
}
