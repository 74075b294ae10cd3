//! Unit tests of the store API against a real filesystem (we run as root, so devices,
//! ownership and trusted xattrs are real).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn commit_image_tag_resolve_and_unpack_gzip() {
    let (_d, store) = store();
    let active = store.prepare().unwrap();
    write(&active.upper, "etc/hello", b"hello\n");
    write(&active.upper, "bin/tool", b"#!/bin/sh\n");
    let upper = active.upper.clone();
    let upper_ino = std::fs::metadata(&upper).unwrap().ino();
    let file_ino = std::fs::metadata(upper.join("etc/hello")).unwrap().ino();
    let layer = store.commit(active, None).unwrap();
    assert!(!upper.exists(), "upper was renamed away");
    assert!(!layer.empty);
    assert_eq!(layer.diff_id.digest(), &layer.descriptor.digest);
    assert_eq!(
        Digest::of(&store.blobs().read(&layer.descriptor.digest).unwrap()),
        layer.descriptor.digest
    );
    let snap = store.snapshot_path(&layer.chain_id).unwrap();
    assert_eq!(std::fs::read(snap.join("etc/hello")).unwrap(), b"hello\n");
    // Renamed, not copied.
    assert_eq!(std::fs::metadata(&snap).unwrap().ino(), upper_ino);
    assert_eq!(
        std::fs::metadata(snap.join("etc/hello")).unwrap().ino(),
        file_ino
    );

    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Healthcheck": {"Test": ["CMD", "true"]}, "Shell": ["/bin/sh", "-c"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
    });
    let config_json = canonical_json(&config).unwrap();
    let m = store
        .put_image(&config_json, std::slice::from_ref(&layer.descriptor))
        .unwrap();
    store.tag("docker.io/library/t:latest", &m).unwrap();
    let img = store
        .find_image("docker.io/library/t:latest")
        .unwrap()
        .unwrap();
    assert_eq!(img.config_json, config_json);
    assert_eq!(
        img.parsed_config().unwrap()["config"]["Healthcheck"]["Test"][1],
        "true"
    );
    let by_id = store.find_image(&img.id().hex()[..12]).unwrap().unwrap();
    assert_eq!(by_id.manifest.digest, m.digest);
    assert!(store
        .find_image("docker.io/library/nope:latest")
        .unwrap()
        .is_none());

    // The gzip form, made once.
    let gz = store
        .compressed_layer(&layer.descriptor, layer_compression(Compression::Gzip))
        .unwrap();
    assert_eq!(gz.media_type, MEDIA_TYPE_OCI_LAYER_GZIP);
    let mtime = std::fs::metadata(store.blobs().path(&gz.digest))
        .unwrap()
        .modified()
        .unwrap();
    let again = store
        .compressed_layer(&layer.descriptor, layer_compression(Compression::Gzip))
        .unwrap();
    assert_eq!(again, gz);
    assert_eq!(
        std::fs::metadata(store.blobs().path(&gz.digest))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    let zst = store
        .compressed_layer(&layer.descriptor, layer_compression(Compression::Zstd))
        .unwrap();
    assert_eq!(zst.media_type, MEDIA_TYPE_OCI_LAYER_ZSTD);

    // A second store unpacks the gzip and zstd blobs into snapshots, verifying the diffID.
    for blob in [&gz, &zst] {
        let (_d2, other) = self::store();
        let bytes = store.blobs().read(&blob.digest).unwrap();
        other.blobs().put(&bytes).unwrap();
        let lowers = other
            .snapshot_chain(
                std::slice::from_ref(blob),
                std::slice::from_ref(&layer.diff_id),
            )
            .unwrap();
        assert_eq!(lowers.len(), 1);
        assert_eq!(
            std::fs::read(lowers[0].join("etc/hello")).unwrap(),
            b"hello\n"
        );
        // A wrong diffID is refused and leaves no snapshot.
        let (_d3, third) = self::store();
        third.blobs().put(&bytes).unwrap();
        let wrong = DiffId::from(Digest::of(b"other"));
        let err = third
            .snapshot_chain(std::slice::from_ref(blob), std::slice::from_ref(&wrong))
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(third.snapshot_path(&ChainId::child(None, &wrong)).is_none());
    }
}

#[test]
fn cache_records_round_trip() {
    let (_d, store) = store();
    let key = Digest::of(b"step");
    assert!(store.cache_get(&key).unwrap().is_none());
    let record = CacheRecord {
        version: 1,
        chain_id: None,
        layer: None,
        config_json: serde_json::json!({"config": {"Env": ["A=1"]}}),
        created: "2026-01-01T00:00:00Z".into(),
    };
    store.cache_put(&key, &record).unwrap();
    assert_eq!(store.cache_get(&key).unwrap(), Some(record));
}

