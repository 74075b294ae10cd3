//! docker's `--format` for listing commands: `json`, `table`, or a small, strict subset of
//! Go templates (`{{.Field}}`, `{{.A.B}}`, `{{json .}}`, `{{json .Field}}`, a `table `
//! prefix for a header row, `\t` and `\n`); an unknown field is an error naming it.

use serde_json::Value;

use crate::exit::UsageError;

/// A parsed `--format`.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// The command's own table (no `--format`, or `table`).
    Table,
    /// One JSON document per item (`json`).
    Json,
    /// A template, once per item.
    Template(Template),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    /// `table ...`: a header row first, columns aligned at the tabs.
    pub table: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// `{{.A.B}}` (empty path: `{{.}}`).
    Field(Vec<String>),
    /// `{{json .A}}`.
    Json(Vec<String>),
}

/// Parses `--format` for a command whose items have the top-level `fields` (`None`: any,
/// checked when an item is rendered).
pub fn parse(format: Option<&str>, fields: Option<&[&str]>) -> Result<Format, UsageError> {
    let Some(format) = format else {
        return Ok(Format::Table);
    };
    match format.trim() {
        "" | "table" => return Ok(Format::Table),
        "json" => return Ok(Format::Json),
        _ => {}
    }
    let (table, body) = match format.strip_prefix("table ") {
        Some(rest) => (true, rest),
        None => (false, format),
    };
    let body = body.replace("\\t", "\t").replace("\\n", "\n");
    let mut parts = Vec::new();
    let mut rest = body.as_str();
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| UsageError(format!("--format {format:?}: unclosed {{{{")))?;
        let action = after[..end].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let path = parse_path(format, path)?;
        if let (Some(known), Some(first)) = (fields, path.first()) {
            if !known.contains(&first.as_str()) {
                return Err(UsageError(format!(
                    "--format: unknown field {first:?} (want {})",
                    known.join(", ")
                )));
            }
        }
        parts.push(if json {
            Part::Json(path)
        } else {
            Part::Field(path)
        });
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err(UsageError(format!("--format {format:?}: stray }}}}")));
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(Format::Template(Template { parts, table }))
}

fn parse_path(format: &str, path: &str) -> Result<Vec<String>, UsageError> {
    if path == "." {
        return Ok(Vec::new());
    }
    let Some(fields) = path.strip_prefix('.') else {
        return Err(UsageError(format!(
            "--format {format:?}: {path:?} is not supported (want {{{{.Field}}}} or {{{{json .Field}}}})"
        )));
    };
    let names: Vec<String> = fields.split('.').map(str::to_string).collect();
    let valid =
        |n: &String| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !names.iter().all(valid) {
        return Err(UsageError(format!(
            "--format {format:?}: {path:?} is not a field path"
        )));
    }
    Ok(names)
}

impl Template {
    /// The header row of a `table` template: each field replaced by its header.
    pub fn header(&self, headers: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(path) | Part::Json(path) => {
                    let name = path.join(".");
                    let header = headers
                        .iter()
                        .find(|(f, _)| *f == name)
                        .map(|(_, h)| h.to_string())
                        .unwrap_or_else(|| name.to_uppercase());
                    out.push_str(&header);
                }
            }
        }
        out
    }

    /// The template applied to `item`; a field the item lacks is an error naming it.
    pub fn render(&self, item: &Value) -> Result<String, UsageError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(path) => out.push_str(&go_text(lookup(item, path)?)),
                Part::Json(path) => out.push_str(&lookup(item, path)?.to_string()),
            }
        }
        Ok(out)
    }
}

fn lookup<'a>(item: &'a Value, path: &[String]) -> Result<&'a Value, UsageError> {
    let mut v = item;
    for (i, name) in path.iter().enumerate() {
        v = match v {
            Value::Object(map) => map.get(name),
            // A missing optional part (`{{.Config.Env}}` of an image without config) is
            // empty, as Go prints a nil map's field.
            Value::Null => return Ok(&Value::Null),
            _ => None,
        }
        .ok_or_else(|| {
            let known: Vec<&str> = match v {
                Value::Object(map) => map.keys().map(String::as_str).collect(),
                _ => Vec::new(),
            };
            UsageError(format!(
                "--format: unknown field {:?} (want {})",
                path[..=i].join("."),
                known.join(", ")
            ))
        })?;
    }
    Ok(v)
}

/// A value as Go's text/template prints it: strings bare, lists as `[a b]`, null empty.
fn go_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_text).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", go_text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// Rows of tab-separated cells, each column padded to its widest cell (3 spaces apart).
pub fn align(rows: &[String]) -> Vec<String> {
    let cells: Vec<Vec<&str>> = rows.iter().map(|r| r.split('\t').collect()).collect();
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    cells
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(format: &str, fields: Option<&[&str]>) -> Template {
        match parse(Some(format), fields).unwrap() {
            Format::Template(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renders_fields_paths_and_json() {
        let item = json!({"Repository": "a/b", "Tag": "v1", "config": {"Env": ["A=1", "B=2"]}});
        assert_eq!(
            t("{{.Repository}}:{{.Tag}}", None).render(&item).unwrap(),
            "a/b:v1"
        );
        assert_eq!(
            t("{{ .config.Env }}", None).render(&item).unwrap(),
            "[A=1 B=2]"
        );
        assert_eq!(
            t("{{json .config}}", None).render(&item).unwrap(),
            r#"{"Env":["A=1","B=2"]}"#
        );
        assert_eq!(t("{{.Tag}}\\t!", None).render(&item).unwrap(), "v1\t!");
    }

    #[test]
    fn unknown_fields_and_actions_are_errors_naming_them() {
        let err = parse(Some("{{.Repo}}"), Some(&["Repository", "Tag"])).unwrap_err();
        assert_eq!(
            err.0,
            "--format: unknown field \"Repo\" (want Repository, Tag)"
        );
        let err = t("{{.config.Nope}}", None)
            .render(&json!({"config": {"Env": []}}))
            .unwrap_err();
        assert!(err.0.contains("\"config.Nope\""), "{}", err.0);
        assert!(parse(Some("{{range .}}"), None).is_err());
        assert!(parse(Some("{{.A"), None).is_err());
        assert_eq!(parse(Some("json"), None).unwrap(), Format::Json);
        assert_eq!(parse(None, None).unwrap(), Format::Table);
    }
}
