//! DataLoaders: what a page of objects asks of each of them is read in one query per request
//! batch: products and stock levels of order lines and cart items, and the lines, sagas and saga
//! events of a page of orders.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use sqlx::PgPool;

use ecommerce_checkout::order::{service, Order, OrderLine};
use ecommerce_checkout::saga::store::{self, SagaEventRow, SagaSummary};
use ecommerce_core::catalog::Product;
use ecommerce_platform::error::AppError;
use ecommerce_storefront::mongo::{catalog, Mongo};
use uuid::Uuid;

pub struct ProductLoader {
    pub mongo: Mongo,
}

impl Loader<String> for ProductLoader {
    type Value = Product;
    type Error = std::sync::Arc<mongodb::error::Error>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Product>, Self::Error> {
        let products = catalog::by_skus(&self.mongo, keys).await.map_err(std::sync::Arc::new)?;
        Ok(products.into_iter().map(|p| (p.sku.clone(), p)).collect())
    }
}

pub struct StockLoader {
    pub pool: PgPool,
}

impl Loader<String> for StockLoader {
    type Value = i32;
    type Error = std::sync::Arc<sqlx::Error>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, i32>, Self::Error> {
        let levels =
            ecommerce_checkout::stock::levels(&self.pool, keys).await.map_err(std::sync::Arc::new)?;
        Ok(levels.into_iter().collect())
    }
}

/// An order's lines, by order id.
pub struct OrderLinesLoader {
    pub pool: PgPool,
}

impl Loader<Uuid> for OrderLinesLoader {
    type Value = Vec<OrderLine>;
    type Error = std::sync::Arc<sqlx::Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Vec<OrderLine>>, Self::Error> {
        let mut by_order: HashMap<Uuid, Vec<OrderLine>> = HashMap::new();
        for (order_id, line) in service::lines_of(&self.pool, keys).await.map_err(std::sync::Arc::new)? {
            by_order.entry(order_id).or_default().push(line);
        }
        Ok(by_order)
    }
}

/// An order's saga of one definition, by (order id, definition name).
pub struct SagaByOrderLoader {
    pub pool: PgPool,
}

impl Loader<(Uuid, String)> for SagaByOrderLoader {
    type Value = SagaSummary;
    type Error = std::sync::Arc<sqlx::Error>;

    async fn load(
        &self,
        keys: &[(Uuid, String)],
    ) -> Result<HashMap<(Uuid, String), SagaSummary>, Self::Error> {
        let mut orders: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        orders.sort();
        orders.dedup();
        let sagas = store::summaries_by_orders(&self.pool, &orders).await.map_err(std::sync::Arc::new)?;
        Ok(sagas
            .into_iter()
            .map(|s| ((s.order_id, s.definition.clone()), s))
            .filter(|(key, _)| keys.contains(key))
            .collect())
    }
}

/// A saga's events in order, by saga id.
pub struct SagaEventsLoader {
    pub pool: PgPool,
}

impl Loader<Uuid> for SagaEventsLoader {
    type Value = Vec<SagaEventRow>;
    type Error = std::sync::Arc<sqlx::Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Vec<SagaEventRow>>, Self::Error> {
        let mut by_saga: HashMap<Uuid, Vec<SagaEventRow>> = HashMap::new();
        for event in store::events_of(&self.pool, keys).await.map_err(std::sync::Arc::new)? {
            by_saga.entry(event.saga_id).or_default().push(event);
        }
        Ok(by_saga)
    }
}

/// Sagas by id: what an event links to.
pub struct SagaLoader {
    pub pool: PgPool,
}

impl Loader<Uuid> for SagaLoader {
    type Value = SagaSummary;
    type Error = std::sync::Arc<sqlx::Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, SagaSummary>, Self::Error> {
        let sagas = store::summaries(&self.pool, keys).await.map_err(std::sync::Arc::new)?;
        Ok(sagas.into_iter().map(|s| (s.id, s)).collect())
    }
}

/// Orders by (owner, id): the caller's orders that events link to; someone else's is absent.
pub struct OrderLoader {
    pub pool: PgPool,
}

impl Loader<(Uuid, Uuid)> for OrderLoader {
    type Value = Order;
    type Error = std::sync::Arc<AppError>;

    async fn load(&self, keys: &[(Uuid, Uuid)]) -> Result<HashMap<(Uuid, Uuid), Order>, Self::Error> {
        let mut by_user: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (user, order) in keys {
            by_user.entry(*user).or_default().push(*order);
        }
        let mut found = HashMap::new();
        for (user, orders) in by_user {
            for o in service::get_many(&self.pool, user, &orders).await.map_err(std::sync::Arc::new)? {
                found.insert((user, o.id), o);
            }
        }
        Ok(found)
    }
}
