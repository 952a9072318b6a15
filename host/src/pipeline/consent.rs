//! Who agreed to what: a credential is used only as its owner opted in.
//!
//! Threat: a pipeline author is untrusted toward other tenants and toward the operator.
//! Without these rules an author could (a) name a custom plugin whose grant binds the
//! operator's credential and have it run with any config, and (b) name any Secret of their
//! namespace (Flux's own bootstrap Secret `flux-system` included) as the pull-request
//! strategy's `secretRef` and have its token sent to a `url` they pick.
//!
//! 1. A plugin grant is for the namespaces it names ([`Audience`]): `grant.namespaces`
//!    lists them (`"*"`: all), `grant.namespaceSelector.matchLabels` selects them by
//!    their Namespace's labels; without either, only Pipelines in the plugin ConfigMap's
//!    own namespace (the controller's, in Kubernetes mode) may use the plugin.
//! 2. A Secret is sent only to the hosts its annotation [`ALLOWED_HOSTS`] names
//!    (comma-separated `host` or `host:port`). Each host a value goes to must be listed
//!    itself: `github.com` does not cover `api.github.com`. An entry without a port covers
//!    the host at its scheme's standard port (443 https, 80 http, 22 ssh) only.
//!
//! Both are checked when manifests load (the Pipeline is refused before any promotion) and
//! again when a promotion's grant is built.

use super::Secret;
use std::collections::BTreeMap;

/// The annotation by which a Secret opts in to be sent, as forge/git credentials, to the
/// hosts it names.
pub const ALLOWED_HOSTS: &str = "promoter.dev/allowed-hosts";

/// A host a credential is sent to, with the port, and the standard port of the scheme
/// that reaches it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub default_port: u16,
}

impl Endpoint {
    pub fn new(host: &str, port: Option<u16>, default_port: u16) -> Endpoint {
        Endpoint {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port: port.unwrap_or(default_port),
            default_port,
        }
    }

    /// `https://host[:port]/…`, `http://…`, `ssh://[user@]host[:port]/…` or scp-like
    /// `[user@]host:path` (ssh, port 22), parsed as git and the pull-request plugin see it
    /// ([`promoter_sdk::forge::RemoteUrl`]).
    pub fn of_url(url: &str) -> Option<Endpoint> {
        let remote = promoter_sdk::forge::RemoteUrl::parse(url).ok()?;
        Some(Endpoint::new(
            &remote.host,
            remote.port,
            remote.transport.default_port(),
        ))
    }

    /// How an annotation names it: `host`, or `host:port` off the standard port.
    pub fn entry(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = |p: &str| format!("{p:?} is not a port");
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: unclosed ["))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(p.parse().map_err(|_| bad_port(p))?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("{text:?}: expected host or host:port")),
        };
    }
    match text.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => {
            Ok((host, Some(p.parse().map_err(|_| bad_port(p))?)))
        }
        // A bare IPv6 address without brackets: no port.
        Some(_) => Ok((text, None)),
        None => Ok((text, None)),
    }
}

/// One entry of [`ALLOWED_HOSTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    host: String,
    port: Option<u16>,
}

impl Allowed {
    fn covers(&self, to: &Endpoint) -> bool {
        self.host == to.host
            && match self.port {
                Some(port) => port == to.port,
                None => to.port == to.default_port,
            }
    }
}

fn allowed_hosts(text: &str) -> Result<Vec<Allowed>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            if entry.contains(['/', '@', ' ']) {
                return Err(format!(
                    "{entry:?} is not a host; expected host or host:port, e.g. github.com, git.example.com:8443"
                ));
            }
            let (host, port) = split_port(entry)?;
            Ok(Allowed {
                host: host.to_ascii_lowercase(),
                port,
            })
        })
        .collect()
}

