//! MongoDB: carts and the catalog.

pub mod carts;
pub mod catalog;

use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use crate::config::Config;

#[derive(Clone)]
pub struct Mongo {
    pub client: Client,
    pub db: Database,
    /// Products read in the last [`catalog::CACHE_TTL`], shared by this process's clones.
    pub(crate) products: std::sync::Arc<std::sync::Mutex<catalog::Cache>>,
}

impl Mongo {
    pub async fn connect(config: &Config) -> Result<Self, mongodb::error::Error> {
        let mut options = ClientOptions::parse(&config.mongo_url).await?;
        options.app_name = Some("ecommerce-saga".into());
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        let client = Client::with_options(options)?;
        let db = client.database(&config.mongo_database);
        Ok(Mongo { client, db, products: Default::default() })
    }

    pub async fn ping(&self) -> Result<(), mongodb::error::Error> {
        self.db.run_command(mongodb::bson::doc! { "ping": 1 }).await.map(|_| ())
    }
}
