//! Who started a run: the person behind a request, as Databricks Apps forwards it, or the app's
//! service principal. Display data, never identity: the headers are whatever a client sent when
//! no proxy sets them, so they are bounded, cleaned and only ever shown or filtered on.
use serde::{Deserialize, Serialize};

/// Longest value kept per field, in characters (an email address is at most 254).
pub const MAX_FIELD_CHARS: usize = 256;

/// `started_by`: `{ email, user_id, user_name }`, each `null` when unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedBy {
    pub email: Option<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
}

/// The forwarded headers Databricks Apps sets on every request (lower case).
pub const EMAIL_HEADER: &str = "x-forwarded-email";
pub const USER_HEADER: &str = "x-forwarded-user";
pub const USER_NAME_HEADER: &str = "x-forwarded-preferred-username";

/// What names the app's service principal when a call comes with no person behind it.
pub const SERVICE_PRINCIPAL_NAME: &str = "service principal";

impl StartedBy {
    /// From raw values (cleaned, see [`clean`]); `None` when none is left.
    pub fn new(
        email: Option<&str>,
        user_id: Option<&str>,
        user_name: Option<&str>,
    ) -> Option<StartedBy> {
        let who = StartedBy {
            email: email.and_then(clean),
            user_id: user_id.and_then(clean),
            user_name: user_name.and_then(clean),
        };
        (who.email.is_some() || who.user_id.is_some() || who.user_name.is_some()).then_some(who)
    }

    /// From a request's forwarded headers (`header(name)` with a lower-case name).
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<StartedBy> {
        StartedBy::new(
            header(EMAIL_HEADER),
            header(USER_HEADER),
            header(USER_NAME_HEADER),
        )
    }

    /// The app's service principal: its OAuth client id when the environment has one
    /// (`DATABRICKS_CLIENT_ID`, the id Databricks Apps gives the app's principal).
    pub fn service_principal(client_id: Option<&str>) -> StartedBy {
        StartedBy {
            email: None,
            user_id: client_id.and_then(clean),
            user_name: Some(SERVICE_PRINCIPAL_NAME.into()),
        }
    }

    /// From what JS passes: an object `{ email, user_id | userId, user_name | userName }`, or
    /// a string (an email when it has an `@`, else a user name). `None` for anything else, or
    /// when nothing is left once cleaned.
    pub fn from_json(v: &serde_json::Value) -> Option<StartedBy> {
        use serde_json::Value;
        match v {
            Value::String(s) if s.contains('@') => StartedBy::new(Some(s), None, None),
            Value::String(s) => StartedBy::new(None, None, Some(s)),
            Value::Object(o) => {
                let field =
                    |a: &str, b: &str| o.get(a).or_else(|| o.get(b)).and_then(Value::as_str);
                StartedBy::new(
                    field("email", "email"),
                    field("user_id", "userId"),
                    field("user_name", "userName"),
                )
            }
            _ => None,
        }
    }

    /// The value a "mine" filter matches on: the email, else the user id, else the user name.
    pub fn key(&self) -> Option<&str> {
        self.email
            .as_deref()
            .or(self.user_id.as_deref())
            .or(self.user_name.as_deref())
    }

    /// Whether `who` names this person (any of the three fields, exactly).
    pub fn matches(&self, who: &str) -> bool {
        [&self.email, &self.user_id, &self.user_name]
            .into_iter()
            .any(|f| f.as_deref() == Some(who))
    }

    /// As JSON text, `{"email":..,"user_id":..,"user_name":..}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".into())
    }
}

/// A header value as it may be kept: trimmed, control characters removed, at most
/// [`MAX_FIELD_CHARS`] characters; `None` when empty.
pub fn clean(raw: &str) -> Option<String> {
    let kept: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD_CHARS)
        .collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn from_forwarded_headers() {
        let h: HashMap<&str, &str> = [
            ("x-forwarded-email", " alice@example.com "),
            ("x-forwarded-user", "1234@5678"),
            ("x-forwarded-preferred-username", "alice"),
        ]
        .into();
        let who = StartedBy::from_headers(|n| h.get(n).copied()).unwrap();
        assert_eq!(who.email.as_deref(), Some("alice@example.com"));
        assert_eq!(who.user_id.as_deref(), Some("1234@5678"));
        assert_eq!(who.user_name.as_deref(), Some("alice"));
        assert_eq!(who.key(), Some("alice@example.com"));
        assert!(who.matches("alice") && who.matches("1234@5678") && !who.matches("bob"));
        assert_eq!(StartedBy::from_headers(|_| None), None);
        assert_eq!(StartedBy::from_headers(|_| Some("  \n ")), None);
    }

    #[test]
    fn hostile_values_are_bounded_and_cleaned() {
        let long = "a".repeat(10 * 1024);
        let who = StartedBy::new(
            Some(&long),
            Some("x\u{0}y\r\nz"),
            Some("'); DROP TABLE x; --"),
        )
        .unwrap();
        assert_eq!(who.email.as_ref().unwrap().chars().count(), MAX_FIELD_CHARS);
        assert_eq!(who.user_id.as_deref(), Some("xyz"));
        // Quotes and SQL are kept as text: they only ever travel as bound parameters and JSON.
        assert_eq!(who.user_name.as_deref(), Some("'); DROP TABLE x; --"));
        let json: serde_json::Value = serde_json::from_str(&who.to_json()).unwrap();
        assert_eq!(json["user_name"], "'); DROP TABLE x; --");
        // Multi-byte characters are cut at a character, never inside one.
        let wide = "é".repeat(1000);
        let who = StartedBy::new(Some(&wide), None, None).unwrap();
        assert_eq!(who.email.unwrap().chars().count(), MAX_FIELD_CHARS);
    }

    #[test]
    fn from_what_js_passes() {
        use serde_json::json;
        let a = StartedBy::from_json(&json!({ "email": "a@x", "userId": "1", "userName": "a" }));
        let b = StartedBy::from_json(&json!({ "email": "a@x", "user_id": "1", "user_name": "a" }));
        assert_eq!(a, b);
        assert_eq!(a.unwrap().user_id.as_deref(), Some("1"));
        assert_eq!(
            StartedBy::from_json(&json!("bob@x"))
                .unwrap()
                .email
                .as_deref(),
            Some("bob@x")
        );
        assert_eq!(
            StartedBy::from_json(&json!("bob"))
                .unwrap()
                .user_name
                .as_deref(),
            Some("bob")
        );
        assert_eq!(StartedBy::from_json(&json!(5)), None);
        assert_eq!(StartedBy::from_json(&json!({ "email": 5 })), None);
    }

    #[test]
    fn the_service_principal() {
        let sp = StartedBy::service_principal(Some("0e9c-client"));
        assert_eq!(sp.email, None);
        assert_eq!(sp.user_id.as_deref(), Some("0e9c-client"));
        assert_eq!(sp.user_name.as_deref(), Some(SERVICE_PRINCIPAL_NAME));
        assert_eq!(
            StartedBy::service_principal(None).key(),
            Some(SERVICE_PRINCIPAL_NAME)
        );
    }
}
