//! Sources of records. Each produces objects and zone files tagged with where they came from;
//! the snapshot publisher merges them.

pub mod file;
pub mod include;
pub mod kubernetes;
pub mod lint;
pub mod read;
pub mod yaml_depth;

use thiserror::Error;

/// A problem in one file, document or object. `location` names the file and line, or the file,
/// document and object; the message names the field.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{location}: {message}")]
pub struct SourceError {
    pub location: String,
    pub message: String,
}

impl SourceError {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        SourceError {
            location: location.into(),
            message: message.into(),
        }
    }
}

/// A value with the place it came from (`file:line (Kind ns/name)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub location: String,
    pub value: T,
}

/// Deserializes a value (YAML from files, JSON from the API server) into a typed object; the
/// error names the field path (`spec.recordTTL: invalid type …`).
pub fn typed<'de, T, D>(value: D) -> Result<T, String>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    typed_at(value).map_err(|(path, message)| message_at(&path, &message))
}

/// As [`typed`], with the error's field path (`.` for the whole value) and message apart.
pub fn typed_at<'de, T, D>(value: D) -> Result<T, (String, String)>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde_path_to_error::deserialize(value)
        .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))
}

/// `path: message`, or the message alone for the whole value.
pub fn message_at(path: &str, message: &str) -> String {
    if path == "." {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}