#[test]
fn blob_writer_verifies_and_cleans_up() {
    let (_d, store) = store();
    let mut w = store.blobs().writer().unwrap();
    std::io::Write::write_all(&mut w, b"abc").unwrap();
    assert_eq!(w.written(), 3);
    let err = w.commit(Some(&Digest::of(b"abd"))).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }));
    assert!(!store.blobs().contains(&Digest::of(b"abc")));
    assert!(!store.blobs().contains(&Digest::of(b"abd")));
    assert!(store
        .blobs()
        .ingest(&b"abc"[..], Some(&Digest::of(b"x")))
        .is_err());
    let d = store
        .blobs()
        .ingest(&b"abc"[..], Some(&Digest::of(b"abc")))
        .unwrap();
    assert_eq!(store.blobs().put(b"abc").unwrap(), d);
    assert_eq!(store.blobs().read(&d).unwrap(), b"abc");
    // Corrupt it: reads fail.
    std::fs::write(store.blobs().path(&d), b"abx").unwrap();
    assert!(matches!(
        store.blobs().read(&d),
        Err(Error::DigestMismatch { .. })
    ));
    // Nothing but our own scratch dir is left in tmp/.
    let leftover: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .collect();
    assert_eq!(leftover.len(), 2, "{leftover:?}");
    let scratch = std::fs::read_dir(store.scratch()).unwrap().count();
    assert_eq!(scratch, 0);
}

