//! Secret bytes that never show up in logs or debug output.

/// A credential or key. `Debug` prints a placeholder; only [`Secret::expose`] gives the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.as_bytes().to_vec())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_output_never_contains_the_secret() {
        let s = super::Secret::from("hunter2-token");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
