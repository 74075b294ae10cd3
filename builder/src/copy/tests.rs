//! Tests of COPY/ADD file writing: destination rules, ownership, links, archives.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::context::{select_sources, IgnoreRules};
use rbuild_store::Compression;

/// A build context, a lower layer and an empty upper; every copy is made twice, also into
/// a second upper with regular files deferred, and both must give the same layer.
struct Fixture {
    context: tempfile::TempDir,
    lower: tempfile::TempDir,
    upper: tempfile::TempDir,
    lowers: Vec<PathBuf>,
    deferred_upper: tempfile::TempDir,
    deferred: std::cell::RefCell<rbuild_store::ExternalFiles>,
}

impl Fixture {
    fn new() -> Self {
        let context = tempfile::tempdir().unwrap();
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let lowers = vec![lower.path().to_path_buf()];
        Self {
            context,
            lower,
            upper,
            lowers,
            deferred_upper: tempfile::tempdir().unwrap(),
            deferred: Default::default(),
        }
    }

    fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.context.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    fn lower_dir(&self, rel: &str, mode: u32, owner: u32) {
        let p = self.lower.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::lchown(&p, Some(owner), Some(owner)).unwrap();
    }

    fn copy(
        &self,
        args: &[&str],
        dest: &str,
        tweak: impl FnOnce(&mut CopySpec),
    ) -> Result<CopyReport, String> {
        self.copy_ignoring(args, dest, &[], tweak)
    }

    fn copy_ignoring(
        &self,
        args: &[&str],
        dest: &str,
        ignore: &[&str],
        tweak: impl FnOnce(&mut CopySpec),
    ) -> Result<CopyReport, String> {
        let rules = IgnoreRules::new(ignore).unwrap();
        let files = ContextFiles::walk(self.context.path(), &rules).unwrap();
        let selected = select_sources(&files, args).map_err(|e| e.to_string())?;
        let mut spec = CopySpec::new(
            CopySource::Tree {
                files: &files,
                selected: &selected,
            },
            dest,
        );
        tweak(&mut spec);
        let layers = Layers {
            upper: self.upper.path(),
            lowers: &self.lowers,
            deferred: None,
        };
        let copied = copy_into(&spec, &layers).map_err(|e| e.to_string());
        let deferring = Layers {
            upper: self.deferred_upper.path(),
            lowers: &self.lowers,
            deferred: (!spec.unpack_archives).then_some(&self.deferred),
        };
        let deferred = copy_into(&spec, &deferring).map_err(|e| e.to_string());
        assert_eq!(copied, deferred, "copying and deferring files differ");
        assert_same_layer(
            &layer_tar(self.upper.path(), &Default::default()),
            &layer_tar(self.deferred_upper.path(), &self.deferred.borrow()),
        );
        copied
    }

    fn up(&self, rel: &str) -> PathBuf {
        self.upper.path().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.up(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
}

fn layer_tar(upper: &Path, external: &rbuild_store::ExternalFiles) -> Vec<u8> {
    let mut out = Vec::new();
    rbuild_store::write_layer_tar_with(upper, external, &mut out, &Default::default())
        .unwrap_or_else(|e| panic!("layer tar of {}: {e}", upper.display()));
    out
}

/// Same members with the same names, kinds, modes, owners, links and contents, and the
/// same mtimes except for directories (parents a copy creates get the time of creation).
fn assert_same_layer(a: &[u8], b: &[u8]) {
    fn members(tar_bytes: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            let mtime = match h.entry_type() {
                tar::EntryType::Directory => 0,
                _ => h.mtime().unwrap(),
            };
            out.push(format!(
                "{} {:?} {:o} {}:{} {mtime} {:?} {}",
                entry.path().unwrap().display(),
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                entry.link_name().unwrap(),
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&content)),
            ));
        }
        out
    }
    assert_eq!(
        members(a),
        members(b),
        "layer of the copy and of the deferred copy"
    );
}

