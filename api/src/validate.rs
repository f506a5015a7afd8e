//! Validation results in the shape Kubernetes admission webhooks give them: a list of
//! causes, each a field path and a message.

use std::fmt;

/// One reason a document is refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cause {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Causes(pub Vec<Cause>);

impl Causes {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Cause {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A Kubernetes object name: a DNS-1123 subdomain (at most 253 characters of lower-case
/// letters, digits, '-' and '.', starting and ending with a letter or digit). Platter
/// names volumes after objects, and its volume names are at most 63 characters, so
/// that is the limit here.
pub fn validate_name(name: &str, field: &str, causes: &mut Causes) {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() {
        causes.push(field, "name or generateName is required");
    } else if name.len() > 63 {
        causes.push(
            field,
            format!("name {name:?} is longer than 63 characters (platter names a volume after it)"),
        );
    } else if !name.chars().all(ok_char) || !edge(name.chars().next()) || !edge(name.chars().last())
    {
        causes.push(
            field,
            format!("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (got {name:?})"),
        );
    }
}
