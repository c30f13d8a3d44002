//! Where the ledger lives, from the plugin's `ledger` option and the environment.
//!
//! - `ledger: false`: in memory (this process only).
//! - `ledger` absent (or `true`): PostgreSQL when the Lakebase settings Databricks Apps gives an
//!   app with a database are present, as AppKit's own cache does: `PGHOST` and `PGDATABASE`, with
//!   `LAKEBASE_ENDPOINT` (an OAuth credential minted per connection) or `PGPASSWORD`; else in
//!   memory.
//! - `ledger: { connectionString }` or `{ host, port, database, user, password, sslMode,
//!   endpoint }`: that PostgreSQL; a field not given falls back to its environment variable
//!   (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER` else `DATABRICKS_CLIENT_ID`, `PGPASSWORD`,
//!   `PGSSLMODE`, `LAKEBASE_ENDPOINT`).
//!
//! A mistake in the option is a `Config` error that names the field and never shows a value
//! that may hold a credential (a connection string, a password).
use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::config::SslMode;

use crate::auth::Secret;
use crate::error::{JobsError, Result};

/// The `ledger` option as given (checked, not yet resolved against the environment).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LedgerOption {
    /// Absent or `true`: PostgreSQL when the environment has Lakebase settings.
    #[default]
    Auto,
    /// `false`.
    Off,
    /// An object.
    Postgres(Box<PgOption>),
}

/// The fields of `ledger: { ... }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgOption {
    pub connection_string: Option<Secret>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub ssl_mode: Option<SslMode>,
    pub endpoint: Option<String>,
    /// How long a poll lease lasts (`leaseMs`), see `fleet`.
    pub lease_ms: Option<u64>,
}

