use async_graphql::{Context, Object, Result, SimpleObject, ID};

use super::service;
use crate::graphql::{gql, state, user};

#[derive(SimpleObject)]
#[graphql(name = "User")]
pub struct UserGql {
    pub id: ID,
    pub email: String,
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    /// A JWT to send as `Authorization: Bearer <token>` (and in `connection_init` for subscriptions).
    pub access_token: String,
    pub token_type: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub user: UserGql,
}

impl From<service::Session> for AuthPayload {
    fn from(s: service::Session) -> Self {
        AuthPayload {
            access_token: s.access_token,
            token_type: "Bearer".into(),
            expires_at: s.expires_at as i64,
            user: UserGql { id: ID(s.user.id.to_string()), email: s.user.email },
        }
    }
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<UserGql> {
        let u = user(ctx)?;
        Ok(UserGql { id: ID(u.id.to_string()), email: u.email.clone() })
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Creates an account and signs it in.
    async fn register(&self, ctx: &Context<'_>, email: String, password: String) -> Result<AuthPayload> {
        let s = state(ctx);
        Ok(service::register(&s.pool, &s.keys, &email, &password).await.map_err(gql)?.into())
    }

    async fn login(&self, ctx: &Context<'_>, email: String, password: String) -> Result<AuthPayload> {
        let s = state(ctx);
        Ok(service::login(&s.pool, &s.keys, &email, &password).await.map_err(gql)?.into())
    }
}