fn meta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn file_into_trailing_slash_dir() {
    let f = Fixture::new();
    f.file("app.conf", "conf");
    f.copy(&["app.conf"], "/etc/app/", |_| {}).unwrap();
    assert_eq!(f.read("etc/app/app.conf"), "conf");
}

#[test]
fn file_as_dest_without_slash() {
    let f = Fixture::new();
    f.file("app.conf", "conf");
    f.copy(&["app.conf"], "/etc/renamed", |_| {}).unwrap();
    assert!(meta(&f.up("etc/renamed")).is_file());
}

#[test]
fn existing_lower_dir_receives_the_file() {
    let f = Fixture::new();
    f.file("app.conf", "conf");
    f.lower_dir("srv", 0o750, 7);
    f.copy(&["app.conf"], "/srv", |_| {}).unwrap();
    assert_eq!(f.read("srv/app.conf"), "conf");
    // The lower dir is re-created in the upper with its own mode and owner.
    let m = meta(&f.up("srv"));
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o750, 7));
}

#[test]
fn several_sources_need_a_dir_dest() {
    let f = Fixture::new();
    f.file("a.txt", "a");
    f.file("b.txt", "b");
    let err = f.copy(&["a.txt", "b.txt"], "/dest", |_| {}).unwrap_err();
    assert!(
        err.contains("destination must be a directory and end with a /"),
        "{err}"
    );
    let err = f.copy(&["*.txt"], "/dest", |_| {}).unwrap_err();
    assert!(err.contains("end with a /"), "{err}");
    f.copy(&["*.txt"], "/dest/", |_| {}).unwrap();
    assert_eq!(f.read("dest/a.txt") + &f.read("dest/b.txt"), "ab");
}

#[test]
fn a_single_wildcard_match_is_a_single_source() {
    let f = Fixture::new();
    f.file("only.txt", "o");
    f.file("x.md", "m");
    f.copy(&["*.txt"], "/renamed", |_| {}).unwrap();
    assert_eq!(f.read("renamed"), "o");
}

#[test]
fn dir_source_copies_contents() {
    let f = Fixture::new();
    f.file("src/a", "a");
    f.file("src/sub/b", "b");
    f.copy(&["src"], "/app", |_| {}).unwrap();
    assert_eq!(f.read("app/a"), "a");
    assert_eq!(f.read("app/sub/b"), "b");
    assert!(!f.up("app/src").exists());
}

#[test]
fn relative_dest_uses_workdir_and_stays_in_root() {
    let f = Fixture::new();
    f.file("a", "a");
    f.copy(&["a"], "rel/", |s| s.workdir = "/work".into())
        .unwrap();
    assert_eq!(f.read("work/rel/a"), "a");
    f.copy(&["a"], ".", |s| s.workdir = "/w2".into()).unwrap();
    assert_eq!(f.read("w2/a"), "a");
    f.copy(&["a"], "../../../escaped/", |s| s.workdir = "/w".into())
        .unwrap();
    assert_eq!(f.read("escaped/a"), "a");
}

#[test]
fn chown_applies_to_copies_and_created_parents() {
    let f = Fixture::new();
    f.file("d/f", "x");
    f.copy(&["d"], "/new/parent/", |s| s.chown = Some((1000, 1001)))
        .unwrap();
    for rel in ["new", "new/parent", "new/parent/f"] {
        let m = meta(&f.up(rel));
        assert_eq!((m.uid(), m.gid()), (1000, 1001), "{rel}");
    }
    assert_eq!(meta(&f.up("new")).mode() & 0o7777, 0o755);
}