#[test]
fn special_files_round_trip_in_overlay_form() {
    let (_d, store) = store();
    let active = store.prepare().unwrap();
    let up = active.upper.clone();
    write(&up, "keep/file", b"data");
    std::os::unix::fs::lchown(up.join("keep/file"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(
        up.join("keep/file"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(up.join("keep/file"), up.join("keep/link")).unwrap();
    std::os::unix::fs::symlink("../keep/file", up.join("keep/sym")).unwrap();
    nix::unistd::mkfifo(
        &up.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    mknod(&up.join("gone"), libc::S_IFCHR, 0, 0);
    mknod(&up.join("null"), libc::S_IFCHR, 1, 3);
    std::fs::create_dir(up.join("opaque")).unwrap();
    xattr::set(up.join("opaque"), OPAQUE_XATTR, b"y").unwrap();
    xattr::set(up.join("opaque"), "trusted.overlay.origin", b"junk").unwrap();
    write(&up, "opaque/new", b"n");
    xattr::set(up.join("keep/file"), "user.note", b"v\0binary").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(up.join("sock")).unwrap();
    let long = format!("deep/{}/{}", "d".repeat(120), "f".repeat(150));
    write(&up, &long, b"long");
    let layer = store.commit(active, None).unwrap();

    // The tar has the docker whiteout names.
    let tar_bytes = store.blobs().read(&layer.descriptor.digest).unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar_bytes[..]).entries().unwrap() {
        let e = e.unwrap();
        names.push(String::from_utf8(e.path_bytes().into_owned()).unwrap());
    }
    assert!(names.contains(&".wh.gone".to_owned()), "{names:?}");
    assert!(
        names.contains(&"opaque/.wh..wh..opq".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&long), "{names:?}");
    assert!(
        !names.contains(&"sock".to_owned()),
        "sockets are left out: {names:?}"
    );

    // Unpack into another store and compare the overlay form.
    let (_d2, other) = self::store();
    other.blobs().put(&tar_bytes).unwrap();
    let lowers = other
        .snapshot_chain(
            std::slice::from_ref(&layer.descriptor),
            std::slice::from_ref(&layer.diff_id),
        )
        .unwrap();
    let fs = &lowers[0];
    let m = std::fs::symlink_metadata(fs.join("gone")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    let m = std::fs::symlink_metadata(fs.join("null")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3));
    assert!(std::fs::symlink_metadata(fs.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        xattr::get(fs.join("opaque"), OPAQUE_XATTR)
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr::get(fs.join("opaque"), "trusted.overlay.origin").unwrap(),
        None
    );
    let f = std::fs::metadata(fs.join("keep/file")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o4755);
    assert_eq!((f.uid(), f.gid()), (1234, 5678));
    assert_eq!(
        f.ino(),
        std::fs::metadata(fs.join("keep/link")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(fs.join("keep/sym")).unwrap(),
        Path::new("../keep/file")
    );
    assert_eq!(
        xattr::get(fs.join("keep/file"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"v\0binary"[..])
    );
    assert_eq!(std::fs::read(fs.join(&long)).unwrap(), b"long");

    // Re-tarring the unpacked snapshot gives the same diffID (same overlay form).
    let mut again = Vec::new();
    write_layer_tar(fs, &mut again, &TarOptions::default()).unwrap();
    if Digest::of(&again) != layer.descriptor.digest {
        std::fs::write("/tmp/store-a.tar", &tar_bytes).unwrap();
        std::fs::write("/tmp/store-b.tar", &again).unwrap();
    }
    assert_eq!(Digest::of(&again), layer.descriptor.digest);
}

fn mknod(path: &Path, fmt: libc::mode_t, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), fmt | 0o644, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}", path.display());
}

/// A tar built by hand: (name, type, link target, body). Names are written raw, so `..`
/// and absolute paths get through.
fn hostile_tar(members: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, body) in members {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_size(body.len() as u64);
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        let u = h.as_ustar_mut().unwrap();
        u.name[..name.len()].copy_from_slice(name.as_bytes());
        u.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

#[test]
fn hostile_tars_never_write_outside_the_snapshot() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    let outside_s = outside.to_str().unwrap().to_owned();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "dotdot",
            hostile_tar(&[("../outside/pwned", Regular, "", b"x")]),
            true,
        ),
        (
            "nested dotdot",
            hostile_tar(&[("a/../../outside/pwned", Regular, "", b"x")]),
            true,
        ),
        (
            "symlink escape",
            hostile_tar(&[
                ("esc", Symlink, &outside_s, b""),
                ("esc/pwned", Regular, "", b"x"),
            ]),
            true,
        ),
        (
            "relative symlink escape",
            hostile_tar(&[
                ("up", Symlink, "../outside", b""),
                ("up/pwned", Regular, "", b"x"),
            ]),
            true,
        ),
        (
            "symlinked dir then file",
            hostile_tar(&[
                ("d", Directory, "", b""),
                ("d/l", Symlink, "/", b""),
                ("d/l/etc/pwned", Regular, "", b"x"),
            ]),
            true,
        ),
        (
            // A directory used once, then replaced by a symlink: what was checked about it
            // earlier must not be trusted afterwards.
            "known dir replaced by a symlink",
            hostile_tar(&[
                ("d", Directory, "", b""),
                ("d/ok", Regular, "", b"x"),
                ("d", Symlink, &outside_s, b""),
                ("d/pwned", Regular, "", b"x"),
            ]),
            true,
        ),
        (
            "known nested dir replaced by a symlink",
            hostile_tar(&[
                ("a/b/ok", Regular, "", b"x"),
                ("a/b", Symlink, &outside_s, b""),
                ("a/b/pwned", Regular, "", b"x"),
            ]),
            true,
        ),
        (
            "hardlink absolute",
            hostile_tar(&[("h", Link, "/etc/hostname", b"")]),
            true,
        ),
        (
            "hardlink dotdot",
            hostile_tar(&[("h", Link, "../outside/victim", b"")]),
            true,
        ),
        (
            "hardlink through symlink",
            hostile_tar(&[
                ("s", Symlink, &outside_s, b""),
                ("h", Link, "s/victim", b""),
            ]),
            true,
        ),
        (
            "whiteout dotdot",
            hostile_tar(&[("a/.wh...", Regular, "", b"")]),
            true,
        ),
        // An absolute member name lands inside the snapshot.
        (
            "absolute",
            hostile_tar(&[("/outside/pwned", Regular, "", b"x")]),
            false,
        ),
    ];
    for (what, bytes, refused) in cases {
        let dest = base.path().join(format!("dest-{}", what.replace(' ', "-")));
        std::fs::create_dir(&dest).unwrap();
        let r = unpack_layer(&bytes[..], &dest, None, what);
        assert_eq!(r.is_err(), refused, "{what}: {r:?}");
        if let Err(e) = &r {
            assert!(matches!(e, Error::UnsafeMember { .. }), "{what}: {e}");
        }
        assert_eq!(
            std::fs::read(outside.join("victim")).unwrap(),
            b"precious",
            "{what}"
        );
        assert!(!outside.join("pwned").exists(), "{what}: wrote outside");
        assert!(!Path::new("/etc/pwned").exists());
    }
    let abs = base.path().join("dest-absolute/outside/pwned");
    assert_eq!(std::fs::read(abs).unwrap(), b"x");
}

#[test]
fn a_symlink_replaced_by_a_file_is_not_followed() {
    use tar::EntryType::{Regular, Symlink};
    let base = tempfile::tempdir().unwrap();
    let target = base.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    let dest = base.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let bytes = hostile_tar(&[
        ("f", Symlink, target.to_str().unwrap(), b""),
        ("f", Regular, "", b"new"),
    ]);
    unpack_layer(&bytes[..], &dest, None, "replace").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"new");
    assert!(!std::fs::symlink_metadata(dest.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn same_directory_gives_same_diff_id_and_epoch_clamps() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write(
            dir.path(),
            &format!("d{}/f{i}", i % 7),
            format!("{i}").as_bytes(),
        );
    }
    let tar = |opts: &TarOptions| {
        let mut v = Vec::new();
        write_layer_tar(dir.path(), &mut v, opts).unwrap();
        Digest::of(&v)
    };
    let a = tar(&TarOptions::default());
    assert_eq!(a, tar(&TarOptions::default()));
    let epoch = TarOptions {
        source_date_epoch: Some(100),
    };
    let clamped = tar(&epoch);
    assert_ne!(clamped, a);
    // Touching files changes nothing once mtimes are clamped.
    let t = filetime::FileTime::from_unix_time(2_000_000_000, 0);
    filetime::set_file_mtime(dir.path().join("d0/f0"), t).unwrap();
    assert_eq!(tar(&epoch), clamped);
    assert_ne!(tar(&TarOptions::default()), a);
    // Every mtime in the clamped tar is <= 100.
    let mut v = Vec::new();
    write_layer_tar(dir.path(), &mut v, &epoch).unwrap();
    for e in tar::Archive::new(&v[..]).entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().mtime().unwrap() <= 100);
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
    }
}

#[test]
fn startup_removes_dead_debris_but_not_a_live_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let live = Store::open(dir.path()).unwrap();
    let mut w = live.blobs().writer().unwrap();
    std::io::Write::write_all(&mut w, b"in flight").unwrap();
    let tmp = dir.path().join("tmp");
    // Debris: a dead process's scratch (lock file present, nobody holds it) and junk.
    std::fs::create_dir_all(tmp.join("p999-dead/active-1/fs")).unwrap();
    std::fs::write(tmp.join("p999-dead.lock"), b"").unwrap();
    std::fs::write(tmp.join("stray-file"), b"junk").unwrap();
    let second = Store::open(dir.path()).unwrap();
    assert!(!tmp.join("p999-dead").exists());
    assert!(!tmp.join("p999-dead.lock").exists());
    assert!(!tmp.join("stray-file").exists());
    assert!(
        live.scratch().exists(),
        "a live handle's scratch was deleted"
    );
    let d = w.commit(None).unwrap();
    assert!(second.blobs().contains(&d));
    drop(live);
    drop(second);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn concurrent_commits_of_the_same_content_keep_one_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let root = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let store = Store::open(&root).unwrap();
                let active = store.prepare().unwrap();
                write(&active.upper, "same/file", b"same");
                filetime::set_file_mtime(
                    active.upper.join("same/file"),
                    filetime::FileTime::from_unix_time(5, 0),
                )
                .unwrap();
                filetime::set_file_mtime(
                    active.upper.join("same"),
                    filetime::FileTime::from_unix_time(5, 0),
                )
                .unwrap();
                let layer = store.commit(active, None).unwrap();
                let m = store
                    .put_image(b"{}", std::slice::from_ref(&layer.descriptor))
                    .unwrap();
                for i in 0..20 {
                    store
                        .tag(&format!("docker.io/library/race:{i}"), &m)
                        .unwrap();
                }
                layer.chain_id
            })
        })
        .collect();
    let ids: Vec<ChainId> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_dir(store.root().join("snapshots"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read(store.snapshot_path(&ids[0]).unwrap().join("same/file")).unwrap(),
        b"same"
    );
    assert_eq!(store.images().unwrap().len(), 20);
    assert!(store.fsck().unwrap().is_empty());
}

