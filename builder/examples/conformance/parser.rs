//! Conformance sets for the parser: `parser/`, `parser-negative/`, `parser-tables/*.jsonl`.

use std::path::Path;

use rbuild_builder::frontend::{
    chomp_heredoc, dump, find_directive, heredocs_from_line, parse, parse_heredoc,
    parse_json_array, parse_words, DirectiveParser, JsonArray,
};
use serde_json::Value;

use crate::SetResult;

/// Runs every parser set under `root`.
pub fn run(root: &Path) -> Vec<SetResult> {
    let mut out = vec![positive(root), negative(root)];
    let tables = root.join("parser-tables");
    let mut files: Vec<_> = std::fs::read_dir(&tables)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files {
        if path.extension().is_some_and(|e| e == "jsonl") {
            out.push(table(&path));
        }
    }
    out
}

fn case_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.retain(|p| p.is_dir());
    dirs.sort();
    dirs
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn positive(root: &Path) -> SetResult {
    let mut set = SetResult::new("parser");
    for dir in case_dirs(&root.join("parser")) {
        let outcome = (|| {
            let input = std::fs::read(dir.join("Dockerfile")).map_err(|e| e.to_string())?;
            let expected =
                std::fs::read_to_string(dir.join("result")).map_err(|e| e.to_string())?;
            let doc = parse("Dockerfile", &input).map_err(|e| e.to_string())?;
            let got = dump(&doc);
            if got == expected {
                Ok(())
            } else {
                Err(first_difference(&got, &expected))
            }
        })();
        set.record(format!("parser/{}", name_of(&dir)), outcome);
    }
    set
}

fn first_difference(got: &str, expected: &str) -> String {
    for (i, (g, e)) in got.lines().zip(expected.lines()).enumerate() {
        if g != e {
            return format!("line {}: got {g} want {e}", i + 1);
        }
    }
    format!(
        "got {} lines, want {}",
        got.lines().count(),
        expected.lines().count()
    )
}

fn negative(root: &Path) -> SetResult {
    let mut set = SetResult::new("parser-negative");
    for dir in case_dirs(&root.join("parser-negative")) {
        let outcome = match std::fs::read(dir.join("Dockerfile")) {
            Err(e) => Err(e.to_string()),
            Ok(input) => match parse("Dockerfile", &input) {
                Ok(_) => Err("parsed without error".to_string()),
                Err(_) => Ok(()),
            },
        };
        set.record(format!("parser-negative/{}", name_of(&dir)), outcome);
    }
    set
}

fn table(path: &Path) -> SetResult {
    let file = name_of(path);
    let mut set = SetResult::new(format!("parser-tables/{file}"));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            set.record("read", Err(e.to_string()));
            return set;
        }
    };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                set.record(format!("{file}:{}", n + 1), Err(e.to_string()));
                continue;
            }
        };
        let id = format!("{file}:{}", case["id"].as_str().unwrap_or("?"));
        let outcome = match file.trim_end_matches(".jsonl") {
            "heredoc-extract" => heredoc_extract(&case),
            "heredoc-words" => heredoc_words(&case),
            "heredoc-lines" => heredoc_lines(&case),
            "heredoc-chomp" => compare(
                chomp_heredoc(str_of(&case["chomp_input"])).as_str(),
                str_of(&case["chomp_output"]),
            ),
            "json-arrays" => json_arrays(&case),
            "parse-words" => compare(
                &parse_words(str_of(&case["input"]), '\\'),
                &strings(&case["words"]),
            ),
            "line-numbers" => line_numbers(&case),
            "directives" => directives(&case),
            other => Err(format!("no runner for table {other}")),
        };
        set.record(id, outcome);
    }
    set
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| str_of(s).to_string()).collect())
        .unwrap_or_default()
}

fn compare<T: PartialEq + std::fmt::Debug + ?Sized>(got: &T, want: &T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("got {got:?} want {want:?}"))
    }
}

fn heredoc_extract(case: &Value) -> Result<(), String> {
    let doc =
        parse("Dockerfile", str_of(&case["dockerfile"]).as_bytes()).map_err(|e| e.to_string())?;
    let want = case["heredocs"].as_array().cloned().unwrap_or_default();
    let got: Vec<Value> = doc
        .children
        .iter()
        .skip(1)
        .map(|node| {
            Value::Array(
                node.heredocs
                    .iter()
                    .map(|h| {
                        serde_json::json!({"name": h.name, "fd": h.fd, "expand": h.expand,
                            "chomp": h.chomp, "content": h.content})
                    })
                    .collect(),
            )
        })
        .collect();
    compare(&got, &want)
}

fn heredoc_words(case: &Value) -> Result<(), String> {
    let got = match parse_heredoc(str_of(&case["word"])) {
        Ok(Some(h)) => format!("name:{}", h.name),
        Ok(None) => "none".to_string(),
        Err(_) => "error".to_string(),
    };
    compare(got.as_str(), str_of(&case["expect"]))
}

fn heredoc_lines(case: &Value) -> Result<(), String> {
    let docs = heredocs_from_line(str_of(&case["line"])).map_err(|e| e.to_string())?;
    let got: Vec<String> = docs.into_iter().map(|h| h.name).collect();
    compare(&got, &strings(&case["names"]))
}

fn json_arrays(case: &Value) -> Result<(), String> {
    let got = parse_json_array(str_of(&case["input"]));
    if case["ok"].as_bool() == Some(true) {
        compare(&got, &JsonArray::Strings(strings(&case["values"])))
    } else {
        compare(&got, &JsonArray::NotStrings)
    }
}

fn line_numbers(case: &Value) -> Result<(), String> {
    let doc =
        parse("Dockerfile", str_of(&case["dockerfile"]).as_bytes()).map_err(|e| e.to_string())?;
    let got: Vec<Value> = doc
        .children
        .iter()
        .map(|n| serde_json::json!([n.start_line, n.end_line]))
        .collect();
    compare(
        got.as_slice(),
        case["children"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
    )?;
    let start = doc.children.first().map(|n| n.start_line);
    let end = doc.children.last().map(|n| n.end_line);
    compare(
        &(start, end),
        &(
            case["start"].as_u64().map(|v| v as usize),
            case["end"].as_u64().map(|v| v as usize),
        ),
    )
}

fn directives(case: &Value) -> Result<(), String> {
    let input = str_of(&case["input"]);
    match str_of(&case["call"]) {
        "parse_all" => {
            let got: Vec<Value> = DirectiveParser::new(0)
                .parse_all(input)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|d| serde_json::json!({"name": d.name, "value": d.value}))
                .collect();
            compare(&Value::Array(got), &case["directives"])
        }
        call @ ("detect_syntax" | "parse_directive") => {
            let found = if call == "detect_syntax" {
                find_directive("syntax", input, true)
            } else {
                find_directive(str_of(&case["name"]), input, false)
            };
            compare(&found.is_some(), &(case["ok"].as_bool() == Some(true)))?;
            let Some(found) = found else {
                return Ok(());
            };
            let fields = [
                ("value", Value::from(found.value)),
                ("cmdline", Value::from(found.cmdline)),
                ("start_line", Value::from(found.line)),
                ("end_line", Value::from(found.line)),
            ];
            for (key, got) in fields {
                if let Some(want) = case.get(key) {
                    compare(&got, want).map_err(|e| format!("{key}: {e}"))?;
                }
            }
            Ok(())
        }
        other => Err(format!("unknown call {other}")),
    }
}