#[test]
fn context_files_become_root_unless_preserved() {
    let f = Fixture::new();
    let p = f.file("f", "x");
    std::os::unix::fs::lchown(&p, Some(42), Some(43)).unwrap();
    f.copy(&["f"], "/a", |_| {}).unwrap();
    assert_eq!(meta(&f.up("a")).uid(), 0);
    f.copy(&["f"], "/b", |s| s.preserve_owner = true).unwrap();
    let m = meta(&f.up("b"));
    assert_eq!((m.uid(), m.gid()), (42, 43));
}

#[test]
fn chmod_sets_files_and_dirs_not_links() {
    let f = Fixture::new();
    f.file("d/sub/f", "x");
    std::os::unix::fs::symlink("f", f.context.path().join("d/sub/l")).unwrap();
    f.copy(&["d"], "/out/", |s| s.chmod = Some(0o640)).unwrap();
    assert_eq!(meta(&f.up("out/sub/f")).mode() & 0o7777, 0o640);
    assert_eq!(meta(&f.up("out/sub")).mode() & 0o7777, 0o640);
    assert!(meta(&f.up("out/sub/l")).file_type().is_symlink());
}

#[test]
fn symlinks_copied_as_links_never_followed() {
    let f = Fixture::new();
    f.file("d/real", "x");
    std::os::unix::fs::symlink("/etc/passwd", f.context.path().join("d/outside")).unwrap();
    f.copy(&["d"], "/out/", |_| {}).unwrap();
    let link = f.up("out/outside");
    assert!(meta(&link).file_type().is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/etc/passwd"));
}

#[test]
fn mtimes_and_hardlinks_kept() {
    let f = Fixture::new();
    let a = f.file("d/a", "shared");
    std::fs::hard_link(&a, f.context.path().join("d/b")).unwrap();
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    filetime::set_file_mtime(&a, old).unwrap();
    f.copy(&["d"], "/out/", |_| {}).unwrap();
    let (ma, mb) = (meta(&f.up("out/a")), meta(&f.up("out/b")));
    assert_eq!(ma.mtime(), 1_000_000_000);
    assert_eq!(ma.ino(), mb.ino());
}

#[test]
fn dest_symlink_in_lower_is_followed_inside_the_root() {
    let f = Fixture::new();
    f.file("tool", "t");
    f.lower_dir("usr/bin", 0o755, 0);
    std::os::unix::fs::symlink("usr/bin", f.lower.path().join("bin")).unwrap();
    f.copy(&["tool"], "/bin/", |_| {}).unwrap();
    assert_eq!(f.read("usr/bin/tool"), "t");
    assert!(!f.up("bin").exists());
}

#[test]
fn ignored_files_are_not_copied() {
    let f = Fixture::new();
    f.file("keep", "k");
    f.file("secret.env", "s");
    f.file("node_modules/x", "x");
    f.copy_ignoring(&["."], "/app/", &["*.env", "node_modules"], |_| {})
        .unwrap();
    assert!(f.up("app/keep").exists());
    assert!(!f.up("app/secret.env").exists());
    assert!(!f.up("app/node_modules").exists());
}

#[test]
fn heredocs_are_0644_and_chmod_applies() {
    let f = Fixture::new();
    let docs = vec![("hello.sh".to_string(), b"echo hi\n".to_vec())];
    let layers = Layers {
        upper: f.upper.path(),
        lowers: &f.lowers,
        deferred: None,
    };
    copy_into(&CopySpec::new(CopySource::Inline(&docs), "/x/"), &layers).unwrap();
    assert_eq!(meta(&f.up("x/hello.sh")).mode() & 0o7777, 0o644);
    let mut spec = CopySpec::new(CopySource::Inline(&docs), "/y/run.sh");
    spec.chmod = Some(0o755);
    copy_into(&spec, &layers).unwrap();
    assert_eq!(meta(&f.up("y/run.sh")).mode() & 0o7777, 0o755);
    assert_eq!(f.read("y/run.sh"), "echo hi\n");
}

// ---- ADD archives ----

fn sample_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o750);
    dir.set_size(0);
    builder
        .append_data(&mut dir, "pkg/", std::io::empty())
        .unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o4755);
    file.set_size(5);
    file.set_uid(33);
    file.set_gid(34);
    file.set_mtime(1_500_000_000);
    builder
        .append_data(&mut file, "pkg/bin", &b"hello"[..])
        .unwrap();
    let mut dev = tar::Header::new_gnu();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_mode(0o666);
    dev.set_size(0);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    builder
        .append_data(&mut dev, "pkg/null", std::io::empty())
        .unwrap();
    builder.into_inner().unwrap()
}

