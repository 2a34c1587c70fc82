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

/// When the pool pings a connection before handing it out. sqlx pings when a connection is taken
/// and again, always, when it goes back (which closes a connection an error broke): two round trips
/// per use on top of the statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingBeforeUse {
    /// At every use (sqlx's default): a connection the server dropped a moment ago is noticed
    /// and replaced before a statement fails on it. For roles that answer people (the API).
    Always,
    /// Only a connection idle for [`PING_IF_IDLE`] or more: one round trip less per use. A
    /// statement can fail on a connection the server dropped within that second; for roles whose
    /// failed work is done again anyway (a message redelivered, a loop that runs again): the
    /// orchestrator and the workers.
    WhenIdle,
}

/// See [`PingBeforeUse::WhenIdle`].
pub const PING_IF_IDLE: Duration = Duration::from_secs(1);

/// The pool, pinging connections before use as `ping` says.
pub async fn connect(config: &Config, ping: PingBeforeUse) -> Result<PgPool, sqlx::Error> {
    let options = PgPoolOptions::new()
        .max_connections(config.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(10));
    let options = match ping {
        PingBeforeUse::Always => options,
        PingBeforeUse::WhenIdle => options.test_before_acquire(false).before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        }),
    };
    options.connect(config.postgres.url.expose_secret()).await
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
