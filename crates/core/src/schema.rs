//! Params JSON Schemas: compiled once per job (the `jsonschema` crate, drafts 4 to 2020-12,
//! no remote `$ref`s) and validated with error text that never echoes the caller's input.
use serde_json::Value;

use crate::error::{JobsError, Result};

/// Cap on the validation detail text (errors are listed until this is reached).
pub const MAX_DETAIL_CHARS: usize = 1_000;
/// Cap on one schema error's message (instance values may be echoed in it).
const MAX_ERROR_CHARS: usize = 200;

/// A compiled params JSON Schema. Built once per job (in `Registry::new`).
pub struct ParamsValidator {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ParamsValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParamsValidator")
    }
}

impl ParamsValidator {
    /// Compile a JSON Schema (draft detected from `$schema`, 2020-12 by default). External
    /// `$ref`s are not fetched. A broken schema is a `Config` error.
    pub fn compile(schema: &Value) -> Result<ParamsValidator> {
        Self::compile_detail(schema)
            .map_err(|d| JobsError::Config(format!("Invalid params JSON Schema: {d}")))
    }

    /// As `compile`, with the bare description of what is wrong with the schema.
    pub(crate) fn compile_detail(schema: &Value) -> std::result::Result<ParamsValidator, String> {
        jsonschema::validator_for(schema)
            .map(|validator| ParamsValidator { validator })
            .map_err(|e| truncate(&e.to_string(), MAX_ERROR_CHARS))
    }

    /// `Ok` when `instance` satisfies the schema, else a `Validation` error whose detail lists
    /// each failure as `<instance path or (root)>: <message>`, joined by `; ` and capped.
    pub fn validate(&self, job_key: &str, instance: &Value) -> Result<()> {
        let mut detail = String::new();
        let mut listed = 0usize;
        let mut total = 0usize;
        for err in self.validator.iter_errors(instance) {
            total += 1;
            let path = public_path(&err.instance_path().to_string());
            let path = if path.is_empty() {
                "(root)".to_string()
            } else {
                path
            };
            let item = format!(
                "{}: {}",
                truncate(&path, 100),
                truncate(&public_error(&err), MAX_ERROR_CHARS)
            );
            if detail.len() + item.len() + 2 > MAX_DETAIL_CHARS && listed > 0 {
                continue;
            }
            if listed > 0 {
                detail.push_str("; ");
            }
            detail.push_str(&item);
            listed += 1;
        }
        if total == 0 {
            return Ok(());
        }
        if total > listed {
            detail.push_str(&format!("; and {} more", total - listed));
        }
        Err(JobsError::validation(job_key, detail))
    }
}

/// The JSON type name of a value, for error messages that must not echo the value itself.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A schema error as text that does not echo the caller's input: the offending value (which
/// jsonschema prints first) reads `value`, property names the schema does not know are not
/// listed, and control or bidi characters are dropped.
fn public_error(err: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as Kind;
    let text = match err.kind() {
        Kind::AdditionalProperties { .. } => "Additional properties are not allowed".to_string(),
        Kind::UnevaluatedProperties { .. } => "Unevaluated properties are not allowed".to_string(),
        Kind::AdditionalItems { .. } => "Additional items are not allowed".to_string(),
        Kind::UnevaluatedItems { .. } => "Unevaluated items are not allowed".to_string(),
        Kind::PropertyNames { .. } => "A property name is not allowed".to_string(),
        _ => {
            let text = err.to_string();
            let instance = err.instance().to_string();
            match text.strip_prefix(instance.as_str()) {
                Some(rest) => format!("value{rest}"),
                None if instance.len() > 2 && text.contains(instance.as_str()) => {
                    text.replacen(instance.as_str(), "value", 1)
                }
                None => text,
            }
        }
    };
    printable(&text)
}

/// An instance path (JSON pointer) with only `[A-Za-z0-9_/-]` kept: property names may come
/// from the caller.
fn public_path(path: &str) -> String {
    path.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-'))
        .collect()
}

/// `s` without control, bidi and other invisible format characters.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(*c as u32, 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF)
        })
        .collect()
}