fn compress(kind: Option<Compression>, data: &[u8]) -> Vec<u8> {
    let Some(kind) = kind else {
        return data.to_vec();
    };
    match kind {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

#[test]
fn add_extracts_every_compression() {
    for kind in [
        None,
        Some(Compression::Gzip),
        Some(Compression::Bzip2),
        Some(Compression::Xz),
        Some(Compression::Zstd),
    ] {
        let f = Fixture::new();
        let data = compress(kind, &sample_tar());
        assert_eq!(Compression::detect(&data), kind);
        std::fs::write(f.context.path().join("pkg.tar.any"), &data).unwrap();
        f.copy(&["pkg.tar.any"], "/opt", |s| s.unpack_archives = true)
            .unwrap();
        assert_eq!(f.read("opt/pkg/bin"), "hello", "{kind:?}");
        let m = meta(&f.up("opt/pkg/bin"));
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
            (0o4755, 33, 34, 1_500_000_000)
        );
        assert_eq!(meta(&f.up("opt/pkg")).mode() & 0o7777, 0o750);
        let null = meta(&f.up("opt/pkg/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), libc::makedev(1, 3));
    }
}

#[test]
fn copy_does_not_extract_and_add_copies_non_archives() {
    let f = Fixture::new();
    std::fs::write(
        f.context.path().join("p.tgz"),
        compress(Some(Compression::Gzip), &sample_tar()),
    )
    .unwrap();
    f.file("notes.gz", "\u{1f}\u{8b} not really gzip");
    f.copy(&["p.tgz"], "/c/", |_| {}).unwrap();
    assert!(meta(&f.up("c/p.tgz")).is_file());
    f.copy(&["notes.gz"], "/d/", |s| s.unpack_archives = true)
        .unwrap();
    assert!(meta(&f.up("d/notes.gz")).is_file());
}

/// A tar with raw names, so hostile ones (`..`) can be written.
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn extract_hostile(
    entries: &[(&str, tar::EntryType, &str, &[u8])],
) -> (tempfile::TempDir, Result<ExtractStats, CopyError>) {
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let tar = raw_tar(entries);
    let result = extract_archive(
        &tar[..],
        &dest,
        &ExtractOptions::default(),
        Path::new("hostile.tar"),
    );
    (base, result)
}

fn only_dest(base: &Path) {
    let names: Vec<_> = std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["dest"], "something was written next to dest");
}

#[test]
fn archive_dotdot_refused() {
    use tar::EntryType as T;
    let (base, result) = extract_hostile(&[("../evil", T::Regular, "", b"x")]);
    assert!(
        matches!(result, Err(CopyError::ArchiveEscape { .. })),
        "{result:?}"
    );
    only_dest(base.path());
    let (base, result) = extract_hostile(&[("a/../../evil", T::Regular, "", b"x")]);
    assert!(result.is_err());
    only_dest(base.path());
}

#[test]
fn archive_absolute_names_land_inside() {
    use tar::EntryType as T;
    let (base, result) = extract_hostile(&[("/abs", T::Regular, "", b"x")]);
    result.unwrap();
    assert!(base.path().join("dest/abs").is_file());
    only_dest(base.path());
}

#[test]
fn archive_symlink_escapes_stay_inside() {
    use tar::EntryType as T;
    let (base, result) = extract_hostile(&[
        ("up", T::Symlink, "..", b""),
        ("up/pwned", T::Regular, "", b"x"),
        ("abs", T::Symlink, "/", b""),
        ("abs/pwned2", T::Regular, "", b"y"),
    ]);
    result.unwrap();
    only_dest(base.path());
    // Both resolve to the destination's own root, as in a chroot.
    assert_eq!(std::fs::read(base.path().join("dest/pwned")).unwrap(), b"x");
    assert_eq!(
        std::fs::read(base.path().join("dest/pwned2")).unwrap(),
        b"y"
    );
    assert!(meta(&base.path().join("dest/up")).file_type().is_symlink());
}

#[test]
fn archive_hardlink_escapes_refused() {
    use tar::EntryType as T;
    let (base, result) = extract_hostile(&[("h", T::Link, "../outside", b"")]);
    assert!(
        matches!(result, Err(CopyError::ArchiveEscape { .. })),
        "{result:?}"
    );
    only_dest(base.path());
    // An absolute link target means the file inside the destination, which is absent.
    let (base, result) = extract_hostile(&[("h", T::Link, "/etc/hostname", b"")]);
    assert!(result.is_err());
    only_dest(base.path());
    let (base, result) =
        extract_hostile(&[("f", T::Regular, "", b"data"), ("h", T::Link, "f", b"")]);
    result.unwrap();
    let (a, b) = (
        meta(&base.path().join("dest/f")),
        meta(&base.path().join("dest/h")),
    );
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn archive_size_cap() {
    use tar::EntryType as T;
    let base = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        ("a", T::Regular, "", &[7u8; 4000]),
        ("b", T::Regular, "", &[7u8; 4000]),
    ]);
    let options = ExtractOptions {
        chown: None,
        limit: 6000,
    };
    let result = extract_archive(&tar[..], base.path(), &options, Path::new("bomb.tar"));
    assert!(
        matches!(result, Err(CopyError::ArchiveTooLarge { limit: 6000, .. })),
        "{result:?}"
    );
}

#[test]
fn context_from_a_tar_stream() {
    use crate::solver::context_stream::{context_from_stream, StreamContext};
    let dir = tempfile::tempdir().unwrap();
    let tar = compress(Some(Compression::Gzip), &sample_tar());
    let got = context_from_stream(&tar[..], dir.path(), DEFAULT_ARCHIVE_LIMIT).unwrap();
    assert_eq!(got, StreamContext::Archive);
    assert_eq!(std::fs::read(dir.path().join("pkg/bin")).unwrap(), b"hello");
    let files = ContextFiles::walk(dir.path(), &IgnoreRules::default()).unwrap();
    assert!(files.get("pkg/null").is_some());

    let other = tempfile::tempdir().unwrap();
    let got = context_from_stream(&b"FROM scratch\n"[..], other.path(), 1 << 20).unwrap();
    assert_eq!(
        got,
        StreamContext::Dockerfile(other.path().join("Dockerfile"))
    );

    let hostile = tempfile::tempdir().unwrap();
    let inner = hostile.path().join("ctx");
    std::fs::create_dir(&inner).unwrap();
    let tar = raw_tar(&[
        ("ustar-padding", tar::EntryType::Regular, "", b""),
        ("../x", tar::EntryType::Regular, "", b"x"),
    ]);
    assert!(context_from_stream(&tar[..], &inner, 1 << 20).is_err());
    assert!(!hostile.path().join("x").exists());
}

/// Serves `body` once over real HTTP on 127.0.0.1; returns the URL base.
fn serve_once(body: &'static [u8], status: &'static str) -> String {
    serve_once_with(body, status, "")
}

fn serve_once_with(body: &'static [u8], status: &'static str, extra: &'static str) -> String {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    format!("http://{addr}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn add_url_downloads_with_checksum_and_mode_0600() {
    let f = Fixture::new();
    let tmp = tempfile::tempdir().unwrap();
    let base = serve_once_with(
        b"#!/bin/sh\n",
        "200 OK",
        "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    );
    let url = format!("{base}/files/tool.sh?v=2");
    let good = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"#!/bin/sh\n"))
    );
    let client = reqwest::Client::new();
    let fetched = runtime()
        .block_on(fetch_url(&client, &url, tmp.path(), Some(&good)))
        .unwrap();
    assert_eq!((fetched.name.as_str(), fetched.size), ("tool.sh", 10));
    assert_eq!(fetched.digest, good);
    let layers = Layers {
        upper: f.upper.path(),
        lowers: &f.lowers,
        deferred: None,
    };
    copy_into(
        &CopySpec::new(CopySource::Fetched(&fetched), "/usr/local/bin/"),
        &layers,
    )
    .unwrap();
    assert_eq!(f.read("usr/local/bin/tool.sh"), "#!/bin/sh\n");
    let m = meta(&f.up("usr/local/bin/tool.sh"));
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o600, 784_111_777));
}