#[test]
fn store_is_a_cheap_shareable_handle() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Store>();
}

#[test]
fn parallel_gzip_is_multi_member_and_readable_by_gzip() {
    let (_d, store) = store();
    // ~9 MiB of mildly compressible data: three members.
    let mut data = Vec::new();
    let mut x: u32 = 1;
    while data.len() < 9 << 20 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        data.extend_from_slice(format!("line {} {}\n", x % 1000, x >> 20).as_bytes());
    }
    let d = store.blobs().put(&data).unwrap();
    let layer = Descriptor::new(MEDIA_TYPE_OCI_LAYER, d, data.len() as u64);
    let gz = store
        .compressed_layer(&layer, layer_compression(Compression::Gzip))
        .unwrap();
    let bytes = store.blobs().read(&gz.digest).unwrap();
    let members = bytes
        .windows(4)
        .filter(|w| w == &[0x1f, 0x8b, 8, 0])
        .count();
    assert!(members >= 3, "{members} gzip members");
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(store.blobs().path(&gz.digest))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, data);
    // Independent of the thread count.
    let mut one = Vec::new();
    gzip_parallel(&mut &data[..], &mut one, GZIP_LEVEL, 1).unwrap();
    assert_eq!(Digest::of(&one), gz.digest);
    // A pulled (already gzip) layer is returned as is; asking for zstd recompresses.
    assert_eq!(
        store
            .compressed_layer(&gz, layer_compression(Compression::Gzip))
            .unwrap(),
        gz
    );
    let zst = store
        .compressed_layer(&gz, layer_compression(Compression::Zstd))
        .unwrap();
    let out = std::process::Command::new("zstd")
        .arg("-dc")
        .arg(store.blobs().path(&zst.digest))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, data);
}

fn sample_text(len: usize) -> Vec<u8> {
    let mut data = Vec::new();
    let mut x: u32 = 7;
    while data.len() < len {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        data.extend_from_slice(format!("row {} {}\n", x % 5000, x >> 22).as_bytes());
    }
    data
}

