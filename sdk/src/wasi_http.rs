//! [`HttpRequest`] over the raw `wasi:http/outgoing-handler` bindings.
//!
//! Order matters: the request is handed to the host *before* its body is written, because
//! the host buffers only a few body chunks; writing a large body first would block forever.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::http::{HttpError, HttpRequest, HttpResponse, HttpUrl};

/// `blocking-write-and-flush` accepts at most this many bytes per call.
const WRITE_CHUNK: usize = 4096;
const READ_CHUNK: u64 = 64 * 1024;

pub(crate) fn send(request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let what = format!("{} {}", request.method, request.url);
    let url = HttpUrl::parse(&request.url).map_err(HttpError::InvalidRequest)?;

    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|error| match error {
                HeaderError::Forbidden => {
                    HttpError::Denied(format!("{what}: plugins may not set header {name:?}"))
                }
                HeaderError::InvalidSyntax => HttpError::InvalidRequest(format!(
                    "{what}: header {name:?} has an invalid name or value"
                )),
                HeaderError::Immutable => {
                    HttpError::Other(format!("{what}: the request headers are immutable"))
                }
            })?;
    }

    // A known length goes out as Content-Length rather than chunked: some receivers
    // refuse chunked bodies, and the host then checks the length it was promised.
    let method_has_body = matches!(
        request.method.to_ascii_uppercase().as_str(),
        "POST" | "PUT" | "PATCH"
    );
    if (method_has_body || !request.body.is_empty()) && request.header("content-length").is_none() {
        headers
            .append("content-length", request.body.len().to_string().as_bytes())
            .map_err(|_| HttpError::Other(format!("{what}: cannot set Content-Length")))?;
    }

    let outgoing = OutgoingRequest::new(headers);
    let invalid = |part: &str| HttpError::InvalidRequest(format!("{what}: invalid {part}"));
    outgoing
        .set_method(&method(&request.method))
        .map_err(|()| invalid("method"))?;
    let scheme = if url.scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    outgoing
        .set_authority(Some(&url.authority))
        .map_err(|()| invalid("authority"))?;
    outgoing
        .set_path_with_query(Some(&url.path_and_query))
        .map_err(|()| invalid("path"))?;
    let body = outgoing
        .body()
        .map_err(|()| HttpError::Other(format!("{what}: request body already taken")))?;

    let future = outgoing_handler::handle(outgoing, None).map_err(|code| error(&what, code))?;

    // A failed write usually means the host gave up on the request; its reason arrives
    // through the response future, so remember the write error and look there first.
    let mut write_error = None;
    {
        let stream = body
            .write()
            .map_err(|()| HttpError::Other(format!("{what}: request body stream unavailable")))?;
        for chunk in request.body.chunks(WRITE_CHUNK) {
            if let Err(error) = stream.blocking_write_and_flush(chunk) {
                write_error = Some(stream_error(&what, "writing the request body", error));
                break;
            }
        }
    }
    let finished = if write_error.is_none() {
        OutgoingBody::finish(body, None).map_err(|code| error(&what, code))
    } else {
        drop(body);
        Ok(())
    };

    let response = loop {
        match future.get() {
            Some(Ok(result)) => break result.map_err(|code| error(&what, code)),
            Some(Err(())) => {
                break Err(HttpError::Other(format!(
                    "{what}: the response was already taken"
                )));
            }
            None => future.subscribe().block(),
        }
    };
    let response = match (response, write_error, finished) {
        (Ok(response), None, Ok(())) => response,
        (Err(error), _, _) => return Err(error),
        (Ok(_), Some(error), _) | (Ok(_), None, Err(error)) => return Err(error),
    };
    read_response(&what, response)
}

fn read_response(what: &str, response: IncomingResponse) -> Result<HttpResponse, HttpError> {
    let status = response.status();
    let headers = {
        let fields = response.headers();
        fields
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect()
    };
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Other(format!("{what}: response body already taken")))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| HttpError::Other(format!("{what}: response body stream unavailable")))?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(bytes) => body.extend_from_slice(&bytes),
                Err(StreamError::Closed) => break,
                Err(error) => return Err(stream_error(what, "reading the response body", error)),
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn method(method: &str) -> Method {
    match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(method.to_string()),
    }
}

fn stream_error(what: &str, doing: &str, error: StreamError) -> HttpError {
    match error {
        StreamError::LastOperationFailed(io) => match wasip2::http::types::http_error_code(&io) {
            Some(code) => self::error(what, code),
            None => HttpError::Other(format!("{what}: {doing}: {}", io.to_debug_string())),
        },
        StreamError::Closed => {
            HttpError::Connection(format!("{what}: {doing}: the connection was closed"))
        }
    }
}

/// Maps WASI HTTP's error codes to the few cases a strategy decides on.
fn error(what: &str, code: ErrorCode) -> HttpError {
    use ErrorCode as E;
    let detail = |reason: &str| format!("{what}: {reason}");
    match code {
        E::HttpRequestDenied => HttpError::Denied(detail(
            "the origin is not granted to this plugin (or its scheme is not allowed)",
        )),
        E::DestinationIpProhibited => HttpError::Denied(detail(
            "the destination address is prohibited (loopback, private, link-local or metadata)",
        )),
        E::DnsTimeout => HttpError::Timeout(detail("DNS lookup timed out")),
        E::ConnectionTimeout => HttpError::Timeout(detail("connecting timed out")),
        E::ConnectionReadTimeout => HttpError::Timeout(detail("reading timed out")),
        E::ConnectionWriteTimeout => HttpError::Timeout(detail("writing timed out")),
        E::HttpResponseTimeout => HttpError::Timeout(detail("no response in time")),
        E::DnsError(payload) => HttpError::Connection(detail(&format!(
            "DNS lookup failed{}",
            payload
                .rcode
                .map(|rcode| format!(" ({rcode})"))
                .unwrap_or_default()
        ))),
        E::DestinationNotFound => HttpError::Connection(detail("host not found")),
        E::DestinationUnavailable => HttpError::Connection(detail("destination unavailable")),
        E::DestinationIpUnroutable => HttpError::Connection(detail("address unroutable")),
        E::ConnectionRefused => HttpError::Connection(detail("connection refused")),
        E::ConnectionTerminated => HttpError::Connection(detail("connection reset")),
        E::ConnectionLimitReached => HttpError::Connection(detail("connection limit reached")),
        E::TlsProtocolError => HttpError::Connection(detail("TLS protocol error")),
        E::TlsCertificateError => HttpError::Connection(detail("TLS certificate rejected")),
        E::TlsAlertReceived(payload) => HttpError::Connection(detail(&format!(
            "TLS alert received{}",
            payload
                .alert_message
                .map(|message| format!(": {message}"))
                .unwrap_or_default()
        ))),
        E::HttpRequestMethodInvalid => HttpError::InvalidRequest(detail("invalid method")),
        E::HttpRequestUriInvalid => HttpError::InvalidRequest(detail("invalid URL")),
        E::HttpRequestUriTooLong => HttpError::InvalidRequest(detail("URL too long")),
        E::HttpResponseBodySize(limit) => HttpError::Other(detail(&format!(
            "the response body exceeds the host's size limit{}",
            limit
                .map(|bytes| format!(" of {bytes} bytes"))
                .unwrap_or_default()
        ))),
        E::InternalError(Some(message)) => HttpError::Other(detail(&message)),
        other => HttpError::Other(detail(&format!("{other:?}"))),
    }
}