#[test]
fn add_url_checksum_mismatch_and_http_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/x.bin", serve_once(b"payload", "200 OK"));
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = runtime()
        .block_on(fetch_url(&client, &url, tmp.path(), Some(&wrong)))
        .unwrap_err();
    assert!(matches!(err, CopyError::ChecksumMismatch { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "partial download left behind"
    );
    let url = format!("{}/missing", serve_once(b"", "404 Not Found"));
    let err = runtime()
        .block_on(fetch_url(&client, &url, tmp.path(), None))
        .unwrap_err();
    assert!(
        matches!(err, CopyError::DownloadStatus { status: 404, .. }),
        "{err}"
    );
}

#[test]
fn lowers_whiteouts_and_opaque_dirs() {
    use std::os::unix::ffi::OsStrExt;
    let top = tempfile::tempdir().unwrap();
    let bottom = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bottom.path().join("etc")).unwrap();
    std::fs::write(bottom.path().join("etc/gone"), "old").unwrap();
    std::fs::create_dir_all(bottom.path().join("opt/hidden")).unwrap();
    std::fs::create_dir_all(top.path().join("etc")).unwrap();
    make_node(&top.path().join("etc/gone"), libc::S_IFCHR | 0o600, 0).unwrap();
    std::fs::create_dir_all(top.path().join("opt")).unwrap();
    let opt = std::ffi::CString::new(top.path().join("opt").as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a valid value buffer.
    let rc = unsafe {
        libc::lsetxattr(
            opt.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setting trusted.overlay.opaque needs root: {}",
        std::io::Error::last_os_error()
    );
    let lowers = vec![top.path().to_path_buf(), bottom.path().to_path_buf()];
    let layers = Layers {
        upper: upper.path(),
        lowers: &lowers,
        deferred: None,
    };
    assert!(
        layers.lookup("etc/gone").is_none(),
        "whiteout hides the lower file"
    );
    assert!(
        layers.lookup("opt/hidden").is_none(),
        "opaque dir hides the lower dir"
    );
    assert!(layers.lookup("opt").is_some_and(|f| f.meta.is_dir()));
    // A whited-out dest does not exist: a single file is written as it.
    let docs = vec![("n".to_string(), b"new".to_vec())];
    copy_into(
        &CopySpec::new(CopySource::Inline(&docs), "/etc/gone"),
        &layers,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(upper.path().join("etc/gone")).unwrap(),
        b"new"
    );
}

#[test]
fn copy_and_hash_in_one_pass() {
    use crate::context::{digest_sources, StatCache, StatCacheStats};
    let f = Fixture::new();
    f.file("d/a", "alpha");
    f.file("d/sub/b", "beta");
    let files = ContextFiles::walk(f.context.path(), &IgnoreRules::default()).unwrap();
    let selected = select_sources(&files, &["d"]).unwrap();
    let spec = CopySpec::new(
        CopySource::Tree {
            files: &files,
            selected: &selected,
        },
        "/app/",
    );
    let layers = Layers {
        upper: f.upper.path(),
        lowers: &f.lowers,
        deferred: None,
    };
    let mut cache = StatCache::in_memory();
    copy_into_hashing(&spec, &layers, &mut cache).unwrap();
    assert_eq!(cache.stats(), StatCacheStats { hits: 0, misses: 2 });
    assert_eq!(f.read("app/sub/b"), "beta");
    let after = digest_sources(&files, &selected, &IgnoreRules::default(), &mut cache).unwrap();
    // The digest pass read nothing: both files came from the copy.
    assert_eq!(cache.stats(), StatCacheStats { hits: 2, misses: 2 });
    let fresh = digest_sources(
        &files,
        &selected,
        &IgnoreRules::default(),
        &mut StatCache::in_memory(),
    )
    .unwrap();
    assert_eq!(after, fresh);
}

#[test]
fn exclude_patterns_apply_to_copy_and_digest() {
    use crate::context::{digest_sources, StatCache};
    let f = Fixture::new();
    f.file("src/main.rs", "fn main() {}");
    f.file("src/notes.txt", "v1");
    f.file("src/sub/more.txt", "more");
    f.file("top.txt", "top");
    f.copy(&["src", "top.txt"], "/app/", |s| {
        s.exclude = IgnoreRules::new(&["*.txt", "sub"]).unwrap()
    })
    .unwrap();
    assert!(f.up("app/main.rs").exists());
    assert!(!f.up("app/notes.txt").exists());
    assert!(!f.up("app/sub").exists());
    assert!(!f.up("app/top.txt").exists());

    let exclude = IgnoreRules::new(&["*.txt"]).unwrap();
    let digest = |f: &Fixture| {
        let files = ContextFiles::walk(f.context.path(), &IgnoreRules::default()).unwrap();
        let selected = select_sources(&files, &["src"]).unwrap();
        digest_sources(&files, &selected, &exclude, &mut StatCache::in_memory()).unwrap()
    };
    let before = digest(&f);
    f.file("src/notes.txt", "v2 changed");
    assert_eq!(
        before,
        digest(&f),
        "an excluded file does not change the key"
    );
    f.file("src/main.rs", "fn main() { changed() }");
    assert_ne!(before, digest(&f));
}

#[test]
fn deferred_files_are_not_copied_and_links_stay_links() {
    let f = Fixture::new();
    f.file("d/a", "shared");
    f.file("d/plain", "plain");
    std::fs::hard_link(f.context.path().join("d/a"), f.context.path().join("d/b")).unwrap();
    // Linked to a file outside the copied set: one name copied, so a plain file.
    f.file("other/x", "only one copied");
    std::fs::hard_link(
        f.context.path().join("other/x"),
        f.context.path().join("d/x"),
    )
    .unwrap();
    f.copy(&["d"], "/out/", |_| {}).unwrap();

    let deferred = f.deferred.borrow();
    let names: Vec<String> = deferred
        .iter()
        .map(|(k, _)| k.display().to_string())
        .collect();
    assert_eq!(names, ["out/a", "out/b", "out/plain", "out/x"]);
    assert!(f.deferred_upper.path().join("out").is_dir());
    assert!(!f.deferred_upper.path().join("out/plain").exists());

    let tar = layer_tar(f.deferred_upper.path(), &deferred);
    let mut archive = tar::Archive::new(tar.as_slice());
    let kinds: Vec<(String, tar::EntryType)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            )
        })
        .collect();
    assert!(kinds.contains(&("out/a".into(), tar::EntryType::Regular)));
    assert!(kinds.contains(&("out/b".into(), tar::EntryType::Link)));
    assert!(kinds.contains(&("out/x".into(), tar::EntryType::Regular)));
}
