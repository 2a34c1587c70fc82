use async_graphql::{Context, Object, Result, SimpleObject, ID};

use crate::auth::{service, AuthUser};

use super::context::{client_addr, session_id, state, user};

#[derive(SimpleObject)]
#[graphql(name = "User")]
pub struct UserGql {
    pub id: ID,
    pub email: String,
    /// Roles beyond a buyer's: `operator` sees every saga.
    pub roles: Vec<String>,
}

impl From<&AuthUser> for UserGql {
    fn from(u: &AuthUser) -> Self {
        UserGql {
            id: ID(u.id.to_string()),
            email: u.email.clone(),
            roles: u.roles.iter().map(|r| r.as_str().to_string()).collect(),
        }
    }
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    /// A short-lived JWT to send as `Authorization: Bearer <token>` (and in `connection_init` for
    /// subscriptions).
    pub access_token: String,
    pub token_type: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Exchanges for a new pair with `refreshSession`, once: it rotates on every use, and using a
    /// spent one ends the session.
    pub refresh_token: String,
    pub refresh_expires_at: chrono::DateTime<chrono::Utc>,
    pub user: UserGql,
}

impl From<service::Session> for AuthPayload {
    fn from(s: service::Session) -> Self {
        AuthPayload {
            access_token: s.access_token,
            token_type: "Bearer".into(),
            expires_at: s.expires_at as i64,
            refresh_token: s.refresh_token,
            refresh_expires_at: s.refresh_expires_at,
            user: UserGql::from(&s.user),
        }
    }
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<UserGql> {
        Ok(UserGql::from(user(ctx)?))
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Creates an account and signs it in. Limited per client address.
    async fn register(&self, ctx: &Context<'_>, email: String, password: String) -> Result<AuthPayload> {
        let s = state(ctx);
        Ok(s.auth.register(client_addr(ctx), &email, &password).await?.into())
    }

    /// Signs in. Limited per account and per client address (`TOO_MANY_REQUESTS`, with
    /// `extensions.retryAfterSeconds`).
    async fn login(&self, ctx: &Context<'_>, email: String, password: String) -> Result<AuthPayload> {
        let s = state(ctx);
        Ok(s.auth.login(client_addr(ctx), &email, &password).await?.into())
    }

    /// Spends a refresh token for a new access and refresh token of the same session.
    async fn refresh_session(&self, ctx: &Context<'_>, refresh_token: String) -> Result<AuthPayload> {
        let s = state(ctx);
        Ok(s.auth.refresh(&refresh_token).await?.into())
    }

    /// Ends the caller's session: its refresh token and every access token it issued stop working.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool> {
        let session = session_id(ctx)?;
        state(ctx).auth.logout(session).await?;
        Ok(true)
    }
}
