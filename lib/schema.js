"use strict";
// Params schemas that only JS can run: a Standard Schema (Zod 3.24+/4, Valibot, ArkType, ...) or
// a schema with `safeParse` is validated here, with its own semantics (transforms, defaults),
// before the Rust core sees the params; the core then skips JSON Schema validation for that
// job (`externalSchema`). Plain JSON Schemas are validated in Rust.
const { ValidationError } = require("./errors.js");

/**
 * Whether params ask for nothing: absent, `null` and `{}` do, as the core's params.rs
 * `asks_for_nothing` reads them (a repair then keeps the run's own params, unvalidated).
 */
function asksForNothing(params) {
  if (params == null) return true;
  if (typeof params !== "object" || Array.isArray(params)) return false;
  const proto = Object.getPrototypeOf(params);
  return (proto === Object.prototype || proto === null) && Object.keys(params).length === 0;
}

function isStandardSchema(schema) {
  return schema != null && typeof schema === "object" && typeof schema["~standard"]?.validate === "function";
}

function isSafeParseSchema(schema) {
  return schema != null && typeof schema === "object" && typeof schema.safeParse === "function";
}

/**
 * Schema issues as text that does not echo the caller's input (it reaches HTTP responses):
 * path segments keep only `[A-Za-z0-9_-]`, unknown keys are counted rather than listed,
 * control/bidi characters are dropped, and the whole is capped at 1,000 characters.
 */
function formatIssues(issues) {
  const printable = (s) => String(s).replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g, "");
  const text = (issues ?? [])
    .map((issue) => {
      const path = (issue.path ?? [])
        .map((p) => (typeof p === "object" && p !== null ? p.key : p))
        .map((p) => String(p).replace(/[^A-Za-z0-9_-]/g, "").slice(0, 50))
        .join(".");
      const message =
        issue.code === "unrecognized_keys"
          ? `Unrecognized keys are not allowed (${Array.isArray(issue.keys) ? issue.keys.length : 1})`
          : printable(issue.message ?? "Invalid value").slice(0, 200);
      return path ? `${path}: ${message}` : message;
    })
    .join("; ");
  return text.length > 1000 ? `${text.slice(0, 997)}...` : text;
}


/** True for a schema that JS validates (the core then treats the job as `externalSchema`). */
function isJsSchema(schema) {
  return isStandardSchema(schema) || isSafeParseSchema(schema);
}

/**
 * Validates `params` with `schema` when it is a JS schema and returns the value to send (the
 * schema's output); other schemas leave `params` as they are. Rejects with ValidationError.
 */
async function validateParams(key, schema, params) {
  if (isStandardSchema(schema)) {
    const result = await schema["~standard"].validate(params ?? {});
    if (result.issues) {
      throw new ValidationError(`Parameter validation failed for job "${key}": ${formatIssues(result.issues)}`, {
        issues: result.issues,
      });
    }
    return result.value;
  }
  if (isSafeParseSchema(schema)) {
    const result = await schema.safeParse(params ?? {});
    if (!result.success) {
      throw new ValidationError(`Parameter validation failed for job "${key}": ${formatIssues(result.error?.issues) || "invalid parameters"}`, {
        issues: result.error?.issues,
      });
    }
    return result.data;
  }
  return params;
}

function optionalZod() {
  try {
    return require("zod");
  } catch {
    return null;
  }
}

/**
 * The params of a job as JSON Schema for the client: a plain JSON Schema is passed as is; a
 * Standard Schema is converted by its own library (the Standard JSON Schema hook, the schema's
 * `toJSONSchema()`, or `z.toJSONSchema` when zod is installed). `null` when there is none or it
 * cannot be converted.
 */
function paramsJsonSchema(schema) {
  if (schema == null) return null;
  if (!isStandardSchema(schema)) return typeof schema === "object" && !Array.isArray(schema) ? schema : null;
  const attempts = [
    () => schema["~standard"].jsonSchema?.input?.({ target: "draft-2020-12" }),
    () => (typeof schema.toJSONSchema === "function" ? schema.toJSONSchema() : undefined),
    () => optionalZod()?.toJSONSchema?.(schema),
  ];
  for (const attempt of attempts) {
    try {
      const out = attempt();
      if (out && typeof out === "object") return JSON.parse(JSON.stringify(out));
    } catch {
      // try the next way
    }
  }
  return null;
}

module.exports = { asksForNothing, isStandardSchema, isJsSchema, validateParams, paramsJsonSchema };
