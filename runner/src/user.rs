//! `USER name|uid[:group|gid]` resolved against the image's /etc/passwd and /etc/group,
//! with docker's rules, read through the layer stack.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::spec::User;
use crate::Error;

/// Resolves a USER spec against the layer stack `lowers` (top-most first).
///
/// docker's rules: a user matches a passwd entry by name or by uid; a numeric uid without
/// an entry is fine (gid 0); an unknown name is an error naming it. An explicit group
/// matches /etc/group by name or gid (a numeric gid without an entry is fine). Without
/// an explicit group, the supplementary groups are those listing the user as a member.
pub fn resolve_user(lowers: &[PathBuf], user_spec: &str) -> Result<User, Error> {
    let (user_part, group_part) = match user_spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (user_spec, None),
    };
    let passwd = read_through(lowers, "etc/passwd")?.unwrap_or_default();
    let group_file = read_through(lowers, "etc/group")?.unwrap_or_default();

    let numeric_uid = user_part.parse::<u32>().ok();
    let entry = passwd
        .lines()
        .filter_map(PasswdEntry::parse)
        .find(|e| e.name == user_part || Some(e.uid) == numeric_uid);
    let (uid, mut gid, name) = match (entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name)),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => {
            return Err(Error::UnknownUser {
                name: user_part.to_string(),
            })
        }
    };
    let groups: Vec<GroupEntry> = group_file.lines().filter_map(GroupEntry::parse).collect();
    let mut supplementary = Vec::new();
    match group_part {
        Some(group) if !group.is_empty() => {
            let numeric_gid = group.parse::<u32>().ok();
            match groups
                .iter()
                .find(|g| g.name == group || Some(g.gid) == numeric_gid)
            {
                Some(g) => gid = g.gid,
                None => match numeric_gid {
                    Some(n) => gid = n,
                    None => {
                        return Err(Error::UnknownGroup {
                            name: group.to_string(),
                        })
                    }
                },
            }
        }
        _ => {
            if let Some(name) = name {
                for g in &groups {
                    if g.members.contains(&name) && !supplementary.contains(&g.gid) {
                        supplementary.push(g.gid);
                    }
                }
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups: supplementary,
    })
}

/// The home directory a step running as `user_spec` gets in `HOME` when the image does not
/// set it, by runc's rule (what docker does): the home field of the passwd entry of the user
/// (matched by name or uid like [`resolve_user`]; uid 0 when the spec is empty), else `/`
/// (a uid with no entry, no /etc/passwd, an empty home field).
pub fn home_dir(lowers: &[PathBuf], user_spec: &str) -> Result<String, Error> {
    let user_part = user_spec.split_once(':').map_or(user_spec, |(u, _)| u);
    let passwd = read_through(lowers, "etc/passwd")?.unwrap_or_default();
    let numeric_uid = if user_part.is_empty() {
        Some(0)
    } else {
        user_part.parse::<u32>().ok()
    };
    let home = passwd
        .lines()
        .filter_map(PasswdEntry::parse)
        .find(|e| (!user_part.is_empty() && e.name == user_part) || Some(e.uid) == numeric_uid)
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/");
    Ok(home.to_string())
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

impl<'a> PasswdEntry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        if line.starts_with('#') {
            return None;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields.get(5).copied().unwrap_or(""),
        })
    }
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

impl<'a> GroupEntry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        if line.starts_with('#') {
            return None;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 {
            return None;
        }
        let members = fields
            .get(3)
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some(GroupEntry {
            name: fields[0],
            gid: fields[2].parse().ok()?,
            members,
        })
    }
}

/// Reads `rel` as the merged overlay would show it: the top-most layer that has it wins;
/// a whiteout (either form, see [`is_whiteout`]) hides it; a missing file is `None`.
fn read_through(lowers: &[PathBuf], rel: &str) -> Result<Option<String>, Error> {
    for lower in lowers {
        let path = lower.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(meta) if is_whiteout(&path, &meta) => return Ok(None),
            Ok(_) => {
                return fs::read(&path)
                    .map(|bytes| Some(String::from_utf8_lossy(&bytes).into_owned()))
                    .map_err(|source| Error::ReadUserDb { path, source })
            }
            // Not a directory: a parent is a file here, a whiteout perhaps.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                if hides_below(lower, rel) {
                    return Ok(None);
                }
            }
            Err(source) => return Err(Error::ReadUserDb { path, source }),
        }
    }
    Ok(None)
}

