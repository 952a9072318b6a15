//! A scripted [`Host`] for native unit tests of strategies, and a sample request.
//!
//! [`MockHost`] logs, signs with real HMACs, answers HTTP from a script, and runs an
//! in-memory git: [`MockHost::with_repo`] seeds a remote, [`Host::git_open`] clones it, and
//! [`MockHost::remote_file`], [`MockHost::commits`] and [`MockHost::pushes`] show what a
//! strategy did to it.
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
//!
//! Git:
//!
//! ```
//! use promoter_sdk::testing::MockHost;
//! use promoter_sdk::{Author, Host};
//!
//! let url = "https://git.example.com/fleet.git";
//! let host = MockHost::new().with_repo(url, "main", &[("apps/podinfo.yaml", "version: 1.0.0\n")]);
//!
//! let mut repo = host.git_open(url, "main").unwrap();
//! repo.create_branch("promote").unwrap();
//! repo.write_file("apps/podinfo.yaml", b"version: 1.1.0\n").unwrap();
//! let author = Author::new("Promoter", "promoter@noreply.local");
//! assert!(repo.commit("promoting version", &author).unwrap().is_some());
//! assert!(repo.push("promote").unwrap());
//! assert!(!repo.push("promote").unwrap(), "the remote already has these files");
//!
//! assert_eq!(host.remote_file(url, "promote", "apps/podinfo.yaml").as_deref(), Some("version: 1.1.0\n"));
//! assert_eq!(host.remote_file(url, "main", "apps/podinfo.yaml").as_deref(), Some("version: 1.0.0\n"));
//! assert_eq!((host.commits().len(), host.pushes().len()), (1, 1));
//! ```

mod git;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use hmac::{Hmac, Mac};

use crate::bindings::promoter::strategy::types::{
    AppRef, ClusterRef, DeploymentTarget, EventInfo, PipelineRef,
};
use crate::http::{HttpError, HttpRequest, HttpResponse};
use crate::{GitError, HmacAlgorithm, Host, Level, PromotionRequest, Repository};

pub use git::{GitCommit, GitPush};

/// Records log lines and requests, signs with real HMACs, answers HTTP from a script, and
/// keeps in-memory git remotes.
///
/// `send` pops the next scripted answer; with none left it panics, naming the request,
/// so a test never passes on an answer it did not write.
///
/// `git_open(url, branch)` clones a remote seeded with [`MockHost::with_repo`]
/// ([`GitError::NotFound`] for an unknown URL or branch, [`GitError::Denied`] after
/// [`MockHost::deny_git`]). The working copy behaves like the host's: `create_branch`
/// starts a branch at the current commit keeping uncommitted changes, `commit` returns
/// `None` when no file changed, `push` replaces the remote branch with the current commit's
/// files and returns `false` when the remote branch already had exactly those files.
#[derive(Debug, Default)]
pub struct MockHost {
    keys: HashMap<String, Vec<u8>>,
    answers: RefCell<VecDeque<Result<HttpResponse, HttpError>>>,
    requests: RefCell<Vec<HttpRequest>>,
    logs: RefCell<Vec<(Level, String)>>,
    git: git::Shared,
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

    /// Seeds branch `branch` of the remote repository `url` with `files` (path, text),
    /// replacing what that branch had. Call again for more branches or repositories.
    pub fn with_repo(self, url: &str, branch: &str, files: &[(&str, &str)]) -> Self {
        let tree = files
            .iter()
            .map(|(path, text)| (path.to_string(), text.as_bytes().to_vec()))
            .collect();
        self.git
            .borrow_mut()
            .remotes
            .entry(url.to_string())
            .or_default()
            .insert(branch.to_string(), tree);
        self
    }

    /// Every `git_open` is refused with [`GitError::Denied`], as when the operator granted
    /// no repository.
    pub fn deny_git(self) -> Self {
        self.git.borrow_mut().denied = true;
        self
    }

    /// Queues an error for the next git operation (`git_open` or any repository method),
    /// which then fails without doing anything. Queue several for several operations.
    pub fn fail_git(self, error: GitError) -> Self {
        self.git.borrow_mut().failures.push_back(error);
        self
    }

    /// The text of `path` on branch `branch` of the remote `url` (`None` when the branch or
    /// the file does not exist). Not UTF-8 is replaced lossily.
    pub fn remote_file(&self, url: &str, branch: &str, path: &str) -> Option<String> {
        let git = self.git.borrow();
        let contents = git.remotes.get(url)?.get(branch)?.get(path)?;
        Some(String::from_utf8_lossy(contents).into_owned())
    }

    /// Every file of branch `branch` of the remote `url`, by path; `None` when there is no
    /// such branch.
    pub fn remote_files(&self, url: &str, branch: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.git.borrow().remotes.get(url)?.get(branch).cloned()
    }

    /// The branches of the remote `url`, sorted.
    pub fn remote_branches(&self, url: &str) -> Vec<String> {
        self.git
            .borrow()
            .remotes
            .get(url)
            .map(|branches| branches.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every successful `git_open` so far: (url, branch), in order.
    pub fn git_opens(&self) -> Vec<(String, String)> {
        self.git.borrow().opens.clone()
    }

    /// Every commit made in a working copy so far, in order (commits that found nothing to
    /// commit made none).
    pub fn commits(&self) -> Vec<GitCommit> {
        self.git.borrow().commits.clone()
    }

    /// Every push that changed a remote branch so far, in order.
    pub fn pushes(&self) -> Vec<GitPush> {
        self.git.borrow().pushes.clone()
    }

    /// How many pushes were answered `false` because the remote branch already had the files.
    pub fn unchanged_pushes(&self) -> usize {
        self.git.borrow().unchanged_pushes
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

    fn git_open(&self, url: &str, branch: &str) -> Result<Box<dyn Repository>, GitError> {
        git::open(&self.git, url, branch)
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
