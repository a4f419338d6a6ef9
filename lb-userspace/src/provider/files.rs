//! The files provider: every `*.yaml`, `*.yml` and `*.json` below a directory, each holding
//! one or more documents (YAML `---` streams, or `kind: List`).
//!
//! A document that cannot be read or parsed is reported as a diagnostic naming the file and
//! the document; the other documents are still used.
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize as _;
use serde_yaml::Value;

use super::Snapshot;
use crate::diagnostics::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The manifests directory itself cannot be listed.
    #[error("cannot read manifests directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads every manifest below `dir`.
pub fn load_dir(dir: &Path) -> Result<(Snapshot, Vec<Diagnostic>), FilesError> {
    let files = list_files(dir)?;
    let mut snapshot = Snapshot::default();
    let mut diagnostics = Vec::new();
    for file in files {
        let label = file.display().to_string();
        match fs::read_to_string(&file) {
            Ok(text) => load_text(&label, &text, &mut snapshot, &mut diagnostics),
            Err(e) => diagnostics.push(Diagnostic::error(label, "", format!("cannot read: {e}"))),
        }
    }
    Ok((snapshot, diagnostics))
}

/// Every manifest file below `dir`, sorted.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), FilesError> {
    let entries = fs::read_dir(dir).map_err(|source| FilesError::ReadDir {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // editor swap files, ..data symlinks of mounted ConfigMaps
        }
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses one file's text (YAML is a superset of JSON, so one parser serves both).
pub fn load_text(label: &str, text: &str, snapshot: &mut Snapshot, diags: &mut Vec<Diagnostic>) {
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let where_ = format!("{label} (document {})", i + 1);
        match Value::deserialize(document) {
            Ok(Value::Null) => {}
            Ok(value) => add_object(&where_, value, snapshot, diags),
            Err(e) => {
                diags.push(Diagnostic::error(where_, "", format!("invalid YAML: {e}")));
                // A syntax error ends the stream: later documents cannot be located reliably.
                break;
            }
        }
    }
}

fn add_object(where_: &str, value: Value, snapshot: &mut Snapshot, diags: &mut Vec<Diagnostic>) {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object = describe(where_, &value);
    macro_rules! typed {
        ($vec:expr) => {
            match serde_yaml::from_value(value) {
                Ok(obj) => $vec.push(obj),
                Err(e) => diags.push(Diagnostic::error(
                    object,
                    "",
                    format!("invalid {kind}: {e}"),
                )),
            }
        };
    }
    match (api_version, kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => typed!(snapshot.ingresses),
        ("networking.k8s.io/v1", "IngressClass") => typed!(snapshot.ingress_classes),
        ("v1", "Service") => typed!(snapshot.services),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed!(snapshot.endpoint_slices),
        ("v1", "Secret") => typed!(snapshot.secrets),
        ("v1", "ConfigMap") => typed!(snapshot.config_maps),
        (_, "List") => {
            let items = value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for (j, item) in items.into_iter().enumerate() {
                add_object(&format!("{where_} items[{j}]"), item, snapshot, diags);
            }
        }
        ("", _) | (_, "") => diags.push(Diagnostic::error(
            object,
            if api_version.is_empty() {
                "apiVersion"
            } else {
                "kind"
            },
            "missing: not a Kubernetes object",
        )),
        _ => diags.push(Diagnostic::warning(
            object,
            "kind",
            format!("{api_version} {kind} is not used by ebpf-lb; ignored"),
        )),
    }
}

/// `Kind namespace/name` when the document says, else the file and document number.
fn describe(where_: &str, value: &Value) -> String {
    let meta = value.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    let ns = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match name {
        Some(name) => format!("{ns}/{name}"),
        None => where_.to_owned(),
    }
}

/// Parses a YAML fixture that must be free of problems (unit tests of other modules).
#[cfg(test)]
pub fn fixture(yaml: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut diags = Vec::new();
    load_text("fixture.yaml", yaml, &mut snap, &mut diags);
    assert!(diags.is_empty(), "fixture does not parse: {diags:?}");
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_and_bad_documents() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: a, namespace: x}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i, namespace: x}
spec:
  rules: "not a list"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
"#;
        let mut snap = Snapshot::default();
        let mut diags = Vec::new();
        load_text("f.yaml", text, &mut snap, &mut diags);
        assert_eq!(snap.services.len(), 1);
        assert!(snap.ingresses.is_empty());
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert_eq!(diags[0].object, "x/i");
        assert!(
            diags[0].message.starts_with("invalid Ingress"),
            "{}",
            diags[0].message
        );
        assert_eq!(diags[1].severity, crate::diagnostics::Severity::Warning);
    }

    #[test]
    fn syntax_error_is_reported_not_panicked() {
        let mut snap = Snapshot::default();
        let mut diags = Vec::new();
        load_text("f.yaml", "kind: [unclosed", &mut snap, &mut diags);
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("invalid YAML"));
    }

    #[test]
    fn json_list() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{}}]}"#;
        let mut snap = Snapshot::default();
        let mut diags = Vec::new();
        load_text("f.json", text, &mut snap, &mut diags);
        assert_eq!(snap.services.len(), 1, "{diags:?}");
    }
}