/// A compressed blob remembered by an older rbuild (another deflate library, so other bytes
/// for the same level) is still the layer's form at that level: it is reused, not remade.
#[test]
fn a_remembered_blob_from_another_compressor_stays_valid() {
    let (_d, store) = store();
    let data = sample_text(6 << 20);
    let digest = store.blobs().put(&data).unwrap();
    let layer = Descriptor::new(MEDIA_TYPE_OCI_LAYER, digest, data.len() as u64);
    let level = layer_compression(Compression::Gzip);
    // One flate2 (zlib-rs) member at the default level, as the compressor before libdeflate.
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(level.level() as u32));
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let old_bytes = enc.finish().unwrap();
    let old = Descriptor::new(
        MEDIA_TYPE_OCI_LAYER_GZIP,
        store.blobs().put(&old_bytes).unwrap(),
        old_bytes.len() as u64,
    );
    assert_ne!(
        store
            .compress_layer(&layer, level, &mut |_, _| {})
            .unwrap()
            .digest,
        old.digest,
        "the current compressor makes other bytes"
    );
    store
        .remember_compressed_layer(&layer, level, &old)
        .unwrap();
    assert_eq!(store.compressed_layer(&layer, level).unwrap(), old);
}

#[test]
fn compression_level_changes_the_blob_and_keys_the_record() {
    let (d, store) = store();
    let data = sample_text(6 << 20);
    let digest = store.blobs().put(&data).unwrap();
    let layer = Descriptor::new(MEDIA_TYPE_OCI_LAYER, digest.clone(), data.len() as u64);
    let fast = LayerCompression::new(Compression::Gzip, Some(1)).unwrap();
    let best = LayerCompression::new(Compression::Gzip, Some(9)).unwrap();

    assert_eq!(
        store.remembered_compressed_layer(&layer, fast).unwrap(),
        None
    );
    let gz1 = store.compressed_layer(&layer, fast).unwrap();
    let gz9 = store.compressed_layer(&layer, best).unwrap();
    assert_ne!(gz1.digest, gz9.digest, "the level changes the output");
    assert!(gz9.size < gz1.size, "{} !< {}", gz9.size, gz1.size);
    // Each level has its own record, and each is found again.
    let records = d.path().join("cache/compressed");
    assert!(records.join(format!("{}-gzip-1", digest.hex())).is_file());
    assert!(records.join(format!("{}-gzip-9", digest.hex())).is_file());
    assert_eq!(
        store.remembered_compressed_layer(&layer, fast).unwrap(),
        Some(gz1.clone())
    );
    assert_eq!(
        store.remembered_compressed_layer(&layer, best).unwrap(),
        Some(gz9.clone())
    );
    let default = layer_compression(Compression::Gzip);
    if default.level() != 1 && default.level() != 9 {
        assert_eq!(
            store.remembered_compressed_layer(&layer, default).unwrap(),
            None
        );
    }
    for blob in [&gz1, &gz9] {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(store.blobs().path(&blob.digest))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(Digest::of(&out.stdout), digest);
    }
    // zstd levels are keyed the same way.
    let z1 = LayerCompression::new(Compression::Zstd, Some(1)).unwrap();
    let z19 = LayerCompression::new(Compression::Zstd, Some(19)).unwrap();
    let a = store.compressed_layer(&layer, z1).unwrap();
    let b = store.compressed_layer(&layer, z19).unwrap();
    assert_ne!(a.digest, b.digest);
    assert!(records.join(format!("{}-zstd-19", digest.hex())).is_file());
}

#[test]
fn compression_levels_are_validated() {
    for (format, ok, bad) in [
        (Compression::Gzip, [0, 9], [-1, 10]),
        (Compression::Zstd, [1, 19], [0, 20]),
    ] {
        for level in ok {
            assert_eq!(
                LayerCompression::new(format, Some(level)).unwrap().level(),
                level
            );
        }
        for level in bad {
            let e = LayerCompression::new(format, Some(level)).unwrap_err();
            assert!(matches!(e, Error::CompressionLevel { .. }), "{e}");
            assert!(e.to_string().contains(&level.to_string()), "{e}");
        }
    }
    assert_eq!(
        LayerCompression::new(Compression::Zstd, None).unwrap(),
        layer_compression(Compression::Zstd)
    );
}

#[test]
fn compress_layer_shows_every_byte_before_the_record_is_written() {
    let (_d, store) = store();
    let data = sample_text(9 << 20);
    let digest = store.blobs().put(&data).unwrap();
    let layer = Descriptor::new(MEDIA_TYPE_OCI_LAYER, digest, data.len() as u64);
    for compression in [Compression::Gzip, Compression::Zstd] {
        let compression = layer_compression(compression);
        let mut seen = Vec::new();
        let mut consumed = 0;
        let c = store
            .compress_layer(&layer, compression, &mut |piece, done| {
                seen.extend_from_slice(&piece);
                assert!(done >= consumed, "consumed bytes only grow");
                consumed = done;
            })
            .unwrap();
        assert_eq!(consumed, data.len() as u64);
        assert_eq!(Digest::of(&seen), c.digest);
        assert_eq!(seen, store.blobs().read(&c.digest).unwrap());
        // Not remembered until the caller says so.
        assert_eq!(
            store
                .remembered_compressed_layer(&layer, compression)
                .unwrap(),
            None
        );
        store
            .remember_compressed_layer(&layer, compression, &c)
            .unwrap();
        assert_eq!(
            store
                .remembered_compressed_layer(&layer, compression)
                .unwrap(),
            Some(c)
        );
    }
}

