"use strict";
// Errors of the JS surface. Each carries a stable `code`, an HTTP `statusCode` (and `status`,
// the name AppKit's ExecutionResult uses) and, where one exists, a `cause`. Messages are built
// by the Rust core or by this package: they name job keys and env vars, never a token, a URL
// or the text of an upstream (Databricks) error.
const { STATUS_CODES } = require("node:http");

class JobsError extends Error {
  /**
   * @param {string} message
   * @param {{ code?: string, statusCode?: number, cause?: unknown }} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "JobsError";
    this.code = options.code ?? "JOBS_ERROR";
    this.statusCode = options.statusCode ?? 500;
  }

  /** Alias of `statusCode`, the field name of `ExecutionResult`. */
  get status() {
    return this.statusCode;
  }
}

/** Params failed the job's schema (Standard Schema / Zod in JS, JSON Schema in Rust). Nothing was sent. */
class ValidationError extends JobsError {
  constructor(message, options = {}) {
    super(message, { code: "VALIDATION_ERROR", statusCode: 400, cause: options.cause });
    this.name = "ValidationError";
    /** Standard Schema issues, when the failure came from a JS schema. */
    if (options.issues !== undefined) this.issues = options.issues;
  }
}

/** Standard reason phrase for a status code: the only text an upstream failure is allowed to show. */
function statusText(status) {
  return STATUS_CODES[status] ?? "Request failed";
}

/**
 * Builds the JS error for a failed native outcome `{ ok: false, status, code, message }`.
 * The native message is already public (see `JobsError::public_message` in the core).
 */
function errorFromOutcome(outcome) {
  const status = outcome.status ?? 500;
  const message = outcome.message ?? statusText(status);
  if (outcome.code === "VALIDATION_ERROR") return new ValidationError(message);
  return new JobsError(message, { code: outcome.code ?? "JOBS_ERROR", statusCode: status, cause: causeOf(outcome) });
}

/**
 * The `cause` of a failed outcome: what went wrong underneath (a network code such as
 * ECONNREFUSED, else the error's own code) and the upstream HTTP status, where there is one.
 */
function causeOf(outcome) {
  const code = outcome.causeCode ?? outcome.code ?? null;
  const status = outcome.upstreamStatus ?? null;
  const text = [code, status && `HTTP ${status}`].filter(Boolean).join(", ") || "unknown";
  return Object.assign(new Error(text), { code, status });
}

module.exports = { JobsError, ValidationError, statusText, errorFromOutcome };
