//! Where the workspace is and how the service principal signs in: the environment map first,
//! then a `~/.databrickscfg` profile (a small strict INI parser). Errors are
//! [`JobsError::Config`] messages that name what to set, never a secret or a host's user-info.
use std::collections::HashMap;
use std::path::PathBuf;

use url::Url;

use super::Secret;
use crate::{JobsError, Result};

/// How the service principal authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A personal access token, sent as is.
    Pat(Secret),
    /// OAuth machine-to-machine: client credentials exchanged for short-lived tokens.
    OAuthM2m {
        client_id: String,
        client_secret: Secret,
    },
}

/// The resolved configuration: the host and the service principal's credentials, each either
/// usable or the one clear error to report when it is needed.
#[derive(Clone, Debug)]
pub struct ResolvedConfig {
    pub host: Result<Url>,
    pub credentials: Result<Credentials>,
    /// The `~/.databrickscfg` profile that contributed values, if any.
    pub profile: Option<String>,
}

const HOST_HINT: &str = "set DATABRICKS_HOST to the workspace URL (e.g. https://my-workspace.cloud.databricks.com), or `host` in a ~/.databrickscfg profile";
const CREDS_HINT: &str = "set DATABRICKS_TOKEN (personal access token), or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET (OAuth M2M), or `token` / `client_id` and `client_secret` in a ~/.databrickscfg profile";

/// Resolves host and credentials from an environment map (not `std::env`, so tests and the JS
/// side can pass their own) and the config file it points to. Env values win over the file.
pub fn resolve_config(env: &HashMap<String, String>) -> ResolvedConfig {
    let (profile_name, profile) = match load_profile(env) {
        Ok(p) => p,
        Err(e) => {
            return ResolvedConfig {
                host: Err(e.clone()),
                credentials: Err(e),
                profile: None,
            }
        }
    };
    let get = |env_key: &str, file_key: &str| -> Option<String> {
        non_empty(env.get(env_key).map(String::as_str))
            .or_else(|| non_empty(profile.get(file_key).map(String::as_str)))
            .map(str::to_string)
    };

    let host = match get("DATABRICKS_HOST", "host") {
        None => Err(JobsError::Config(format!(
            "Databricks host is not configured: {HOST_HINT}"
        ))),
        Some(h) => normalize_host(&h),
    };

    let token = get("DATABRICKS_TOKEN", "token");
    let client_id = get("DATABRICKS_CLIENT_ID", "client_id");
    let client_secret = get("DATABRICKS_CLIENT_SECRET", "client_secret");
    let auth_type = get("DATABRICKS_AUTH_TYPE", "auth_type").map(|s| s.to_ascii_lowercase());

    let pat = || {
        match &token {
        Some(t) => Ok(Credentials::Pat(Secret::new(t.clone()))),
        None => Err(JobsError::Config(
            "DATABRICKS_AUTH_TYPE is pat but no token is configured: set DATABRICKS_TOKEN (or `token` in the ~/.databrickscfg profile)".into(),
        )),
    }
    };
    let m2m = || {
        match (&client_id, &client_secret) {
        (Some(id), Some(secret)) => {
            Ok(Credentials::OAuthM2m { client_id: id.clone(), client_secret: Secret::new(secret.clone()) })
        }
        (Some(_), None) => Err(JobsError::Config(
            "OAuth M2M needs a client secret: set DATABRICKS_CLIENT_SECRET (or `client_secret` in the ~/.databrickscfg profile) next to DATABRICKS_CLIENT_ID".into(),
        )),
        (None, Some(_)) => Err(JobsError::Config(
            "OAuth M2M needs a client id: set DATABRICKS_CLIENT_ID (or `client_id` in the ~/.databrickscfg profile) next to DATABRICKS_CLIENT_SECRET".into(),
        )),
        (None, None) => Err(JobsError::Config(format!("Databricks credentials are not configured: {CREDS_HINT}"))),
    }
    };

    let credentials = match auth_type.as_deref() {
        Some("pat") => pat(),
        Some("oauth-m2m") => m2m(),
        Some(other) => Err(JobsError::Config(format!(
            "Unsupported DATABRICKS_AUTH_TYPE \"{}\": use \"pat\" or \"oauth-m2m\", or leave it unset",
            // auth types are plain words; anything else is not echoed back
            if other.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') && other.len() <= 40 { other } else { "?" }
        ))),
        None if token.is_some() => pat(),
        None if client_id.is_some() || client_secret.is_some() => m2m(),
        None => Err(JobsError::Config(format!("Databricks credentials are not configured: {CREDS_HINT}"))),
    };

    ResolvedConfig {
        host,
        credentials,
        profile: profile_name,
    }
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// `my-ws.cloud.databricks.com` -> `https://my-ws.cloud.databricks.com/`. `http://` is kept when
/// given explicitly (a local emulator). Path, query and user-info are dropped.
pub fn normalize_host(raw: &str) -> Result<Url> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let bad = || {
        JobsError::Config(format!(
            "DATABRICKS_HOST is not a valid workspace URL: {HOST_HINT}"
        ))
    };
    let url = Url::parse(&with_scheme).map_err(|_| bad())?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    let origin = url.origin().ascii_serialization();
    Url::parse(&format!("{origin}/")).map_err(|_| bad())
}

