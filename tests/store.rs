//! The store against real tools: skopeo and umoci read the layout, podman loads `save`
//! output, fsck catches damage, prune frees what nothing references, two processes share a
//! store, and snapshots stack as real overlayfs lowers.

use std::path::Path;
use std::process::Command;

use rbuild_store::{canonical_json, Descriptor, Store};

use crate::util::{show, tool, Rbuild, TestDir};

/// Builds a two-layer image through the store API and tags it `name`; returns the manifest.
pub(crate) fn make_image(root: &Path, name: &str, marker: &str) -> Descriptor {
    let store = Store::open(root).expect("open store");
    let a = store.prepare().expect("prepare");
    std::fs::create_dir_all(a.upper.join("etc")).unwrap();
    std::fs::write(a.upper.join("etc/base"), b"base\n").unwrap();
    std::fs::write(a.upper.join("etc/gone"), b"deleted later\n").unwrap();
    // One fixed mtime (children before their directory), so that every image made here
    // shares this base layer even when the calls straddle a second.
    let fixed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    for rel in ["etc/base", "etc/gone", "etc", ""] {
        std::fs::File::open(a.upper.join(rel))
            .and_then(|f| f.set_modified(fixed))
            .unwrap();
    }
    let base = store.commit(a, None).expect("commit base");
    let b = store.prepare().expect("prepare");
    std::fs::create_dir_all(b.upper.join("etc")).unwrap();
    std::fs::write(b.upper.join("etc/marker"), marker).unwrap();
    mknod_whiteout(&b.upper.join("etc/gone"));
    let top = store.commit(b, Some(&base.chain_id)).expect("commit top");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Healthcheck": {"Test": ["CMD", "true"]}},
        "rootfs": {"type": "layers", "diff_ids": [base.diff_id.to_string(), top.diff_id.to_string()]},
        "history": [{"created_by": "base"}, {"created_by": "top"}],
    });
    let m = store
        .put_image(
            &canonical_json(&config).unwrap(),
            &[base.descriptor, top.descriptor],
        )
        .expect("put image");
    store.tag(name, &m).expect("tag");
    m
}

fn mknod_whiteout(path: &Path) {
    let out = Command::new("mknod")
        .arg(path)
        .args(["c", "0", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn skopeo_and_umoci_read_the_store_by_full_name() {
    let r = Rbuild::new();
    let name = "127.0.0.1:5000/a/b:v1";
    let m = make_image(&r.root, name, "one");
    make_image(&r.root, "docker.io/library/plain:latest", "two");
    let out = tool(
        "skopeo",
        &["inspect", &format!("oci:{}:{name}", r.root.display())],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], m.digest.to_string(), "{out}");
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{out}");
    let out = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--config",
            &format!("oci:{}:{name}", r.root.display()),
        ],
    );
    assert!(out.contains("Healthcheck"), "{out}");

    // umoci (0.4.7) splits `--image` at the first ':' like skopeo, so full names with a
    // registry port work for both.
    let bundle = TestDir::new("umoci");
    let dest = bundle.path().join("bundle");
    let image = format!("{}:{name}", r.root.display());
    tool(
        "umoci",
        &["unpack", "--image", &image, dest.to_str().unwrap()],
    );
    let rootfs = dest.join("rootfs/etc");
    assert_eq!(std::fs::read(rootfs.join("marker")).unwrap(), b"one");
    assert_eq!(std::fs::read(rootfs.join("base")).unwrap(), b"base\n");
    assert!(
        !rootfs.join("gone").exists(),
        "whiteout not applied by umoci"
    );
    let listed = tool("umoci", &["ls", "--layout", r.root.to_str().unwrap()]);
    assert!(listed.lines().any(|l| l == name), "{listed}");
}

#[test]
fn images_inspect_tag_rmi() {
    let r = Rbuild::new();
    let m = make_image(&r.root, "docker.io/library/app:1", "x");
    let list = r.ok(&["images"]);
    let mut lines = list.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "{list}"
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with("docker.io/library/app"), "{list}");
    assert!(row.contains(" 1 "), "{list}");
    let store = Store::open(&r.root).unwrap();
    let id = store
        .find_image("docker.io/library/app:1")
        .unwrap()
        .unwrap()
        .id()
        .clone();
    assert!(row.contains(&id.hex()[..12]), "{list}");
    assert!(row.contains("ago"), "{list}");
    assert_eq!(r.ok(&["images", "-q"]).trim(), &id.hex()[..12]);
    assert_eq!(r.ok(&["images", "-q", "--no-trunc"]).trim(), id.to_string());

    r.ok(&["tag", "app:1", "127.0.0.1:5000/other:2"]);
    let inspect = r.ok(&["inspect", &id.hex()[..8]]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["id"], id.to_string());
    assert_eq!(v[0]["digest"], m.digest.to_string());
    let tags: Vec<&str> = v[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["127.0.0.1:5000/other:2", "docker.io/library/app:1"]);
    assert_eq!(v[0]["config"]["Healthcheck"]["Test"][1], "true");

    let out = r.run(&["inspect", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuch"),
        "{}",
        show(&out)
    );

    assert_eq!(
        r.ok(&["rmi", "app:1"]).trim(),
        "Untagged: docker.io/library/app:1"
    );
    assert_eq!(r.ok(&["images", "-q"]).lines().count(), 1);
    r.ok(&["rmi", "127.0.0.1:5000/other:2"]);
    assert_eq!(r.ok(&["images", "-q"]), "");
}