/// At most `max` characters, with `...` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(validator: &ParamsValidator, instance: Value) -> String {
        match validator.validate("etl", &instance) {
            Err(JobsError::Validation { key, detail }) => {
                assert_eq!(key, "etl");
                detail
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_instance_passes_and_failures_name_their_paths() {
        let v = ParamsValidator::compile(&json!({
            "type": "object",
            "properties": {"day": {"type": "string"}, "n": {"type": "integer", "maximum": 3}},
            "required": ["day"]
        }))
        .unwrap();
        assert!(v
            .validate("etl", &json!({"day": "2025-01-01", "n": 2}))
            .is_ok());
        let d = detail(&v, json!({"n": 4}));
        let parts: Vec<&str> = d.split("; ").collect();
        assert_eq!(parts.len(), 2, "{d}");
        assert!(
            parts.contains(&"(root): \"day\" is a required property"),
            "{d}"
        );
        assert!(
            parts.contains(&"/n: value is greater than the maximum of 3"),
            "{d}"
        );
    }

    #[test]
    fn a_broken_schema_is_a_config_error_naming_what_is_wrong() {
        let err = ParamsValidator::compile(&json!({"type": 12})).unwrap_err();
        assert_eq!(err.code(), "CONFIG_ERROR");
        assert!(
            err.to_string().starts_with("Invalid params JSON Schema: "),
            "{err}"
        );
        assert!(ParamsValidator::compile_detail(&json!({"type": 12})).is_err());
    }

    #[test]
    fn remote_references_are_never_fetched() {
        // No resolver is compiled in: a remote `$ref` fails to compile instead of reaching out.
        let schema = json!({"$ref": "https://example.invalid/params.json"});
        assert!(ParamsValidator::compile(&schema).is_err());
    }

    #[test]
    fn errors_never_echo_the_callers_values_or_unknown_names() {
        let v = ParamsValidator::compile(&json!({
            "type": "object",
            "properties": {"token": {"type": "integer"}, "mode": {"enum": ["a", "b"]}},
            "additionalProperties": false
        }))
        .unwrap();
        let secret = "dapi-0123456789abcdef";
        let d = detail(
            &v,
            json!({"token": secret, "mode": secret, "secret-name\u{202e}": 1}),
        );
        assert!(!d.contains(secret), "{d}");
        assert!(!d.contains("secret-name"), "{d}");
        assert!(
            d.contains("/token: value is not of type \"integer\""),
            "{d}"
        );
        assert!(
            d.contains("(root): Additional properties are not allowed"),
            "{d}"
        );
    }

    #[test]
    fn paths_keep_only_plain_characters() {
        let v = ParamsValidator::compile(&json!({
            "type": "object",
            "additionalProperties": {"type": "integer"}
        }))
        .unwrap();
        let d = detail(&v, json!({"<b>x\u{2028}y": "z"}));
        assert_eq!(d, "/bxy: value is not of type \"integer\"");
        assert_eq!(public_path("/a b/<c>/d_e-1"), "/ab/c/d_e-1");
    }

    #[test]
    fn the_detail_is_capped_and_counts_what_it_left_out() {
        let v = ParamsValidator::compile(&json!({
            "type": "object",
            "additionalProperties": {"type": "integer"}
        }))
        .unwrap();
        let params: serde_json::Map<String, Value> = (0..200)
            .map(|i| (format!("field{i:03}"), json!("x")))
            .collect();
        let d = detail(&v, Value::Object(params));
        let (listed, rest) = d.rsplit_once("; and ").unwrap();
        assert!(listed.len() <= MAX_DETAIL_CHARS, "{}", listed.len());
        let more: usize = rest.strip_suffix(" more").unwrap().parse().unwrap();
        assert_eq!(listed.split("; ").count() + more, 200);
    }

    #[test]
    fn text_helpers() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abc...");
        // Characters, not bytes: a cut never splits one.
        assert_eq!(truncate("ééééééé", 5), "éé...");
        assert_eq!(printable("a\u{0}b\nc\u{200b}d\u{202e}e\u{feff}f"), "abcdef");
        for (v, t) in [
            (json!(null), "null"),
            (json!(true), "boolean"),
            (json!(1.5), "number"),
            (json!("s"), "string"),
            (json!([]), "array"),
            (json!({}), "object"),
        ] {
            assert_eq!(json_type(&v), t);
        }
    }
}
