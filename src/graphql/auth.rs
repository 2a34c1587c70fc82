use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};

use crate::auth::{service, AuthUser, Role};
use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::error::{AppError, AppResult};

use super::context::{client_addr, session_id, state, user};
use super::payload::UserErrorGql;

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
    #[graphql(flatten)]
    pub session: AuthSession,
    /// When the access token stops working, in Unix seconds.
    #[graphql(deprecation = "Use accessExpiresAt, a DateTime like every other time in this API.")]
    pub expires_at: i64,
}

impl From<service::Session> for AuthPayload {
    fn from(s: service::Session) -> Self {
        let expires_at = s.expires_at as i64;
        AuthPayload { session: s.into(), expires_at }
    }
}

/// A signed-in session: its tokens and its account.
#[derive(SimpleObject)]
pub struct AuthSession {
    /// A short-lived JWT to send as `Authorization: Bearer <token>` (and in `connection_init` for
    /// subscriptions).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
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

impl From<service::Session> for AuthSession {
    fn from(s: service::Session) -> Self {
        AuthSession {
            access_token: s.access_token,
            token_type: "Bearer".into(),
            access_expires_at: chrono::DateTime::from_timestamp(s.expires_at as i64, 0).unwrap_or_default(),
            refresh_token: s.refresh_token,
            refresh_expires_at: s.refresh_expires_at,
            user: UserGql::from(&s.user),
        }
    }
}

/// An account to create.
#[derive(InputObject)]
pub struct SignUpInput {
    /// The address to sign in with; one account per address.
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
}

/// An account to sign in to.
#[derive(InputObject)]
pub struct SignInInput {
    /// The account's address.
    pub email: String,
    /// The account's password.
    pub password: String,
}

/// What `signUp` or `signIn` did: the new session, or what the person can fix, by field.
#[derive(SimpleObject)]
pub struct SessionPayload {
    /// The session; `null` when the request was refused (see `userErrors`).
    pub session: Option<AuthSession>,
    /// Why the request was refused, each naming its input field (`["input", "password"]`); empty
    /// when it was carried out.
    pub user_errors: Vec<UserErrorGql>,
}

impl SessionPayload {
    /// A refusal (and wrong credentials) become `userErrors`; anything else (a rate limit, an
    /// internal failure) stays a top-level error.
    fn of(result: AppResult<service::Session>) -> Result<SessionPayload, AppError> {
        let refusal = match result {
            Ok(s) => return Ok(SessionPayload { session: Some(s.into()), user_errors: Vec::new() }),
            Err(AppError::Refused(r)) => r,
            Err(AppError::InvalidCredentials(_)) => Refusal::new(
                UserErrorCode::InvalidCredentials,
                "The e-mail address or the password is not right.",
            ),
            Err(e) => return Err(e),
        };
        Ok(SessionPayload { session: None, user_errors: vec![UserErrorGql::from(refusal).within("input")] })
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
    /// Creates an account and signs it in; what the person can fix (`INVALID_EMAIL`,
    /// `EMAIL_TAKEN`, `PASSWORD_TOO_SHORT`, `PASSWORD_TOO_LONG`) comes back in `userErrors` by
    /// field. Limited per client address (`TOO_MANY_REQUESTS`, a top-level error).
    async fn sign_up(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new account's e-mail address and password.")] input: SignUpInput,
    ) -> Result<SessionPayload> {
        let s = state(ctx);
        Ok(SessionPayload::of(s.auth.register(client_addr(ctx), &input.email, &input.password).await)?)
    }

    /// Signs in; a wrong e-mail address or password is `INVALID_CREDENTIALS` in `userErrors`.
    /// Limited per account and per client address (`TOO_MANY_REQUESTS`, a top-level error with
    /// `extensions.retryAfterSeconds`).
    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account's e-mail address and password.")] input: SignInInput,
    ) -> Result<SessionPayload> {
        let s = state(ctx);
        Ok(SessionPayload::of(s.auth.login(client_addr(ctx), &input.email, &input.password).await)?)
    }

    /// Creates an account and signs it in. Limited per client address.
    #[graphql(deprecation = "Use signUp: what the person can fix comes back in userErrors, by field.")]
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
    #[graphql(deprecation = "Use signIn: wrong credentials come back in userErrors.")]
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
