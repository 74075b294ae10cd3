//! Realistic Dockerfiles (`testdata/debian-*`) on a Debian 12 minbase image pushed as Docker
//! v2s2: built and pushed by rbuild, read back with skopeo and umoci, pulled and run by
//! podman (runc, the ulimits CI machines set).

use crate::build::testdata;
use crate::formats::{build_push_on, raw_manifest, umoci_unpack_pushed};
use crate::util::debian::debian;
use crate::util::podman::Podman;
use crate::util::{Rbuild, Registry};

/// `rbuild build --push` of `testdata/<name>` on the Debian base as `dest`, checked with
/// skopeo and umoci; returns the unpacked rootfs's holder and path.
fn build_push(
    name: &str,
    dest: &str,
    extra: &[&str],
) -> (crate::util::TestDir, std::path::PathBuf) {
    build_push_on(
        &Rbuild::new(),
        &debian().reference,
        &testdata(name),
        dest,
        extra,
    );
    umoci_unpack_pushed(dest)
}

#[test]
fn the_debian_base_is_v2s2() {
    let m = raw_manifest(&debian().reference);
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

#[test]
fn apt_get_install_in_run() {
    let dest = format!("{}/debian/apt:v1", Registry::shared().addr);
    let (_d, rootfs) = build_push("debian-apt", &dest, &[]);
    assert!(rootfs.join("usr/bin/hello").is_file());
    let m = raw_manifest(&dest);
    assert_eq!(
        m["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{m}"
    );
    let podman = Podman::new();
    podman.pull(&dest);
    assert_eq!(podman.run_image(&dest, None, &[]), "hello from apt\n");
}

#[test]
fn multi_stage_compile() {
    let dest = format!("{}/debian/greet:v1", Registry::shared().addr);
    let (_d, rootfs) = build_push("debian-multistage", &dest, &[]);
    assert!(rootfs.join("usr/local/bin/greet").is_file());
    // The toolchain stayed in the builder stage.
    assert!(!rootfs.join("usr/bin/tcc").exists());
    let podman = Podman::new();
    podman.pull(&dest);
    assert_eq!(
        podman.run_image(&dest, None, &[]),
        "greetings, world (compiled in a builder stage)\n"
    );
    assert_eq!(
        podman.run_image(&dest, None, &["podman"]),
        "greetings, podman (compiled in a builder stage)\n"
    );
}

#[test]
fn useradd_user_and_copy_chown_by_name() {
    for format in ["oci", "docker"] {
        let dest = format!("{}/debian/user:{format}", Registry::shared().addr);
        let (_d, rootfs) = build_push("debian-user", &dest, &["--format", format]);
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("app:x:1500:1500::/home/app:/bin/bash"),
            "{passwd}"
        );
        let m = raw_manifest(&dest);
        let want = match format {
            "oci" => "application/vnd.oci.image.manifest.v1+json",
            _ => "application/vnd.docker.distribution.manifest.v2+json",
        };
        assert_eq!(m["mediaType"], want, "{m}");
        let podman = Podman::new();
        podman.pull(&dest);
        assert_eq!(
            podman.run_image(&dest, None, &[]),
            "user=app uid=1500 home=/home/app pwd=/home/app\n\
             app:app /home/app/app.sh\n\
             app:app /home/app/config/settings.ini\n\
             app:app /home/app/built.txt\n\
             built by app in /home/app\n"
        );
    }
}
