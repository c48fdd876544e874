//! The one JSON envelope every `--json` output uses:
//! `{"format_version": 1, "tool": "...", "command": "...", ...result}`.
//! A result that is a JSON object is merged into the envelope (its keys sit
//! beside `format_version`); anything else goes under `"result"`. Times are
//! numbers (Unix seconds) and byte counts exact integers: the result types
//! serialize them so, and this module adds no formatting of its own.

use serde::Serialize;
use serde_json::{Map, Value};

/// Version of the envelope and of the result shapes inside it; raised when a
/// field changes meaning or disappears (new fields do not raise it).
pub const FORMAT_VERSION: u64 = 1;

/// `value` wrapped in the envelope of `tool` `command`.
pub fn envelope(tool: &str, command: &str, value: &impl Serialize) -> anyhow::Result<Value> {
    let mut m = Map::new();
    m.insert("format_version".into(), Value::from(FORMAT_VERSION));
    m.insert("tool".into(), Value::from(tool));
    m.insert("command".into(), Value::from(command));
    match serde_json::to_value(value)? {
        Value::Object(o) => {
            for (k, v) in o {
                // The envelope's own keys win: a result never redefines them.
                m.entry(k).or_insert(v);
            }
        }
        other => {
            m.insert("result".into(), other);
        }
    }
    Ok(Value::Object(m))
}

/// The envelope as pretty-printed text (no trailing newline).
pub fn to_string(tool: &str, command: &str, value: &impl Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&envelope(tool, command, value)?)?)
}

/// Prints the envelope on standard output.
pub fn print(tool: &str, command: &str, value: &impl Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let text = to_string(tool, command, value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_merge_and_other_values_nest() {
        let v = envelope("t", "c", &serde_json::json!({"a": 1, "tool": "x"})).unwrap();
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["tool"], "t");
        assert_eq!(v["command"], "c");
        assert_eq!(v["a"], 1);
        let n = envelope("t", "c", &vec![1, 2]).unwrap();
        assert_eq!(n["result"], serde_json::json!([1, 2]));
    }
}
