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

/// A pooled connection idle at least this long is pinged before it is used (see [`connect`]).
const PING_IF_IDLE: Duration = Duration::from_secs(1);

/// The pool. sqlx by default pings a connection when it is taken from the pool and again when it
/// goes back: two round trips per use, on every statement of the hot path. The ping on return
/// (sqlx always does it) closes a connection an error broke. Before use, only a connection idle
/// for [`PING_IF_IDLE`] or more is pinged (the server may have gone away meanwhile); one in use a
/// moment ago is taken as it is, and if the server went away in that moment the statement fails
/// like any other transient error (and is retried where the caller retries).
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
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
