//! Source selection for COPY/ADD: each source argument resolved against the walked
//! context (so `.dockerignore`d paths do not exist), with wildcards and symlinks.
//!
//! A source is cleaned inside the context root (`/x` and `../x` both mean `x`), so it can
//! never name anything outside. Wildcards follow Go's `filepath.Match` (`*` stays within
//! one path element). A symlink named as a source (or met as a parent element) is
//! followed inside the context, as BuildKit does for COPY; links *inside* a copied
//! directory are copied as links.

use super::{glob, pathclean, ContextError, ContextFiles, EntryKind};

/// How many symlinks one source may go through before it is called a loop.
const MAX_LINKS: usize = 40;

/// One source of a COPY/ADD, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedSource {
    /// The source argument this came from, as written.
    pub arg: String,
    /// The path that matched, relative to the context root (`.` for the root).
    pub name: String,
    /// `name` with symlinks followed inside the context; what is read.
    pub resolved: String,
    /// What `resolved` is.
    pub kind: EntryKind,
}

impl SelectedSource {
    /// The name this source gets inside a destination directory: its last element.
    pub fn base_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

/// Resolves COPY/ADD source arguments against `files`, in argument order; a wildcard
/// argument contributes its matches in walk order. An argument that matches nothing is an
/// error naming it.
pub fn select_sources<S: AsRef<str>>(
    files: &ContextFiles,
    args: &[S],
) -> Result<Vec<SelectedSource>, ContextError> {
    let mut selected = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        let cleaned = pathclean::clean_in_root(arg);
        if glob::has_wildcards(&cleaned) {
            if glob::validate(&cleaned).is_err() {
                return Err(ContextError::BadPattern { pattern: cleaned });
            }
            let before = selected.len();
            for entry in files.iter() {
                let name = entry.name();
                if glob::matches(&cleaned, &name).unwrap_or(false) {
                    let (resolved, kind) = resolve(files, &name, arg)?;
                    selected.push(SelectedSource {
                        arg: arg.to_string(),
                        name: name.into_owned(),
                        resolved,
                        kind,
                    });
                }
            }
            if selected.len() == before {
                return Err(ContextError::NoSourceFiles {
                    pattern: arg.to_string(),
                });
            }
        } else {
            let (resolved, kind) = resolve(files, &cleaned, arg)?;
            selected.push(SelectedSource {
                arg: arg.to_string(),
                name: cleaned,
                resolved,
                kind,
            });
        }
    }
    Ok(selected)
}

/// Follows symlinks along `name` inside the context; the final element too.
fn resolve(
    files: &ContextFiles,
    name: &str,
    arg: &str,
) -> Result<(String, EntryKind), ContextError> {
    if name == "." {
        return Ok((".".to_string(), EntryKind::Dir));
    }
    let not_found = || ContextError::SourceNotFound {
        path: arg.to_string(),
    };
    let mut pending: Vec<String> = name.split('/').rev().map(str::to_string).collect();
    let mut current = String::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        let candidate = if current.is_empty() {
            part
        } else {
            format!("{current}/{part}")
        };
        let entry = files.get(&candidate).ok_or_else(not_found)?;
        if entry.kind() != EntryKind::Symlink {
            current = candidate;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(ContextError::SymlinkLoop {
                path: arg.to_string(),
            });
        }
        let full = entry.path();
        let target = std::fs::read_link(&full).map_err(|source| ContextError::Io {
            op: "read link",
            path: full,
            source,
        })?;
        pathclean::follow_link(&mut current, &target, &mut pending);
    }
    if current.is_empty() {
        return Ok((".".to_string(), EntryKind::Dir));
    }
    let kind = files.get(&current).ok_or_else(not_found)?.kind();
    Ok((current, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::IgnoreRules;

    fn context(paths: &[&str], ignore: &[&str]) -> (tempfile::TempDir, ContextFiles) {
        let dir = tempfile::tempdir().unwrap();
        for p in paths {
            let full = dir.path().join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, p.as_bytes()).unwrap();
        }
        std::os::unix::fs::symlink("../../etc/passwd", dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("sub", dir.path().join("sublink")).unwrap();
        let files = ContextFiles::walk(dir.path(), &IgnoreRules::new(ignore).unwrap()).unwrap();
        (dir, files)
    }

    fn names(selected: &[SelectedSource]) -> Vec<&str> {
        selected.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn wildcards_select_in_walk_order() {
        let (_d, files) = context(&["a.txt", "b.txt", "c.md", "sub/x.txt", "bz"], &[]);
        let got = select_sources(&files, &["*.txt"]).unwrap();
        assert_eq!(names(&got), ["a.txt", "b.txt"]);
        let got = select_sources(&files, &["sub/*"]).unwrap();
        assert_eq!(names(&got), ["sub/x.txt"]);
        let got = select_sources(&files, &["[a-b]*"]).unwrap();
        assert_eq!(names(&got), ["a.txt", "b.txt", "bz"]);
    }

    #[test]
    fn ignored_sources_do_not_exist() {
        let (_d, files) = context(&["app.conf", "keep"], &["app.conf"]);
        let err = select_sources(&files, &["app.conf"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file not found in build context or excluded by .dockerignore: stat app.conf"
        );
        let err = select_sources(&files, &["*.conf"]).unwrap_err();
        assert!(err.to_string().contains("no source files were specified"));
    }

    #[test]
    fn paths_stay_in_the_context() {
        let (_d, files) = context(&["x"], &[]);
        assert_eq!(select_sources(&files, &["../x"]).unwrap()[0].name, "x");
        assert_eq!(select_sources(&files, &["/x"]).unwrap()[0].name, "x");
        // `escape -> ../../etc/passwd` resolves inside the context, where it is absent.
        assert!(select_sources(&files, &["escape"]).is_err());
    }

    #[test]
    fn symlinks_followed_inside_the_context() {
        let (_d, files) = context(&["sub/f"], &[]);
        let got = select_sources(&files, &["sublink/f"]).unwrap();
        assert_eq!(got[0].resolved, "sub/f");
        let got = select_sources(&files, &["sublink"]).unwrap();
        assert_eq!(
            (got[0].resolved.as_str(), got[0].kind),
            ("sub", EntryKind::Dir)
        );
        assert_eq!(got[0].base_name(), "sublink");
    }
}
