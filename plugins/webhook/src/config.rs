//! The webhook strategy's configuration: where to POST, how to sign, extra headers.
//!
//! Two shapes are accepted, the flat one and the seed design's nested one:
//!
//! ```json
//! {"url": "https://hooks.example.com/promote", "secretRef": {"name": "hook-key"}, "headers": {"X-Team": "web"}}
//! {"webhook": {"url": "https://hooks.example.com/promote", "secretRef": {"name": "hook-key"}}}
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// The parsed configuration, whichever shape it came in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct Config {
    /// Where the promotion is POSTed.
    pub url: String,
    /// The signing key bound by the operator under this Secret's name. When set, the body
    /// is signed: `X-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub secret_ref: Option<SecretRef>,
    /// Extra headers sent with every request.
    pub headers: BTreeMap<String, String>,
}

/// A reference to a Secret, by name (the host binds its key; the plugin never sees it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Fields {
    url: String,
    #[serde(default)]
    secret_ref: Option<SecretRef>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl TryFrom<serde_json::Value> for Config {
    type Error = String;

    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        let fields = match value {
            serde_json::Value::Object(mut object) if object.contains_key("webhook") => {
                let nested = object.remove("webhook").unwrap_or_default();
                if let Some(other) = object.keys().next() {
                    return Err(format!(
                        "expected either {{\"url\": ...}} or {{\"webhook\": {{\"url\": ...}}}}, \
                         got \"webhook\" next to {other:?}"
                    ));
                }
                serde_json::from_value::<Fields>(nested)
                    .map_err(|error| format!("webhook: {error}"))?
            }
            flat => serde_json::from_value::<Fields>(flat).map_err(|error| error.to_string())?,
        };
        Ok(Config {
            url: fields.url,
            secret_ref: fields.secret_ref,
            headers: fields.headers,
        })
    }
}

/// Headers the strategy or the host sets, and why a Pipeline may not.
const RESERVED_HEADERS: &[(&str, &str)] = &[
    ("x-signature", "the strategy computes it from secretRef"),
    (
        "idempotency-key",
        "the strategy sets it to the promotion id",
    ),
    (
        "authorization",
        "credentials are added by the host for the origin the operator bound them to",
    ),
    ("host", "it comes from the url"),
    ("content-length", "it comes from the body"),
    ("connection", "it is a hop-by-hop header the host manages"),
    ("keep-alive", "it is a hop-by-hop header the host manages"),
    (
        "proxy-authorization",
        "it is a hop-by-hop header the host manages",
    ),
    (
        "proxy-connection",
        "it is a hop-by-hop header the host manages",
    ),
    ("te", "it is a hop-by-hop header the host manages"),
    ("trailer", "it is a hop-by-hop header the host manages"),
    (
        "transfer-encoding",
        "it is a hop-by-hop header the host manages",
    ),
    ("upgrade", "it is a hop-by-hop header the host manages"),
];

/// Every semantic problem with `config`, empty when it is fine.
pub fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(problem) = promoter_sdk::HttpUrl::parse(&config.url) {
        problems.push(format!("url: {problem}"));
    }
    if let Some(secret) = &config.secret_ref
        && secret.name.trim().is_empty()
    {
        problems.push("secretRef.name: expected the name of a Secret, got an empty string".into());
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in &config.headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            problems.push(format!(
                "headers: {name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
            ));
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if let Some((_, why)) = RESERVED_HEADERS
            .iter()
            .find(|(reserved, _)| *reserved == lower)
        {
            problems.push(format!("headers: {name:?} may not be configured: {why}"));
        }
        if let Some(first) = seen.insert(lower, name) {
            problems.push(format!(
                "headers: {first:?} and {name:?} name the same header"
            ));
        }
        if value
            .chars()
            .any(|c| (c.is_ascii_control() && c != '\t') || c == '\u{7f}')
        {
            problems.push(format!(
                "headers: the value of {name:?} contains a control character (line breaks are not allowed)"
            ));
        }
    }
    problems
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        serde_json::from_str(json).map_err(|error| error.to_string())
    }

    #[test]
    fn flat_and_nested_shapes_parse_to_the_same_config() {
        let flat = parse(r#"{"url": "https://h.example/x", "secretRef": {"name": "k"}}"#).unwrap();
        let nested =
            parse(r#"{"webhook": {"url": "https://h.example/x", "secretRef": {"name": "k"}}}"#)
                .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.secret_ref, Some(SecretRef { name: "k".into() }));
    }

    #[test]
    fn misspelled_field_is_named() {
        let error =
            parse(r#"{"url": "https://h.example/", "secretref": {"name": "k"}}"#).unwrap_err();
        assert!(error.contains("unknown field `secretref`"), "{error}");
    }

    #[test]
    fn nested_shape_missing_url_says_where() {
        let error = parse(r#"{"webhook": {"secretRef": {"name": "k"}}}"#).unwrap_err();
        assert!(error.contains("webhook: missing field `url`"), "{error}");
    }

    #[test]
    fn mixing_both_shapes_is_rejected() {
        let error =
            parse(r#"{"webhook": {"url": "https://a.example/"}, "url": "https://b.example/"}"#)
                .unwrap_err();
        assert!(error.contains("got \"webhook\" next to \"url\""), "{error}");
    }

    #[test]
    fn url_must_be_http_or_https_with_a_host() {
        for url in ["ftp://h.example/", "https://", "not a url"] {
            let config = parse(&format!(r#"{{"url": {url:?}}}"#)).unwrap();
            let problems = problems(&config);
            assert_eq!(problems.len(), 1, "{url}: {problems:?}");
            assert!(problems[0].starts_with("url: "), "{problems:?}");
        }
    }

    #[test]
    fn invalid_header_names_and_values_are_each_reported() {
        let config = parse(
            r#"{"url": "https://h.example/", "headers": {"Bad Name": "x", "X-Ok": "a\r\nInjected: 1", "x-team": "a", "X-Team": "b"}}"#,
        )
        .unwrap();
        let problems = problems(&config);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("\"Bad Name\" is not a valid header name"));
        assert!(problems[1].contains("\"X-Ok\" contains a control character"));
        assert!(
            problems[2].contains("\"X-Team\" and \"x-team\" name the same header"),
            "{problems:?}"
        );
    }
}
