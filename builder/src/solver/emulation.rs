//! Foreign-architecture RUN: whether the host runs a platform's binaries natively, else
//! whether binfmt_misc has an emulator registered for them (read from
//! `/proc/sys/fs/binfmt_misc`, the entry's magic and mask against the platform's ELF header).

use std::path::Path;

use rbuild_store::Platform;

/// Where the kernel lists binfmt_misc entries.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Why a platform's RUN steps cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum EmulationError {
    /// No enabled binfmt_misc entry matches the platform's executables.
    #[error("no emulator registered for {platform}: install qemu-user-static (binfmt_misc){hint}")]
    NotRegistered {
        /// The platform.
        platform: String,
        /// What else to do (mount binfmt_misc), or empty.
        hint: String,
    },
    /// An entry matches but was registered without the F flag, so its interpreter would be
    /// looked up inside the image's root.
    #[error(
        "the emulator for {platform} ({entry}) is registered without the F flag \
         (fix-binary): register it with F, as qemu-user-static's binfmt.d files do"
    )]
    NotFixBinary {
        /// The platform.
        platform: String,
        /// The binfmt_misc entry's name.
        entry: String,
    },
    /// rbuild does not know the ELF header of the platform's executables.
    #[error(
        "RUN for {platform}: rbuild cannot tell which executables it has (unknown architecture)"
    )]
    UnknownArchitecture {
        /// The platform.
        platform: String,
    },
}

/// How a platform's RUN steps run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// The host's CPU runs them.
    Native,
    /// Through the binfmt_misc entry of this name.
    Emulated(String),
}

/// ELF class (1: 32-bit, 2: 64-bit), data (1: little, 2: big endian) and e_machine of
/// the executables of a Linux architecture.
fn elf_identity(p: &Platform) -> Option<(u8, u8, u16)> {
    Some(match p.architecture.as_str() {
        "amd64" => (2, 1, 62),
        "386" => (1, 1, 3),
        "arm64" => (2, 1, 183),
        "arm" => (1, 1, 40),
        "ppc64le" => (2, 1, 21),
        "ppc64" => (2, 2, 21),
        "s390x" => (2, 2, 22),
        "riscv64" => (2, 1, 243),
        "mips64le" => (2, 1, 8),
        "mips64" => (2, 2, 8),
        "mipsle" => (1, 1, 8),
        "mips" => (1, 2, 8),
        "loong64" => (2, 1, 258),
        _ => return None,
    })
}

/// The first 20 bytes of an executable (`e_type` EXEC or DYN) for `p`.
fn elf_headers(p: &Platform) -> Option<[[u8; 20]; 2]> {
    let (class, data, machine) = elf_identity(p)?;
    let header = |e_type: u16| {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        h[6] = 1; // EV_CURRENT
        let (t, m) = if data == 1 {
            (e_type.to_le_bytes(), machine.to_le_bytes())
        } else {
            (e_type.to_be_bytes(), machine.to_be_bytes())
        };
        h[16..18].copy_from_slice(&t);
        h[18..20].copy_from_slice(&m);
        h
    };
    Some([header(2), header(3)])
}

/// Whether the host runs `target`'s binaries itself (same architecture, or 386 on amd64).
pub fn is_native(target: &Platform, host: &Platform) -> bool {
    let (t, h) = (target.normalized(), host.normalized());
    t.os == h.os
        && (t.architecture == h.architecture
            || (t.architecture == "386" && h.architecture == "amd64"))
}

/// How RUN steps for `target` run on this host, or why they cannot.
pub fn execution(target: &Platform) -> Result<Execution, EmulationError> {
    if is_native(target, &Platform::host()) {
        return Ok(Execution::Native);
    }
    find_emulator(Path::new(BINFMT_MISC), target).map(Execution::Emulated)
}

