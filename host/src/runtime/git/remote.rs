//! Where a git remote points, and whether the host may go there.
//!
//! A remote comes from a Pipeline (tenant input): it passes the same address policy as a
//! plugin's HTTP requests ([`crate::runtime::egress::is_internal`]). Its name is resolved
//! by the host and every address checked; for http(s) the connection is then pinned to
//! the checked addresses (`http.curloptResolve`), so DNS cannot answer differently when
//! git connects. Git never follows redirects (`http.followRedirects=false`, set with the
//! command's configuration), so no other host is ever reached with the credentials.
//!
//! A URL with credentials in it (`https://user:token@host/…`) is refused: credentials
//! belong in the Secret the strategy names, and every message shows URLs redacted.

use super::GitFailure;
use crate::runtime::egress::is_internal;
use std::net::SocketAddr;

/// A remote's transport, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Remote {
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
}

/// `url` with the password (and, for http(s), the user name) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // scp-like `user@host:path`: the user name of ssh is no secret.
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let kept = if scheme.eq_ignore_ascii_case("ssh") {
                userinfo.split(':').next().unwrap_or_default()
            } else {
                ""
            };
            let shown = if kept.is_empty() || kept.len() < userinfo.len() {
                format!("{kept}{}***", if kept.is_empty() { "" } else { ":" })
            } else {
                kept.to_string()
            };
            format!("{scheme}://{shown}@{host}{path}")
        }
        None => url.to_string(),
    }
}

