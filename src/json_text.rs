//! `BindingJsonText`: a run's JSON text crossing to JS without a copy where Node allows it.
//!
//! Every update of a watched run carries the whole run as text. Copied into the V8 heap, those
//! strings would be most of what many watched runs allocate in JS, and the ones a consumer
//! still holds get promoted and grow the old space. An external string instead points V8 at
//! the text the poll already holds (`Arc<str>`, shared by every watcher of the update); V8
//! releases our reference when the string is collected.
//!
//! `node_api_create_external_string_latin1` exists from Node 20.4 (napi10 in 22.14). It is
//! looked up at run time, not linked, so that the addon still loads where it is missing; there
//! the text is copied as before.
//!
//! Lent only while many watches are live ([`LEND_ABOVE_WATCHES`]). A lent text is freed when V8
//! collects its string, and V8 collects when its own heap fills: the texts of a few hundred or
//! thousand watches, which allocate little JS, waited for a collection that hardly came, so
//! every update's text stayed (1,000 `runAndWait` of 2 s runs: ~9,000 texts, 11-14 KB of RSS
//! per watcher). Copied, they fill the young generation and the next scavenge frees the dead
//! ones (4-7 KB per watcher). Beyond a few thousand watches the latest text of each is alive at
//! every scavenge, copies get promoted en masse, and lending is the cheaper (10,000 watches:
//! 10 KB per watcher lent against 13 KB copied).
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Texts shorter than this are copied: an external string costs a finalizer and a boxed
/// reference, more than copying a short text.
const EXTERNAL_MIN_LEN: usize = 256;

/// Texts are lent only while more watches than this are live in the process (measured: copies
/// win at 1,000 and 2,000 concurrent waits, lending from 3,000). `APPKIT_JOBS_LEND_TEXTS_ABOVE`
/// overrides it (read once).
const LEND_ABOVE_WATCHES: usize = 2_000;

/// Watches alive in this process: each watch holds a [`LiveWatch`] while it lives.
static LIVE_WATCHES: AtomicUsize = AtomicUsize::new(0);

/// Counts one live watch for the lending rule, until dropped.
pub struct LiveWatch(());

impl LiveWatch {
    pub fn new() -> Self {
        LIVE_WATCHES.fetch_add(1, Ordering::Relaxed);
        LiveWatch(())
    }
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        LIVE_WATCHES.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lend_above() -> usize {
    static ABOVE: OnceLock<usize> = OnceLock::new();
    *ABOVE.get_or_init(|| {
        std::env::var("APPKIT_JOBS_LEND_TEXTS_ABOVE")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(LEND_ABOVE_WATCHES)
    })
}

/// JSON text crossing as a JS string, shared with the poll rather than copied when lent. ASCII
/// text (what the Jobs API sends) becomes a one-byte string straight from the bytes: external
/// when lent and Node can, else copied; other text is decoded as UTF-8.
pub struct BindingJsonText {
    text: Arc<str>,
    lend: bool,
}

impl BindingJsonText {
    /// `text`, to be lent if many watches are live now (see the module's docs).
    pub fn new(text: Arc<str>) -> Self {
        let lend = LIVE_WATCHES.load(Ordering::Relaxed) > lend_above();
        BindingJsonText { text, lend }
    }
}

impl TypeName for BindingJsonText {
    fn type_name() -> &'static str {
        "String"
    }
    fn value_type() -> ValueType {
        ValueType::String
    }
}

type CreateExternalLatin1 = unsafe extern "C" fn(
    env: sys::napi_env,
    str_: *const std::ffi::c_char,
    length: isize,
    finalize: sys::napi_finalize,
    finalize_hint: *mut c_void,
    result: *mut sys::napi_value,
    copied: *mut bool,
) -> sys::napi_status;

#[cfg(unix)]
fn create_external_latin1() -> Option<CreateExternalLatin1> {
    static FOUND: OnceLock<Option<CreateExternalLatin1>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT searches the process (node) for a NUL-terminated
        // name; the symbol, when present, has the Node-API signature declared above.
        unsafe {
            let symbol = libc::dlsym(
                libc::RTLD_DEFAULT,
                c"node_api_create_external_string_latin1".as_ptr(),
            );
            (!symbol.is_null())
                .then(|| std::mem::transmute::<*mut c_void, CreateExternalLatin1>(symbol))
        }
    })
}

#[cfg(not(unix))]
fn create_external_latin1() -> Option<CreateExternalLatin1> {
    None
}

/// External texts V8 still holds (created, not yet released).
static LIVE: AtomicU32 = AtomicU32::new(0);

/// How many run texts V8 holds as external strings: a diagnostic for tests, which check that
/// collected strings give their text back.
#[napi]
pub fn live_external_texts() -> u32 {
    LIVE.load(Ordering::Relaxed)
}

/// Drops the reference `external` handed to V8 (the hint is a `Box<Arc<str>>`). It only frees
/// memory, so it is safe wherever Node calls it (during GC, or at teardown with a null env).
unsafe extern "C" fn release_text(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the pointer `external` got from Box::into_raw, released exactly once.
    drop(unsafe { Box::from_raw(hint.cast::<Arc<str>>()) });
    LIVE.fetch_sub(1, Ordering::Relaxed);
}

/// An external one-byte string over `text`, or None when Node has no external strings or
/// refused (the reference is released in every failure case).
unsafe fn external(env: sys::napi_env, text: &Arc<str>) -> Option<sys::napi_value> {
    let create = create_external_latin1()?;
    let held = Box::into_raw(Box::new(Arc::clone(text)));
    LIVE.fetch_add(1, Ordering::Relaxed);
    let mut out = std::ptr::null_mut();
    let mut copied = false;
    // SAFETY: the bytes stay valid and unchanged while `held` lives, which is until V8 calls
    // `release_text`; on `copied` Node has already called it.
    let status = unsafe {
        create(
            env,
            text.as_ptr().cast(),
            text.len() as isize,
            Some(release_text),
            held.cast(),
            &mut out,
            &mut copied,
        )
    };
    if status == sys::Status::napi_ok {
        Some(out)
    } else {
        // Not created, so V8 will not call the finalizer: release the reference here.
        drop(unsafe { Box::from_raw(held) });
        LIVE.fetch_sub(1, Ordering::Relaxed);
        None
    }
}

impl ToNapiValue for BindingJsonText {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let text: &str = &val.text;
        let ascii = text.is_ascii();
        if val.lend && ascii && text.len() >= EXTERNAL_MIN_LEN {
            if let Some(out) = unsafe { external(env, &val.text) } {
                return Ok(out);
            }
        }
        let mut out = std::ptr::null_mut();
        // SAFETY: `text` outlives the call, which copies it; its length is given explicitly.
        let status = unsafe {
            if ascii {
                sys::napi_create_string_latin1(
                    env,
                    text.as_ptr().cast(),
                    text.len() as isize,
                    &mut out,
                )
            } else {
                sys::napi_create_string_utf8(
                    env,
                    text.as_ptr().cast(),
                    text.len() as isize,
                    &mut out,
                )
            }
        };
        napi::check_status!(status)?;
        Ok(out)
    }
}
