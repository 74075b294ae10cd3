//! A store on a small tmpfs: a pull or build that overflows it fails with "no space left on
//! device" naming the store, and the store stays consistent and usable once space is freed.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{assert_store_sound, build, context};
use crate::util::busybox::busybox;
use crate::util::{show, Rbuild, TestDir};

/// A tmpfs mounted on a test dir, unmounted on drop (also when the test panics).
struct Tmpfs {
    dir: TestDir,
}

impl Tmpfs {
    fn mount(name: &str, size_mb: u32) -> Tmpfs {
        let dir = TestDir::new(name);
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mb}m"),
                "rbuild-test",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", dir.path().display());
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, size_mb: u32) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mb}m")])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "remount");
    }

    /// Fills it up to `leave_mb` free with one file; returns the file.
    fn fill_leaving(&self, leave_mb: u64) -> PathBuf {
        // SAFETY: statvfs fills the struct for a valid C path.
        let free = unsafe {
            let p = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()).unwrap();
            let mut s: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(p.as_ptr(), &mut s), 0);
            s.f_bavail * s.f_frsize
        };
        let size = free.saturating_sub(leave_mb << 20);
        let file = self.path().join("filler");
        std::fs::write(&file, vec![0xabu8; size as usize]).expect("write filler");
        file
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A store whose root (a symlink, since the fixture picks the path) lives on `fs`.
fn store_on(fs: &Tmpfs) -> Rbuild {
    let rb = Rbuild::new();
    let real = fs.path().join("root");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(rb.root.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&real, &rb.root).unwrap();
    rb
}

fn assert_enospc(out: &std::process::Output, root: &Path, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    let real = std::fs::canonicalize(root)
        .unwrap()
        .display()
        .to_string()
        .to_lowercase();
    assert!(
        !out.status.success(),
        "{what}: succeeded on a full disk:\n{}",
        show(out)
    );
    assert_eq!(out.status.code(), Some(1), "{what}:\n{}", show(out));
    assert!(
        err.contains("no space left on device"),
        "{what}: not named ENOSPC:\n{}",
        show(out)
    );
    assert!(
        err.contains(&root.display().to_string().to_lowercase()) || err.contains(&real),
        "{what}: the error does not name the store {}:\n{}",
        root.display(),
        show(out)
    );
}

#[test]
fn pull_that_fills_the_disk_fails_cleanly_and_recovers() {
    let reference = super::crash::big_image();
    let fs = Tmpfs::mount("diskfull-pull", 32);
    let rb = store_on(&fs);
    let filler = fs.fill_leaving(6);
    let out = rb.run(&["pull", "--progress=plain", &reference]);
    eprintln!(
        "pull on a full disk: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    assert_enospc(&out, &rb.root, "pull");
    assert_store_sound(&rb, "", "after ENOSPC in pull");
    std::fs::remove_file(filler).unwrap();
    rb.ok(&["pull", "--progress=plain", &reference]);
    assert_store_sound(&rb, "", "after the pull with space");
}

#[test]
fn build_that_fills_the_disk_fails_cleanly_and_recovers() {
    let fs = Tmpfs::mount("diskfull-build", 40);
    let rb = store_on(&fs);
    rb.ok(&["pull", "--progress=plain", &busybox().reference]);
    let ctx = context(
        "diskfull-build",
        "ARG BASE\nFROM ${BASE}\nRUN echo small > /small\n\
         RUN dd if=/dev/urandom of=/big bs=1M count=12 && echo written\n",
    );
    let first = build(&rb, ctx.path(), "full:v1");
    assert!(first.status.success() || first.status.code() == Some(1));
    // The upper dir gets its 12 MB, the layer commit then has no room.
    let _ = std::fs::remove_dir_all(rb.root.join("tmp"));
    let _ = rb.run(&["rmi", "full:v1"]);
    rb.ok(&["prune", "--all"]);
    let filler = fs.fill_leaving(18);
    let out = build(&rb, ctx.path(), "full:v1");
    eprintln!(
        "build on a full disk: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    assert_enospc(&out, &rb.root, "build");
    assert_store_sound(&rb, "", "after ENOSPC in build");
    std::fs::remove_file(filler).unwrap();
    fs.remount(64);
    let out = build(&rb, ctx.path(), "full:v1");
    assert!(
        out.status.success(),
        "build after freeing space:\n{}",
        show(&out)
    );
    assert_store_sound(&rb, "", "after the build with space");
}
