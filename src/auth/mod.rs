//! Accounts and tokens: argon2id password hashes, Ed25519-signed JWTs whose keys live in PostgreSQL
//! (so every API instance signs and verifies with the same set) and are published as a JWKS.

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
    pub roles: Vec<Role>,
}

impl AuthUser {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// What an account may do beyond its own data. Tokens and the database name it in lowercase;
/// GraphQL as an enum (`OPERATOR`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString, async_graphql::Enum,
)]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Sees every saga (the monitor page, operator queries and subscriptions).
    Operator,
}

impl Role {
    /// The name in tokens and in `user_roles` (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// The roles named in both lists (token and database), unknown names dropped.
    pub fn granted(in_token: &[String], in_database: &[String]) -> Vec<Role> {
        in_token.iter().filter(|r| in_database.contains(r)).filter_map(|r| Role::parse(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn a_role_counts_only_when_token_and_database_both_name_it() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(Role::granted(&s(&["operator"]), &s(&["operator"])), vec![Role::Operator]);
        assert!(Role::granted(&s(&["operator"]), &s(&[])).is_empty(), "revoked since the token was issued");
        assert!(Role::granted(&s(&[]), &s(&["operator"])).is_empty(), "granted after: sign in again");
        assert!(Role::granted(&s(&["root"]), &s(&["root"])).is_empty(), "unknown role");
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
    }
}