/// Checks that `secret` opted in to be sent to every one of `to`; `role` says what names
/// it ("the pull-request strategy's secretRef"). The error names the Secret, the host and
/// the annotation to add.
pub fn may_send(secret: &Secret, role: &str, to: &[Endpoint]) -> Result<(), String> {
    let label = format!("Secret {}/{} ({role})", secret.namespace, secret.name);
    let annotation = secret.annotations.get(ALLOWED_HOSTS);
    let allowed = match annotation {
        Some(text) => {
            allowed_hosts(text).map_err(|e| format!("{label}: annotation {ALLOWED_HOSTS}: {e}"))?
        }
        None => Vec::new(),
    };
    let mut missing: Vec<String> = Vec::new();
    for endpoint in to {
        let entry = endpoint.entry();
        if !allowed.iter().any(|a| a.covers(endpoint)) && !missing.contains(&entry) {
            missing.push(entry);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut wanted: Vec<String> = annotation
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    wanted.extend(missing.iter().cloned());
    let why = match annotation {
        None => format!("it has no annotation {ALLOWED_HOSTS}"),
        Some(text) => format!("its annotation {ALLOWED_HOSTS} is {text:?}"),
    };
    Err(format!(
        "{label} may not be sent to {}: a Secret is used as forge/git credentials only for \
         the hosts it names, and {why}; if its owner means it for {}, annotate it \
         `{ALLOWED_HOSTS}: \"{}\"`",
        missing.join(" and "),
        if missing.len() == 1 {
            "that host"
        } else {
            "those hosts"
        },
        wanted.join(", ")
    ))
}

/// The namespaces whose Pipelines may use a custom plugin (its grant's `namespaces` and
/// `namespaceSelector`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience {
    /// The plugin ConfigMap's namespace: always allowed.
    pub home: String,
    /// `grant.namespaces`.
    pub namespaces: Vec<String>,
    /// `grant.namespaceSelector.matchLabels`: every label must match (an empty one
    /// selects every namespace, as in Kubernetes).
    pub selector: Option<BTreeMap<String, String>>,
}

impl Audience {
    /// `labels`: those of the namespace's Namespace object, when known.
    pub fn admits(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        namespace == self.home
            || self.namespaces.iter().any(|n| n == namespace || n == "*")
            || self.selector.as_ref().is_some_and(|wanted| {
                labels.is_some_and(|have| wanted.iter().all(|(k, v)| have.get(k) == Some(v)))
            })
    }

    /// Refuses a Pipeline of `namespace` that the grant does not name, saying how the
    /// operator opens it.
    pub fn check(
        &self,
        plugin: &str,
        config_map: &str,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), String> {
        if self.admits(namespace, labels) {
            return Ok(());
        }
        let mut granted = vec![self.home.clone()];
        if !self.namespaces.is_empty() {
            granted.push(format!("grant.namespaces [{}]", self.namespaces.join(", ")));
        }
        if let Some(selector) = &self.selector {
            let wanted: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let have = match labels {
                Some(_) => format!("namespace {namespace}'s labels do not match"),
                None => format!("the labels of namespace {namespace} are not known"),
            };
            granted.push(format!(
                "namespaces labelled {} by grant.namespaceSelector ({have})",
                wanted.join(",")
            ));
        }
        Err(format!(
            "plugin {plugin:?} (ConfigMap {config_map}) is not granted to namespace \
             {namespace}: only {} may use it; the operator opens it by adding {namespace} \
             to grant.namespaces in that ConfigMap's data.grant (e.g. `namespaces: [{namespace}]`)",
            granted.join(" and ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(annotation: Option<&str>) -> Secret {
        Secret {
            namespace: "team-b".into(),
            name: "flux-system".into(),
            type_: None,
            labels: BTreeMap::new(),
            annotations: annotation
                .map(|a| BTreeMap::from([(ALLOWED_HOSTS.to_string(), a.to_string())]))
                .unwrap_or_default(),
            data: BTreeMap::new(),
        }
    }

    fn to(url: &str) -> Endpoint {
        Endpoint::of_url(url).unwrap()
    }

    #[test]
    fn endpoints_come_from_https_ssh_and_scp_like_urls_with_their_ports() {
        assert_eq!(to("https://GitHub.com/org/r.git").entry(), "github.com");
        assert_eq!(
            to("https://git.example.com:8443/o/r").entry(),
            "git.example.com:8443"
        );
        assert_eq!(to("http://127.0.0.1:9000/r.git").entry(), "127.0.0.1:9000");
        assert_eq!(to("http://[::1]:9000/r.git").entry(), "[::1]:9000");
        assert_eq!(
            to("ssh://git@gitlab.example.com:2222/g/r").entry(),
            "gitlab.example.com:2222"
        );
        assert_eq!(to("git@github.com:org/repo.git").entry(), "github.com");
        assert_eq!(Endpoint::of_url("ftp://x/y"), None);
        assert_eq!(Endpoint::of_url("/srv/git/repo"), None);
    }

    #[test]
    fn a_secret_without_the_annotation_is_sent_nowhere_and_the_error_says_what_to_add() {
        let e = may_send(
            &secret(None),
            "the strategy's secretRef",
            &[to("https://evil.example/x")],
        )
        .unwrap_err();
        assert!(e.contains("Secret team-b/flux-system"), "{e}");
        assert!(e.contains("evil.example"), "{e}");
        assert!(
            e.contains("promoter.dev/allowed-hosts: \"evil.example\""),
            "{e}"
        );
    }

    #[test]
    fn each_host_must_be_named_itself_and_off_the_standard_port_with_its_port() {
        let s = secret(Some("github.com, git.example.com:8443"));
        assert!(
            may_send(
                &s,
                "r",
                &[
                    to("https://github.com/o/r"),
                    to("https://git.example.com:8443/")
                ]
            )
            .is_ok()
        );
        assert!(may_send(&s, "r", &[to("git@github.com:o/r")]).is_ok());
        // github.com does not cover api.github.com.
        let e = may_send(
            &s,
            "r",
            &[to("https://github.com/o/r"), to("https://api.github.com")],
        )
        .unwrap_err();
        assert!(e.contains("may not be sent to api.github.com"), "{e}");
        assert!(
            e.contains("\"github.com, git.example.com:8443, api.github.com\""),
            "{e}"
        );
        // No port: the standard port only; another port is another entry.
        assert!(may_send(&s, "r", &[to("https://github.com:8443/o/r")]).is_err());
        assert!(may_send(&s, "r", &[to("https://git.example.com/o/r")]).is_err());
        assert!(
            may_send(
                &secret(Some("[::1]:9000")),
                "r",
                &[to("http://[::1]:9000/r")]
            )
            .is_ok()
        );
        let e = may_send(
            &secret(Some("https://github.com/")),
            "r",
            &[to("https://github.com/")],
        )
        .unwrap_err();
        assert!(e.contains("not a host"), "{e}");
    }

    #[test]
    fn a_plugin_grant_admits_its_own_namespace_and_those_it_names() {
        let home = Audience {
            home: "promoter-system".into(),
            ..Audience::default()
        };
        let cm = "promoter-system/fetcher";
        assert!(home.check("fetcher", cm, "promoter-system", None).is_ok());
        let e = home.check("fetcher", cm, "team-b", None).unwrap_err();
        assert!(
            e.contains("namespace team-b: only promoter-system may use it"),
            "{e}"
        );
        assert!(e.contains("grant.namespaces"), "{e}");
        let opened = Audience {
            home: "promoter-system".into(),
            namespaces: vec!["team-a".into()],
            selector: None,
        };
        assert!(opened.admits("team-a", None));
        assert!(!opened.admits("team-b", None));
        let everyone = Audience {
            namespaces: vec!["*".into()],
            ..opened
        };
        assert!(everyone.admits("team-b", None));
    }

    #[test]
    fn a_namespace_selector_admits_namespaces_whose_labels_all_match() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let audience = Audience {
            home: "promoter-system".into(),
            namespaces: vec![],
            selector: Some(labels(&[("promoter.dev/ci", "true"), ("tier", "apps")])),
        };
        let both = labels(&[("promoter.dev/ci", "true"), ("tier", "apps"), ("x", "y")]);
        assert!(audience.admits("team-a", Some(&both)));
        let one = labels(&[("promoter.dev/ci", "true")]);
        assert!(!audience.admits("team-b", Some(&one)));
        assert!(
            !audience.admits("team-c", None),
            "unknown labels match nothing"
        );
        let e = audience
            .check("p", "promoter-system/p", "team-c", None)
            .unwrap_err();
        assert!(e.contains("promoter.dev/ci=true,tier=apps"), "{e}");
        assert!(
            e.contains("the labels of namespace team-c are not known"),
            "{e}"
        );
    }
}
