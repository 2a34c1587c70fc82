use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Object, Result, ID};
use base64::Engine;

use ecommerce_core::catalog::Product;
use ecommerce_core::domain::Sku;
use ecommerce_platform::error::AppError;
use ecommerce_storefront::mongo::catalog;

use super::context::state;
use super::loader::StockLoader;
use super::node::NodeId;
use super::page::{self, connection, PageRequest};
use super::types::MoneyGql;

pub struct ProductGql(pub Product);

/// Something the shop sells.
#[Object(name = "Product")]
impl ProductGql {
    /// The product's global id.
    pub(crate) async fn id(&self) -> ID {
        NodeId::Product(self.0.sku.clone()).encode()
    }
    /// Its stock-keeping unit, unique in the catalog.
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    /// What it is called.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The price of one unit.
    async fn price(&self) -> Result<MoneyGql> {
        MoneyGql::try_from(&self.0.price)
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

connection!(
    ProductConnection,
    ProductGql,
    "A page of the catalog, by SKU (a Relay cursor connection).",
    "Products in the catalog, on every page."
);

fn product_cursor(p: &ProductGql) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("p|{}", p.0.sku))
}

fn product_after(cursor: &str) -> Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|raw| raw.strip_prefix("p|").map(str::to_string))
        .ok_or_else(|| AppError::bad_input("not a cursor of this list").into())
}

#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// The catalog by SKU: the `first` (default 20) after the cursor `after`, or the `last`
    /// before `before` (0 to 100 either way); costs the page size times its selection in query
    /// complexity.
    #[graphql(complexity = "page::complexity(first, last, 20, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size from the start (0 to 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "Page size from the end (0 to 100).")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
    ) -> Result<ProductConnection> {
        let req = PageRequest::new(first, last, after, before, 20)?;
        let after = req.after.as_deref().map(product_after).transpose()?;
        let before = req.before.as_deref().map(product_after).transpose()?;
        let mongo = &state(ctx).mongo;
        let (products, more) =
            catalog::page(mongo, after.as_deref(), before.as_deref(), req.limit, req.from_end)
                .await
                .map_err(AppError::from)?;
        let total = catalog::count(mongo).await.map_err(AppError::from)? as i64;
        let (edges, page_info) =
            req.finish(products.into_iter().map(ProductGql).collect(), more, product_cursor);
        Ok(ProductConnection { page_info, edges, total_count: total })
    }

    /// One product; `null` when the catalog has none with this SKU.
    async fn product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
    ) -> Result<Option<ProductGql>> {
        let Ok(sku) = Sku::parse(&sku) else {
            return Ok(None);
        };
        let found =
            catalog::by_skus(&state(ctx).mongo, &[sku.into_string()]).await.map_err(AppError::from)?;
        Ok(found.into_iter().next().map(ProductGql))
    }
}
