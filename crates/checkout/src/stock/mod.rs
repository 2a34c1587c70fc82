//! Stock: how many units of each sku can still be sold, and per-order reservations.

pub mod worker;

use sqlx::PgExecutor;

/// Sets the stock level of a sku (used by the seed command and tests).
pub async fn set_level<'e>(db: impl PgExecutor<'e>, sku: &str, available: i32) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO stock (sku, available) VALUES ($1, $2) ON CONFLICT (sku) DO UPDATE SET available = $2",
        sku,
        available,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn levels<'e>(db: impl PgExecutor<'e>, skus: &[String]) -> Result<Vec<(String, i32)>, sqlx::Error> {
    let rows =
        sqlx::query!("SELECT sku, available FROM stock WHERE sku = ANY($1)", skus).fetch_all(db).await?;
    Ok(rows.into_iter().map(|r| (r.sku, r.available)).collect())
}
