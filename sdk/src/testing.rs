//! A scripted [`Host`] for native unit tests of strategies, and a sample request.
//!
//! ```
//! use promoter_sdk::testing::{MockHost, sample_request};
//! use promoter_sdk::{Host, HttpRequest, HttpResponse, Level};
//!
//! let host = MockHost::new()
//!     .with_key("webhook-secret", "s3cr3t")
//!     .respond(HttpResponse::new(202));
//!
//! host.info("sending");
//! let response = host.send(HttpRequest::post("https://hooks.example.com/", "{}")).unwrap();
//! assert_eq!(response.status, 202);
//! assert!(host.sign_sha256("webhook-secret", b"{}").is_ok());
//!
//! assert_eq!(host.requests()[0].url, "https://hooks.example.com/");
//! assert_eq!(host.logs(), vec![(Level::Info, "sending".to_string())]);
//! assert_eq!(sample_request("{}").attempt, 1);
//! ```

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, Mac};

use crate::bindings::promoter::strategy::types::{
    AppRef, ClusterRef, DeploymentTarget, EventInfo, PipelineRef,
};
use crate::http::{HttpError, HttpRequest, HttpResponse};
use crate::{HmacAlgorithm, Host, Level, PromotionRequest};

/// Records log lines and requests, signs with real HMACs, answers HTTP from a script.
///
/// `send` pops the next scripted answer; with none left it panics, naming the request,
/// so a test never passes on an answer it did not write.
#[derive(Debug, Default)]
pub struct MockHost {
    keys: HashMap<String, Vec<u8>>,
    answers: RefCell<VecDeque<Result<HttpResponse, HttpError>>>,
    requests: RefCell<Vec<HttpRequest>>,
    logs: RefCell<Vec<(Level, String)>>,
}

impl MockHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds a signing key under `name`, as an operator would with a Secret.
    pub fn with_key(mut self, name: impl Into<String>, key: impl AsRef<[u8]>) -> Self {
        self.keys.insert(name.into(), key.as_ref().to_vec());
        self
    }

    /// Queues a response for the next `send`.
    pub fn respond(self, response: HttpResponse) -> Self {
        self.answers.borrow_mut().push_back(Ok(response));
        self
    }

    /// Queues an error for the next `send`.
    pub fn fail(self, error: HttpError) -> Self {
        self.answers.borrow_mut().push_back(Err(error));
        self
    }

    /// Every request sent so far, in order.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.borrow().clone()
    }

    /// Every log line so far, in order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }
}

impl Host for MockHost {
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn sign(&self, key: &str, algorithm: HmacAlgorithm, data: &[u8]) -> Result<String, String> {
        let secret = self
            .keys
            .get(key)
            .ok_or_else(|| format!("no signing key named {key:?} is bound to this plugin"))?;
        Ok(hmac_hex(algorithm, secret, data))
    }

    fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let what = format!("{} {}", request.method, request.url);
        self.requests.borrow_mut().push(request);
        self.answers.borrow_mut().pop_front().unwrap_or_else(|| {
            panic!("MockHost has no scripted answer left for {what}; queue one with respond() or fail()")
        })
    }
}

/// Lowercase hex HMAC of `data` under `key`, as the host's `sign` computes it.
pub fn hmac_hex(algorithm: HmacAlgorithm, key: &[u8], data: &[u8]) -> String {
    fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> String {
        let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }
    match algorithm {
        HmacAlgorithm::Sha256 => mac::<Hmac<sha2::Sha256>>(key, data),
        HmacAlgorithm::Sha384 => mac::<Hmac<sha2::Sha384>>(key, data),
        HmacAlgorithm::Sha512 => mac::<Hmac<sha2::Sha512>>(key, data),
    }
}

/// A first-attempt promotion of `podinfo` 1.2.3 from `dev` to `prod` in pipeline
/// `flux-system/podinfo`, triggered by a Flux HelmRelease upgrade, with `config` as the
/// strategy's configuration. Change fields as a test needs.
pub fn sample_request(config: &str) -> PromotionRequest {
    PromotionRequest {
        id: "flux-system.podinfo.prod.1.2.3".into(),
        attempt: 1,
        pipeline: PipelineRef {
            namespace: "flux-system".into(),
            name: "podinfo".into(),
        },
        source_environment: "dev".into(),
        target_environment: "prod".into(),
        targets: vec![
            DeploymentTarget {
                namespace: "podinfo".into(),
                cluster: None,
            },
            DeploymentTarget {
                namespace: "podinfo".into(),
                cluster: Some(ClusterRef {
                    api_version: Some("gitops.weave.works/v1alpha1".into()),
                    kind: "GitopsCluster".into(),
                    name: "prod-eu".into(),
                    namespace: Some("flux-system".into()),
                }),
            },
        ],
        app: AppRef {
            api_version: "helm.toolkit.fluxcd.io/v2".into(),
            kind: "HelmRelease".into(),
            name: "podinfo".into(),
        },
        version: "1.2.3".into(),
        config: config.into(),
        event: EventInfo {
            kind: "HelmRelease".into(),
            name: "podinfo".into(),
            namespace: "podinfo".into(),
            reason: "UpgradeSucceeded".into(),
            severity: "info".into(),
            message:
                "Helm upgrade succeeded for release podinfo/podinfo.v2 with chart podinfo@1.2.3"
                    .into(),
            timestamp: "2025-01-01T12:00:00Z".into(),
            reporting_controller: "helm-controller".into(),
            metadata: vec![
                ("revision".into(), "1.2.3".into()),
                ("token".into(), "dev".into()),
            ],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_host_signs_like_rfc_4231_test_case_2() {
        let host = MockHost::new().with_key("jefe", "Jefe");
        let data = b"what do ya want for nothing?";
        assert_eq!(
            host.sign("jefe", HmacAlgorithm::Sha256, data).unwrap(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            host.sign("jefe", HmacAlgorithm::Sha512, data).unwrap()[..16],
            *"164b7a7bfcf819e2"
        );
        assert_eq!(
            host.sign("jefe", HmacAlgorithm::Sha384, data)
                .unwrap()
                .len(),
            96
        );
    }

    #[test]
    fn signing_with_an_unbound_key_fails_naming_the_key() {
        let error = MockHost::new().sign_sha256("missing", b"x").unwrap_err();
        assert!(error.contains("\"missing\""), "{error}");
    }

    #[test]
    fn mock_host_answers_in_order_and_records_requests() {
        let host = MockHost::new()
            .respond(HttpResponse::new(500))
            .fail(HttpError::Timeout("slow".into()));
        assert_eq!(
            host.send(HttpRequest::get("https://a.example/"))
                .unwrap()
                .status,
            500
        );
        assert_eq!(
            host.send(HttpRequest::get("https://b.example/")),
            Err(HttpError::Timeout("slow".into()))
        );
        let urls: Vec<_> = host.requests().into_iter().map(|r| r.url).collect();
        assert_eq!(urls, ["https://a.example/", "https://b.example/"]);
    }

    #[test]
    #[should_panic(expected = "no scripted answer left for GET https://c.example/")]
    fn sending_without_a_scripted_answer_fails_the_test() {
        let _ = MockHost::new().send(HttpRequest::get("https://c.example/"));
    }
}
