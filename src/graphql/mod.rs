//! The GraphQL backend-for-frontend: schema assembly, request context, limits.

pub mod error;
pub mod introspection;
pub mod limits;

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, MergedObject, MergedSubscription, Schema};
use sqlx::PgPool;

use crate::auth::{AuthService, AuthUser, KeyRing, Role, TokenError};
use crate::catalog::loader::{ProductLoader, StockLoader};
use crate::config::Config;
use crate::error::AppError;
use crate::mongo::Mongo;
use crate::saga::feed::EventFeed;
use crate::saga::SagaDefinition;

pub use error::gql;

/// Shared by every request.
#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub mongo: Mongo,
    pub keys: Arc<KeyRing>,
    pub auth: Arc<AuthService>,
    pub saga: Arc<SagaDefinition>,
    pub feed: EventFeed,
    pub config: Arc<Config>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Who is calling, decided once per request (or websocket connection).
#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// A verified access token: the user and the session it belongs to.
    User(AuthUser, uuid::Uuid),
    BadToken(TokenError),
}

/// The client's network address (the peer, or the first `X-Forwarded-For` hop when trusted).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Per-request trace id, carried into the saga and across the broker.
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

#[derive(MergedObject, Default)]
pub struct Query(
    crate::auth::graphql::AuthQuery,
    crate::catalog::graphql::CatalogQuery,
    crate::cart::graphql::CartQuery,
    crate::order::graphql::OrderQuery,
    crate::saga::graphql::SagaQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    crate::auth::graphql::AuthMutation,
    crate::cart::graphql::CartMutation,
    crate::order::graphql::OrderMutation,
    crate::saga::graphql::SagaMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(crate::order::graphql::OrderSubscription, crate::saga::graphql::SagaSubscription);

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// The schema with its limits. `state` is `None` only when printing the SDL.
pub fn build_schema(state: Option<ApiState>, config: &Config) -> AppSchema {
    // Depth is not the engine's `limit_depth`: that one counts introspection too and refuses the
    // standard introspection query (see `limits`).
    let mut builder = Schema::build(Query::default(), Mutation::default(), Subscription::default())
        .limit_complexity(config.graphql_max_complexity)
        .limit_recursive_depth(limits::MAX_RECURSIVE_DEPTH)
        .limit_directives(8)
        .extension(error::ErrorPolicy)
        .extension(introspection::SchemaDescription)
        .extension(limits::DocumentLimitsExtension(limits::DocumentLimits {
            max_depth: config.graphql_max_depth,
            max_aliases: config.graphql_max_aliases,
        }));
    if !config.graphql_introspection {
        // "Did you mean ...?" would tell field names that introspection is off to hide.
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(state) = state {
        builder = builder
            .data(DataLoader::new(ProductLoader { mongo: state.mongo.clone() }, tokio::spawn))
            .data(DataLoader::new(StockLoader { pool: state.pool.clone() }, tokio::spawn))
            .data(state);
    }
    builder.finish()
}

/// The SDL as committed in `schema/schema.graphql`: what introspection tells, so a client schema
/// built from the running API equals it (`@specifiedBy` on scalars included).
pub fn sdl() -> String {
    let config = Config::from_env().expect("default configuration is valid");
    build_schema(None, &config)
        .sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by())
}

pub fn state<'a>(ctx: &Context<'a>) -> &'a ApiState {
    ctx.data_unchecked::<ApiState>()
}

/// The authenticated caller, or `UNAUTHENTICATED`.
pub fn user<'a>(ctx: &Context<'a>) -> Result<&'a AuthUser, async_graphql::Error> {
    match ctx.data_opt::<Caller>() {
        Some(Caller::User(u, _)) => Ok(u),
        Some(Caller::BadToken(e)) => Err(gql(AppError::InvalidCredentials(match e {
            TokenError::Expired => "access token has expired",
            TokenError::UnknownKey => "access token was signed by an unknown key",
            TokenError::Revoked => "session has ended; sign in again",
            _ => "access token is invalid",
        }))),
        _ => Err(gql(AppError::Unauthenticated)),
    }
}

/// The authenticated caller if it holds the operator role; `FORBIDDEN` if it does not.
pub fn operator<'a>(ctx: &Context<'a>) -> Result<&'a AuthUser, async_graphql::Error> {
    let u = user(ctx)?;
    if u.has(Role::Operator) {
        Ok(u)
    } else {
        Err(gql(AppError::Forbidden("the operator role is required")))
    }
}

/// The caller's session, or `UNAUTHENTICATED`.
pub fn session_id(ctx: &Context<'_>) -> Result<uuid::Uuid, async_graphql::Error> {
    user(ctx)?;
    match ctx.data_opt::<Caller>() {
        Some(Caller::User(_, sid)) => Ok(*sid),
        _ => Err(gql(AppError::Unauthenticated)),
    }
}

/// Where the request came from; loopback when the transport did not say.
pub fn client_addr(ctx: &Context<'_>) -> std::net::IpAddr {
    ctx.data_opt::<ClientAddr>().map(|a| a.0).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

pub fn trace_id(ctx: &Context<'_>) -> String {
    ctx.data_opt::<TraceId>()
        .map(|t| t.0.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}
