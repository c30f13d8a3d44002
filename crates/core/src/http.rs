//! One HTTP exchange and what is read off it: status, `Retry-After` and body, or a network
//! error whose text carries no URL and no header. Used by the Jobs API client and by the OAuth
//! token fetch.
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::{JobsError, Result};

/// What an exchange read off the answer.
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The server's clock (`Date`), ms since the Unix epoch.
    pub date: Option<i64>,
    pub body: Bytes,
}

/// Sends `request` and reads the whole answer: status, `Retry-After`, `Date` and body. A
/// failure to send or read is a network error described as `what`.
pub(crate) async fn exchange(request: reqwest::RequestBuilder, what: &str) -> Result<Answer> {
    let resp = request.send().await.map_err(|e| network_error(what, &e))?;
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let date = parse_date(resp.headers());
    let body = resp.bytes().await.map_err(|e| network_error(what, &e))?;
    Ok(Answer {
        status,
        retry_after,
        date,
        body,
    })
}

/// The `Date` header as ms since the Unix epoch (whole seconds: HTTP dates have no finer unit).
pub fn parse_date(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    let v = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    when.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// A transport error without the URL (which could carry query values) or any header: a stable
/// cause code and the innermost description (e.g. "connection refused").
pub(crate) fn network_error(context: &str, e: &reqwest::Error) -> JobsError {
    let mut cause = if e.is_timeout() {
        "ETIMEDOUT"
    } else if e.is_body() || e.is_decode() {
        crate::error::INVALID_BODY
    } else {
        "ENETWORK"
    };
    let mut detail = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            cause = io_cause(io).unwrap_or(cause);
        }
        let text = s.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            cause = "ENOTFOUND";
        } else if text.contains("certificate") || text.to_ascii_lowercase().contains("tls") {
            cause = "ERR_TLS";
        }
        if !text.contains("://") {
            detail = text;
        }
        src = s.source();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read"
    } else {
        "request failed"
    };
    if detail.is_empty() {
        JobsError::network(cause, format!("{context}: {kind}"))
    } else {
        JobsError::network(cause, format!("{context}: {kind} ({detail})"))
    }
}

/// The Node-style code of an I/O error underneath a request.
fn io_cause(e: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    Some(match e.kind() {
        ErrorKind::ConnectionRefused => "ECONNREFUSED",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "ECONNRESET"
        }
        ErrorKind::TimedOut => "ETIMEDOUT",
        ErrorKind::UnexpectedEof => "ECONNRESET",
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "EHOSTUNREACH",
        _ => return None,
    })
}

/// The `Retry-After` header of an answer, if it has a usable one.
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    parse_retry_after_value(v, SystemTime::now())
}

/// `Retry-After` as seconds (an integer, or a decimal some servers send) or an HTTP-date
/// (IMF-fixdate, RFC 850 or asctime); a date in the past means now.
pub fn parse_retry_after_value(v: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parsing() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784111777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after_value("7", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after_value("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after_value("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after_value("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after_value("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        // RFC 850 and asctime dates too.
        assert_eq!(
            parse_retry_after_value("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after_value("Sun Nov  6 08:49:47 1994", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after_value("soon", now), None);
        assert_eq!(parse_retry_after_value("-3", now), None);
    }
}
