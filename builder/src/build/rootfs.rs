//! Read access to a stage's filesystem as the overlay stack it is (lowers, top-most first),
//! without mounting: path lookup through the layers honouring whiteouts and opaque
//! directories, a merged directory listing, and metadata of existing parent directories.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// The layers of a filesystem, top-most first.
#[derive(Debug, Clone, Default)]
pub struct LayeredFs {
    /// Overlay lower dirs, top-most first.
    pub lowers: Vec<PathBuf>,
}

/// One entry found in the stack: where its bytes are, and its metadata.
#[derive(Debug)]
pub struct Found {
    /// The real path in the layer that holds it.
    pub real: PathBuf,
    /// Its metadata (not following a final symlink).
    pub meta: fs::Metadata,
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    matches!(xattr_get(dir, "trusted.overlay.opaque"), Some(v) if v == b"y")
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 8];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    Some(buf[..len as usize].to_vec())
}

/// `/a/./b/../c` → `a/c`, never escaping the root.
pub fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl LayeredFs {
    /// A stack of `lowers`, top-most first.
    pub fn new(lowers: Vec<PathBuf>) -> LayeredFs {
        LayeredFs { lowers }
    }

    /// Finds `rel` (relative to the root, already clean) in the top-most layer that has it.
    /// A whiteout or an opaque directory above hides the layers below.
    pub fn lookup(&self, rel: &Path) -> io::Result<Option<Found>> {
        'layers: for lower in &self.lowers {
            // An opaque directory or a whiteout on the way down hides what is below it.
            let mut prefix = lower.clone();
            let comps: Vec<_> = rel.components().collect();
            for (i, c) in comps.iter().enumerate() {
                prefix.push(c);
                match fs::symlink_metadata(&prefix) {
                    Ok(m) if is_whiteout(&m) => return Ok(None),
                    Ok(m) if i + 1 == comps.len() => {
                        return Ok(Some(Found {
                            real: prefix,
                            meta: m,
                        }))
                    }
                    Ok(m) if m.is_dir() => {
                        if is_opaque(&prefix) {
                            // Deeper components exist only here or nowhere.
                            let rest: PathBuf = comps[i + 1..].iter().collect();
                            let real = prefix.join(rest);
                            return match fs::symlink_metadata(&real) {
                                Ok(m) if is_whiteout(&m) => Ok(None),
                                Ok(m) => Ok(Some(Found { real, meta: m })),
                                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                                Err(e) => Err(e),
                            };
                        }
                    }
                    Ok(_) => continue 'layers,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue 'layers,
                    Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue 'layers,
                    Err(e) => return Err(e),
                }
            }
            if comps.is_empty() {
                let m = fs::symlink_metadata(lower)?;
                return Ok(Some(Found {
                    real: lower.clone(),
                    meta: m,
                }));
            }
        }
        Ok(None)
    }

    /// The merged children of directory `rel`: name → where the visible entry is.
    pub fn read_dir(&self, rel: &Path) -> io::Result<BTreeMap<String, Found>> {
        let mut out: BTreeMap<String, Found> = BTreeMap::new();
        let mut hidden: Vec<String> = Vec::new();
        for lower in &self.lowers {
            let dir = lower.join(rel);
            let meta = match fs::symlink_metadata(&dir) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => break,
                Err(e) => return Err(e),
            };
            if is_whiteout(&meta) || !meta.is_dir() {
                break;
            }
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if out.contains_key(&name) || hidden.contains(&name) {
                    continue;
                }
                let m = entry.metadata()?;
                if is_whiteout(&m) {
                    hidden.push(name);
                    continue;
                }
                out.insert(
                    name,
                    Found {
                        real: entry.path(),
                        meta: m,
                    },
                );
            }
            if is_opaque(&dir) {
                break;
            }
        }
        Ok(out)
    }

    /// Creates `rel`'s directories under `upper` (an empty snapshot above these layers),
    /// giving each the mode, owner and mtime it has in the layers, so an overlay of
    /// `upper` does not change directories it merely passes through. New directories
    /// get 0755 root, or `owner` when given.
    pub fn mkdir_all_in(
        &self,
        upper: &Path,
        rel: &Path,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            let target = upper.join(&cur);
            if fs::symlink_metadata(&target).is_ok() {
                continue;
            }
            fs::create_dir(&target)?;
            match self.lookup(&cur)? {
                Some(found) if found.meta.is_dir() => {
                    copy_meta(&target, &found.meta)?;
                }
                _ => {
                    let (uid, gid) = owner.unwrap_or((0, 0));
                    std::os::unix::fs::chown(&target, Some(uid), Some(gid))?;
                    fs::set_permissions(
                        &target,
                        std::os::unix::fs::PermissionsExt::from_mode(0o755),
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Gives `target` the mode, owner and mtime of `meta`.
pub fn copy_meta(target: &Path, meta: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(
            target,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
        )?;
    }
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    filetime::set_symlink_file_times(target, mtime, mtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_honours_whiteouts_and_order() {
        let t = tempfile::tempdir().unwrap();
        let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
        fs::create_dir_all(bottom.join("d")).unwrap();
        fs::write(bottom.join("d/a"), "old").unwrap();
        fs::write(bottom.join("d/gone"), "x").unwrap();
        fs::create_dir_all(top.join("d")).unwrap();
        fs::write(top.join("d/a"), "new").unwrap();
        nix::sys::stat::mknod(
            &top.join("d/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let l = LayeredFs::new(vec![top.clone(), bottom]);
        let a = l.lookup(Path::new("d/a")).unwrap().unwrap();
        assert_eq!(fs::read_to_string(a.real).unwrap(), "new");
        assert!(l.lookup(Path::new("d/gone")).unwrap().is_none());
        let names: Vec<_> = l.read_dir(Path::new("d")).unwrap().into_keys().collect();
        assert_eq!(names, vec!["a"]);
        assert_eq!(clean("/x/../y/./z"), PathBuf::from("y/z"));
    }
}