/// A resolved PostgreSQL ledger.
#[derive(Clone)]
pub struct PgSettings {
    /// Host, port, database, user and TLS mode; never a password (see `password`).
    pub config: tokio_postgres::Config,
    pub password: Option<Secret>,
    /// A Lakebase endpoint: the password is a credential minted for it.
    pub endpoint: Option<String>,
    /// See [`PgOption::lease_ms`]; `None`: the default (a few poll intervals).
    pub lease: Option<Duration>,
    /// What the ledger is, for logs: `host:port/database` (no user, no password).
    pub described: String,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("at", &self.described)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Where the ledger lives.
#[derive(Debug, Clone)]
pub enum LedgerSettings {
    Memory,
    Postgres(Box<PgSettings>),
}

fn config_error(field: &str, problem: impl std::fmt::Display) -> JobsError {
    JobsError::Config(format!("Invalid jobs config: ledger{field} {problem}"))
}

fn ssl_mode(text: &str) -> Option<SslMode> {
    match text.trim().to_ascii_lowercase().as_str() {
        "disable" => Some(SslMode::Disable),
        "prefer" | "allow" => Some(SslMode::Prefer),
        // verify-ca and verify-full verify, as `require` does here (see `tls.rs`).
        "require" | "verify-ca" | "verify-full" => Some(SslMode::Require),
        _ => None,
    }
}

impl LedgerOption {
    /// The `ledger` option from the JS config.
    pub fn from_json(v: Option<&Value>) -> Result<LedgerOption> {
        let map = match v {
            None | Some(Value::Null) | Some(Value::Bool(true)) => return Ok(LedgerOption::Auto),
            Some(Value::Bool(false)) => return Ok(LedgerOption::Off),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(config_error("", "must be false or an object")),
        };
        let text = |name: &str| -> Result<Option<String>> {
            match map.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                Some(_) => Err(config_error(
                    &format!(".{name}"),
                    "must be a non-empty string",
                )),
            }
        };
        let known = [
            "connectionString",
            "host",
            "port",
            "database",
            "user",
            "password",
            "sslMode",
            "endpoint",
            "leaseMs",
        ];
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(config_error(
                "",
                format!(
                    "has an unknown field {unknown:?} (known: {})",
                    known.join(", ")
                ),
            ));
        }
        let connection_string = text("connectionString")?;
        if let Some(cs) = &connection_string {
            cs.parse::<tokio_postgres::Config>().map_err(|_| {
                config_error(
                    ".connectionString",
                    "is not a PostgreSQL connection string (postgresql://user@host:port/db or key=value pairs)",
                )
            })?;
        }
        let port = match map.get("port") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0)
                    .ok_or_else(|| config_error(".port", format!("must be 1-65535, got {n}")))?,
            ),
            Some(_) => return Err(config_error(".port", "must be a number")),
        };
        let ssl_mode = match text("sslMode")? {
            None => None,
            Some(mode) => Some(ssl_mode(&mode).ok_or_else(|| {
                config_error(
                    ".sslMode",
                    format!("must be disable, prefer or require, got {mode:?}"),
                )
            })?),
        };
        let lease_ms = match map.get("leaseMs") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f.is_finite() && f >= 100.0) => {
                n.as_f64().map(|f| f.round() as u64)
            }
            Some(_) => {
                return Err(config_error(
                    ".leaseMs",
                    "must be a number of milliseconds >= 100",
                ))
            }
        };
        Ok(LedgerOption::Postgres(Box::new(PgOption {
            connection_string: connection_string.map(Secret::new),
            host: text("host")?,
            port,
            database: text("database")?,
            user: text("user")?,
            password: text("password")?.map(Secret::new),
            ssl_mode,
            endpoint: text("endpoint")?,
            lease_ms,
        })))
    }

    /// Where the ledger lives with this option and `env`. An environment that names a database
    /// half-way (say `PGPORT=abc`) is an error for the caller to report; the ledger then stays
    /// in memory.
    pub fn resolve(&self, env: &HashMap<String, String>) -> Result<LedgerSettings> {
        let var = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let given = match self {
            LedgerOption::Off => return Ok(LedgerSettings::Memory),
            LedgerOption::Auto => {
                let has_credential =
                    var("LAKEBASE_ENDPOINT").is_some() || var("PGPASSWORD").is_some();
                if var("PGHOST").is_none() || var("PGDATABASE").is_none() || !has_credential {
                    return Ok(LedgerSettings::Memory);
                }
                PgOption::default()
            }
            LedgerOption::Postgres(given) => (**given).clone(),
        };
        let mut config = match &given.connection_string {
            Some(cs) => cs.expose().parse::<tokio_postgres::Config>().map_err(|_| {
                config_error(".connectionString", "is not a PostgreSQL connection string")
            })?,
            None => tokio_postgres::Config::new(),
        };
        // A password inside a connection string is kept apart, like any other.
        let mut password = config
            .get_password()
            .map(|p| Secret::new(String::from_utf8_lossy(p).into_owned()));
        if given.connection_string.is_none() {
            let host = given
                .host
                .clone()
                .or_else(|| var("PGHOST").map(str::to_string))
                .ok_or_else(|| config_error(".host", "is required (or PGHOST)"))?;
            config.host(&host);
            let port = match given.port {
                Some(p) => p,
                None => match var("PGPORT") {
                    None => 5432,
                    Some(p) => p
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| config_error(".port", "(PGPORT) must be 1-65535"))?,
                },
            };
            config.port(port);
            let database = given
                .database
                .clone()
                .or_else(|| var("PGDATABASE").map(str::to_string))
                .ok_or_else(|| config_error(".database", "is required (or PGDATABASE)"))?;
            config.dbname(&database);
            if let Some(user) = given
                .user
                .clone()
                .or_else(|| var("PGUSER").map(str::to_string))
                .or_else(|| var("DATABRICKS_CLIENT_ID").map(str::to_string))
            {
                config.user(&user);
            }
            password = given
                .password
                .clone()
                .or_else(|| var("PGPASSWORD").map(Secret::new));
            let mode = match given.ssl_mode {
                Some(mode) => mode,
                None => match var("PGSSLMODE") {
                    None => SslMode::Require,
                    Some(m) => ssl_mode(m).ok_or_else(|| {
                        config_error(".sslMode", "(PGSSLMODE) must be disable, prefer or require")
                    })?,
                },
            };
            config.ssl_mode(mode);
        } else if let Some(mode) = given.ssl_mode {
            config.ssl_mode(mode);
        }
        let endpoint = given
            .endpoint
            .clone()
            .or_else(|| var("LAKEBASE_ENDPOINT").map(str::to_string));
        // Never kept in the config itself: connections take it from `Credentials`.
        let mut clean = tokio_postgres::Config::new();
        copy_without_password(&config, &mut clean);
        let described = describe(&clean);
        Ok(LedgerSettings::Postgres(Box::new(PgSettings {
            config: clean,
            password,
            endpoint,
            lease: given.lease_ms.map(Duration::from_millis),
            described,
        })))
    }
}

/// Everything of `from` but its password.
fn copy_without_password(from: &tokio_postgres::Config, to: &mut tokio_postgres::Config) {
    for host in from.get_hosts() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => {
                to.host(h);
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => {
                to.host_path(p);
            }
        }
    }
    for port in from.get_ports() {
        to.port(*port);
    }
    if let Some(db) = from.get_dbname() {
        to.dbname(db);
    }
    if let Some(user) = from.get_user() {
        to.user(user);
    }
    to.ssl_mode(from.get_ssl_mode());
    if let Some(t) = from.get_connect_timeout() {
        to.connect_timeout(*t);
    }
    to.application_name(from.get_application_name().unwrap_or("appkit-jobs"));
}

/// `host:port/database`, for logs.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

