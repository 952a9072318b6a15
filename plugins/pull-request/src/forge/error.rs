//! What went wrong talking to a forge, and whether waiting helps.
//!
//! Messages name the forge, the action, the repository and what the operator should change;
//! they quote the forge's own error message (from the response body) but never a request
//! header, so nothing the host added on the way out can leak into a Promotion record.

use std::fmt;
use std::time::Duration;

use promoter_sdk::{HttpError, HttpResponse, PromoteError};
use serde_json::Value;

use super::{ForgeKind, Repo};

/// How long to wait after a rate limit that says nothing about when it ends.
const RATE_LIMIT_DEFAULT: Duration = Duration::from_secs(60);
/// The longest forge message quoted in an error.
const EXCERPT_CHARS: usize = 300;

/// A failed forge call: what happened, whether a retry may succeed, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeError {
    pub message: String,
    /// True for rate limits, 5xx, timeouts and connection failures.
    pub retryable: bool,
    /// How long the forge asked to wait (rate limits, `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl ForgeError {
    /// A failure retrying will not fix: configuration, credentials, permissions.
    pub fn permanent(message: impl Into<String>) -> Self {
        ForgeError {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// A failure that may go away: the host retries with backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        ForgeError {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// The forge asked to wait this long before trying again.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }
}

impl fmt::Display for ForgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ForgeError {}

impl From<ForgeError> for PromoteError {
    fn from(error: ForgeError) -> Self {
        PromoteError {
            message: error.message,
            retryable: error.retryable,
            retry_after: error.retry_after,
        }
    }
}

impl From<PromoteError> for ForgeError {
    fn from(error: PromoteError) -> Self {
        ForgeError {
            message: error.message,
            retryable: error.retryable,
            retry_after: error.retry_after,
        }
    }
}

/// No answer came back: the host refused the request, or the network failed.
pub(crate) fn transport(repo: &Repo, action: &str, error: HttpError) -> ForgeError {
    let what = format!("{}: {action} in {}", repo.kind, repo.path());
    let origin = repo.api_origin();
    match error {
        HttpError::Denied(reason) => ForgeError::permanent(format!(
            "{what}: the host refused to send the request to {origin} ({reason}); grant the \
             plugin the origin {origin} and bind the forge token to it"
        )),
        HttpError::InvalidRequest(reason) => ForgeError::permanent(format!(
            "{what}: the request to {origin} is not valid ({reason}); check the repository URL \
             and apiBase"
        )),
        HttpError::Timeout(reason) => ForgeError::retryable(format!(
            "{what}: {origin} did not answer in time ({reason})"
        )),
        HttpError::Connection(reason) => {
            ForgeError::retryable(format!("{what}: could not reach {origin} ({reason})"))
        }
        HttpError::Other(reason) => {
            ForgeError::retryable(format!("{what}: the request to {origin} failed ({reason})"))
        }
    }
}

/// Where the token the host binds comes from, as an operator would look for it.
fn token_source(repo: &Repo) -> String {
    match &repo.secret {
        Some(name) => format!("the token in Secret {name}, the strategy's secretRef"),
        None => "the Secret's token".into(),
    }
}

/// An answer that is not the success the call expected.
pub(crate) fn status(repo: &Repo, action: &str, response: &HttpResponse) -> ForgeError {
    let what = format!("{}: {action} in {}", repo.kind, repo.path());
    let origin = repo.api_origin();
    let code = response.status;
    let said = excerpt_suffix(response);
    if is_rate_limited(response) {
        let delay = retry_after(response).unwrap_or(RATE_LIMIT_DEFAULT);
        return ForgeError::retryable(format!(
            "{what}: rate limited by {origin} (HTTP {code}); retrying in {}s{said}",
            delay.as_secs()
        ))
        .with_retry_after(delay);
    }
    match code {
        // Azure DevOps answers a credential it does not accept with 203 and a sign-in page.
        401 | 203 => ForgeError::permanent(format!(
            "{what}: the forge rejected the token bound to {origin} (HTTP {code}; check {}){said}",
            token_source(repo)
        )),
        403 => ForgeError::permanent(format!(
            "{what}: the token bound to {origin} lacks permission for this (HTTP 403; it needs \
             to read and write pull requests of {}){said}",
            repo.path()
        )),
        404 => ForgeError::permanent(format!(
            "{what}: repository {} not found at {} (or the token bound to {origin} cannot see \
             it) (HTTP 404){said}",
            repo.path(),
            repo.api_base
        )),
        300..=399 => ForgeError::permanent(format!(
            "{what}: {origin} redirected to {} (HTTP {code}); check apiBase, and the token bound \
             to {origin} (some forges redirect unauthenticated calls to a sign-in page)",
            response.header("Location").unwrap_or("nowhere")
        )),
        408 | 500..=599 => ForgeError {
            retry_after: retry_after(response),
            ..ForgeError::retryable(format!("{what}: {origin} answered HTTP {code}{said}"))
        },
        _ => ForgeError::permanent(format!("{what}: {origin} answered HTTP {code}{said}")),
    }
}

/// `: <the forge's message>` or an empty string.
pub(crate) fn excerpt_suffix(response: &HttpResponse) -> String {
    let said = forge_message(response);
    if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    }
}