/// Every URL-shaped word of `text` redacted (git's own messages quote the remote).
pub(super) fn redact_all(text: &str, url: &str) -> String {
    let text = text.replace(url, &redact(url));
    text.split(' ')
        .map(|word| {
            if word.contains("://") && word.contains('@') {
                let start = word.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
                format!("{}{}", &word[..start], redact(&word[start..]))
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses `url`: `https://host[:port]/…`, `http://…`, `ssh://[user@]host[:port]/…` or
/// scp-like `[user@]host:path`, as the pull-request plugin does
/// ([`promoter_sdk::forge::RemoteUrl`]). Refuses credentials in the URL and other transports.
pub(super) fn parse(url: &str) -> Result<Remote, GitFailure> {
    use promoter_sdk::forge::{RemoteUrl, Transport};
    let shown = redact(url);
    let remote = RemoteUrl::parse(url)
        .map_err(|why| GitFailure::Invalid(format!("git remote {shown} {why}")))?;
    let ssh = remote.transport == Transport::Ssh;
    if let Some(userinfo) = &remote.userinfo
        && (!ssh || userinfo.contains(':'))
    {
        return Err(GitFailure::Denied(format!(
            "git remote {shown} carries credentials in its URL; remove them and put them \
             in the Secret the strategy's secretRef names (username/password or token, \
             identity for SSH)"
        )));
    }
    Ok(Remote {
        scheme: remote.transport.scheme(),
        port: remote.port_or_default(),
        host: remote.host,
    })
}

impl Remote {
    /// The addresses git may connect to, after the address policy: internal ones
    /// (loopback, private, link-local, metadata, CGNAT) only when `private_networks`.
    pub(super) async fn resolve(
        &self,
        url: &str,
        private_networks: bool,
    ) -> Result<Vec<SocketAddr>, GitFailure> {
        let shown = redact(url);
        let addrs: Vec<SocketAddr> = match self.host.parse() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| {
                    GitFailure::Unavailable(format!(
                        "git remote {shown}: cannot resolve {}: {e}",
                        self.host
                    ))
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(GitFailure::Unavailable(format!(
                "git remote {shown}: {} resolves to no address",
                self.host
            )));
        }
        self.refuse_internal(url, &addrs, private_networks)?;
        Ok(addrs)
    }

    /// Refuses internal addresses among `addrs` unless `private_networks`.
    pub(super) fn refuse_internal(
        &self,
        url: &str,
        addrs: &[SocketAddr],
        private_networks: bool,
    ) -> Result<(), GitFailure> {
        let shown = redact(url);
        if !private_networks && let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
            let at = if self.host.parse::<std::net::IpAddr>().is_ok() {
                "is".to_string()
            } else {
                format!("{} resolves to", self.host)
            };
            return Err(GitFailure::Denied(format!(
                "git remote {shown} {at} internal address {} (loopback, private, link-local, \
                 metadata or CGNAT), which this plugin may not reach; an operator allows it for \
                 built-in strategies with `promoter serve --builtin-private-networks` \
                 (PROMOTER_BUILTIN_PRIVATE_NETWORKS=true)",
                bad.ip()
            )));
        }
        Ok(())
    }

    /// `http.curloptResolve` entry pinning the host to `addrs` (none for a literal IP or
    /// for ssh). ssh resolves the name again when it connects: what it reaches there must
    /// still present the host key of the Secret's `known_hosts` (checked strictly), and
    /// gets nothing but an SSH handshake, so a changed answer cannot be used to read an
    /// internal service; pinning it would change which `known_hosts` entry matches.
    pub(super) fn pin(&self, addrs: &[SocketAddr]) -> Option<String> {
        if self.scheme == "ssh" || self.host.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let list: Vec<String> = addrs
            .iter()
            .map(|a| match a {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            })
            .collect();
        Some(format!("{}:{}:{}", self.host, self.port, list.join(",")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_parse_for_https_ssh_and_scp_like_urls() {
        let r = |scheme, host: &str, port| Remote {
            scheme,
            host: host.into(),
            port,
        };
        assert_eq!(
            parse("https://GitHub.com/org/repo.git").unwrap(),
            r("https", "github.com", 443)
        );
        assert_eq!(
            parse("http://127.0.0.1:8080/org/config.git").unwrap(),
            r("http", "127.0.0.1", 8080)
        );
        assert_eq!(
            parse("ssh://git@gitlab.example.com:2222/g/r.git").unwrap(),
            r("ssh", "gitlab.example.com", 2222)
        );
        assert_eq!(
            parse("git@github.com:org/repo.git").unwrap(),
            r("ssh", "github.com", 22)
        );
        assert_eq!(
            parse("https://[::1]:8443/r.git").unwrap(),
            r("https", "::1", 8443)
        );
        // What the shared parser refuses (promoter_sdk::forge's tests list the shapes)
        // comes back naming the remote; user information in an http(s) URL is credentials.
        let Err(GitFailure::Invalid(m)) = parse("ext::sh -c x") else {
            panic!("a remote helper is not a remote")
        };
        assert!(m.starts_with("git remote ext::sh -c x is not a URL"), "{m}");
        assert!(matches!(
            parse("http://127.0.0.1\\@example.com/r.git"),
            Err(GitFailure::Denied(_))
        ));
    }

    #[test]
    fn credentials_in_a_remote_url_are_refused_and_never_shown() {
        for url in [
            "https://user:s3cret@github.com/org/repo.git",
            "https://s3cret@github.com/org/repo.git",
            "ssh://git:s3cret@host/r.git",
        ] {
            let Err(GitFailure::Denied(m)) = parse(url) else {
                panic!("{url}")
            };
            assert!(!m.contains("s3cret"), "{m}");
            assert!(m.contains("carries credentials"), "{m}");
        }
        assert_eq!(
            redact("https://user:s3cret@h/o/r.git"),
            "https://***@h/o/r.git"
        );
        assert_eq!(redact("ssh://git:s3cret@h/r.git"), "ssh://git:***@h/r.git");
        assert_eq!(redact("ssh://git@h/r.git"), "ssh://git@h/r.git");
        assert_eq!(
            redact_all(
                "fatal: unable to access 'https://u:s3cret@h/r.git/': 403",
                "x"
            ),
            "fatal: unable to access 'https://***@h/r.git/': 403"
        );
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_unless_private_networks_are_allowed() {
        let url = "http://127.0.0.1:9/org/config.git";
        let remote = parse(url).unwrap();
        let Err(GitFailure::Denied(m)) = remote.resolve(url, false).await else {
            panic!()
        };
        assert!(m.contains("--builtin-private-networks"), "{m}");
        assert!(m.contains("is internal address 127.0.0.1"), "{m}");
        assert!(remote.resolve(url, true).await.is_ok());
        let named = parse("https://localhost/r.git").unwrap();
        assert!(
            named
                .resolve("https://localhost/r.git", false)
                .await
                .is_err()
        );
        let addrs = named
            .resolve("https://localhost/r.git", true)
            .await
            .unwrap();
        assert!(named.pin(&addrs).unwrap().starts_with("localhost:443:"));
        assert_eq!(remote.pin(&addrs), None, "a literal address needs no pin");
    }
}
