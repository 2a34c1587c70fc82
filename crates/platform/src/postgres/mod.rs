//! PostgreSQL: the pool, migrations, and the outbox/inbox every role writes through.

pub mod inbox;
pub mod outbox;

use crate::config::ExposeSecret;
use std::time::Duration;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::config::Config;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Describes the server without the password, for error messages.
/// Runs `one` (a statement that deletes at most `batch` rows and says how many it did) until it
/// deletes fewer: a large deletion as short statements, none holding locks for long. Returns the
/// rows deleted in all.
pub async fn delete_in_batches<F, Fut>(batch: i64, mut one: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let deleted = one().await?;
        total += deleted;
        if (deleted as i64) < batch {
            return Ok(total);
        }
    }
}

pub fn describe(url: &str) -> String {
    match url.parse::<PgConnectOptions>() {
        Ok(o) => format!("PostgreSQL at {}:{}", o.get_host(), o.get_port()),
        Err(_) => "PostgreSQL".to_string(),
    }
}

pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(config.postgres.url.expose_secret())
        .await
}

/// Creates the database if it does not exist, then applies pending migrations.
pub async fn migrate(config: &Config) -> Result<(), sqlx::Error> {
    if !Postgres::database_exists(config.postgres.url.expose_secret()).await? {
        Postgres::create_database(config.postgres.url.expose_secret()).await?;
    }
    let pool = PgPoolOptions::new().max_connections(1).connect(config.postgres.url.expose_secret()).await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}
