//! Problems found in user input, each naming the object (or file) and the field.
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Severity {
    /// The object (or the part of it named by `field`) is not served.
    Error,
    /// Served, but something was ignored or looks wrong.
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `namespace/name` of the object (with its kind when ambiguous), or a file path.
    pub object: String,
    /// The field path, e.g. `spec.rules[0].http.paths[1].backend.service.port`.
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        object: impl Into<String>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            object: object.into(),
            field: field.into(),
            message: msg.into(),
        }
    }

    pub fn warning(
        object: impl Into<String>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(object, field, msg)
        }
    }
}

impl fmt::Display for Diagnostic {
    /// `namespace/name: field: message`, the format `ebpf-lb check` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.field.is_empty() {
            write!(f, "{}: {} ({level})", self.object, self.message)
        } else {
            write!(
                f,
                "{}: {}: {} ({level})",
                self.object, self.field, self.message
            )
        }
    }
}
