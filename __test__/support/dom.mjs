// A DOM for React tests in Node (not a test file): happy-dom's window and the globals React and
// Testing Library use. fetch, AbortController and the streams stay Node's own, so hooks reach
// the loopback server directly. Also a counting fetch and a record of the timers that a given
// source file sets.
import { Window } from "happy-dom";

const GLOBALS = [
  "document",
  "navigator",
  "HTMLElement",
  "Element",
  "Node",
  "Text",
  "DocumentFragment",
  "Event",
  "CustomEvent",
  "MouseEvent",
  "KeyboardEvent",
  "FocusEvent",
  "InputEvent",
  "MutationObserver",
  "HTMLIFrameElement",
  "HTMLInputElement",
  "HTMLButtonElement",
  "HTMLFormElement",
  "HTMLSelectElement",
  "SVGElement",
];

/** Installs the DOM globals; returns `close()`, which removes them and closes the window. */
export function installDom(url = "http://127.0.0.1/") {
  const win = new Window({ url });
  const define = (name, value) => Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
  define("window", win);
  for (const name of GLOBALS) define(name, win[name]);
  define("getComputedStyle", win.getComputedStyle.bind(win));
  define("requestAnimationFrame", win.requestAnimationFrame.bind(win));
  define("cancelAnimationFrame", win.cancelAnimationFrame.bind(win));
  globalThis.IS_REACT_ACT_ENVIRONMENT = true;
  return {
    window: win,
    close: async () => {
      for (const name of ["window", "getComputedStyle", "requestAnimationFrame", "cancelAnimationFrame", ...GLOBALS]) delete globalThis[name];
      await win.happyDOM.close();
    },
  };
}

/**
 * Node's fetch, counted: `calls` lists `{ method, url, path, signal }` in order (path relative
 * to the host, query included).
 */
export function countingFetch() {
  const calls = [];
  const fetchImpl = (input, init = {}) => {
    const url = new URL(String(input));
    calls.push({ method: init.method ?? "GET", url: url.href, path: url.pathname + url.search, signal: init.signal, lastEventId: init.headers?.["Last-Event-ID"] ?? null });
    return fetch(input, init);
  };
  return { fetch: fetchImpl, calls };
}

/**
 * Records the timers (setTimeout, setInterval) created by code whose stack has `marker` (a file
 * path fragment) and not yet cleared or fired: `pending()` lists them. `restore()` puts the
 * real functions back.
 */
export function trackTimers(marker) {
  const real = { setTimeout: globalThis.setTimeout, setInterval: globalThis.setInterval, clearTimeout: globalThis.clearTimeout, clearInterval: globalThis.clearInterval };
  const live = new Map();
  const mine = () => (new Error().stack ?? "").includes(marker);
  globalThis.setTimeout = function (fn, ms, ...args) {
    const tracked = mine();
    const handle = real.setTimeout((...a) => {
      live.delete(handle);
      fn(...a);
    }, ms, ...args);
    if (tracked) live.set(handle, `timeout ${ms} ms`);
    return handle;
  };
  globalThis.setInterval = function (fn, ms, ...args) {
    const handle = real.setInterval(fn, ms, ...args);
    if (mine()) live.set(handle, `interval ${ms} ms`);
    return handle;
  };
  globalThis.clearTimeout = (h) => {
    live.delete(h);
    real.clearTimeout(h);
  };
  globalThis.clearInterval = (h) => {
    live.delete(h);
    real.clearInterval(h);
  };
  return {
    pending: () => [...live.values()],
    restore: () => Object.assign(globalThis, real),
  };
}