/// The option's JSON for tests.
#[cfg(test)]
fn option(v: Value) -> Result<LedgerOption> {
    LedgerOption::from_json(Some(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::env;
    use serde_json::json;

    fn pg(settings: LedgerSettings) -> PgSettings {
        match settings {
            LedgerSettings::Postgres(s) => *s,
            LedgerSettings::Memory => panic!("expected PostgreSQL"),
        }
    }

    #[test]
    fn auto_turns_on_with_the_lakebase_settings_only() {
        let lakebase = env(&[
            ("PGHOST", "instance-x.database.cloud.databricks.com"),
            ("PGDATABASE", "databricks_postgres"),
            ("DATABRICKS_CLIENT_ID", "sp-client-id"),
            ("LAKEBASE_ENDPOINT", "projects/p/branches/b/endpoints/e"),
        ]);
        let s = pg(LedgerOption::Auto.resolve(&lakebase).unwrap());
        assert_eq!(
            s.endpoint.as_deref(),
            Some("projects/p/branches/b/endpoints/e")
        );
        assert_eq!(s.config.get_user(), Some("sp-client-id"));
        assert_eq!(s.config.get_ports(), &[5432]);
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(s.password, None);
        assert_eq!(
            s.described,
            "instance-x.database.cloud.databricks.com:5432/databricks_postgres"
        );
        // Native password auth turns it on too.
        let native = env(&[("PGHOST", "h"), ("PGDATABASE", "d"), ("PGPASSWORD", "pw")]);
        let s = pg(LedgerOption::Auto.resolve(&native).unwrap());
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("pw"));
        // Half the settings, or none: in memory.
        for partial in [
            env(&[("PGHOST", "h"), ("PGDATABASE", "d")]),
            env(&[("PGHOST", "h"), ("PGPASSWORD", "pw")]),
            env(&[]),
        ] {
            assert!(matches!(
                LedgerOption::Auto.resolve(&partial).unwrap(),
                LedgerSettings::Memory
            ));
        }
        // `false` wins over the environment.
        assert!(matches!(
            option(json!(false)).unwrap().resolve(&lakebase).unwrap(),
            LedgerSettings::Memory
        ));
    }

    #[test]
    fn explicit_fields_and_connection_strings() {
        let o = option(
            json!({ "host": "db", "port": 6543, "database": "app", "user": "u",
            "password": "secret", "sslMode": "disable", "leaseMs": 1500 }),
        )
        .unwrap();
        let s = pg(o.resolve(&env(&[])).unwrap());
        assert_eq!(s.described, "db:6543/app");
        assert_eq!(s.config.get_user(), Some("u"));
        assert_eq!(s.config.get_password(), None, "never in the config");
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("secret"));
        assert_eq!(s.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(s.lease, Some(Duration::from_millis(1500)));
        assert!(!format!("{s:?}").contains("secret"));

        let o = option(json!({ "connectionString": "postgresql://me:pw@127.0.0.1:5433/ledger?sslmode=disable" }))
            .unwrap();
        let s = pg(o.resolve(&env(&[("PGHOST", "ignored")])).unwrap());
        assert_eq!(s.described, "127.0.0.1:5433/ledger");
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(s.config.get_password(), None);
        assert_eq!(s.config.get_ssl_mode(), SslMode::Disable);
        // Fields fall back to the environment.
        let o = option(json!({ "endpoint": "projects/p/branches/b/endpoints/e" })).unwrap();
        let s = pg(o
            .resolve(&env(&[
                ("PGHOST", "h"),
                ("PGDATABASE", "d"),
                ("PGPORT", "6000"),
            ]))
            .unwrap());
        assert_eq!(s.described, "h:6000/d");
    }

    #[test]
    fn mistakes_name_the_field_and_never_the_secret() {
        for (v, says) in [
            (json!("yes"), "ledger must be false or an object"),
            (json!({ "port": 70000 }), "ledger.port must be 1-65535"),
            (json!({ "sslMode": "sometimes" }), "ledger.sslMode must be"),
            (json!({ "hots": "db" }), "unknown field \"hots\""),
            (json!({ "leaseMs": 5 }), "ledger.leaseMs"),
            (
                json!({ "password": 5 }),
                "ledger.password must be a non-empty string",
            ),
        ] {
            let e = option(v).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let e = option(json!({ "connectionString": "postgresql://me:hunter2@[bad" }))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ledger.connectionString") && !e.contains("hunter2"),
            "{e}"
        );
        let e = option(json!({}))
            .unwrap()
            .resolve(&env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ledger.host is required (or PGHOST)"), "{e}");
        let e = LedgerOption::Auto
            .resolve(&env(&[
                ("PGHOST", "h"),
                ("PGDATABASE", "d"),
                ("PGPASSWORD", "pw"),
                ("PGPORT", "x"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGPORT") && !e.contains("pw"), "{e}");
    }
}
