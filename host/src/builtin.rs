//! The default plugins, built from `plugins/` by `build.rs` and embedded in the binary.

/// `(name, component bytes)` of every built-in strategy.
pub const PLUGINS: &[(&str, &[u8])] = &[
    (
        "webhook",
        include_bytes!(env!("PROMOTER_WASM_PROMOTER_WEBHOOK")),
    ),
    (
        "pull-request",
        include_bytes!(env!("PROMOTER_WASM_PROMOTER_PULL_REQUEST")),
    ),
    (
        "notification",
        include_bytes!(env!("PROMOTER_WASM_PROMOTER_NOTIFICATION")),
    ),
];

/// The component of the built-in plugin `name`.
pub fn get(name: &str) -> Option<&'static [u8]> {
    PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

pub fn names() -> Vec<&'static str> {
    PLUGINS.iter().map(|(n, _)| *n).collect()
}