#[test]
fn parallel_gzip_edges_match_one_thread() {
    let member = 4 << 20;
    for len in [0, 1, member - 1, member, member + 1, 3 * member] {
        let data = sample_text(len);
        let data = &data[..len];
        let mut one = Vec::new();
        gzip_parallel(&mut &data[..], &mut one, 6, 1).unwrap();
        for threads in [2, 5] {
            let mut many = Vec::new();
            gzip_parallel(&mut &data[..], &mut many, 6, threads).unwrap();
            assert_eq!(many, one, "len {len}, {threads} threads");
        }
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&one[..]), &mut back)
            .unwrap();
        assert_eq!(back, data, "len {len}");
    }
}

#[test]
fn fsck_names_broken_snapshots_and_records() {
    let (_d, store) = store();
    let a = store.prepare().unwrap();
    write(&a.upper, "f", b"1");
    let base = store.commit(a, None).unwrap();
    let b = store.prepare().unwrap();
    write(&b.upper, "g", b"2");
    let top = store.commit(b, Some(&base.chain_id)).unwrap();
    assert!(store.fsck().unwrap().is_empty());
    // Lose the parent snapshot and scribble on a cache record.
    std::fs::remove_dir_all(store.root().join("snapshots").join(base.chain_id.hex())).unwrap();
    std::fs::write(
        store.root().join("cache").join(Digest::of(b"k").hex()),
        b"{not json",
    )
    .unwrap();
    let problems = store.fsck().unwrap();
    let text = format!("{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.object.contains(top.chain_id.hex()) && p.problem.contains("parent")),
        "{text}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.object.contains(Digest::of(b"k").hex())),
        "{text}"
    );
    // A meta that lies about its chain.
    let meta = store
        .root()
        .join("snapshots")
        .join(top.chain_id.hex())
        .join("meta");
    let mut m: SnapshotMeta = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    m.diff_id = base.diff_id.clone();
    std::fs::write(&meta, serde_json::to_vec(&m).unwrap()).unwrap();
    assert!(store
        .fsck()
        .unwrap()
        .iter()
        .any(|p| p.problem.contains("does not match")));
}

#[test]
fn prune_keeps_cache_unless_all() {
    let (_d, store) = store();
    let a = store.prepare().unwrap();
    write(&a.upper, "cached", b"1");
    let layer = store.commit(a, None).unwrap();
    let key = Digest::of(b"step");
    let record = CacheRecord {
        version: CACHE_RECORD_VERSION,
        chain_id: Some(layer.chain_id.clone()),
        layer: Some(layer.descriptor.clone()),
        config_json: serde_json::json!({}),
        created: "2026-01-01T00:00:00Z".into(),
    };
    store.cache_put(&key, &record).unwrap();
    let gz = store
        .compressed_layer(&layer.descriptor, layer_compression(Compression::Gzip))
        .unwrap();
    let b = store.prepare().unwrap();
    write(&b.upper, "orphan", b"2");
    let orphan = store.commit(b, None).unwrap();

    let report = store.prune(false).unwrap();
    assert_eq!(report.blobs, vec![orphan.descriptor.digest.clone()]);
    assert_eq!(report.snapshots, vec![orphan.chain_id.hex().to_owned()]);
    assert_eq!(store.cache_get(&key).unwrap(), Some(record));
    assert!(store.blobs().contains(&gz.digest));

    let report = store.prune(true).unwrap();
    assert_eq!(report.cache_records.len(), 2, "{report:?}");
    assert!(store.cache_get(&key).unwrap().is_none());
    assert!(!store.blobs().contains(&layer.descriptor.digest));
    assert!(!store.blobs().contains(&gz.digest));
    assert!(store.snapshot_path(&layer.chain_id).is_none());
}

#[test]
fn prune_refuses_while_another_handle_is_open() {
    let (dir, store) = store();
    let other = Store::open(dir.path()).unwrap();
    assert!(matches!(store.prune(false), Err(Error::StoreBusy { .. })));
    drop(other);
    store.prune(false).unwrap();
}