/// Whether a parent directory of `rel` in `lower` is opaque or whited out.
fn hides_below(lower: &Path, rel: &str) -> bool {
    let mut dir = lower.to_path_buf();
    for component in Path::new(rel)
        .parent()
        .into_iter()
        .flat_map(Path::components)
    {
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if is_whiteout(&dir, &meta) => return true,
            Ok(_) => {
                if is_opaque(&dir) {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Whether a snapshot entry is a whiteout: a 0:0 character device, or the empty file
/// marked `user.overlay.whiteout` that a store on a filesystem refusing 0:0 devices holds.
fn is_whiteout(path: &Path, meta: &fs::Metadata) -> bool {
    let kind = meta.file_type();
    if kind.is_char_device() {
        return meta.rdev() == 0;
    }
    kind.is_file()
        && meta.len() == 0
        && matches!(xattr::get(path, "user.overlay.whiteout"), Ok(Some(_)))
}

/// Whether a directory carries an opaque mark, trusted or user (a rootless overlay's).
fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:alice\n";

    #[test]
    fn name_resolves_with_supplementary_groups() {
        let l = layer(PASSWD, GROUP);
        let user = resolve_user(&[l.path().to_path_buf()], "alice").unwrap();
        assert_eq!(
            user,
            User {
                uid: 1000,
                gid: 1000,
                groups: vec![10, 29]
            }
        );
    }

    #[test]
    fn home_comes_from_passwd_else_slash() {
        let l = layer(PASSWD, GROUP);
        let lowers = [l.path().to_path_buf()];
        assert_eq!(home_dir(&lowers, "").unwrap(), "/root");
        assert_eq!(home_dir(&lowers, "root").unwrap(), "/root");
        assert_eq!(home_dir(&lowers, "0:0").unwrap(), "/root");
        assert_eq!(home_dir(&lowers, "alice").unwrap(), "/home/alice");
        assert_eq!(home_dir(&lowers, "1000:wheel").unwrap(), "/home/alice");
        assert_eq!(home_dir(&lowers, "4242").unwrap(), "/");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(home_dir(&[empty.path().to_path_buf()], "").unwrap(), "/");
    }

    #[test]
    fn numeric_uid_without_entry_gets_gid_zero() {
        let l = layer(PASSWD, GROUP);
        let user = resolve_user(&[l.path().to_path_buf()], "4242").unwrap();
        assert_eq!(
            user,
            User {
                uid: 4242,
                gid: 0,
                groups: vec![]
            }
        );
    }

    #[test]
    fn explicit_group_by_name_and_number() {
        let l = layer(PASSWD, GROUP);
        let lowers = [l.path().to_path_buf()];
        assert_eq!(resolve_user(&lowers, "alice:wheel").unwrap().gid, 10);
        assert_eq!(
            resolve_user(&lowers, "alice:wheel").unwrap().groups,
            Vec::<u32>::new()
        );
        assert_eq!(resolve_user(&lowers, "1000:777").unwrap().gid, 777);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let l = layer(PASSWD, GROUP);
        let lowers = [l.path().to_path_buf()];
        let err = resolve_user(&lowers, "mallory").unwrap_err();
        assert!(err.to_string().contains("mallory"), "{err}");
        let err = resolve_user(&lowers, "alice:nogroup").unwrap_err();
        assert!(err.to_string().contains("nogroup"), "{err}");
    }

    #[test]
    fn top_layer_wins_and_whiteouts_hide() {
        let bottom = layer(PASSWD, GROUP);
        let top = layer("alice:x:2000:2000::/:/bin/sh\n", "");
        let lowers = [top.path().to_path_buf(), bottom.path().to_path_buf()];
        assert_eq!(resolve_user(&lowers, "alice").unwrap().uid, 2000);

        let wh = tempfile::tempdir().unwrap();
        fs::create_dir(wh.path().join("etc")).unwrap();
        nix::sys::stat::mknod(
            &wh.path().join("etc/passwd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        let lowers = [wh.path().to_path_buf(), bottom.path().to_path_buf()];
        assert!(resolve_user(&lowers, "alice").is_err());
        assert_eq!(resolve_user(&lowers, "0").unwrap().uid, 0);
    }

    #[test]
    fn either_whiteout_form_and_either_opaque_mark_hide_lower_layers() {
        let lower = layer(PASSWD, GROUP);
        let lowers =
            |top: &tempfile::TempDir| vec![top.path().to_path_buf(), lower.path().to_path_buf()];

        // /etc/passwd whited out by the xattr form: alice is unknown.
        let top = tempfile::tempdir().unwrap();
        fs::create_dir(top.path().join("etc")).unwrap();
        let wh = top.path().join("etc/passwd");
        fs::write(&wh, b"").unwrap();
        xattr::set(&wh, "user.overlay.whiteout", b"y").unwrap();
        assert!(resolve_user(&lowers(&top), "alice").is_err());
        // It hides only itself: /etc/group still comes from the lower layer.
        assert!(read_through(&lowers(&top), "etc/group")
            .unwrap()
            .unwrap()
            .contains("wheel"));

        // /etc itself whited out by the xattr form.
        let top = tempfile::tempdir().unwrap();
        let wh = top.path().join("etc");
        fs::write(&wh, b"").unwrap();
        xattr::set(&wh, "user.overlay.whiteout", b"y").unwrap();
        assert_eq!(read_through(&lowers(&top), "etc/passwd").unwrap(), None);

        // /etc made opaque by a rootless overlay's user mark.
        let top = tempfile::tempdir().unwrap();
        fs::create_dir(top.path().join("etc")).unwrap();
        xattr::set(top.path().join("etc"), "user.overlay.opaque", b"y").unwrap();
        assert_eq!(read_through(&lowers(&top), "etc/passwd").unwrap(), None);
        assert!(resolve_user(&lowers(&top), "alice").is_err());
        // Without the mark the lower layer shows through.
        let top = tempfile::tempdir().unwrap();
        fs::create_dir(top.path().join("etc")).unwrap();
        assert_eq!(resolve_user(&lowers(&top), "alice").unwrap().uid, 1000);
    }
}
