//! The RUN-step flags of `build` (`--add-host`, `--shm-size`, `--ulimit`, buildah's cgroup
//! flags, `--resource` and `--isolation`), validated into what the builder hands the runner.

use std::net::IpAddr;

use rbuild_runner::{Isolation, Limits, Ulimit, ULIMIT_NAMES};

use crate::cli::BuildArgs;
use crate::exit::UsageError;

/// The address `--add-host NAME:host-gateway` maps to. RUN steps share the host's network
/// namespace (rbuild has no bridge), so the host is reachable on its loopback address.
pub const HOST_GATEWAY: &str = "127.0.0.1";

/// `--add-host NAME:IP` / `NAME=IP` (`[v6]` in brackets, `host-gateway`) → (name, address).
pub fn add_host(s: &str) -> Result<(String, String), UsageError> {
    let bad = |why: &str| UsageError(format!("--add-host {s:?}: {why}"));
    let (name, address) = match s.split_once('=') {
        Some(pair) => pair,
        None => s
            .split_once(':')
            .ok_or_else(|| bad("want NAME:IP or NAME=IP"))?,
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
        return Err(bad("the host name is empty or has spaces"));
    }
    if address == "host-gateway" {
        return Ok((name.to_string(), HOST_GATEWAY.to_string()));
    }
    let bare = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    let ip: IpAddr = bare.parse().map_err(|_| {
        bad(&format!(
            "{address:?} is not an IP address (or host-gateway)"
        ))
    })?;
    Ok((name.to_string(), ip.to_string()))
}

/// docker's sizes (`RAMInBytes`): `1024`, `64m`, `1.5g`, `512MiB`, units of 1024; `flag`
/// names the flag in errors.
pub fn size(flag: &str, s: &str) -> Result<u64, UsageError> {
    let bad = || {
        UsageError(format!(
            "{flag} {s:?}: want a size such as 64m, 1g or 1048576"
        ))
    };
    let t = s.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let multiplier: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad()),
    };
    Ok((number * multiplier as f64) as u64)
}

/// The flags that set `limits`, by their names (`--memory`), for messages about them (no
/// flag sets `pids`: it is the runner's, for its own callers).
pub fn limit_flags(limits: &Limits) -> Vec<&'static str> {
    [
        (limits.memory.is_some(), "--memory"),
        (limits.memory_swap.is_some(), "--memory-swap"),
        (limits.cpu_quota.is_some(), "--cpu-quota"),
        (limits.cpu_period.is_some(), "--cpu-period"),
        (limits.cpu_shares.is_some(), "--cpu-shares"),
        (limits.cpuset_cpus.is_some(), "--cpuset-cpus"),
        (limits.cpuset_mems.is_some(), "--cpuset-mems"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect()
}

/// `--ulimit NAME=SOFT[:HARD]` (`-1`: unlimited; HARD defaults to SOFT).
pub fn ulimit(s: &str) -> Result<Ulimit, UsageError> {
    let bad = |why: String| UsageError(format!("--ulimit {s:?}: {why}"));
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| bad("want NAME=SOFT[:HARD]".into()))?;
    if !ULIMIT_NAMES.contains(&name) {
        return Err(bad(format!(
            "unknown resource {name:?} (want one of {})",
            ULIMIT_NAMES.join(", ")
        )));
    }
    let value = |v: &str| -> Result<u64, UsageError> {
        match v {
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => v
                .parse()
                .map_err(|_| bad(format!("{v:?} is not a number (or -1)"))),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (value(soft)?, value(hard)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        return Err(bad("the soft limit is above the hard limit".into()));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// The cgroup limits from `--memory`, `--memory-swap`, `--cpu-*`, `--cpuset-*` and buildx's
/// `--resource KEY=VALUE,...` (a key given both ways is an error).
pub fn limits(args: &BuildArgs) -> Result<Limits, UsageError> {
    let mut memory = args.memory.clone();
    let mut memory_swap = args.memory_swap.clone();
    let mut cpu_quota = args.cpu_quota.map(|v| v.to_string());
    let mut cpu_period = args.cpu_period.map(|v| v.to_string());
    let mut cpu_shares = args.cpu_shares.map(|v| v.to_string());
    let mut cpuset_cpus = args.cpuset_cpus.clone();
    let mut cpuset_mems = args.cpuset_mems.clone();
    for spec in &args.resources {
        for field in spec.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = field.split_once('=').ok_or_else(|| {
                UsageError(format!("--resource {spec:?}: {field:?} is not KEY=VALUE"))
            })?;
            let slot = match key {
                "memory" => &mut memory,
                "memory-swap" => &mut memory_swap,
                "cpu-quota" => &mut cpu_quota,
                "cpu-period" => &mut cpu_period,
                "cpu-shares" => &mut cpu_shares,
                "cpuset-cpus" => &mut cpuset_cpus,
                "cpuset-mems" => &mut cpuset_mems,
                _ => {
                    return Err(UsageError(format!(
                        "--resource {spec:?}: unknown key {key:?} (want memory, memory-swap, \
                         cpu-quota, cpu-period, cpu-shares, cpuset-cpus, cpuset-mems)"
                    )))
                }
            };
            if slot.is_some() {
                return Err(UsageError(format!(
                    "--resource {key}= and --{key} (or another --resource {key}=) both given"
                )));
            }
            *slot = Some(value.to_string());
        }
    }
    let number = |flag: &str, v: &Option<String>| -> Result<Option<u64>, UsageError> {
        v.as_deref()
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| UsageError(format!("--{flag} {v:?}: want a whole number")))
            })
            .transpose()
    };
    let memory = memory.as_deref().map(|m| size("--memory", m)).transpose()?;
    let memory_swap = match memory_swap.as_deref() {
        None => None,
        Some("-1") => Some(-1),
        Some(v) => Some(size("--memory-swap", v)? as i64),
    };
    match (memory, memory_swap) {
        (None, Some(_)) => {
            return Err(UsageError("--memory-swap needs --memory".into()));
        }
        (Some(m), Some(total)) if total >= 0 && (total as u64) < m => {
            return Err(UsageError(
                "--memory-swap is memory plus swap: it cannot be below --memory".into(),
            ));
        }
        _ => {}
    }
    let cpu_period = number("cpu-period", &cpu_period)?;
    if let Some(p) = cpu_period {
        if !(1000..=1_000_000).contains(&p) {
            return Err(UsageError(format!(
                "--cpu-period {p}: want 1000 to 1000000 microseconds"
            )));
        }
    }
    let cpu_quota = match number("cpu-quota", &cpu_quota)? {
        Some(q) if q < 1000 => {
            return Err(UsageError(format!(
                "--cpu-quota {q}: want at least 1000 microseconds"
            )))
        }
        Some(q) => Some(q as f64 / cpu_period.unwrap_or(100_000) as f64),
        None => None,
    };
    let cpu_shares = number("cpu-shares", &cpu_shares)?;
    if let Some(s) = cpu_shares {
        if !(2..=262_144).contains(&s) {
            return Err(UsageError(format!("--cpu-shares {s}: want 2 to 262144")));
        }
    }
    for (flag, value) in [("cpuset-cpus", &cpuset_cpus), ("cpuset-mems", &cpuset_mems)] {
        if let Some(v) = value {
            let ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == '-');
            if !ok {
                return Err(UsageError(format!(
                    "--{flag} {v:?}: want a list such as 0-1 or 0,2"
                )));
            }
        }
    }
    Ok(Limits {
        memory,
        memory_swap,
        cpu_quota,
        cpu_period,
        cpu_shares,
        cpuset_cpus,
        cpuset_mems,
        pids: None,
    })
}

