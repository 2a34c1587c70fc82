//! Accounts and tokens: argon2id password hashes, Ed25519-signed JWTs whose keys live in PostgreSQL
//! (so every API instance signs and verifies with the same set) and are published as a JWKS.

pub mod graphql;
pub mod keys;
pub mod password;
pub mod rate_limit;
pub mod service;

pub use keys::{Claims, KeyRing, TokenError};
pub use service::AuthService;

use uuid::Uuid;

/// The caller, once its access token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
}