#[test]
fn docker_schema2_images_are_readable() {
    let (_d, store) = store();
    let a = store.prepare().unwrap();
    write(&a.upper, "x", b"x");
    let layer = store.commit(a, None).unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        layer.diff_id
    );
    let config_digest = store.blobs().put(config.as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_DOCKER_MANIFEST}","config":{{"mediaType":"{MEDIA_TYPE_DOCKER_CONFIG}","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"{MEDIA_TYPE_DOCKER_LAYER}","size":{},"digest":"{}"}}]}}"#,
        config.len(),
        layer.descriptor.size,
        layer.descriptor.digest
    );
    let md = store.blobs().put(manifest.as_bytes()).unwrap();
    let desc = Descriptor::new(MEDIA_TYPE_DOCKER_MANIFEST, md, manifest.len() as u64);
    store.tag("docker.io/library/d:1", &desc).unwrap();
    let img = store.find_image("docker.io/library/d:1").unwrap().unwrap();
    assert_eq!(img.manifest_json, manifest.as_bytes());
    assert_eq!(
        img.parsed_config().unwrap()["config"]["OnBuild"][0],
        "RUN x"
    );
    let m = img.parsed_manifest().unwrap();
    let (_d2, other) = self::store();
    other
        .blobs()
        .put(&store.blobs().read(&layer.descriptor.digest).unwrap())
        .unwrap();
    let lowers = other
        .snapshot_chain(&m.layers, &img.diff_ids().unwrap())
        .unwrap();
    assert_eq!(std::fs::read(lowers[0].join("x")).unwrap(), b"x");
}

/// A layer of real entries plus external files is byte for byte the layer of a directory
/// holding those files, is stored as a blob only, and unpacks to that directory on demand.
#[test]
fn external_files_make_the_same_layer_as_real_ones() {
    let (_d, store) = store();
    let sources = tempfile::tempdir().unwrap();
    write(sources.path(), "big.bin", &vec![7u8; 70_000]);
    write(sources.path(), "small", b"small\n");
    let file = |name: &str, mode: u32, uid: u32, mtime: i64| ExternalFile {
        source: sources.path().join(name),
        mode,
        uid,
        gid: uid + 1,
        mtime,
        size: std::fs::metadata(sources.path().join(name)).unwrap().len(),
        link: None,
    };
    // Names sorting before, between and after the real entries, at two depths, and one
    // long enough to need a PAX record.
    let long = format!("app/{}", "n".repeat(120));
    let mut external = ExternalFiles::new();
    external.insert("app/a".into(), file("small", 0o644, 0, 1_000));
    external.insert("app/c/big".into(), file("big.bin", 0o4755, 1000, 2_000));
    external.insert("app/z".into(), file("small", 0o600, 7, 3_000));
    external.insert(long.clone().into(), file("small", 0o644, 0, 4_000));
    external.insert("top".into(), file("small", 0o640, 0, 5_000));

    let make_real = |root: &Path| {
        write(root, "app/b", b"real b\n");
        write(root, "app/c/d", b"real d\n");
        std::os::unix::fs::symlink("b", root.join("app/link")).unwrap();
    };
    let materialized = tempfile::tempdir().unwrap();
    make_real(materialized.path());
    for (rel, f) in external.iter() {
        let p = materialized.path().join(rel);
        std::fs::copy(&f.source, &p).unwrap();
        std::os::unix::fs::lchown(&p, Some(f.uid), Some(f.gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode)).unwrap();
        let t = filetime::FileTime::from_unix_time(f.mtime, 0);
        filetime::set_file_times(&p, t, t).unwrap();
    }
    let active = store.prepare().unwrap();
    make_real(&active.upper);
    for root in [materialized.path(), active.upper.as_path()] {
        for dir in ["app/c", "app", ""] {
            let t = filetime::FileTime::from_unix_time(9_000, 0);
            filetime::set_file_times(root.join(dir), t, t).unwrap();
        }
    }

    let mut expected = Vec::new();
    write_layer_tar(materialized.path(), &mut expected, &TarOptions::default()).unwrap();
    let mut got = Vec::new();
    write_layer_tar_with(&active.upper, &external, &mut got, &TarOptions::default()).unwrap();
    assert!(got == expected, "external files change the layer tar");

    let layer = store
        .commit_external(active, None, &TarOptions::default(), &external)
        .unwrap();
    assert_eq!(layer.descriptor.digest, Digest::of(&expected));
    assert!(
        store.snapshot_path(&layer.chain_id).is_none(),
        "a layer with external files is stored as a blob only"
    );
    let lowers = store
        .snapshot_chain(
            std::slice::from_ref(&layer.descriptor),
            std::slice::from_ref(&layer.diff_id),
        )
        .unwrap();
    let big = lowers[0].join("app/c/big");
    assert_eq!(std::fs::read(&big).unwrap(), vec![7u8; 70_000]);
    let m = std::fs::metadata(&big).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 1000, 1001));
    assert_eq!(std::fs::read(lowers[0].join(&long)).unwrap(), b"small\n");
}