/// `--isolation MODE` (or `RBUILD_ISOLATION`; unset is `auto`): the mode, checked to work
/// here, and the line that says which one `auto` picked and why when that is worth saying
/// (`auto` asked for by name, or anything but namespaces).
pub fn isolation(flag: Option<&str>) -> anyhow::Result<(Isolation, Option<String>)> {
    let asked = flag.map(str::trim).filter(|s| !s.is_empty());
    match asked {
        None | Some("auto") => {
            let detected = rbuild_runner::detect_isolation()?;
            let say = asked.is_some() || detected.isolation != Isolation::Namespaces;
            let line = format!("isolation: {} ({})", detected.isolation, detected.reason);
            Ok((detected.isolation, say.then_some(line)))
        }
        Some(name) => {
            let isolation: Isolation = name
                .parse()
                .map_err(|e: rbuild_runner::Error| UsageError(format!("--isolation: {e}")))?;
            rbuild_runner::check_isolation(isolation)?;
            Ok((isolation, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_forms() {
        assert_eq!(
            add_host("db:10.0.0.2").unwrap(),
            ("db".into(), "10.0.0.2".into())
        );
        assert_eq!(
            add_host("db=10.0.0.2").unwrap(),
            ("db".into(), "10.0.0.2".into())
        );
        assert_eq!(
            add_host("v6:[2001:db8::1]").unwrap(),
            ("v6".into(), "2001:db8::1".into())
        );
        assert_eq!(
            add_host("v6=2001:db8::1").unwrap(),
            ("v6".into(), "2001:db8::1".into())
        );
        assert_eq!(
            add_host("gw:host-gateway").unwrap(),
            ("gw".into(), HOST_GATEWAY.into())
        );
        assert!(add_host("db").is_err());
        assert!(add_host("db:nonsense").is_err());
        assert!(add_host(":1.2.3.4").is_err());
    }

    #[test]
    fn sizes_and_ulimits() {
        assert_eq!(size("--x", "64m").unwrap(), 64 << 20);
        assert_eq!(size("--x", "1.5g").unwrap(), 3 << 29);
        assert_eq!(size("--x", "512MiB").unwrap(), 512 << 20);
        assert_eq!(size("--x", "100").unwrap(), 100);
        assert!(size("--x", "12q").is_err());
        let u = ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (1024, 2048));
        assert_eq!(ulimit("nproc=-1").unwrap().hard, u64::MAX);
        assert!(ulimit("nofile=2:1").is_err());
        assert!(ulimit("bogus=1")
            .unwrap_err()
            .0
            .contains("unknown resource"));
    }
}
