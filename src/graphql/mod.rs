//! The GraphQL backend-for-frontend: the schema root assembled from each feature's resolvers,
//! with its limits. Resolvers read the request through [`context`]; errors become
//! `extensions.code` in [`error`].

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod context;
pub mod cost;
pub mod error;
pub mod introspection;
pub mod limits;
pub mod loader;
pub mod metrics;
pub mod node;
pub mod order;
pub mod page;
pub mod payload;
pub mod persisted;
pub mod saga;
pub mod types;

use async_graphql::dataloader::DataLoader;
use async_graphql::{MergedObject, MergedSubscription, Schema};

use ecommerce_platform::config::Config;

pub use context::{ApiState, Caller, ClientAddr, TraceId};
use loader::{
    OrderLinesLoader, OrderLoader, ProductLoader, SagaByOrderLoader, SagaEventsLoader, SagaLoader,
    StockLoader,
};

/// What can be read: the catalog, and the signed-in user's account, cart and orders (operators:
/// every saga).
#[derive(MergedObject, Default)]
pub struct Query(
    node::NodeQuery,
    auth::AuthQuery,
    catalog::CatalogQuery,
    cart::CartQuery,
    order::OrderQuery,
    saga::SagaQuery,
);

/// What can be changed: accounts and sessions, the cart, orders (operators: saga repairs).
#[derive(MergedObject, Default)]
pub struct Mutation(auth::AuthMutation, cart::CartMutation, order::OrderMutation, saga::SagaMutation);

/// What can be followed live over graphql-ws: an order's checkout (operators: every saga).
#[derive(MergedSubscription, Default)]
pub struct Subscription(order::OrderSubscription, saga::SagaSubscription);

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// The schema with its limits. `state` is `None` only when printing the SDL.
pub fn build_schema(state: Option<ApiState>, config: &Config) -> AppSchema {
    // Depth is not the engine's `limit_depth`: that one counts introspection too and refuses the
    // standard introspection query (see `limits`).
    let mut builder = Schema::build(Query::default(), Mutation::default(), Subscription::default())
        .limit_recursive_depth(limits::MAX_RECURSIVE_DEPTH)
        .limit_directives(8);
    // Complexity is limited (and reported) by `cost`, not the engine: see there.
    builder = builder.extension(cost::QueryCost(cost::Limits {
        max_complexity: config.api.graphql.max_complexity,
        max_depth: config.api.graphql.max_depth,
        max_aliases: config.api.graphql.max_aliases,
    }));
    builder = builder.extension(error::ErrorPolicy).extension(introspection::SchemaDescription).extension(
        limits::DocumentLimitsExtension {
            limits: limits::DocumentLimits {
                max_depth: config.api.graphql.max_depth,
                max_aliases: config.api.graphql.max_aliases,
            },
            persisted: state.as_ref().map(|s| s.persisted_queries.clone()),
        },
    );
    if !config.api.graphql.introspection {
        // "Did you mean ...?" would tell field names that introspection is off to hide.
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(state) = state {
        builder = builder
            .extension(metrics::OperationMetrics(state.metrics.clone()))
            .data(DataLoader::new(ProductLoader { mongo: state.mongo.clone() }, tokio::spawn))
            .data(DataLoader::new(StockLoader { pool: state.pool.clone() }, tokio::spawn))
            .data(DataLoader::new(OrderLinesLoader { pool: state.pool.clone() }, tokio::spawn))
            .data(DataLoader::new(SagaByOrderLoader { pool: state.pool.clone() }, tokio::spawn))
            .data(DataLoader::new(SagaEventsLoader { pool: state.pool.clone() }, tokio::spawn))
            .data(DataLoader::new(SagaLoader { pool: state.pool.clone() }, tokio::spawn))
            .data(DataLoader::new(OrderLoader { pool: state.pool.clone() }, tokio::spawn))
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