/// The forge's own error message from the body: the `message`, `error` and `errors[].message`
/// fields of the forges' JSON errors, else the start of the text. At most
/// [`EXCERPT_CHARS`] characters.
pub(crate) fn forge_message(response: &HttpResponse) -> String {
    let mut parts = Vec::new();
    if let Ok(json) = serde_json::from_slice::<Value>(&response.body) {
        let mut push = |value: Option<&Value>| match value {
            Some(Value::String(s)) if !s.trim().is_empty() => parts.push(s.trim().to_string()),
            Some(Value::Null) | None => {}
            Some(Value::String(_)) => {}
            Some(other) => parts.push(other.to_string()),
        };
        push(json.get("message"));
        push(json.get("error"));
        push(json.get("error_description"));
        if let Some(errors) = json.get("errors").and_then(Value::as_array) {
            for error in errors {
                match error {
                    Value::String(_) => push(Some(error)),
                    _ => push(error.get("message")),
                }
            }
        }
    } else if !looks_like_html(response) {
        parts.push(
            response
                .text()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    let joined = parts.join("; ");
    if joined.chars().count() > EXCERPT_CHARS {
        let cut: String = joined.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

fn looks_like_html(response: &HttpResponse) -> bool {
    response
        .header("Content-Type")
        .is_some_and(|t| t.to_ascii_lowercase().contains("html"))
        || response.text().trim_start().starts_with('<')
}

/// 429, or a 403 that GitHub (`x-ratelimit-remaining: 0`, or a secondary rate limit) or a
/// proxy (`Retry-After`) marks as a rate limit.
fn is_rate_limited(response: &HttpResponse) -> bool {
    match response.status {
        429 => true,
        403 => {
            response
                .header("x-ratelimit-remaining")
                .is_some_and(|r| r.trim() == "0")
                || response.header("Retry-After").is_some()
                || forge_message(response)
                    .to_ascii_lowercase()
                    .contains("rate limit")
        }
        _ => false,
    }
}

/// How long the forge asked to wait: `Retry-After` (seconds or an HTTP date), else the reset
/// time of an exhausted window (`x-ratelimit-reset` on GitHub and Gitea, `RateLimit-Reset`
/// on GitLab: epoch seconds, measured against the response's `Date` since the plugin has no
/// clock; small values are taken as seconds from now). `None` when the answer says nothing.
pub(crate) fn retry_after(response: &HttpResponse) -> Option<Duration> {
    let now = response.header("Date").and_then(http_date);
    if let Some(value) = response.header("Retry-After") {
        let value = value.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        if let (Some(at), Some(now)) = (http_date(value), now) {
            return Some(Duration::from_secs(at.saturating_sub(now).max(1)));
        }
    }
    let exhausted = response
        .header("x-ratelimit-remaining")
        .or_else(|| response.header("RateLimit-Remaining"))
        .is_none_or(|r| r.trim() == "0");
    let reset = response
        .header("x-ratelimit-reset")
        .or_else(|| response.header("RateLimit-Reset"))?
        .trim()
        .parse::<u64>()
        .ok()?;
    if !exhausted {
        return None;
    }
    // An epoch timestamp (GitHub, GitLab) or, per the IETF draft, seconds from now.
    if reset < 1_000_000_000 {
        return Some(Duration::from_secs(reset.max(1)));
    }
    now.map(|now| Duration::from_secs(reset.saturating_sub(now).max(1)))
}

/// Seconds since the Unix epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the
/// form RFC 9110 requires senders to use.
pub(crate) fn http_date(text: &str) -> Option<u64> {
    let (_, rest) = text.trim().split_once(", ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, "GMT"] = fields[..] else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (Some(Some(h)), Some(Some(m)), Some(Some(s)), None) =
        (hms.next(), hms.next(), hms.next(), hms.next())
    else {
        return None;
    };
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), for years from 1970 on.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// True when a 4xx answer to a create says the pull request already exists.
pub(crate) fn says_already_exists(kind: ForgeKind, response: &HttpResponse) -> bool {
    let text = response.text();
    match (kind, response.status) {
        // "A pull request already exists for acme:promotion-…" inside a 422 "Validation Failed".
        (ForgeKind::GitHub, 422) => text.to_ascii_lowercase().contains("already exists"),
        // "Another open merge request already exists for this source branch: !7".
        (ForgeKind::GitLab, 409 | 422) => text.to_ascii_lowercase().contains("already exists"),
        // ErrPullRequestAlreadyExists.
        (ForgeKind::Gitea, 409) => true,
        (ForgeKind::BitbucketServer, 409) => text.contains("DuplicatePullRequestException"),
        // TF401179: An active pull request for the source and target branch already exists.
        (ForgeKind::AzureDevOps, 409) => {
            text.contains("TF401179") || text.contains("GitPullRequestExistsException")
        }
        _ => false,
    }
}
