//! HTTP pieces the Jobs API and the control API share: JSON answers, the Databricks error
//! body, and the workspace's `Date` header.
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

/// A Databricks error: `{error_code, message}` with a status.
#[derive(Debug)]
pub(crate) struct ApiErr {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

pub(crate) fn invalid(message: impl Into<String>) -> ApiErr {
    ApiErr {
        status: 400,
        code: "INVALID_PARAMETER_VALUE",
        message: message.into(),
    }
}

impl ApiErr {
    pub(crate) fn response(&self) -> Response {
        if self.code == "OAUTH" {
            // OAuth errors carry their own body (RFC 6749), kept as text in `message`.
            let body: Value = serde_json::from_str(&self.message).unwrap_or(Value::Null);
            return json_response(self.status, &body);
        }
        json_response(
            self.status,
            &json!({"error_code": self.code, "message": self.message}),
        )
    }
}

pub(crate) fn json_response(status: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Sets `Date` (an HTTP date of the virtual clock). hyper writes its own, real-time `Date`
/// only when the answer has none, so this one is what the client sees.
pub(crate) fn set_date(r: &mut Response, date: &str) {
    if let Ok(v) = HeaderValue::from_str(date) {
        r.headers_mut().insert(header::DATE, v);
    }
}
