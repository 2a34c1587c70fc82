use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Object, Result};

use ecommerce_core::catalog::Product;
use ecommerce_core::domain::Sku;
use ecommerce_platform::error::AppError;
use ecommerce_storefront::mongo::catalog;

use super::context::state;
use super::loader::StockLoader;
use super::types::MoneyGql;

pub struct ProductGql(pub Product);

/// Something the shop sells.
#[Object(name = "Product")]
impl ProductGql {
    /// Its stock-keeping unit, unique in the catalog.
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    /// What it is called.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The price of one unit.
    async fn price(&self) -> MoneyGql {
        (&self.0.price).into()
    }
    /// Units that can still be ordered.
    async fn stock_level(&self, ctx: &Context<'_>) -> Result<i32> {
        let loader = ctx.data_unchecked::<DataLoader<StockLoader>>();
        let level = loader
            .load_one(self.0.sku.clone())
            .await
            .map_err(|e| async_graphql::Error::from(AppError::Internal(e.to_string())))?;
        Ok(level.unwrap_or(0))
    }
}

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// Up to `first` (1 to 100) products; costs `first` times its selection in query complexity.
    #[graphql(complexity = "first.clamp(1, 100) as usize * child_complexity")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 100), desc = "How many (1 to 100).")] first: i32,
    ) -> Result<Vec<ProductGql>> {
        let products = catalog::list(&state(ctx).mongo, first as i64).await.map_err(AppError::from)?;
        Ok(products.into_iter().map(ProductGql).collect())
    }

    /// One product; `NOT_FOUND` when the catalog has none with this SKU.
    async fn product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
    ) -> Result<ProductGql> {
        let sku = Sku::parse(&sku).map_err(AppError::from)?;
        let found =
            catalog::by_skus(&state(ctx).mongo, &[sku.into_string()]).await.map_err(AppError::from)?;
        Ok(found.into_iter().next().map(ProductGql).ok_or(AppError::NotFound("product"))?)
    }
}