#[test]
fn external_files_are_checked() {
    let upper = tempfile::tempdir().unwrap();
    write(upper.path(), "dir/real", b"x");
    let source = upper.path().join("dir/real");
    let file = ExternalFile {
        source: source.clone(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 1,
        link: None,
    };
    let tar = |external: &ExternalFiles| {
        write_layer_tar_with(
            upper.path(),
            external,
            std::io::sink(),
            &TarOptions::default(),
        )
        .map_err(|e| e.to_string())
    };
    let one = |rel: &str, f: &ExternalFile| ExternalFiles::from_iter([(rel.into(), f.clone())]);
    assert!(tar(&one("dir/other", &file)).is_ok());
    let err = tar(&one("missing/x", &file)).unwrap_err();
    assert!(err.contains("parent is not a directory"), "{err}");
    let err = tar(&one("dir/real", &file)).unwrap_err();
    assert!(err.contains("shadows"), "{err}");
    let grown = ExternalFile { size: 2, ..file };
    let err = tar(&one("dir/other", &grown)).unwrap_err();
    assert!(err.contains("changed while the layer was written"), "{err}");
}

/// `compression` at its default level.
fn layer_compression(compression: Compression) -> LayerCompression {
    LayerCompression::new(compression, None).unwrap()
}

#[test]
fn areas_are_kept_by_prune_and_emptied_by_prune_all_except_registry_sources() {
    let (_d, store) = store();
    let mounts = store.area(Area::CacheMounts).unwrap();
    std::fs::create_dir(mounts.path().join("go-build")).unwrap();
    std::fs::write(mounts.path().join("go-build/obj"), b"x").unwrap();
    let stat = store.area(Area::StatCache).unwrap();
    std::fs::write(stat.path().join("statcache-1"), b"y").unwrap();
    let mut sources = MountSources::default();
    sources.add("sha256:1", "r:5000", "app");
    store.save_mount_sources(&sources).unwrap();

    store.prune(false).unwrap();
    assert!(mounts.path().join("go-build/obj").exists());
    assert!(stat.path().join("statcache-1").exists());

    store.prune(true).unwrap();
    assert_eq!(std::fs::read_dir(mounts.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(stat.path()).unwrap().count(), 0);
    let kept = store.mount_sources().unwrap();
    assert_eq!(
        kept.repositories("r:5000", "sha256:1").collect::<Vec<_>>(),
        ["app"]
    );
    assert!(store.fsck().unwrap().is_empty());
}

/// Commits `files` as a layer on `parent` in `store`; returns it.
fn layer_of(store: &Store, parent: Option<&ChainId>, files: &[(&str, &[u8])]) -> Layer {
    let active = store.prepare().unwrap();
    for (rel, bytes) in files {
        write(&active.upper, rel, bytes);
    }
    store.commit(active, parent).unwrap()
}

#[test]
fn a_chain_of_missing_layers_unpacks_in_parallel_into_the_same_snapshots() {
    let (_d, built) = store();
    let a = layer_of(&built, None, &[("etc/a", b"a\n"), ("etc/shared", b"1\n")]);
    let b = layer_of(&built, Some(&a.chain_id), &[("etc/b", b"b\n")]);
    let c = layer_of(&built, Some(&b.chain_id), &[("etc/shared", b"3\n")]);
    let layers = [&a, &b, &c].map(|l| l.descriptor.clone());
    let diff_ids = [&a, &b, &c].map(|l| l.diff_id.clone());

    // A fresh store holding only the blobs, with the middle snapshot already there.
    let with_blobs = || {
        let (dir, s) = store();
        for l in &layers {
            s.blobs()
                .put(&built.blobs().read(&l.digest).unwrap())
                .unwrap();
        }
        (dir, s)
    };
    let (_d2, other) = with_blobs();
    other.snapshot_chain(&layers[..2], &diff_ids[..2]).unwrap();
    std::fs::remove_dir_all(other.snapshot_dir(&a.chain_id)).unwrap();
    let lowers = other.snapshot_chain(&layers, &diff_ids).unwrap();
    let expected: Vec<_> = [&c, &b, &a]
        .iter()
        .map(|l| other.snapshot_path(&l.chain_id).unwrap())
        .collect();
    assert_eq!(lowers, expected, "top-most first, named by chain");
    assert_eq!(std::fs::read(lowers[0].join("etc/shared")).unwrap(), b"3\n");
    assert_eq!(std::fs::read(lowers[1].join("etc/b")).unwrap(), b"b\n");
    assert_eq!(std::fs::read(lowers[2].join("etc/shared")).unwrap(), b"1\n");

    // One wrong diffID fails the chain and leaves no snapshot under that layer's chain.
    let (_d3, third) = with_blobs();
    let mut wrong = diff_ids.clone();
    wrong[1] = DiffId::from(Digest::of(b"not this layer"));
    let err = third.snapshot_chain(&layers, &wrong).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let wrong_chain = ChainId::child(Some(&a.chain_id), &wrong[1]);
    assert!(third.snapshot_path(&wrong_chain).is_none());
    // The layer below the failure is installed, the one above it (unpacked or not) is not:
    // no snapshot is ever there without its parent.
    assert!(third.snapshot_path(&a.chain_id).is_some());
    let above = ChainId::child(Some(&wrong_chain), &c.diff_id);
    assert!(third.snapshot_path(&above).is_none());
    assert!(third.fsck().unwrap().is_empty());
}