/// An INI file: section name -> (lower-cased key -> value).
pub type ConfigFile = HashMap<String, HashMap<String, String>>;

/// Parses a `~/.databrickscfg`-style INI file. `#` and `;` start comment lines; keys are
/// case-insensitive; a line that is neither a section, a comment nor `key = value` is an error.
pub fn parse_config_file(text: &str) -> std::result::Result<ConfigFile, String> {
    let mut out: ConfigFile = HashMap::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(format!("line {}: unterminated section header", i + 1));
            };
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
            return Err(format!(
                "line {}: expected `key = value` or `[section]`",
                i + 1
            ));
        };
        let Some(section) = &current else {
            return Err(format!("line {}: a key outside of any [section]", i + 1));
        };
        let key = k.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(format!("line {}: empty key", i + 1));
        }
        out.entry(section.clone())
            .or_default()
            .insert(key, v.trim().to_string());
    }
    Ok(out)
}

/// A profile of a config file: its name and its keys.
pub type Profile<'a> = (String, &'a HashMap<String, String>);

/// Picks the profile: `DATABRICKS_CONFIG_PROFILE`, else `[__settings__] default_profile`, else
/// `[DEFAULT]`, else none. `Err` carries the profile name to report when an explicit one is missing.
pub fn select_profile<'a>(
    file: &'a ConfigFile,
    explicit: Option<&str>,
) -> std::result::Result<Option<Profile<'a>>, String> {
    if let Some(name) = explicit {
        return match file.get(name) {
            Some(p) => Ok(Some((name.to_string(), p))),
            None => Err(name.to_string()),
        };
    }
    if let Some(name) = file
        .get("__settings__")
        .and_then(|s| s.get("default_profile"))
        .map(|s| s.trim())
    {
        if !name.is_empty() {
            return match file.get(name) {
                Some(p) => Ok(Some((name.to_string(), p))),
                None => Err(name.to_string()),
            };
        }
    }
    Ok(file.get("DEFAULT").map(|p| ("DEFAULT".to_string(), p)))
}

fn load_profile(
    env: &HashMap<String, String>,
) -> Result<(Option<String>, HashMap<String, String>)> {
    let explicit_file = non_empty(env.get("DATABRICKS_CONFIG_FILE").map(String::as_str));
    let explicit_profile = non_empty(env.get("DATABRICKS_CONFIG_PROFILE").map(String::as_str));
    let path: Option<PathBuf> = match explicit_file {
        Some(p) => Some(expand_home(p, env)),
        None => non_empty(env.get("HOME").map(String::as_str))
            .or_else(|| non_empty(env.get("USERPROFILE").map(String::as_str)))
            .map(|home| PathBuf::from(home).join(".databrickscfg")),
    };
    let text = match &path {
        None => None,
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit_file.is_none() => None,
            Err(_) => {
                return Err(JobsError::Config(format!(
                "Cannot read the Databricks config file {}: fix DATABRICKS_CONFIG_FILE or unset it",
                p.display()
            )))
            }
        },
    };
    let Some(text) = text else {
        return match explicit_profile {
            Some(name) => Err(JobsError::Config(format!(
                "DATABRICKS_CONFIG_PROFILE is \"{name}\" but there is no Databricks config file: create ~/.databrickscfg or set DATABRICKS_CONFIG_FILE"
            ))),
            None => Ok((None, HashMap::new())),
        };
    };
    let shown = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let file = parse_config_file(&text)
        .map_err(|detail| JobsError::Config(format!("Cannot parse the Databricks config file {shown} ({detail}): fix the file or set DATABRICKS_CONFIG_FILE")))?;
    match select_profile(&file, explicit_profile) {
        Ok(Some((name, values))) => Ok((Some(name), values.clone())),
        Ok(None) => Ok((None, HashMap::new())),
        Err(name) => Err(JobsError::Config(format!(
            "Profile \"{name}\" is not in the Databricks config file {shown}: set DATABRICKS_CONFIG_PROFILE to one of its [profiles]"
        ))),
    }
}

