use async_graphql::{Context, Object, Result, SimpleObject, ID};

use crate::auth::{service, AuthUser, Role};

use super::context::{client_addr, session_id, state, user};

/// An account.
#[derive(SimpleObject)]
#[graphql(name = "User")]
pub struct UserGql {
    /// The account's id.
    pub id: ID,
    /// The address the account signs in with.
    pub email: String,
    /// What the account may do beyond a buyer's own data (none for a buyer).
    pub roles: Vec<Role>,
}

impl From<&AuthUser> for UserGql {
    fn from(u: &AuthUser) -> Self {
        UserGql { id: ID(u.id.to_string()), email: u.email.clone(), roles: u.roles.clone() }
    }
}

/// A signed-in session's tokens.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// A short-lived JWT to send as `Authorization: Bearer <token>` (and in `connection_init` for
    /// subscriptions).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// When the access token stops working, in Unix seconds.
    #[graphql(deprecation = "Use accessExpiresAt, a DateTime like every other time in this API.")]
    pub expires_at: i64,
    /// When the access token stops working.
    pub access_expires_at: chrono::DateTime<chrono::Utc>,
    /// Exchanges for a new pair with `refreshSession`, once: it rotates on every use, and using a
    /// spent one ends the session.
    pub refresh_token: String,
    /// When the refresh token expires unless it is spent before.
    pub refresh_expires_at: chrono::DateTime<chrono::Utc>,
    /// The signed-in account.
    pub user: UserGql,
}

impl From<service::Session> for AuthPayload {
    fn from(s: service::Session) -> Self {
        AuthPayload {
            access_token: s.access_token,
            token_type: "Bearer".into(),
            expires_at: s.expires_at as i64,
            access_expires_at: chrono::DateTime::from_timestamp(s.expires_at as i64, 0).unwrap_or_default(),
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
    async fn register(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The address to sign in with; one account per address.")] email: String,
        #[graphql(desc = "8 to 128 characters.")] password: String,
    ) -> Result<AuthPayload> {
        let s = state(ctx);
        Ok(s.auth.register(client_addr(ctx), &email, &password).await?.into())
    }

    /// Signs in. Limited per account and per client address (`TOO_MANY_REQUESTS`, with
    /// `extensions.retryAfterSeconds`).
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account's address.")] email: String,
        #[graphql(desc = "The account's password.")] password: String,
    ) -> Result<AuthPayload> {
        let s = state(ctx);
        Ok(s.auth.login(client_addr(ctx), &email, &password).await?.into())
    }

    /// Spends a refresh token for a new access and refresh token of the same session.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The refresh token of the last `AuthPayload`.")] refresh_token: String,
    ) -> Result<AuthPayload> {
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
