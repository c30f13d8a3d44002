//! Who a call runs as, and the credentials that prove it.
//!
//! * [`Secret`] wraps every credential; it prints as `***` and is read only through `expose()`.
//! * [`Identity`] is the service principal (the app's own credentials) or a user (the
//!   forwarded `x-forwarded-access-token`); [`Identity::partition`] keeps identities apart in
//!   caches and shared polls.
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// A credential. `Debug` and `Display` print `***`; `expose()` is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Arc::from(value.into()))
    }

    /// The credential itself, for an `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A user's forwarded access token with its precomputed partition.
#[derive(Clone, Debug)]
pub struct UserToken {
    token: Secret,
    partition: u64,
    /// See [`Identity::fleet_partition`]; computed when first asked.
    fleet: OnceLock<Arc<str>>,
}

/// Equal when the tokens are (the rest is derived from them).
impl PartialEq for UserToken {
    fn eq(&self, other: &UserToken) -> bool {
        self.token == other.token
    }
}
impl Eq for UserToken {}

impl UserToken {
    pub fn new(token: &str) -> UserToken {
        UserToken {
            partition: user_partition(token),
            token: Secret::new(token),
            fleet: OnceLock::new(),
        }
    }

    pub fn secret(&self) -> &Secret {
        &self.token
    }

    pub fn partition(&self) -> u64 {
        self.partition
    }
}

/// Who a call runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The app's own credentials (PAT or OAuth M2M).
    ServicePrincipal,
    /// On behalf of a user, with the user's forwarded token.
    User(UserToken),
}

impl Identity {
    pub fn user(token: &str) -> Identity {
        Identity::User(UserToken::new(token))
    }

    /// The key that keeps identities apart in caches and shared polls: 0 for the service
    /// principal; for a user a keyed hash of the token (never 0), with a key drawn at random
    /// once per process. The token itself is never a key.
    pub fn partition(&self) -> u64 {
        match self {
            Identity::ServicePrincipal => 0,
            Identity::User(u) => u.partition,
        }
    }

    pub fn is_user(&self) -> bool {
        matches!(self, Identity::User(_))
    }

    /// `partition`, the same in every instance of an app (what they share in the ledger is
    /// keyed by it): `sp` for the service principal; for a user, 32 hex digits of a SHA-256 of
    /// the token (with a domain prefix). A token is far too long to be found from its hash, so
    /// the key names no credential.
    pub fn fleet_partition(&self) -> Arc<str> {
        static SP: OnceLock<Arc<str>> = OnceLock::new();
        match self {
            Identity::ServicePrincipal => SP.get_or_init(|| Arc::from("sp")).clone(),
            Identity::User(u) => u
                .fleet
                .get_or_init(|| {
                    use sha2::Digest;
                    let mut h = sha2::Sha256::new();
                    h.update(b"appkit-jobs fleet partition\0");
                    h.update(u.token.expose().as_bytes());
                    let digest = h.finalize();
                    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                    Arc::from(format!("u{hex}"))
                })
                .clone(),
        }
    }
}

fn user_partition(token: &str) -> u64 {
    // `RandomState` is SipHash keyed with random keys; one instance per process gives a
    // stable keyed hash that cannot be reversed to the token or precomputed by an outsider.
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let mut h = KEY.get_or_init(RandomState::new).build_hasher();
    "appkit-jobs user partition".hash(&mut h);
    token.hash(&mut h);
    match h.finish() {
        0 => 1,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{Hash, Hasher};

    use super::*;
    use crate::auth::Credentials;

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("dapi-very-secret");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "dapi-very-secret");
        let id = Identity::user("user-token-xyz");
        assert!(!format!("{id:?}").contains("user-token-xyz"));
        let creds = Credentials::OAuthM2m {
            client_id: "cid".into(),
            client_secret: Secret::new("shh-123"),
        };
        assert!(!format!("{creds:?}").contains("shh-123"));
    }

    #[test]
    fn partitions_are_keyed_and_distinct() {
        assert_eq!(Identity::ServicePrincipal.partition(), 0);
        let a = Identity::user("token-a");
        let a2 = Identity::user("token-a");
        let b = Identity::user("token-b");
        assert_eq!(a.partition(), a2.partition());
        assert_ne!(a.partition(), b.partition());
        assert_ne!(a.partition(), 0);
        // Not an unkeyed hash of the token: a fresh default hasher disagrees with the partition.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        "token-a".hash(&mut h);
        assert_ne!(a.partition(), h.finish());
    }

    #[test]
    fn fleet_partitions_are_stable_and_name_no_token() {
        assert_eq!(&*Identity::ServicePrincipal.fleet_partition(), "sp");
        let a = Identity::user("token-a");
        let fleet = a.fleet_partition();
        assert_eq!(fleet.len(), 33);
        assert!(!fleet.contains("token"));
        // The same in any instance (no per-process key), different per token.
        assert_eq!(fleet, Identity::user("token-a").fleet_partition());
        assert_ne!(fleet, Identity::user("token-b").fleet_partition());
        // Computing it changes no equality.
        assert_eq!(a, Identity::user("token-a"));
    }
}
