//! Outbound HTTP as a plugin sees it: one request in, one fully read response out.
//!
//! The host polices every request (granted origins only, HTTPS unless allowed otherwise,
//! no private or metadata addresses, timeouts, a response size cap) and adds the
//! credentials the operator bound to the origin. A refusal comes back as
//! [`HttpError::Denied`].

/// An outbound HTTP request. Build one with [`HttpRequest::get`] or [`HttpRequest::post`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ... (upper case).
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in the order they are sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A request with the given method, no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        HttpRequest {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).with_body(body)
    }

    /// Adds a header (a repeated name sends the header twice).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A response, body read to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text; invalid UTF-8 is replaced with U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Retry-After` in delta-seconds. An HTTP-date gives `None`: a plugin reads no
    /// trustworthy clock, and the host's backoff applies instead.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let value = self.header("retry-after")?.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        value.parse().ok().map(std::time::Duration::from_secs)
    }

    /// The start of the body on one line, whitespace collapsed, at most `max_chars`
    /// characters (a cut ends with `…`): what an error message can quote.
    pub fn excerpt(&self, max_chars: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if collapsed.chars().count() <= max_chars {
            collapsed
        } else {
            let mut cut: String = collapsed
                .chars()
                .take(max_chars.saturating_sub(1))
                .collect();
            cut.push('…');
            cut
        }
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The host refused to send the request: the origin is not granted to this plugin,
    /// the scheme is not allowed, the address is forbidden (loopback, private, metadata)
    /// or a header may not be set by plugins. Retrying will not help.
    #[error("the host refused the request: {0}")]
    Denied(String),
    /// No answer in time (DNS, connect, or the response itself).
    #[error("the request timed out: {0}")]
    Timeout(String),
    /// Could not reach the server: refused, reset, DNS failure, TLS failure.
    #[error("could not reach the server: {0}")]
    Connection(String),
    /// The request itself is malformed (bad URL, bad header); fix the plugin or its config.
    #[error("the request is not valid: {0}")]
    InvalidRequest(String),
    /// Anything else (protocol errors, a response over the host's size limit).
    #[error("the request failed: {0}")]
    Other(String),
}

/// An absolute `http://` or `https://` URL split the way WASI HTTP wants it.
///
/// Deliberately small: it checks the scheme, the port and that there is a host, and
/// normalises nothing but the scheme's case and an empty path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `http` or `https`, lower case.
    pub scheme: String,
    /// `host` or `host:port`.
    pub authority: String,
    /// Starts with `/` (`/` when the URL has no path). The fragment is dropped.
    pub path_and_query: String,
}

impl HttpUrl {
    /// Splits `url`; `Err` says what was expected and what came.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{url:?} is not an absolute URL: expected http://host/... or https://host/..."
            ));
        };
        let scheme = if scheme.eq_ignore_ascii_case("https") {
            "https"
        } else if scheme.eq_ignore_ascii_case("http") {
            "http"
        } else {
            return Err(format!(
                "{url:?} has scheme {scheme:?}: expected http or https"
            ));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(end);
        if authority.contains('@') {
            return Err(format!(
                "{url:?} carries credentials: leave them out, the host adds the credentials bound to the origin"
            ));
        }
        if let Some(bad) = authority
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '\\' | '<' | '>' | '"'))
        {
            return Err(format!("{url:?} has {bad:?} in its host"));
        }
        // `host:port`, `[v6]:port`, `host` or `[v6]`.
        let (host, port) = match authority.rfind(':') {
            Some(colon) if !authority[colon..].contains(']') => {
                (&authority[..colon], Some(&authority[colon + 1..]))
            }
            _ => (authority, None),
        };
        if let Some(port) = port
            && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("{url:?} has port {port:?}: expected a number"));
        }
        if host.is_empty() || host == "[]" {
            return Err(format!("{url:?} has no host"));
        }
        if path_and_query
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{url:?} has whitespace or control characters in its path: percent-encode them"
            ));
        }
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query.to_string()
        } else {
            format!("/{path_and_query}")
        };
        Ok(HttpUrl {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            path_and_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_url_splits_into_scheme_authority_and_path() {
        let url = HttpUrl::parse("https://hooks.example.com:8443/promote?env=prod#top").unwrap();
        assert_eq!(url.scheme, "https");
        assert_eq!(url.authority, "hooks.example.com:8443");
        assert_eq!(url.path_and_query, "/promote?env=prod");
    }

    #[test]
    fn url_without_path_gets_root_path() {
        let url = HttpUrl::parse("HTTP://example.com").unwrap();
        assert_eq!(url.scheme, "http");
        assert_eq!(url.path_and_query, "/");
    }

    #[test]
    fn query_without_path_gets_root_path() {
        let url = HttpUrl::parse("https://example.com?a=1").unwrap();
        assert_eq!(url.path_and_query, "/?a=1");
    }

    #[test]
    fn ipv6_literal_host_is_accepted() {
        let url = HttpUrl::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(url.authority, "[::1]:8080");
    }

    #[test]
    fn urls_a_plugin_cannot_send_are_rejected_with_the_reason() {
        for (url, reason) in [
            ("ftp://example.com/", "expected http or https"),
            ("example.com/hook", "not an absolute URL"),
            ("https:///hook", "has no host"),
            ("https://user:pw@example.com/", "carries credentials"),
            ("https://example.com:http/", "expected a number"),
            ("https://example.com/a b", "percent-encode"),
        ] {
            let error = HttpUrl::parse(url).expect_err(url);
            assert!(error.contains(reason), "{url}: {error}");
        }
    }

    #[test]
    fn header_lookup_ignores_case() {
        let response = HttpResponse::new(503).with_header("Retry-After", "7");
        assert_eq!(response.header("retry-after"), Some("7"));
        assert!(!response.is_success());
    }
}

#[cfg(test)]
mod response_tests {
    use super::HttpResponse;
    use std::time::Duration;

    #[test]
    fn retry_after_is_read_in_seconds_and_an_http_date_is_ignored() {
        let r = HttpResponse::new(429).with_header("Retry-After", " 7 ");
        assert_eq!(r.retry_after(), Some(Duration::from_secs(7)));
        let r = HttpResponse::new(429).with_header("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT");
        assert_eq!(r.retry_after(), None);
    }

    #[test]
    fn an_excerpt_is_one_line_and_cut_with_an_ellipsis() {
        let r = HttpResponse::new(500).with_body("  a\n  b\tc  ");
        assert_eq!(r.excerpt(10), "a b c");
        let r = HttpResponse::new(500).with_body("abcdefghij");
        assert_eq!(r.excerpt(5), "abcd…");
    }
}