#[test]
fn fsck_names_bit_flipped_and_truncated_blobs() {
    let r = Rbuild::new();
    let m = make_image(&r.root, "docker.io/library/f:1", "f");
    assert!(r.ok(&["fsck"]).starts_with("ok"));
    let store = Store::open(&r.root).unwrap();
    let img = store.find_image("docker.io/library/f:1").unwrap().unwrap();
    let layer = img.parsed_manifest().unwrap().layers[1].digest.clone();
    let path = store.blobs().path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[600] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let cfg = store.blobs().path(&img.config.digest);
    let len = std::fs::metadata(&cfg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cfg)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = r.run(&["fsck"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(layer.hex()), "{}", show(&out));
    assert!(stdout.contains(img.config.digest.hex()), "{}", show(&out));
    assert!(
        !stdout.contains(&format!("bad: {}", store.blobs().path(&m.digest).display())),
        "{stdout}"
    );
}

#[test]
fn prune_frees_what_nothing_references() {
    let r = Rbuild::new();
    make_image(&r.root, "docker.io/library/keep:1", "keep");
    make_image(&r.root, "docker.io/library/drop:1", "drop");
    let before = blob_count(&r.root);
    assert!(r.ok(&["prune"]).contains("Total reclaimed space: 0B"));
    assert_eq!(blob_count(&r.root), before);
    r.ok(&["rmi", "drop:1"]);
    let out = r.ok(&["prune"]);
    assert!(out.contains("deleted blob"), "{out}");
    assert!(out.contains("deleted snapshot"), "{out}");
    // The shared base layer stays; drop's manifest, config and top layer go.
    assert_eq!(blob_count(&r.root), before - 3, "{out}");
    assert!(r.ok(&["fsck"]).starts_with("ok"));
    let store = Store::open(&r.root).unwrap();
    let keep = store
        .find_image("docker.io/library/keep:1")
        .unwrap()
        .unwrap();
    let m = keep.parsed_manifest().unwrap();
    let lowers = store
        .snapshot_chain(&m.layers, &keep.diff_ids().unwrap())
        .unwrap();
    assert_eq!(
        std::fs::read(lowers[0].join("etc/marker")).unwrap(),
        b"keep"
    );
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn save_outputs_load_in_podman_and_skopeo() {
    let r = Rbuild::new();
    make_image(&r.root, "127.0.0.1:5000/saved/img:v1", "saved");
    let dir = TestDir::new("save");
    let docker = dir.path().join("docker.tar");
    r.ok(&[
        "save",
        "-o",
        docker.to_str().unwrap(),
        "127.0.0.1:5000/saved/img:v1",
    ]);
    let oci = dir.path().join("oci.tar");
    r.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        oci.to_str().unwrap(),
        "127.0.0.1:5000/saved/img:v1",
    ]);

    let proot = dir.path().join("podman-root");
    // podman refuses a runroot longer than 50 characters, and the checkout's path is
    // not ours to choose: keep the runroot in a short temp dir.
    let prun_dir = tempfile::Builder::new()
        .prefix("prun")
        .tempdir_in("/tmp")
        .expect("runroot");
    let prun = prun_dir.path().to_path_buf();
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root",
            proot.to_str().unwrap(),
            "--runroot",
            prun.to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
        ];
        all.extend_from_slice(args);
        tool("podman", &all)
    };
    let out = podman(&["load", "-i", docker.to_str().unwrap()]);
    assert!(out.contains("127.0.0.1:5000/saved/img:v1"), "{out}");
    let images = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("127.0.0.1:5000/saved/img:v1"), "{images}");
    // The loaded image has our files, with the whiteout applied.
    let mount = podman(&["image", "mount", "127.0.0.1:5000/saved/img:v1"]);
    let rootfs = Path::new(mount.trim());
    assert_eq!(std::fs::read(rootfs.join("etc/marker")).unwrap(), b"saved");
    assert!(!rootfs.join("etc/gone").exists());
    podman(&["image", "unmount", "127.0.0.1:5000/saved/img:v1"]);

    let out = tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}:127.0.0.1:5000/saved/img:v1", oci.display()),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{out}");
    let out = tool(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", docker.display())],
    );
    assert!(out.contains("\"Layers\""), "{out}");
}

