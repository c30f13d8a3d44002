//! The one error type of the core. Every variant has a stable `code` and an HTTP status;
//! `public_message` is the only text allowed into a response body or an `ExecutionResult`.
use std::time::Duration;

pub type Result<T, E = JobsError> = std::result::Result<T, E>;

/// `JobsError::Network` cause of an answer whose body could not be used.
pub const INVALID_BODY: &str = "ERR_INVALID_BODY";

#[derive(Debug, Clone, thiserror::Error)]
pub enum JobsError {
    /// `jobs("nope")`: the key is not in the registry.
    #[error("Unknown job \"{key}\". Available jobs: {available}")]
    UnknownJob { key: String, available: String },

    /// The key exists but no valid numeric job id was configured for it.
    #[error(
        "Job \"{key}\" has no valid job id: set {env_var} to the numeric id of the Databricks job"
    )]
    JobIdMissing { key: String, env_var: String },

    /// Params failed the job's schema or its task-type mapping. Nothing was sent.
    #[error("Parameter validation failed for job \"{key}\": {detail}")]
    Validation { key: String, detail: String },

    /// A malformed request from the caller (bad run id, params that are not an object, ...).
    #[error("{0}")]
    InvalidRequest(String),

    /// The run exists but belongs to another job, or the thing asked for is not there.
    #[error("{0}")]
    NotFound(String),

    /// No usable workspace configuration or credentials. Names what to set, never a secret.
    #[error("{0}")]
    Config(String),

    /// A user-scoped call without a user token.
    #[error("{0}")]
    Unauthenticated(String),

    /// The Jobs API answered with an error. `upstream_message` is kept for logs by the
    /// developer's choice and never leaves the core through `public_message`.
    #[error("Databricks API error {status}{}", error_code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Api {
        status: u16,
        error_code: Option<String>,
        upstream_message: String,
        retry_after: Option<Duration>,
    },

    /// The request never got a usable HTTP answer. `cause` is a stable, Node-style code of
    /// what went wrong (`ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT`, `ENOTFOUND`, `ERR_TLS`,
    /// `ERR_INVALID_BODY`, `ENETWORK`); `detail` never carries a URL or a header.
    #[error("Could not reach the Databricks workspace: {detail}")]
    Network { cause: &'static str, detail: String },

    /// Polls of a run failed for longer than the outage bound (`outageTimeout`): the workspace
    /// is gone, not hiccuping. `cause` is the code of the last failure (a network code such as
    /// `ECONNREFUSED`, else the error's code), `last_status` the last HTTP status seen.
    #[error("The Databricks workspace could not be reached for {for_ms}ms while waiting for run {run_id}")]
    Unavailable {
        run_id: i64,
        for_ms: u64,
        cause: Option<String>,
        last_status: Option<u16>,
    },

    /// The workspace answered 2xx with something the Jobs API never sends (e.g. a run-now
    /// answer without a `run_id`).
    #[error("Unexpected answer from the Jobs API: {0}")]
    InvalidResponse(String),

    /// A call (including its retries) ran past its tier's timeout.
    #[error("Request timed out after {0}ms")]
    Timeout(u64),

    /// `runAndWait`/`watchRun` gave up waiting for a terminal state.
    #[error("Job run {run_id} polling timeout after {ms}ms")]
    PollTimeout { run_id: i64, ms: u64 },

    /// The caller aborted (AbortSignal, `break`, `return()`).
    #[error("The operation was aborted")]
    Aborted,

    #[error("Internal error: {0}")]
    Internal(String),
}

impl JobsError {
    /// A network failure (see [`JobsError::Network`]).
    pub fn network(cause: &'static str, detail: impl Into<String>) -> Self {
        JobsError::Network {
            cause,
            detail: detail.into(),
        }
    }