/// The name of the enabled binfmt_misc entry under `dir` that runs `target`'s executables.
pub fn find_emulator(dir: &Path, target: &Platform) -> Result<String, EmulationError> {
    let platform = target.to_string();
    let headers = elf_headers(target).ok_or_else(|| EmulationError::UnknownArchitecture {
        platform: platform.clone(),
    })?;
    let not_registered = |hint: &str| EmulationError::NotRegistered {
        platform: platform.clone(),
        hint: hint.to_owned(),
    };
    let enabled = std::fs::read_to_string(dir.join("status")).map_err(|_| {
        not_registered(&format!(
            "; binfmt_misc is not mounted: mount -t binfmt_misc binfmt_misc {}",
            dir.display()
        ))
    })?;
    if enabled.trim() != "enabled" {
        return Err(not_registered(&format!(
            "; binfmt_misc is disabled: echo 1 > {}/status",
            dir.display()
        )));
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|_| not_registered(""))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "status" && n != "register")
        .collect();
    entries.sort();
    let mut without_f = None;
    for name in entries {
        let Ok(text) = std::fs::read_to_string(dir.join(&name)) else {
            continue;
        };
        let Some(entry) = Entry::parse(&text) else {
            continue;
        };
        if !entry.enabled || !headers.iter().any(|h| entry.matches(h)) {
            continue;
        }
        if entry.flags.contains('F') {
            return Ok(name);
        }
        without_f.get_or_insert(name);
    }
    match without_f {
        Some(entry) => Err(EmulationError::NotFixBinary { platform, entry }),
        None => Err(not_registered("")),
    }
}

/// One binfmt_misc entry, as its file in binfmt_misc reads.
#[derive(Debug)]
struct Entry {
    enabled: bool,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Option<Vec<u8>>,
}

impl Entry {
    /// Parses `enabled`, `flags: F`, `offset 0`, `magic 7f45..`, `mask ff..` lines; an
    /// extension entry (no magic) is `None`.
    fn parse(text: &str) -> Option<Entry> {
        let mut e = Entry {
            enabled: false,
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: None,
        };
        for line in text.lines() {
            let line = line.trim();
            if line == "enabled" {
                e.enabled = true;
            } else if let Some(f) = line.strip_prefix("flags:") {
                e.flags = f.trim().to_owned();
            } else if let Some(o) = line.strip_prefix("offset ") {
                e.offset = o.trim().parse().ok()?;
            } else if let Some(m) = line.strip_prefix("magic ") {
                e.magic = hex::decode(m.trim()).ok()?;
            } else if let Some(m) = line.strip_prefix("mask ") {
                e.mask = Some(hex::decode(m.trim()).ok()?);
            }
        }
        (!e.magic.is_empty()).then_some(e)
    }

    /// Whether the kernel would hand a file starting with `header` to this entry.
    fn matches(&self, header: &[u8]) -> bool {
        self.magic.iter().enumerate().all(|(i, m)| {
            let Some(b) = header.get(self.offset + i) else {
                return false;
            };
            let mask = self
                .mask
                .as_ref()
                .and_then(|k| k.get(i))
                .copied()
                .unwrap_or(0xff);
            b & mask == m & mask
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn dir(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        for (n, t) in entries {
            std::fs::write(d.path().join(n), t).unwrap();
        }
        d
    }

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn finds_the_entry_whose_magic_matches_the_elf_header() {
        let d = dir(&[
            (
                "python3.11",
                "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n",
            ),
            ("qemu-aarch64", QEMU_AARCH64),
        ]);
        assert_eq!(
            find_emulator(d.path(), &p("linux/arm64")).unwrap(),
            "qemu-aarch64"
        );
        let err = find_emulator(d.path(), &p("linux/s390x"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no emulator registered for linux/s390x: install qemu-user-static (binfmt_misc)"
        );
        let err = find_emulator(d.path(), &p("linux/arm/v7"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no emulator registered for linux/arm/v7"),
            "{err}"
        );
    }

    #[test]
    fn refuses_disabled_entries_and_entries_without_f() {
        let d = dir(&[("qemu-aarch64", &QEMU_AARCH64.replace("enabled", "disabled"))]);
        assert!(matches!(
            find_emulator(d.path(), &p("linux/arm64")),
            Err(EmulationError::NotRegistered { .. })
        ));
        let d = dir(&[("qemu-aarch64", &QEMU_AARCH64.replace("POCF", "POC"))]);
        let err = find_emulator(d.path(), &p("linux/arm64"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("without the F flag"), "{err}");
    }

    #[test]
    fn an_unmounted_binfmt_misc_says_how_to_mount_it() {
        let d = tempfile::tempdir().unwrap();
        let err = find_emulator(d.path(), &p("linux/arm64"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("install qemu-user-static") && err.contains("mount -t binfmt_misc"),
            "{err}"
        );
    }

    #[test]
    fn native_platforms() {
        assert!(is_native(&p("linux/386"), &p("linux/amd64")));
        assert!(is_native(&p("linux/amd64"), &p("linux/amd64")));
        assert!(!is_native(&p("linux/arm64"), &p("linux/amd64")));
    }
}