fn expand_home(p: &str, env: &HashMap<String, String>) -> PathBuf {
    match (
        p.strip_prefix("~/"),
        non_empty(env.get("HOME").map(String::as_str)),
    ) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;
    use crate::test_env::env;

    fn cfg_err(r: &Result<impl fmt::Debug>) -> String {
        match r {
            Err(JobsError::Config(m)) => m.clone(),
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!("appkit-jobs-auth-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn write(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn host_normalization() {
        assert_eq!(
            normalize_host("my-ws.cloud.databricks.com")
                .unwrap()
                .as_str(),
            "https://my-ws.cloud.databricks.com/"
        );
        assert_eq!(
            normalize_host("https://my-ws.cloud.databricks.com/")
                .unwrap()
                .as_str(),
            "https://my-ws.cloud.databricks.com/"
        );
        assert_eq!(
            normalize_host(" https://ws.azuredatabricks.net/?o=123 ")
                .unwrap()
                .as_str(),
            "https://ws.azuredatabricks.net/"
        );
        assert_eq!(
            normalize_host("http://127.0.0.1:8123").unwrap().as_str(),
            "http://127.0.0.1:8123/"
        );
        assert_eq!(
            normalize_host("127.0.0.1:8123").unwrap().as_str(),
            "https://127.0.0.1:8123/"
        );
        let e = normalize_host("https://user:dapi-secret@ws.example.com").unwrap();
        assert!(!e.as_str().contains("dapi-secret"));
        let m = cfg_err(&normalize_host("ftp://x.example.com"));
        assert!(m.contains("DATABRICKS_HOST"));
        let m = cfg_err(&normalize_host("https://"));
        assert!(m.contains("DATABRICKS_HOST"));
    }

    #[test]
    fn env_pat_and_m2m() {
        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "ws.example.com"),
            ("DATABRICKS_TOKEN", "dapi1"),
        ]));
        assert_eq!(c.host.unwrap().as_str(), "https://ws.example.com/");
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::Pat(Secret::new("dapi1"))
        );

        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "https://ws.example.com"),
            ("DATABRICKS_CLIENT_ID", "cid"),
            ("DATABRICKS_CLIENT_SECRET", "csecret"),
        ]));
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::OAuthM2m {
                client_id: "cid".into(),
                client_secret: Secret::new("csecret")
            }
        );

        // auth type chooses when both are present; PAT first otherwise
        let both = [
            ("DATABRICKS_HOST", "ws.example.com"),
            ("DATABRICKS_TOKEN", "dapi1"),
            ("DATABRICKS_CLIENT_ID", "cid"),
            ("DATABRICKS_CLIENT_SECRET", "csecret"),
        ];
        assert!(matches!(
            resolve_config(&env(&both)).credentials,
            Ok(Credentials::Pat(_))
        ));
        let mut e = env(&both);
        e.insert("DATABRICKS_AUTH_TYPE".into(), "oauth-m2m".into());
        assert!(matches!(
            resolve_config(&e).credentials,
            Ok(Credentials::OAuthM2m { .. })
        ));
    }

    #[test]
    fn missing_configuration_names_what_to_set() {
        let c = resolve_config(&env(&[]));
        assert!(cfg_err(&c.host).contains("set DATABRICKS_HOST"));
        let m = cfg_err(&c.credentials);
        assert!(m.contains("DATABRICKS_TOKEN") && m.contains("DATABRICKS_CLIENT_ID"));

        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "h.example.com"),
            ("DATABRICKS_CLIENT_ID", "cid"),
        ]));
        assert!(cfg_err(&c.credentials).contains("DATABRICKS_CLIENT_SECRET"));
        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "h.example.com"),
            ("DATABRICKS_CLIENT_SECRET", "topsecret"),
        ]));
        let m = cfg_err(&c.credentials);
        assert!(m.contains("DATABRICKS_CLIENT_ID") && !m.contains("topsecret"));

        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "h"),
            ("DATABRICKS_AUTH_TYPE", "pat"),
            ("DATABRICKS_CLIENT_ID", "x"),
        ]));
        assert!(cfg_err(&c.credentials).contains("DATABRICKS_TOKEN"));
        let c = resolve_config(&env(&[
            ("DATABRICKS_HOST", "h"),
            ("DATABRICKS_AUTH_TYPE", "azure-cli"),
            ("DATABRICKS_TOKEN", "t"),
        ]));
        assert!(cfg_err(&c.credentials).contains("azure-cli"));
        // empty values count as unset
        let c = resolve_config(&env(&[("DATABRICKS_HOST", "  "), ("DATABRICKS_TOKEN", "")]));
        assert!(c.host.is_err() && c.credentials.is_err());
    }

    #[test]
    fn config_file_parsing() {
        let text = "\
# comment
; another
[DEFAULT]
host = https://default.example.com
token = dapi-default

[dev]
HOST=dev.example.com
client_id = cid
client_secret = c=s=with=equals

[__settings__]
default_profile = dev
";
        let f = parse_config_file(text).unwrap();
        assert_eq!(f["DEFAULT"]["token"], "dapi-default");
        assert_eq!(f["dev"]["host"], "dev.example.com");
        assert_eq!(f["dev"]["client_secret"], "c=s=with=equals");
        assert!(parse_config_file("host = x\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_config_file("[a]\njunk line\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse_config_file("[a\n").is_err());

        // profile selection: explicit > __settings__.default_profile > DEFAULT
        assert_eq!(
            select_profile(&f, Some("DEFAULT")).unwrap().unwrap().0,
            "DEFAULT"
        );
        assert_eq!(select_profile(&f, None).unwrap().unwrap().0, "dev");
        assert_eq!(select_profile(&f, Some("nope")).unwrap_err(), "nope");
        let g = parse_config_file("[DEFAULT]\nhost=a\n[other]\nhost=b\n").unwrap();
        assert_eq!(select_profile(&g, None).unwrap().unwrap().0, "DEFAULT");
        let h = parse_config_file("[other]\nhost=b\n").unwrap();
        assert!(select_profile(&h, None).unwrap().is_none());
    }

    #[test]
    fn profiles_from_file_and_env_precedence() {
        let dir = TempDir::new();
        let home = dir.0.display().to_string();
        dir.write(
            ".databrickscfg",
            "[DEFAULT]\nhost = default.example.com\ntoken = dapi-file\n\n[m2m]\nhost = http://127.0.0.1:9\nclient_id = fid\nclient_secret = fsecret\n",
        );
        // HOME from the env map, DEFAULT profile
        let c = resolve_config(&env(&[("HOME", &home)]));
        assert_eq!(c.profile.as_deref(), Some("DEFAULT"));
        assert_eq!(c.host.unwrap().as_str(), "https://default.example.com/");
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::Pat(Secret::new("dapi-file"))
        );
        // env wins over the file, key by key
        let c = resolve_config(&env(&[
            ("HOME", &home),
            ("DATABRICKS_HOST", "env.example.com"),
        ]));
        assert_eq!(c.host.unwrap().as_str(), "https://env.example.com/");
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::Pat(Secret::new("dapi-file"))
        );
        // explicit profile
        let c = resolve_config(&env(&[
            ("HOME", &home),
            ("DATABRICKS_CONFIG_PROFILE", "m2m"),
        ]));
        assert_eq!(c.host.unwrap().as_str(), "http://127.0.0.1:9/");
        assert!(
            matches!(c.credentials, Ok(Credentials::OAuthM2m { ref client_id, .. }) if client_id == "fid")
        );
        // missing profile: one clear error naming the variable
        let c = resolve_config(&env(&[
            ("HOME", &home),
            ("DATABRICKS_CONFIG_PROFILE", "prod"),
        ]));
        let m = cfg_err(&c.host);
        assert!(m.contains("\"prod\"") && m.contains("DATABRICKS_CONFIG_PROFILE"));
        // explicit config file + __settings__
        let f = dir.write(
            "custom.cfg",
            "[__settings__]\ndefault_profile = b\n[b]\nhost = b.example.com\ntoken = dapi-b\n",
        );
        let c = resolve_config(&env(&[("DATABRICKS_CONFIG_FILE", &f)]));
        assert_eq!(c.profile.as_deref(), Some("b"));
        assert_eq!(
            c.credentials.unwrap(),
            Credentials::Pat(Secret::new("dapi-b"))
        );
        // explicit file that does not exist
        let c = resolve_config(&env(&[(
            "DATABRICKS_CONFIG_FILE",
            "/nonexistent/appkit-jobs.cfg",
        )]));
        assert!(cfg_err(&c.credentials).contains("DATABRICKS_CONFIG_FILE"));
        // a broken file: error names the file and line, not its secrets
        let f = dir.write("broken.cfg", "[x]\ntoken = dapi-broken\nthis is not ini\n");
        let c = resolve_config(&env(&[("DATABRICKS_CONFIG_FILE", &f)]));
        let m = cfg_err(&c.host);
        assert!(m.contains("line 3") && !m.contains("dapi-broken"));
        // no HOME, no file: plain env errors
        let c = resolve_config(&env(&[("HOME", "/nonexistent-home-appkit")]));
        assert!(cfg_err(&c.host).contains("DATABRICKS_HOST"));
    }
}