    /// An answer whose body is not what the API sends (not JSON, missing fields).
    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::network(INVALID_BODY, detail)
    }

    /// The stable code of what went wrong underneath, for a JS error's `cause.code`.
    pub fn cause_code(&self) -> Option<String> {
        match self {
            JobsError::Network { cause, .. } => Some(cause.to_string()),
            JobsError::Unavailable { cause, .. } => cause.clone(),
            _ => None,
        }
    }

    /// The upstream HTTP status behind an error, for a JS error's `cause.status`.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            JobsError::Api { status, .. } => Some(*status),
            JobsError::Unavailable { last_status, .. } => *last_status,
            _ => None,
        }
    }

    pub fn validation(key: &str, detail: impl Into<String>) -> Self {
        JobsError::Validation {
            key: key.to_string(),
            detail: detail.into(),
        }
    }

    /// Stable, machine-readable code.
    pub fn code(&self) -> String {
        match self {
            JobsError::UnknownJob { .. } => "UNKNOWN_JOB".into(),
            JobsError::JobIdMissing { .. } => "JOB_ID_MISSING".into(),
            JobsError::Validation { .. } => "VALIDATION_ERROR".into(),
            JobsError::InvalidRequest(_) => "INVALID_REQUEST".into(),
            JobsError::NotFound(_) => "NOT_FOUND".into(),
            JobsError::Config(_) => "CONFIG_ERROR".into(),
            JobsError::Unauthenticated(_) => "UNAUTHENTICATED".into(),
            JobsError::Api { error_code, .. } => error_code
                .clone()
                .unwrap_or_else(|| "UPSTREAM_ERROR".into()),
            JobsError::Network { .. } => "NETWORK_ERROR".into(),
            JobsError::Unavailable { .. } => "UPSTREAM_UNAVAILABLE".into(),
            JobsError::InvalidResponse(_) => "INVALID_RESPONSE".into(),
            JobsError::Timeout(_) => "TIMEOUT".into(),
            JobsError::PollTimeout { .. } => "POLL_TIMEOUT".into(),
            JobsError::Aborted => "ABORTED".into(),
            JobsError::Internal(_) => "INTERNAL_ERROR".into(),
        }
    }

    /// The HTTP status a route answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            JobsError::UnknownJob { .. } | JobsError::NotFound(_) => 404,
            JobsError::Validation { .. } | JobsError::InvalidRequest(_) => 400,
            JobsError::Unauthenticated(_) => 401,
            JobsError::JobIdMissing { .. } | JobsError::Config(_) | JobsError::Internal(_) => 500,
            JobsError::Api { status, .. } => *status,
            JobsError::Network { .. } | JobsError::InvalidResponse(_) => 502,
            JobsError::Unavailable { .. } => 503,
            JobsError::Timeout(_) | JobsError::PollTimeout { .. } => 504,
            JobsError::Aborted => 499,
        }
    }

    /// Text safe for a response body or an `ExecutionResult`: our own messages are kept
    /// (they name keys and env vars, never secrets), upstream failures become status text.
    pub fn public_message(&self) -> String {
        match self {
            JobsError::Api { status, .. } => status_text(*status).to_string(),
            JobsError::Network { .. } | JobsError::InvalidResponse(_) => {
                status_text(502).to_string()
            }
            other => other.to_string(),
        }
    }

    /// A mistake of the caller or of the configuration: the programmatic API rejects with it
    /// instead of resolving to `{ ok: false }`, since only the caller can fix it.
    pub fn rejects(&self) -> bool {
        matches!(
            self,
            JobsError::Validation { .. }
                | JobsError::UnknownJob { .. }
                | JobsError::JobIdMissing { .. }
                | JobsError::Config(_)
                | JobsError::InvalidRequest(_)
        )
    }

    /// The public message of a run-now that failed inside `runAndWait`: the caller's own
    /// mistakes as they are, anything else as `Failed to trigger job run: <status text>`.
    pub fn trigger_message(&self) -> String {
        if self.rejects() {
            self.public_message()
        } else {
            format!("Failed to trigger job run: {}", self.public_message())
        }
    }

    /// Whether a retry may succeed: 429, 503, 504 and connection failures.
    pub fn is_transient(&self) -> bool {
        match self {
            JobsError::Api { status, .. } => matches!(status, 429 | 503 | 504),
            JobsError::Network { .. } => true,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            JobsError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Standard reason phrase; the only upstream-derived text a caller ever sees.
pub fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        s if (400..500).contains(&s) => "Client Error",
        _ => "Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_message_never_reaches_public_text() {
        let e = JobsError::Api {
            status: 403,
            error_code: Some("PERMISSION_DENIED".into()),
            upstream_message: "token dapi123 lacks CAN_MANAGE_RUN on https://host".into(),
            retry_after: None,
        };
        assert_eq!(e.public_message(), "Forbidden");
        assert_eq!(e.code(), "PERMISSION_DENIED");
        assert_eq!(e.status(), 403);
        assert!(!e.to_string().contains("dapi123"));
    }

    #[test]
    fn transient_classification() {
        let api = |status| JobsError::Api {
            status,
            error_code: None,
            upstream_message: String::new(),
            retry_after: None,
        };
        assert!(api(429).is_transient());
        assert!(api(503).is_transient());
        assert!(api(504).is_transient());
        assert!(!api(500).is_transient());
        assert!(!api(400).is_transient());
        assert!(JobsError::network("ECONNRESET", "reset").is_transient());
    }

    #[test]
    fn poll_timeout_message_matches_contract() {
        let e = JobsError::PollTimeout {
            run_id: 42,
            ms: 1500,
        };
        assert_eq!(e.to_string(), "Job run 42 polling timeout after 1500ms");
    }
}
