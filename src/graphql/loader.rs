//! DataLoaders: order lines and cart items resolve their products in one query per request batch.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use sqlx::PgPool;

use ecommerce_core::catalog::Product;
use ecommerce_storefront::mongo::{catalog, Mongo};

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
