//! What the context keeps of one file: its kind and the `lstat` fields COPY and the
//! digests read ([`EntryStat`]), instead of a whole `std::fs::Metadata`.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A unix socket (skipped by copies, as docker does).
    Socket,
}

impl EntryKind {
    /// The kind of an `st_mode` (its `S_IFMT` bits).
    pub fn of_mode(mode: u32) -> Self {
        match mode & libc::S_IFMT {
            libc::S_IFLNK => Self::Symlink,
            libc::S_IFDIR => Self::Dir,
            libc::S_IFIFO => Self::Fifo,
            libc::S_IFCHR => Self::CharDevice,
            libc::S_IFBLK => Self::BlockDevice,
            libc::S_IFSOCK => Self::Socket,
            _ => Self::File,
        }
    }

    /// A stable one-byte tag for digests.
    pub fn tag(self) -> u8 {
        match self {
            Self::File => b'f',
            Self::Dir => b'd',
            Self::Symlink => b'l',
            Self::Fifo => b'p',
            Self::CharDevice => b'c',
            Self::BlockDevice => b'b',
            Self::Socket => b's',
        }
    }
}

/// The `lstat` fields of a context entry that are used: 64 bytes where a `Metadata` takes
/// 144. `mode` is the whole `st_mode` (type and permission bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    /// Content length.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Inode number (hard links, the stat cache).
    pub ino: u64,
    /// Device of the inode (hard links).
    pub dev: u64,
    /// Device number of a character or block device.
    pub rdev: u64,
    /// `st_mode`: the file type and permission bits.
    pub mode: u32,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of hard links.
    pub nlink: u32,
}

impl EntryStat {
    /// The fields of `meta`.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            size: meta.size(),
            mtime: meta.mtime(),
            ino: meta.ino(),
            dev: meta.dev(),
            rdev: meta.rdev(),
            mode: meta.mode(),
            mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        }
    }

    /// What kind of file this is.
    pub fn kind(&self) -> EntryKind {
        EntryKind::of_mode(self.mode)
    }

    /// The modification time in nanoseconds since the epoch.
    pub fn mtime_ns(&self) -> i64 {
        self.mtime.saturating_mul(1_000_000_000) + i64::from(self.mtime_nsec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_comes_from_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("p"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (name, kind) in [
            (".", EntryKind::Dir),
            ("f", EntryKind::File),
            ("l", EntryKind::Symlink),
            ("p", EntryKind::Fifo),
        ] {
            let meta = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            assert_eq!(EntryStat::of(&meta).kind(), kind, "{name}");
        }
    }
}
