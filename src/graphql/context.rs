//! The request context every resolver reads: the state shared by all requests, who is calling,
//! where from, and the trace. A leaf: it knows no resolver.

use std::sync::Arc;

use async_graphql::Context;
use sqlx::PgPool;

use ecommerce_checkout::order::live::OrderFeed;
use ecommerce_checkout::saga::feed::EventFeed;
use ecommerce_checkout::saga::Sagas;
use ecommerce_platform::config::Config;
use ecommerce_platform::error::AppError;
use ecommerce_platform::metrics::Metrics;
use ecommerce_storefront::cart::live::CartFeed;
use ecommerce_storefront::mongo::Mongo;

use crate::auth::{AuthService, AuthUser, KeyRing, Role, TokenError};

/// Shared by every request.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub mongo: Mongo,
    pub keys: Arc<KeyRing>,
    pub auth: Arc<AuthService>,
    pub sagas: Arc<Sagas>,
    pub feed: EventFeed,
    /// The process's `myOrders` streams.
    pub orders: OrderFeed,
    /// The process's `myCart` streams.
    pub carts: CartFeed,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Documents sent with their hash (automatic persisted queries), so that a client may send the
    /// hash alone next time.
    pub persisted_queries: super::persisted::PersistedQueries,
}

/// Who is calling, decided once per request (or websocket connection).
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// A verified access token: the user and the session it belongs to.
    User(AuthUser, uuid::Uuid),
    BadToken(TokenError),
}

/// The client's network address (the peer, or the `X-Forwarded-For` entry the outermost trusted
/// proxy wrote), as per-address limits count it: an IPv6 address by its /64.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Per-request trace id, carried into the saga and across the broker.
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

pub fn state<'a>(ctx: &Context<'a>) -> &'a ApiState {
    ctx.data_unchecked::<ApiState>()
}

/// The authenticated caller, or `UNAUTHENTICATED`.
pub fn user<'a>(ctx: &Context<'a>) -> Result<&'a AuthUser, async_graphql::Error> {
    match ctx.data_opt::<Caller>() {
        Some(Caller::User(u, _)) => Ok(u),
        Some(Caller::BadToken(e)) => Err(AppError::InvalidCredentials(match e {
            TokenError::Expired => "access token has expired",
            TokenError::UnknownKey => "access token was signed by an unknown key",
            TokenError::Revoked => "session has ended; sign in again",
            _ => "access token is invalid",
        })
        .into()),
        _ => Err(AppError::Unauthenticated.into()),
    }
}

/// The authenticated caller if it holds the operator role; `FORBIDDEN` if it does not.
pub fn operator<'a>(ctx: &Context<'a>) -> Result<&'a AuthUser, async_graphql::Error> {
    let u = user(ctx)?;
    if u.has(Role::Operator) {
        Ok(u)
    } else {
        Err(AppError::Forbidden("the operator role is required").into())
    }
}

/// Lets operators through; anyone else gets `FORBIDDEN` (`UNAUTHENTICATED` without a valid
/// token). Put on a field: `#[graphql(guard = "OperatorOnly")]`.
pub struct OperatorOnly;

impl async_graphql::Guard for OperatorOnly {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        operator(ctx).map(|_| ())
    }
}

/// The caller's session, or `UNAUTHENTICATED`.
pub fn session_id(ctx: &Context<'_>) -> Result<uuid::Uuid, async_graphql::Error> {
    user(ctx)?;
    match ctx.data_opt::<Caller>() {
        Some(Caller::User(_, sid)) => Ok(*sid),
        _ => Err(AppError::Unauthenticated.into()),
    }
}

/// Where the request came from, as per-address limits count it (HTTP and WebSocket both say);
/// the unspecified address when a transport did not.
pub fn client_addr(ctx: &Context<'_>) -> std::net::IpAddr {
    ctx.data_opt::<ClientAddr>().map(|a| a.0).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

pub fn trace_id(ctx: &Context<'_>) -> String {
    ctx.data_opt::<TraceId>()
        .map(|t| t.0.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}
