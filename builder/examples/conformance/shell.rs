//! Conformance sets for the shell lexer: `shell/envVarTest`, `shell/wordsTest`,
//! `shell/process-word.jsonl`.

use std::collections::BTreeMap;
use std::path::Path;

use rbuild_builder::frontend::Lexer;
use serde_json::Value;

use crate::SetResult;

/// Runs every shell set under `root`.
pub fn run(root: &Path) -> Vec<SetResult> {
    let dir = root.join("shell");
    vec![
        env_var_test(&dir.join("envVarTest")),
        words_test(&dir.join("wordsTest")),
        process_word(&dir.join("process-word.jsonl")),
    ]
}

fn read(set: &mut SetResult, path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            set.record("read", Err(format!("{}: {e}", path.display())));
            None
        }
    }
}

fn env_var_test(path: &Path) -> SetResult {
    let mut set = SetResult::new("shell/envVarTest");
    let Some(text) = read(&mut set, path) else {
        return set;
    };
    let env: BTreeMap<String, String> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lex = Lexer::new('\\');
    for (n, line) in text.lines().enumerate() {
        let id = format!("shell/envVarTest:{}", n + 1);
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        let [platform, input, expected] = fields.as_slice() else {
            set.record(id, Err(format!("bad line {line:?}")));
            continue;
        };
        if *platform == "W" {
            continue;
        }
        let got = lex.expand_word(input, &env);
        let outcome = match (got, *expected) {
            (Err(_), "error") => Ok(()),
            (Ok(g), e) if g == e => Ok(()),
            (g, e) => Err(format!("{input:?}: got {g:?} want {e:?}")),
        };
        set.record(id, outcome);
    }
    set
}

fn words_test(path: &Path) -> SetResult {
    let mut set = SetResult::new("shell/wordsTest");
    let Some(text) = read(&mut set, path) else {
        return set;
    };
    let mut env: Vec<(String, String)> = Vec::new();
    let lex = Lexer::new('\\');
    for (n, line) in text.lines().enumerate() {
        let id = format!("shell/wordsTest:{}", n + 1);
        if line.starts_with('#') {
            continue;
        }
        if let Some(def) = line.strip_prefix("ENV ") {
            let def = def.trim_start();
            let (k, v) = def.split_once('=').unwrap_or((def, ""));
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            continue;
        };
        let input = input.trim();
        let want: Vec<String> = expected
            .trim_start()
            .split(',')
            .map(str::to_string)
            .collect();
        let got = lex
            .expand_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        let outcome = if got == want {
            Ok(())
        } else {
            Err(format!("{input:?}: got {got:?} want {want:?}"))
        };
        set.record(id, outcome);
    }
    set
}

fn process_word(path: &Path) -> SetResult {
    let mut set = SetResult::new("shell/process-word.jsonl");
    let Some(text) = read(&mut set, path) else {
        return set;
    };
    let lex = Lexer::new('\\');
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                set.record(format!("process-word.jsonl:{}", n + 1), Err(e.to_string()));
                continue;
            }
        };
        let id = format!(
            "shell/process-word.jsonl:{}",
            case["id"].as_str().unwrap_or("?")
        );
        let env: BTreeMap<String, String> = case["env"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let input = case["input"].as_str().unwrap_or_default();
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let outcome = match lex.expand(input, &env) {
            Err(e) if case["error"].as_bool() == Some(true) => {
                let _ = e;
                Ok(())
            }
            Err(e) => Err(format!("{input:?}: unexpected error {e}")),
            Ok(got) if case["error"].as_bool() == Some(true) => Err(format!(
                "{input:?}: expected an error, got {:?}",
                got.result
            )),
            Ok(got) => {
                let matched: Vec<String> = got.matched.into_iter().collect();
                let unmatched: Vec<String> = got.unmatched.into_iter().collect();
                if got.result != case["expect"].as_str().unwrap_or_default() {
                    Err(format!(
                        "{input:?}: got {:?} want {}",
                        got.result, case["expect"]
                    ))
                } else if matched != names(&case["matched"])
                    || unmatched != names(&case["unmatched"])
                {
                    Err(format!(
                        "{input:?}: matched {matched:?} unmatched {unmatched:?}"
                    ))
                } else {
                    Ok(())
                }
            }
        };
        set.record(id, outcome);
    }
    set
}
