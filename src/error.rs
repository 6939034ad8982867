//! The setup error: one line naming the flag or key at fault and what is wrong with it,
//! which `main` prints before exiting with code 2. Only start-up and reload code makes one.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// An error about the flag `--key` (the YAML key is the same in snake_case).
pub fn err(key: &str, what: impl fmt::Display) -> Error {
    Error(format!("--{key}: {what}"))
}
