//! `rbuild images|inspect|tag|rmi|prune|fsck|save`: the commands that read and tidy the store.

use std::io::Write;

use anyhow::Context;
use rbuild_store::{Image, Reference, Store};

use super::Globals;
use crate::cli::{
    FsckArgs, ImagesArgs, InspectArgs, PruneArgs, RmiArgs, SaveArgs, SaveFormat, TagArgs,
};

fn open(g: &Globals) -> anyhow::Result<Store> {
    Store::open(&g.root).with_context(|| format!("cannot open the store at {}", g.root.display()))
}

/// Finds an image by name (as typed or normalised) or by image-ID prefix.
fn find(store: &Store, arg: &str) -> anyhow::Result<Image> {
    if let Some(img) = store.find_image(arg)? {
        return Ok(img);
    }
    Err(rbuild_store::Error::NoSuchImage(arg.to_owned()).into())
}

/// `repo:tag` → (`repo`, `tag`); `repo@digest` → (`repo`, `<none>`).
fn split_name(name: &str) -> (&str, &str) {
    if let Some((repo, _)) = name.split_once('@') {
        return (repo, "<none>");
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "<none>"),
    }
}

/// `rbuild images`.
pub fn images(g: &Globals, args: ImagesArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let images = store.images()?;
    let mut out = std::io::stdout().lock();
    let id = |img: &Image| {
        if args.no_trunc {
            img.id().to_string()
        } else {
            img.id().hex()[..12].to_owned()
        }
    };
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for img in &images {
            if seen.insert(img.id().clone()) {
                writeln!(out, "{}", id(img))?;
            }
        }
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for img in &images {
        let (repo, tag) = split_name(img.name.as_deref().unwrap_or("<none>"));
        let config = img.parsed_config().unwrap_or_default();
        let created = config
            .get("created")
            .and_then(|v| v.as_str())
            .and_then(parse_rfc3339)
            .map_or_else(|| "N/A".to_owned(), |t| ago(now - t));
        rows.push([
            repo.to_owned(),
            tag.to_owned(),
            id(img),
            created,
            human_size(img.size()?),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 4 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `rbuild inspect`.
pub fn inspect(g: &Globals, args: InspectArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let all = store.images()?;
    let mut docs = Vec::new();
    for arg in &args.images {
        let img = find(&store, arg)?;
        let config = img.parsed_config()?;
        let manifest: serde_json::Value = serde_json::from_slice(&img.manifest_json)?;
        let tags: Vec<&str> = all
            .iter()
            .filter(|i| i.manifest.digest == img.manifest.digest)
            .filter_map(|i| i.name.as_deref())
            .collect();
        docs.push(serde_json::json!({
            "Id": img.id().to_string(),
            "RepoTags": tags,
            "ManifestDigest": img.manifest.digest.to_string(),
            "Created": config.get("created"),
            "Author": config.get("author"),
            "Architecture": config.get("architecture"),
            "Variant": config.get("variant"),
            "Os": config.get("os"),
            "Config": config.get("config"),
            "RootFS": config.get("rootfs"),
            "History": config.get("history"),
            "Size": img.size()?,
            "Manifest": manifest,
        }));
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &docs)?;
    writeln!(out)?;
    Ok(())
}

/// `rbuild tag`.
pub fn tag(g: &Globals, args: TagArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let img = find(&store, &args.source)?;
    let target = Reference::parse(&args.target)
        .map_err(|e| crate::exit::UsageError(e.to_string()))?
        .to_string();
    store.tag(&target, &img.manifest)?;
    Ok(())
}

/// `rbuild rmi`: removes tags (by name; by ID, every tag of that image). Space is freed by
/// `rbuild prune`.
pub fn rmi(g: &Globals, args: RmiArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let mut out = std::io::stdout().lock();
    for arg in &args.images {
        let img = find(&store, arg)?;
        let names: Vec<String> = match &img.name {
            Some(n) if n == arg || Reference::parse(arg).is_ok_and(|r| r.to_string() == *n) => {
                vec![n.clone()]
            }
            _ => store
                .images()?
                .into_iter()
                .filter(|i| i.manifest.digest == img.manifest.digest)
                .filter_map(|i| i.name)
                .collect(),
        };
        for name in names {
            if store.untag(&name)? {
                writeln!(out, "Untagged: {name}")?;
            }
        }
    }
    Ok(())
}

/// `rbuild prune`.
pub fn prune(g: &Globals, args: PruneArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let report = store.prune(args.all)?;
    let mut out = std::io::stdout().lock();
    for d in &report.blobs {
        writeln!(out, "deleted blob {d}")?;
    }
    for s in &report.snapshots {
        writeln!(out, "deleted snapshot {s}")?;
    }
    for c in &report.cache_records {
        writeln!(out, "deleted cache record {c}")?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(report.bytes_freed)
    )?;
    Ok(())
}

/// `rbuild fsck`: exits 1 naming every bad object.
pub fn fsck(g: &Globals, _args: FsckArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let problems = store.fsck()?;
    let mut out = std::io::stdout().lock();
    for p in &problems {
        writeln!(out, "bad: {}: {}", p.object, p.problem)?;
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "fsck found {} problem(s) in {}",
            problems.len(),
            store.root().display()
        );
    }
    writeln!(out, "ok: {}", store.root().display())?;
    Ok(())
}

/// `rbuild save`.
pub async fn save(g: &Globals, args: SaveArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let mut images = Vec::new();
    for arg in &args.images {
        images.push(find(&store, arg)?);
    }
    // An image a build resolved lazily (`--cache-from`) may lack layers no step needed:
    // they are fetched from the registry repository the store knows holds them.
    let client = rbuild_registry::Client::new(rbuild_registry::ClientOptions::default());
    for image in &images {
        for layer in image.parsed_manifest()?.layers {
            if !store.blobs().contains(&layer.digest) {
                client
                    .fetch_blob(
                        &store,
                        &layer,
                        std::sync::Arc::new(rbuild_registry::NoProgress),
                    )
                    .await
                    .with_context(|| format!("cannot fetch layer {}", layer.digest))?;
            }
        }
    }
    let tmp = args
        .output
        .with_extension(format!("tmp-{}", std::process::id()));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let out = std::io::BufWriter::new(file);
    let written = match args.format {
        SaveFormat::DockerArchive => store.save_docker_archive(&images, out),
        SaveFormat::OciArchive => store.save_oci_archive(&images, out),
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}

/// Seconds since the epoch of an RFC 3339 timestamp (`2024-01-02T03:04:05.123Z`, `+01:00`).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Docker's "2 hours ago" style.
fn ago(secs: i64) -> String {
    let s = secs.max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match s {
        0..=59 => "Less than a minute ago".to_owned(),
        60..=119 => "About a minute ago".to_owned(),
        120..=3599 => plural(s / 60, "minute"),
        3600..=7199 => "About an hour ago".to_owned(),
        7200..=172_799 => plural(s / 3600, "hour"),
        172_800..=1_209_599 => plural(s / 86400, "day"),
        1_209_600..=5_183_999 => plural(s / 604_800, "week"),
        5_184_000..=63_071_999 => plural(s / 2_592_000, "month"),
        _ => plural(s / 31_536_000, "year"),
    }
}

/// Docker's decimal sizes: `4.26MB`.
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + units[u]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_docker() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.5+01:00"),
            Some(1_709_204_400)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(ago(30), "Less than a minute ago");
        assert_eq!(ago(3 * 3600), "3 hours ago");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(
            split_name("127.0.0.1:5000/a/b:v1"),
            ("127.0.0.1:5000/a/b", "v1")
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a"),
            ("127.0.0.1:5000/a", "<none>")
        );
    }
}
