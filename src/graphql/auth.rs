use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};

use crate::auth::{service, AuthUser, Role};
use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::error::{AppError, AppResult};

use super::cart::{announce_cart, CartGql};
use super::context::{client_addr, session_id, state, user};
use super::node::NodeId;
use super::payload::UserErrorGql;
use ecommerce_storefront::mongo::carts::{self, CartKey};

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
    /// A guest cart (`cartCreate`'s id) to move into the new account's cart.
    pub cart_id: Option<ID>,
}

/// An account to sign in to.
#[derive(InputObject)]
pub struct SignInInput {
    /// The account's address.
    pub email: String,
    /// The account's password.
    pub password: String,
    /// A guest cart (`cartCreate`'s id) to merge into the account's cart: its lines are added to
    /// the account's (at most 99 units a line) and the guest cart is gone. An id that names no
    /// guest cart (merged already, say, by an earlier try) changes nothing.
    pub cart_id: Option<ID>,
}

/// What `signUp` or `signIn` did: the new session, or what the person can fix, by field.
#[derive(SimpleObject)]
pub struct SessionPayload {
    /// The session; `null` when the request was refused (see `userErrors`).
    pub session: Option<AuthSession>,
    /// The account's cart, with the guest cart of `input.cartId` merged into it; `null` when the
    /// request was refused.
    pub cart: Option<CartGql>,
    /// Why the request was refused, each naming its input field (`["input", "password"]`); empty
    /// when it was carried out.
    pub user_errors: Vec<UserErrorGql>,
}

impl SessionPayload {
    /// A refusal (and wrong credentials) become `userErrors`; anything else (a rate limit, an
    /// internal failure) stays a top-level error. Signed in, the guest cart `cart_id` is merged
    /// into the account's, and the account's cart is read when the query asks for it.
    async fn of(
        ctx: &Context<'_>,
        result: AppResult<service::Session>,
        cart_id: Option<&ID>,
    ) -> Result<SessionPayload, AppError> {
        let refusal = match result {
            Ok(s) => {
                let user_id = s.user.id;
                let cart = signed_in_cart(ctx, user_id, cart_id).await?;
                return Ok(SessionPayload { session: Some(s.into()), cart, user_errors: Vec::new() });
            }
            Err(AppError::Refused(r)) => r,
            Err(AppError::InvalidCredentials(_)) => Refusal::new(
                UserErrorCode::InvalidCredentials,
                "The e-mail address or the password is not right.",
            ),
            Err(e) => return Err(e),
        };
        let user_errors = vec![UserErrorGql::from(refusal).within("input")];
        Ok(SessionPayload { session: None, cart: None, user_errors })
    }
}

/// The account's cart after `guest` (a guest cart's id) was merged into it, if the query asks
/// for the cart or a guest cart was named.
async fn signed_in_cart(
    ctx: &Context<'_>,
    user_id: uuid::Uuid,
    guest: Option<&ID>,
) -> AppResult<Option<CartGql>> {
    let mongo = &state(ctx).mongo;
    let key = CartKey::User(user_id);
    let merged = match guest.and_then(|id| NodeId::decode(id)) {
        Some(NodeId::Cart(CartKey::Guest(guest))) => carts::merge_guest(mongo, user_id, guest).await?,
        _ => None,
    };
    if merged.is_some() {
        announce_cart(state(ctx), user_id);
    }
    let cart = match merged {
        Some(cart) => Some(cart),
        None if ctx.look_ahead().field("cart").exists() => Some(carts::load(mongo, key).await?),
        None => None,
    };
    Ok(cart.map(|c| CartGql::new(key, c)))
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
        let result = s.auth.register(client_addr(ctx), &input.email, &input.password).await;
        Ok(SessionPayload::of(ctx, result, input.cart_id.as_ref()).await?)
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
        let result = s.auth.login(client_addr(ctx), &input.email, &input.password).await;
        Ok(SessionPayload::of(ctx, result, input.cart_id.as_ref()).await?)
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
