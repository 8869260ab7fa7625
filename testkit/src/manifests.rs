//! Deployment files as data: the repository's paths, YAML and JSON read
//! into `serde_json::Value`, Helm's merge of values files, and checks
//! against a JSON Schema.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The repository root (the workspace holding this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace root")
        .to_owned()
}

/// `path` relative to the repository root, as text.
pub fn read(path: impl AsRef<Path>) -> String {
    let path = repo_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A YAML document as JSON, with `<<` merge keys applied (compose files
/// use them). Panics with the file name when it does not parse.
pub fn yaml(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    parse_yaml(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses YAML text into JSON; keys must be strings.
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    let mut doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    doc.apply_merge().map_err(|e| e.to_string())?;
    serde_json::to_value(doc).map_err(|e| e.to_string())
}

/// A JSON document. Panics with the file name when it does not parse.
pub fn json(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files in `dir` (relative to the root) whose names end with `suffix`, sorted.
pub fn files(dir: impl AsRef<Path>, suffix: &str) -> Vec<PathBuf> {
    let root = repo_root();
    let full = root.join(dir.as_ref());
    let mut found: Vec<PathBuf> = std::fs::read_dir(&full)
        .unwrap_or_else(|e| panic!("list {}: {e}", full.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(suffix))
        })
        .map(|p| p.strip_prefix(&root).map(Path::to_owned).unwrap_or(p))
        .collect();
    found.sort();
    found
}

/// `overlay` merged over `base` as Helm merges a `-f` file over the
/// chart's values: maps merge key by key, a null removes the key, and
/// anything else (lists included) replaces the default.
pub fn merge_values(base: &Value, overlay: &Value) -> Value {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            let mut merged: Map<String, Value> = base.clone();
            for (key, value) in overlay {
                match (merged.get(key), value) {
                    (_, Value::Null) => {
                        merged.remove(key);
                    }
                    (Some(old @ Value::Object(_)), Value::Object(_)) => {
                        let inner = merge_values(old, value);
                        merged.insert(key.clone(), inner);
                    }
                    _ => {
                        merged.insert(key.clone(), value.clone());
                    }
                }
            }
            Value::Object(merged)
        }
        (_, overlay) => overlay.clone(),
    }
}

/// What `schema` finds wrong with `doc`, one line per error (empty: valid).
pub fn schema_errors(schema: &Value, doc: &Value) -> Vec<String> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => return vec![format!("the schema itself is invalid: {e}")],
    };
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_helms() {
        let base = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 1}});
        let overlay = json!({"a": {"c": [3]}, "d": null, "e": "flat", "g": true});
        assert_eq!(
            merge_values(&base, &overlay),
            json!({"a": {"b": 1, "c": [3]}, "e": "flat", "g": true})
        );
    }

    #[test]
    fn yaml_merge_keys_apply() {
        let doc = parse_yaml("x: &x {a: 1}\ny:\n  <<: *x\n  b: 2\n").unwrap();
        assert_eq!(doc["y"], json!({"a": 1, "b": 2}));
        assert!(parse_yaml("a: [").is_err());
    }

    #[test]
    fn schema_errors_name_the_place() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        assert!(schema_errors(&schema, &json!({"n": 1})).is_empty());
        let errors = schema_errors(&schema, &json!({"n": "one"}));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("/n:"), "{errors:?}");
    }
}
