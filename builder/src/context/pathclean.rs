//! Go's `path.Clean` and `path.Dir` on slash-separated strings, as Docker applies them.

/// Lexically cleans a slash path the way Go's `path.Clean` does: repeated slashes become
/// one, `.` elements go, `..` removes the element before it (and is dropped at a root),
/// a trailing slash goes. An empty result is `.`; a rooted path keeps its `/`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `path.Dir`: everything before the last slash, cleaned (`.` when there is none).
pub fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => ".".to_string(),
    }
}

/// One step of a chroot-style path walk that met a symlink: `current` is the path walked
/// so far (the link itself), `target` what the link points to. The walk restarts at the
/// root with the target's components queued on `pending` (last component first), so an
/// absolute or `..`-climbing target never leaves the root.
pub fn follow_link(current: &mut String, target: &std::path::Path, pending: &mut Vec<String>) {
    let target = target.to_string_lossy();
    let joined = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{current}/{target}")
    };
    let cleaned = clean_in_root(&joined);
    current.clear();
    if cleaned != "." {
        pending.extend(cleaned.split('/').rev().map(str::to_string));
    }
}

/// Cleans `path` as if it were inside a root directory: the result is relative, never
/// starts with `..`, and is `.` for the root itself. `/x`, `../x` and `x` all give `x`.
pub fn clean_in_root(path: &str) -> String {
    let rooted = clean(&format!("/{path}"));
    match rooted.trim_start_matches('/') {
        "" => ".".to_string(),
        rel => rel.to_string(),
    }
}

/// Whether the relative `path` climbs above its root with `..` (`../x`, `a/../../x`), as
/// Docker's classic builder refuses for COPY sources. Absolute paths are rooted: never.
pub fn leaves_root(path: &str) -> bool {
    if path.starts_with('/') {
        return false;
    }
    let cleaned = clean(path);
    cleaned == ".." || cleaned.starts_with("../")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_the_root() {
        for p in ["..", "../x", "a/../../x", "./../x"] {
            assert!(leaves_root(p), "{p}");
        }
        for p in ["x", "a/../x", "/../x", ".", "a/..", "..x"] {
            assert!(!leaves_root(p), "{p}");
        }
    }

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("/", "/"),
            ("file/", "file"),
            ("./foo", "foo"),
            ("dir1//foo", "dir1/foo"),
            ("./dir1/../foo2", "foo2"),
            ("../../a", "../../a"),
            ("/../a", "/a"),
            ("a/b/../../..", ".."),
            ("!foo/./bar", "!foo/bar"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn dir_matches_go() {
        assert_eq!(dir("a"), ".");
        assert_eq!(dir("a/b/c"), "a/b");
        assert_eq!(dir("/any/path/there"), "/any/path");
        assert_eq!(dir("/a"), "/");
    }

    #[test]
    fn clean_in_root_never_escapes() {
        assert_eq!(clean_in_root("../../etc/passwd"), "etc/passwd");
        assert_eq!(clean_in_root("/app.conf"), "app.conf");
        assert_eq!(clean_in_root("."), ".");
        assert_eq!(clean_in_root("a/../.."), ".");
    }
}