#[test]
fn two_processes_tag_the_same_store() {
    let r = Rbuild::new();
    make_image(&r.root, "docker.io/library/base:1", "b");
    // Two rbuild processes and this process's threads rewrite index.json at once.
    let mut children = Vec::new();
    for p in 0..2 {
        let script = (0..15)
            .map(|i| {
                format!(
                    "{} tag base:1 proc{p}:{i} || exit 1",
                    env!("CARGO_BIN_EXE_rbuild")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let child = Command::new("sh")
            .args(["-c", &script])
            .env("RBUILD_ROOT", &r.root)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    let root = r.root.clone();
    let thread = std::thread::spawn(move || {
        for i in 0..10 {
            make_image(
                &root,
                &format!("docker.io/library/thread:{i}"),
                &format!("t{i}"),
            );
        }
    });
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    thread.join().unwrap();
    let store = Store::open(&r.root).unwrap();
    let names: Vec<String> = store
        .images()
        .unwrap()
        .into_iter()
        .filter_map(|i| i.name)
        .collect();
    assert_eq!(names.len(), 1 + 30 + 10, "{names:?}");
    assert!(r.ok(&["fsck"]).starts_with("ok"));
}

#[test]
fn the_store_reads_an_image_skopeo_wrote_into_it() {
    let bb = crate::util::busybox::busybox();
    let r = Rbuild::new();
    Store::open(&r.root).unwrap();
    let name = "docker.io/library/busybox:latest";
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{}:latest", bb.layout.display()),
            &format!("oci:{}:{name}", r.root.display()),
        ],
    );
    assert!(r.ok(&["images"]).contains("docker.io/library/busybox"));
    let store = Store::open(&r.root).unwrap();
    let img = store.find_image(name).unwrap().unwrap();
    let diff_ids = img.diff_ids().unwrap();
    assert_eq!(diff_ids[0].to_string(), bb.diff_id);
    let m = img.parsed_manifest().unwrap();
    let lowers = store.snapshot_chain(&m.layers, &diff_ids).unwrap();
    assert!(lowers[0].join("bin/busybox").is_file());
    assert!(r.ok(&["fsck"]).starts_with("ok"));
}

/// An overlay mount that is unmounted on drop.
struct Overlay {
    merged: std::path::PathBuf,
}

impl Overlay {
    /// Mounts `lowers` (top first) with an optional upper/work, from `cwd` so relative
    /// lower paths keep the option string short.
    fn mount(
        cwd: &Path,
        lowers: &[String],
        upper: Option<(&Path, &Path)>,
        merged: &Path,
    ) -> Overlay {
        std::fs::create_dir_all(merged).unwrap();
        let mut opts = format!("lowerdir={}", lowers.join(":"));
        if let Some((u, w)) = upper {
            opts.push_str(&format!(
                ",upperdir={},workdir={}",
                u.display(),
                w.display()
            ));
        }
        let out = Command::new("mount")
            .current_dir(cwd)
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(merged)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount {opts}: {}", show(&out));
        Overlay {
            merged: merged.to_path_buf(),
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.merged).status();
    }
}

/// Short relative names for lower dirs (like docker's `l/` links): `l/<i> -> <lower>`.
fn short_lowers(dir: &Path, lowers: &[std::path::PathBuf]) -> Vec<String> {
    std::fs::create_dir_all(dir.join("l")).unwrap();
    lowers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            std::os::unix::fs::symlink(p, dir.join(format!("l/{i}"))).unwrap();
            format!("l/{i}")
        })
        .collect()
}

