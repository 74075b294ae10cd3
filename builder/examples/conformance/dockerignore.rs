//! Conformance sets for the dockerignore: `match.tsv`, `ignorefile.jsonl`,
//! `context-walk.jsonl` (formats in the data folder's README).

use std::collections::BTreeSet;
use std::path::Path;

use rbuild_builder::context::{parse_ignore_file, pathclean, ContextFiles, IgnoreRules};
use serde_json::Value;

use crate::SetResult;

/// Runs every dockerignore set under `root`.
pub fn run(root: &Path) -> Vec<SetResult> {
    let dir = root.join("dockerignore");
    vec![
        run_match(&dir.join("match.tsv")),
        run_ignorefile(&dir.join("ignorefile.jsonl")),
        run_walk(&dir.join("context-walk.jsonl")),
    ]
}

/// The error and its causes, joined as the CLI prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn lines(path: &Path, set: &mut SetResult) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        Err(e) => {
            set.record("read", Err(format!("{}: {e}", path.display())));
            Vec::new()
        }
    }
}

fn run_match(path: &Path) -> SetResult {
    let mut set = SetResult::new("dockerignore/match.tsv");
    for line in lines(path, &mut set) {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 3 {
            set.record(line.clone(), Err("fewer than 3 fields".into()));
            continue;
        }
        let (id, expect, file, patterns) = (fields[0], fields[1], fields[2], &fields[3..]);
        let got = IgnoreRules::new(patterns).and_then(|rules| {
            let cleaned = pathclean::clean(file);
            rules.is_excluded(&cleaned)
        });
        let got = match got {
            Ok(true) => "true".to_string(),
            Ok(false) => "false".to_string(),
            Err(_) => "error".to_string(),
        };
        let outcome = if got == expect {
            Ok(())
        } else {
            Err(format!("expected {expect}, got {got}"))
        };
        set.record(format!("match.tsv:{id}"), outcome);
    }
    set
}

fn parse_case(line: &str, set: &mut SetResult) -> Option<(String, Value)> {
    match serde_json::from_str::<Value>(line) {
        Ok(v) => {
            let id = v["id"].as_str().unwrap_or("?").to_string();
            Some((id, v))
        }
        Err(e) => {
            set.record("json", Err(format!("bad line: {e}")));
            None
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn run_ignorefile(path: &Path) -> SetResult {
    let mut set = SetResult::new("dockerignore/ignorefile.jsonl");
    for line in lines(path, &mut set) {
        let Some((id, case)) = parse_case(&line, &mut set) else {
            continue;
        };
        let got = parse_ignore_file(case["content"].as_str().unwrap_or(""));
        let want = strings(&case["patterns"]);
        let outcome = if got == want {
            Ok(())
        } else {
            Err(format!("expected {want:?}, got {got:?}"))
        };
        set.record(format!("ignorefile.jsonl:{id}"), outcome);
    }
    set
}

fn run_walk(path: &Path) -> SetResult {
    let mut set = SetResult::new("dockerignore/context-walk.jsonl");
    for line in lines(path, &mut set) {
        let Some((id, case)) = parse_case(&line, &mut set) else {
            continue;
        };
        let outcome = walk_case(&case);
        set.record(format!("context-walk.jsonl:{id}"), outcome);
    }
    set
}

fn walk_case(case: &Value) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let root = dir.path();
    if let Some(files) = case["files"].as_object() {
        for (rel, content) in files {
            let full = root.join(rel);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {rel}: {e}"))?;
            }
            std::fs::write(&full, content.as_str().unwrap_or(""))
                .map_err(|e| format!("write {rel}: {e}"))?;
        }
    }
    for rel in strings(&case["dirs"]) {
        std::fs::create_dir_all(root.join(&rel)).map_err(|e| format!("mkdir {rel}: {e}"))?;
    }
    let rules = case["dockerignore"].as_str().unwrap_or("");
    let walked = IgnoreRules::parse(rules).and_then(|rules| ContextFiles::walk(root, &rules));
    if let Some(want) = case["error"].as_str() {
        return match walked {
            Err(e) if chain(&e).contains(want) => Ok(()),
            Err(e) => Err(format!("error {:?} lacks {want:?}", chain(&e))),
            Ok(_) => Err(format!("expected an error containing {want:?}")),
        };
    }
    let files = walked.map_err(|e| chain(&e))?;
    let got: BTreeSet<String> = files.iter().map(|e| e.name().into_owned()).collect();
    let mut problems = Vec::new();
    for p in strings(&case["present"]) {
        if !got.contains(&p) {
            problems.push(format!("{p} missing"));
        }
    }
    for p in strings(&case["absent"]) {
        if got.contains(&p) {
            problems.push(format!("{p} present"));
        }
    }
    if case["complete"].as_bool() == Some(true) {
        let want: BTreeSet<String> = strings(&case["present"]).into_iter().collect();
        for extra in got.difference(&want) {
            problems.push(format!("{extra} not expected"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}
