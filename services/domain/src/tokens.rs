//! Access-token rules: what a token may do ([`Scope`], [`Scopes`]), when it stops working
//! (expiry, revocation: [`TokenStatus`]), and the scopes a token made before scopes existed
//! holds ([`Scopes::legacy`]).
//!
//! Invariant: scopes are explicit — none implies another. `admin` alone can not pin; a token
//! that should do both is given both. (An admin can mint any token, so `admin` is the root of
//! trust, but a request is checked against the scope its route names, nothing else.)

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One permission a token may hold. New scopes go at the end of the list in [`Scope::ALL`];
/// the stored form is the name, so a scope's position never matters to old rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `GET /pins`, `GET /pins/{requestid}`, the caller's own pin's history and analytics.
    PinsRead,
    /// `POST /pins`, `POST`/`DELETE /pins/{requestid}`, expiry and recovery of own pins.
    PinsWrite,
    /// The admin API: nodes, tokens, dead letters, shards, S3 views, any owner's pin data.
    Admin,
    /// `POST /admin/s3/events`: the S3 notification webhook, and nothing else.
    S3Ingest,
    /// `POST /access`: access events for the replica optimizer (gateways, log shippers).
    AccessIngest,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::PinsRead,
        Scope::PinsWrite,
        Scope::Admin,
        Scope::S3Ingest,
        Scope::AccessIngest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::PinsRead => "pins:read",
            Scope::PinsWrite => "pins:write",
            Scope::Admin => "admin",
            Scope::S3Ingest => "s3:ingest",
            Scope::AccessIngest => "access:ingest",
        }
    }

    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        let text = text.trim();
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == text)
            .ok_or_else(|| ScopeError::Unknown(text.to_string()))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope {0:?}: scopes are {names}", names = all_names())]
    Unknown(String),
    #[error("a token needs at least one scope: scopes are {names}", names = all_names())]
    Empty,
}

fn all_names() -> String {
    Scope::ALL
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scopes of one token: a non-empty set, stored and shown as a list of names.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// What a token holds that was made before scopes existed: its admin bit let it pin, use
    /// the admin API, post S3 notifications and access events; without it, it could pin.
    pub fn legacy(admin: bool) -> Scopes {
        if admin {
            Scopes::all()
        } else {
            Scopes::of(&[Scope::PinsRead, Scope::PinsWrite])
        }
    }

    /// What `token create` gives when no scope is named: a tenant's pinning token.
    pub fn default_tenant() -> Scopes {
        Scopes::of(&[Scope::PinsRead, Scope::PinsWrite])
    }

    pub fn all() -> Scopes {
        Scopes::of(&Scope::ALL)
    }

    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().copied().collect())
    }

    /// Comma- or space-separated scope names (`pins:read,pins:write`); at least one.
    pub fn parse(text: &str) -> Result<Scopes, ScopeError> {
        Scopes::from_names(
            text.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|part| !part.is_empty()),
        )
    }

    /// Scope names, each one scope (a JSON array's strings); at least one.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, ScopeError> {
        let scopes = names
            .into_iter()
            .map(Scope::parse)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if scopes.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Scopes(scopes))
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.iter().map(Scope::name).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// Stored as the list of names, so adding a scope never changes how old rows read. A name
/// this release does not know (written by a later one) is dropped, not an error: the token
/// keeps working with the scopes this release understands.
impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Scope::name))
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names: Vec<String> = Vec::deserialize(deserializer)?;
        Ok(Scopes(
            names.iter().filter_map(|n| Scope::parse(n).ok()).collect(),
        ))
    }
}

/// Why a presented token is refused, or that it is usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    Active,
    Expired,
    Revoked,
}

/// Whether a token with these times is usable at `now_ns`: revoked wins over expired; a token
/// expires at the instant `expires_ns` (not after it). No background job is involved: every
/// request checks.
pub fn token_status(expires_ns: Option<i64>, revoked_ns: Option<i64>, now_ns: i64) -> TokenStatus {
    if revoked_ns.is_some() {
        return TokenStatus::Revoked;
    }
    match expires_ns {
        Some(expires) if now_ns >= expires => TokenStatus::Expired,
        _ => TokenStatus::Active,
    }
}

/// Longest token name (the device or purpose it is for) in bytes.
pub const MAX_TOKEN_NAME: usize = 128;

/// A token's name: 1..=128 bytes, no control characters.
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TOKEN_NAME && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_from_comma_or_space_separated_names() {
        let scopes = Scopes::parse("pins:read, pins:write admin").unwrap();
        assert!(scopes.contains(Scope::PinsRead));
        assert!(scopes.contains(Scope::PinsWrite));
        assert!(scopes.contains(Scope::Admin));
        assert!(!scopes.contains(Scope::S3Ingest));
        assert_eq!(scopes.to_string(), "pins:read,pins:write,admin");
        assert_eq!(
            Scopes::parse("s3:ingest,s3:ingest").unwrap().names(),
            ["s3:ingest"]
        );
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.name()), Ok(scope));
        }
    }

    #[test]
    fn unknown_or_no_scopes_are_errors_that_list_the_known_ones() {
        let error = Scopes::parse("pins:read,pins:delete").unwrap_err();
        assert_eq!(error, ScopeError::Unknown("pins:delete".into()));
        let text = error.to_string();
        assert!(text.contains("\"pins:delete\""), "{text}");
        assert!(
            text.contains("pins:read, pins:write, admin, s3:ingest"),
            "{text}"
        );
        assert_eq!(Scopes::parse(""), Err(ScopeError::Empty));
        assert_eq!(Scopes::parse(" , "), Err(ScopeError::Empty));
        assert_eq!(
            Scopes::from_names(["ADMIN"]),
            Err(ScopeError::Unknown("ADMIN".into()))
        );
    }

    #[test]
    fn legacy_tokens_keep_what_their_admin_bit_allowed() {
        assert_eq!(Scopes::legacy(true), Scopes::all());
        let tenant = Scopes::legacy(false);
        assert_eq!(tenant.names(), ["pins:read", "pins:write"]);
        assert!(!tenant.contains(Scope::Admin));
    }

    #[test]
    fn scopes_are_stored_as_names_and_unknown_names_are_dropped() {
        let json = serde_json::to_string(&Scopes::parse("admin,pins:read").unwrap()).unwrap();
        assert_eq!(json, r#"["pins:read","admin"]"#);
        let read: Scopes = serde_json::from_str(r#"["pins:read","billing:read"]"#).unwrap();
        assert_eq!(read.names(), ["pins:read"]);
    }

    #[test]
    fn a_token_is_refused_from_its_expiry_on_and_once_revoked() {
        assert_eq!(token_status(None, None, 5), TokenStatus::Active);
        assert_eq!(token_status(Some(10), None, 9), TokenStatus::Active);
        assert_eq!(token_status(Some(10), None, 10), TokenStatus::Expired);
        assert_eq!(token_status(Some(10), Some(1), 5), TokenStatus::Revoked);
        assert_eq!(token_status(None, Some(1), 5), TokenStatus::Revoked);
    }

    #[test]
    fn token_names_are_bounded_and_printable() {
        assert!(valid_token_name("laptop"));
        assert!(valid_token_name(&"x".repeat(MAX_TOKEN_NAME)));
        assert!(!valid_token_name(&"x".repeat(MAX_TOKEN_NAME + 1)));
        assert!(!valid_token_name(""));
        assert!(!valid_token_name("a\nb"));
    }
}