#[test]
fn overlay_deletes_and_opaque_dirs_round_trip_through_layers() {
    let r = Rbuild::new();
    let store = Store::open(&r.root).unwrap();
    let a = store.prepare().unwrap();
    for f in ["a/x", "a/y", "d/old1", "d/old2"] {
        let p = a.upper.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, f).unwrap();
    }
    let base = store.commit(a, None).unwrap();
    // A RUN step on a real overlay: delete a file, replace a directory.
    let b = store.prepare().unwrap();
    let scratch = TestDir::new("ovl");
    {
        let lower = store.snapshot_path(&base.chain_id).unwrap();
        let m = Overlay::mount(
            scratch.path(),
            &[lower.display().to_string()],
            Some((&b.upper, &b.work)),
            &scratch.path().join("m1"),
        );
        std::fs::remove_file(m.merged.join("a/x")).unwrap();
        std::fs::remove_dir_all(m.merged.join("d")).unwrap();
        std::fs::create_dir(m.merged.join("d")).unwrap();
        std::fs::write(m.merged.join("d/new"), b"new").unwrap();
    }
    let top = store.commit(b, Some(&base.chain_id)).unwrap();
    let tar = store.blobs().read(&top.descriptor.digest).unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    assert!(names.contains(&"a/.wh.x".to_owned()), "{names:?}");
    assert!(names.contains(&"d/.wh..wh..opq".to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("trusted.overlay")),
        "{names:?}"
    );

    // A second store unpacks both layers; mounted as lowers they show the same tree.
    let r2 = Rbuild::new();
    let other = Store::open(&r2.root).unwrap();
    for d in [&base.descriptor, &top.descriptor] {
        other
            .blobs()
            .put(&store.blobs().read(&d.digest).unwrap())
            .unwrap();
    }
    let lowers = other
        .snapshot_chain(
            &[base.descriptor.clone(), top.descriptor.clone()],
            &[base.diff_id.clone(), top.diff_id.clone()],
        )
        .unwrap();
    let lowers = short_lowers(scratch.path(), &lowers);
    let m = Overlay::mount(scratch.path(), &lowers, None, &scratch.path().join("m2"));
    assert!(!m.merged.join("a/x").exists());
    assert_eq!(std::fs::read(m.merged.join("a/y")).unwrap(), b"a/y");
    let mut d: Vec<String> = std::fs::read_dir(m.merged.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    d.sort();
    assert_eq!(d, ["new"]);
}

#[test]
fn a_128_layer_chain_stacks_as_overlay_lowers() {
    let r = Rbuild::new();
    let store = Store::open(&r.root).unwrap();
    let mut parent = None;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..128 {
        let a = store.prepare().unwrap();
        std::fs::create_dir_all(a.upper.join("keep")).unwrap();
        std::fs::write(a.upper.join(format!("keep/k{i}")), i.to_string()).unwrap();
        std::fs::write(a.upper.join(format!("f{i}")), i.to_string()).unwrap();
        if i > 0 {
            mknod_whiteout(&a.upper.join(format!("f{}", i - 1)));
        }
        let l = store.commit(a, parent.as_ref()).unwrap();
        parent = Some(l.chain_id.clone());
        layers.push(l.descriptor);
        diff_ids.push(l.diff_id);
    }
    // Unpack the chain from blobs in a second store.
    let r2 = Rbuild::new();
    let other = Store::open(&r2.root).unwrap();
    for d in &layers {
        other
            .blobs()
            .put(&store.blobs().read(&d.digest).unwrap())
            .unwrap();
    }
    let lowers = other.snapshot_chain(&layers, &diff_ids).unwrap();
    assert_eq!(lowers.len(), 128);
    assert_eq!(
        lowers[0],
        other.snapshot_path(parent.as_ref().unwrap()).unwrap()
    );
    let scratch = TestDir::new("ovl128");
    let short = short_lowers(scratch.path(), &lowers);
    let m = Overlay::mount(scratch.path(), &short, None, &scratch.path().join("m"));
    assert_eq!(
        std::fs::read_dir(m.merged.join("keep")).unwrap().count(),
        128
    );
    let top: Vec<String> = std::fs::read_dir(&m.merged)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('f'))
        .collect();
    assert_eq!(top, ["f127"]);
    // Same chain again: nothing to unpack, same paths.
    assert_eq!(other.snapshot_chain(&layers, &diff_ids).unwrap(), lowers);
}

#[test]
fn startup_keeps_another_process_s_live_scratch_and_cleans_dead_ones() {
    use std::io::{BufRead, BufReader, Write};
    let r = Rbuild::new();
    Store::open(&r.root).unwrap();
    let tmp = r.root.join("tmp");
    std::fs::create_dir_all(tmp.join("plive/active-1/fs")).unwrap();
    std::fs::write(tmp.join("plive/f-1"), b"half an ingest").unwrap();
    std::fs::create_dir_all(tmp.join("pdead/active-1/fs")).unwrap();
    std::fs::write(tmp.join("pdead.lock"), b"").unwrap();
    // Another process holds plive's lock (flock(1) takes the same flock(2) lock we use).
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(tmp.join("plive.lock"))
        .args(["-c", "echo locked; read _"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    r.ok(&["images"]);
    assert!(
        tmp.join("plive/f-1").exists(),
        "a live process's ingest was deleted"
    );
    assert!(!tmp.join("pdead").exists(), "dead debris was kept");
    // Once the holder exits, its scratch is debris too.
    holder.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(holder.wait().unwrap().success());
    r.ok(&["images"]);
    assert!(!tmp.join("plive").exists());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}
