//! MongoDB: carts and the catalog.

pub mod carts;
pub mod catalog;

use ecommerce_platform::config::ExposeSecret;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use ecommerce_platform::config::Config;

#[derive(Clone)]
pub struct Mongo {
    pub client: Client,
    pub db: Database,
    /// Products read in the last [`catalog::CACHE_TTL`], shared by this process's clones.
    pub(crate) products: std::sync::Arc<std::sync::Mutex<catalog::Cache>>,
    /// The carts this process last read or wrote, with their versions ([`carts::cached`]).
    pub(crate) carts: std::sync::Arc<std::sync::Mutex<carts::Known>>,
}

impl Mongo {
    pub async fn connect(config: &Config) -> Result<Self, mongodb::error::Error> {
        Self::connect_with(config, |_| {}).await
    }

    /// Connects with the driver's options changed by `tune` (a command monitor, say).
    pub async fn connect_with(
        config: &Config,
        tune: impl FnOnce(&mut ClientOptions),
    ) -> Result<Self, mongodb::error::Error> {
        let mut options = ClientOptions::parse(config.mongo.url.expose_secret()).await?;
        options.app_name = Some("ecommerce-saga".into());
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        tune(&mut options);
        let client = Client::with_options(options)?;
        let db = client.database(&config.mongo.database);
        Ok(Mongo { client, db, products: Default::default(), carts: Default::default() })
    }

    /// Connects and checks that the server answers.
    pub async fn open(config: &Config) -> Result<Self, mongodb::error::Error> {
        Self::open_with(config, |_| {}).await
    }

    /// [`Mongo::open`] with the driver's options changed by `tune`.
    pub async fn open_with(
        config: &Config,
        tune: impl FnOnce(&mut ClientOptions),
    ) -> Result<Self, mongodb::error::Error> {
        let mongo = Self::connect_with(config, tune).await?;
        mongo.ping().await?;
        Ok(mongo)
    }

    pub async fn ping(&self) -> Result<(), mongodb::error::Error> {
        self.db.run_command(mongodb::bson::doc! { "ping": 1 }).await.map(|_| ())
    }

    /// The database and the server's version, for the startup line.
    pub async fn describe(&self) -> String {
        let version = self
            .db
            .run_command(mongodb::bson::doc! { "buildInfo": 1 })
            .await
            .ok()
            .and_then(|d| d.get_str("version").ok().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        format!("database {} (server {version})", self.db.name())
    }
}
