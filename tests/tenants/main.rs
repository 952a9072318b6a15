//! The hostile-tenant suite: one module per trust rule of SECURITY.md, each test named
//! after the attack it stops and run against the real binary and real peers on loopback.
//! SECURITY.md's role tables name these tests one for one.

#[path = "../support/mod.rs"]
mod support;

mod addresses;
mod admin;
mod caches;
mod credentials;
mod keys;
mod names;
mod readback;
mod records;
mod repository;
mod requests;

/// Approves the promotion of `version` into prod of pipeline `podinfo` in `namespace`,
/// as `promoter approve` does: a signed body naming what is approved, and when.
async fn approve_prod(
    server: &support::Server,
    namespace: &str,
    version: &str,
    key: &[u8],
) -> (u16, String) {
    let body = promoter::client::ApprovalBody {
        namespace: namespace.into(),
        name: "podinfo".into(),
        environment: "prod".into(),
        revision: version.into(),
        timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    promoter::client::post_signed(
        &format!(
            "{}/approval/{namespace}/podinfo/prod/{version}",
            server.webhook
        ),
        serde_json::to_vec(&body).unwrap(),
        Some(key),
    )
    .await
    .unwrap()
}
