//! `rbuild images|inspect|history|tag|rmi|prune|fsck|save|load`: the commands that read and tidy the
//! store.

use std::io::Write;

use anyhow::Context;
use rbuild_store::{Image, PrunePolicy, Reference, Store};

use super::Globals;
use crate::cli::{
    DuArgs, FsckArgs, HistoryArgs, ImagesArgs, InspectArgs, LoadArgs, PruneArgs, RmiArgs, SaveArgs,
    SaveFormat, TagArgs,
};
use crate::exit::UsageError;
use crate::template::{self, Format};

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

/// The fields of `images --format` (docker's names), with their table headers.
const IMAGE_FIELDS: [(&str, &str); 7] = [
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("Digest", "DIGEST"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("Size", "SIZE"),
];

/// Seconds since the epoch, now.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `CreatedSince` of an RFC 3339 time: "3 hours ago", or "N/A".
fn since(created: Option<&str>, now: i64) -> String {
    created
        .and_then(parse_rfc3339)
        .map_or_else(|| "N/A".to_owned(), |t| ago(now - t))
}

/// Writes items as `--format` says: `table` is the command's own `table` closure's rows,
/// `json` one document per line, a template one line per item (`table ...`: with a header
/// row, columns aligned).
fn print_items(
    format: &Format,
    items: &[serde_json::Value],
    headers: &[(&str, &str)],
    table: impl FnOnce() -> Vec<String>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let lines = match format {
        Format::Table => table(),
        Format::Json => items.iter().map(|i| i.to_string()).collect(),
        Format::Template(t) => {
            let mut rows = Vec::new();
            if t.table {
                rows.push(t.header(headers));
            }
            for item in items {
                rows.push(t.render(item)?);
            }
            if t.table {
                template::align(&rows)
            } else {
                rows
            }
        }
    };
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `rbuild images`.
pub fn images(g: &Globals, args: ImagesArgs) -> anyhow::Result<()> {
    let fields: Vec<&str> = IMAGE_FIELDS.iter().map(|(f, _)| *f).collect();
    let format = template::parse(args.format.as_deref(), Some(&fields))?;
    let store = open(g)?;
    let images = store.images()?;
    let id = |img: &Image| {
        if args.no_trunc {
            img.id().to_string()
        } else {
            img.id().hex()[..12].to_owned()
        }
    };
    if args.quiet {
        let mut out = std::io::stdout().lock();
        let mut seen = std::collections::BTreeSet::new();
        for img in &images {
            if seen.insert(img.id().clone()) {
                writeln!(out, "{}", id(img))?;
            }
        }
        return Ok(());
    }
    let now = now();
    let mut items = Vec::new();
    for img in &images {
        let (repo, tag) = split_name(img.name.as_deref().unwrap_or("<none>"));
        let config = img.parsed_config().unwrap_or_default();
        let created = config.get("created").and_then(|v| v.as_str());
        items.push(serde_json::json!({
            "Repository": repo,
            "Tag": tag,
            "ID": id(img),
            "Digest": img.manifest.digest.to_string(),
            "CreatedAt": created.unwrap_or("N/A"),
            "CreatedSince": since(created, now),
            "Size": human_size(img.size()?),
        }));
    }
    print_items(&format, &items, &IMAGE_FIELDS, || {
        let mut rows = vec!["REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE".to_owned()];
        for i in &items {
            let cell = |k: &str| i[k].as_str().unwrap_or_default().to_owned();
            rows.push(
                ["Repository", "Tag", "ID", "CreatedSince", "Size"]
                    .map(cell)
                    .join("\t"),
            );
        }
        template::align(&rows)
    })
}

/// `rbuild inspect`: per image, its config as `skopeo inspect --config` shows it (OCI keys:
/// `created`, `architecture`, `os`, `config`, `rootfs`, `history`...) plus, in the same
/// style, `id`, `digest` (the manifest's), `names`, `size` and `manifest`.
pub fn inspect(g: &Globals, args: InspectArgs) -> anyhow::Result<()> {
    let format = template::parse(args.format.as_deref(), None)?;
    let store = open(g)?;
    let all = store.images()?;
    let mut docs = Vec::new();
    for arg in &args.images {
        let img = find(&store, arg)?;
        let mut doc = match img.parsed_config()? {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let manifest: serde_json::Value = serde_json::from_slice(&img.manifest_json)?;
        let names: Vec<&str> = all
            .iter()
            .filter(|i| i.manifest.digest == img.manifest.digest)
            .filter_map(|i| i.name.as_deref())
            .collect();
        doc.insert("id".into(), img.id().to_string().into());
        doc.insert("digest".into(), img.manifest.digest.to_string().into());
        doc.insert("names".into(), names.into());
        doc.insert("size".into(), img.size()?.into());
        doc.insert("manifest".into(), manifest);
        docs.push(serde_json::Value::Object(doc));
    }
    let mut out = std::io::stdout().lock();
    match &format {
        Format::Template(t) => {
            for doc in &docs {
                writeln!(out, "{}", t.render(doc)?)?;
            }
        }
        Format::Table | Format::Json => {
            serde_json::to_writer_pretty(&mut out, &docs)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The fields of `history --format` (docker's names), with their table headers.
const HISTORY_FIELDS: [(&str, &str); 6] = [
    ("ID", "IMAGE"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

/// `rbuild history`: the config's history, newest first, each step with its layer's size.
pub fn history(g: &Globals, args: HistoryArgs) -> anyhow::Result<()> {
    let fields: Vec<&str> = HISTORY_FIELDS.iter().map(|(f, _)| *f).collect();
    let format = template::parse(args.format.as_deref(), Some(&fields))?;
    let store = open(g)?;
    let img = find(&store, &args.image)?;
    let config = img.parsed_config()?;
    let layers = img.parsed_manifest()?.layers;
    let entries = config
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    let now = now();
    let mut items = Vec::new();
    let mut layer = 0;
    for entry in &entries {
        let empty = entry
            .get("empty_layer")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let size = if empty {
            0
        } else {
            layer += 1;
            layers.get(layer - 1).map_or(0, |l| l.size)
        };
        let text = |k: &str| entry.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        items.push(serde_json::json!({
            "ID": "<missing>",
            "CreatedAt": text("created"),
            "CreatedSince": since(entry.get("created").and_then(|v| v.as_str()), now),
            "CreatedBy": text("created_by"),
            "Size": human_size(size),
            "Comment": text("comment"),
        }));
    }
    items.reverse();
    if let Some(top) = items.first_mut() {
        top["ID"] = if args.no_trunc {
            img.id().to_string()
        } else {
            img.id().hex()[..12].to_owned()
        }
        .into();
    }
    if args.quiet {
        let mut out = std::io::stdout().lock();
        for i in &items {
            writeln!(out, "{}", i["ID"].as_str().unwrap_or_default())?;
        }
        return Ok(());
    }
    print_items(&format, &items, &HISTORY_FIELDS, || {
        let mut rows = vec!["IMAGE\tCREATED\tCREATED BY\tSIZE\tCOMMENT".to_owned()];
        for i in &items {
            let cell = |k: &str| i[k].as_str().unwrap_or_default().replace('\t', " ");
            let mut by = cell("CreatedBy");
            if !args.no_trunc && by.chars().count() > 45 {
                by = by.chars().take(44).collect::<String>() + "…";
            }
            rows.push(
                [
                    cell("ID"),
                    cell("CreatedSince"),
                    by,
                    cell("Size"),
                    cell("Comment"),
                ]
                .join("\t"),
            );
        }
        template::align(&rows)
    })
}

/// `rbuild tag`.
pub fn tag(g: &Globals, args: TagArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let img = find(&store, &args.source)?;
    let target = Reference::parse(&args.target)
        .map_err(|e| crate::exit::UsageError(e.to_string()))?
        .to_string();
    // A multi-platform image is tagged as a whole.
    store.tag(&target, img.index.as_ref().unwrap_or(&img.manifest))?;
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

/// Go's durations as `--filter until=` takes them: `24h`, `1h30m`, `90m`, `45s`, `500ms`.
fn duration(s: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * seconds;
    }
    Some(std::time::Duration::from_secs_f64(total))
}

/// The prune policy from the flags.
fn prune_policy(args: &PruneArgs) -> Result<PrunePolicy, UsageError> {
    let mut policy = PrunePolicy {
        all: args.all,
        ..PrunePolicy::default()
    };
    for filter in &args.filter {
        match filter.split_once('=') {
            Some(("until", value)) => {
                policy.older_than = Some(duration(value).ok_or_else(|| {
                    UsageError(format!(
                        "--filter {filter:?}: want a duration such as 24h, 1h30m or 45s"
                    ))
                })?);
            }
            _ => {
                return Err(UsageError(format!(
                    "--filter {filter:?}: unknown filter (want until=DURATION)"
                )))
            }
        }
    }
    for (flag, value) in [
        ("--keep-storage", &args.keep_storage),
        ("--max-used-space", &args.max_used_space),
    ] {
        if let Some(v) = value {
            let bytes = super::resources::size(flag, v)?;
            policy.max_used = Some(policy.max_used.map_or(bytes, |b| b.min(bytes)));
        }
    }
    Ok(policy)
}

/// `rbuild du`: blobs, snapshots and cache records, their sizes and what `prune` and
/// `prune --all` would reclaim.
pub fn du(g: &Globals, _args: DuArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let usage = store.disk_usage()?;
    let mut rows =
        vec!["TYPE\tCOUNT\tSIZE\tRECLAIMABLE (prune)\tRECLAIMABLE (prune --all)".to_owned()];
    let lines = [
        ("blobs", usage.blobs),
        ("snapshots", usage.snapshots),
        ("cache records", usage.cache_records),
    ];
    for (name, l) in &lines {
        rows.push(format!(
            "{name}\t{}\t{}\t{} ({})\t{} ({})",
            l.count,
            human_size(l.bytes),
            human_size(l.reclaimable_bytes),
            l.reclaimable_count,
            human_size(l.reclaimable_all_bytes),
            l.reclaimable_all_count,
        ));
    }
    let mut out = std::io::stdout().lock();
    for row in template::align(&rows) {
        writeln!(out, "{row}")?;
    }
    // Cache bytes are blobs and snapshots already counted above.
    let (b, s) = (usage.blobs, usage.snapshots);
    writeln!(
        out,
        "Total: {}, reclaimable: {} (prune), {} (prune --all)",
        human_size(b.bytes + s.bytes),
        human_size(b.reclaimable_bytes + s.reclaimable_bytes),
        human_size(b.reclaimable_all_bytes + s.reclaimable_all_bytes),
    )?;
    Ok(())
}

/// `rbuild prune`.
pub fn prune(g: &Globals, args: PruneArgs) -> anyhow::Result<()> {
    let policy = prune_policy(&args)?;
    let store = open(g)?;
    let report = store.prune_with(&policy)?;
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

/// Fetches the layers an image resolved lazily by a build (`--cache-from`) lacks because
/// no step needed their files, from the registry repository the store knows holds them,
/// so the image can be written out whole.
pub async fn fetch_lazy_layers(store: &Store, images: &[Image]) -> anyhow::Result<()> {
    let client = rbuild_registry::Client::new(rbuild_registry::ClientOptions::default());
    for image in images {
        for layer in image.parsed_manifest()?.layers {
            if !store.blobs().contains(&layer.digest) {
                client
                    .fetch_blob(
                        store,
                        &layer,
                        std::sync::Arc::new(rbuild_registry::NoProgress),
                    )
                    .await
                    .with_context(|| format!("cannot fetch layer {}", layer.digest))?;
            }
        }
    }
    Ok(())
}

/// `rbuild save`.
pub async fn save(g: &Globals, args: SaveArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let mut images = Vec::new();
    for arg in &args.images {
        images.push(find(&store, arg)?);
    }
    fetch_lazy_layers(&store, &images).await?;
    let dest = super::output::Dest::File(args.output.clone());
    super::output::write_to(&dest, |out| match args.format {
        SaveFormat::DockerArchive => store.save_docker_archive(&images, out),
        SaveFormat::OciArchive => store.save_oci_archive(&images, out),
    })
}

/// `rbuild load`: prints `Loaded image: NAME` per name, as docker does; an image with no
/// name is an error (the store keeps named images only).
pub fn load(g: &Globals, args: LoadArgs) -> anyhow::Result<()> {
    let store = open(g)?;
    let loaded = match args.input.as_deref() {
        None => store.load_archive(std::io::stdin().lock(), std::path::Path::new("-"))?,
        Some(p) if p.as_os_str() == "-" => store.load_archive(std::io::stdin().lock(), p)?,
        Some(p) => {
            let file = std::fs::File::open(p)
                .map_err(|e| crate::exit::UsageError(format!("--input {}: {e}", p.display())))?;
            store.load_archive(std::io::BufReader::new(file), p)?
        }
    };
    let mut out = std::io::stdout().lock();
    for img in &loaded {
        match (&img.name, args.quiet) {
            (Some(_), true) => writeln!(out, "{}", img.id())?,
            (Some(name), false) => writeln!(out, "Loaded image: {name}")?,
            (None, _) => {}
        }
    }
    // The store keeps named images only: an unnamed one would be gone at the next prune.
    let unnamed: Vec<String> = loaded
        .iter()
        .filter(|i| i.name.is_none())
        .map(|i| i.id().to_string())
        .collect();
    if !unnamed.is_empty() {
        anyhow::bail!(
            "the archive names no repository for image {} (RepoTags, or a full name in \
             org.opencontainers.image.ref.name), and rbuild keeps only named images",
            unnamed.join(", ")
        );
    }
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
        assert_eq!(duration("24h"), Some(std::time::Duration::from_secs(86400)));
        assert_eq!(
            duration("1h30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            duration("500ms"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(duration("3d"), None);
        assert_eq!(duration(""), None);
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
