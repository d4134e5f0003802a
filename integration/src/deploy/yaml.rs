//! Multi-document YAML in and out, through serde_json values (sorted keys, so
//! the output is stable).

use anyhow::{Context, Result};
use serde::Deserialize;

/// Every non-empty document of a YAML stream.
pub fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc).context("a YAML document")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// A YAML stream with a header comment.
pub fn write_documents(header: &str, docs: &[serde_json::Value]) -> Result<String> {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str(if line.is_empty() { "#" } else { "# " });
        out.push_str(line);
        out.push('\n');
    }
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(doc)?);
    }
    Ok(out)
}
