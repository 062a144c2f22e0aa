//! `-o yaml`: the same documents as `-o json`, in YAML (block style, as kubectl prints).
//!
//! The documents are JSON values, so YAML's JSON-compatible subset suffices: maps and
//! sequences in block style, strings plain where YAML reads them back as the same string
//! and double-quoted (JSON's escapes, valid in YAML) where it would not, numbers, booleans
//! and null as they are. No crate: the maintained YAML serialisers for serde are forks of
//! an archived one, and a JSON value needs forty lines.

use serde_json::Value;

/// `value` (any serialisable document) as a YAML document, ending in a newline.
pub fn to_yaml(value: &impl serde::Serialize) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = String::new();
    match &value {
        Value::Object(map) if !map.is_empty() => block_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => block_seq(items, 0, &mut out),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    Ok(out)
}

fn indent(level: usize, out: &mut String) {
    out.extend(std::iter::repeat_n("  ", level));
}

fn block_map(map: &serde_json::Map<String, Value>, level: usize, out: &mut String) {
    for (i, (key, value)) in map.iter().enumerate() {
        // The first key of a map in a sequence item follows its `- ` on the same line.
        if i > 0 || level == 0 {
            indent(level, out);
        }
        out.push_str(&string(key));
        out.push(':');
        nested(value, level, out);
    }
}

fn block_seq(items: &[Value], level: usize, out: &mut String) {
    for item in items {
        indent(level, out);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                out.push(' ');
                block_map(map, level + 1, out);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                block_seq(inner, level + 1, out);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

/// What follows `key:`: a scalar on the line, or a block below it.
fn nested(value: &Value, level: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            for (key, inner) in map {
                indent(level + 1, out);
                out.push_str(&string(key));
                out.push(':');
                nested(inner, level + 1, out);
            }
        }
        // kubectl's style: a sequence under a key is not indented further.
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            block_seq(items, level, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

/// A scalar, or an empty map or sequence, on one line.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A string: plain if YAML reads it back as this string, else double-quoted.
fn string(s: &str) -> String {
    if plain_is_safe(s) {
        s.to_owned()
    } else {
        // JSON's string syntax is a valid YAML double-quoted scalar.
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

fn plain_is_safe(s: &str) -> bool {
    const RESERVED: [&str; 22] = [
        "null", "Null", "NULL", "~", "true", "True", "TRUE", "false", "False", "FALSE", "yes",
        "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    if RESERVED.contains(&s)
        || s.parse::<f64>().is_ok()
        || s.starts_with("0x")
        || s.starts_with("0o")
    {
        return false;
    }
    // Letters, digits and a few punctuation marks that mean nothing in YAML where they
    // stand (`: ` and ` #` never occur since spaces are not allowed), starting with a
    // letter, `_`, `/` or `.`, and not ending in `:`.
    let starts = first.is_ascii_alphabetic() || matches!(first, '_' | '/' | '.');
    let body = s.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ':' | '+' | '@' | '>')
    });
    starts && body && !s.ends_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_print_in_block_style_with_risky_strings_quoted() {
        let doc = json!({
            "cluster": "test_cluster",
            "proxies": [
                {"proxy": "10.25.0.11:3000", "status": "up", "since": null, "tags": []},
                {"proxy": "[::1]:3000", "status": "no", "deletion_paused": false}
            ],
            "revision": 42,
            "empty": {},
            "nested": {"a": {"b": "x y"}},
            "list": ["1", 2]
        });
        let yaml = to_yaml(&doc).expect("yaml");
        assert_eq!(
            yaml,
            "cluster: test_cluster\n\
             empty: {}\n\
             list:\n\
             - \"1\"\n\
             - 2\n\
             nested:\n  a:\n    b: \"x y\"\n\
             proxies:\n\
             - proxy: \"10.25.0.11:3000\"\n  since: null\n  status: up\n  tags: []\n\
             - deletion_paused: false\n  proxy: \"[::1]:3000\"\n  status: \"no\"\n\
             revision: 42\n"
        );
        assert_eq!(to_yaml(&json!([])).expect("yaml"), "[]\n");
        assert_eq!(
            to_yaml(&json!([[1, 2]])).expect("yaml"),
            "-\n  - 1\n  - 2\n"
        );
    }
}
