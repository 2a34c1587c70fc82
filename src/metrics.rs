//! Prometheus metrics of the API, at `GET /metrics` (OpenMetrics text).
//!
//! Request durations are measured as requests happen. Saga and outbox figures are read from
//! PostgreSQL when scraped, so every API replica reports the same, whole-system numbers.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sqlx::{PgPool, Row};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaLabels {
    status: String,
    reason: String,
}

/// The operation's name: the request's `operationName`, else the name written in the document
/// (`query MyOrders { ... }`), else `None`.
pub fn operation_name<'a>(explicit: Option<&'a str>, query: &'a str) -> Option<&'a str> {
    if explicit.is_some() {
        return explicit;
    }
    let rest = query.trim_start();
    let kind = ["query", "mutation", "subscription"].into_iter().find(|k| rest.starts_with(k))?;
    let after = &rest[kind.len()..];
    let name_start = after.trim_start();
    if name_start.len() == after.len() {
        return None; // e.g. `queryX`, not the keyword
    }
    let end = name_start.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(name_start.len());
    (end > 0).then(|| &name_start[..end])
}

/// Distinct operation names kept as labels; later ones are counted as `other`.
const MAX_OPERATIONS: usize = 100;

pub struct Metrics {
    registry: Registry,
    graphql: Family<OperationLabels, Histogram>,
    operations: Mutex<HashSet<String>>,
    sagas: Family<SagaLabels, Gauge>,
    outbox_pending: Gauge,
    outbox_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ecommerce_saga");
        let graphql = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "graphql_request_duration_seconds",
            "GraphQL requests by operation name (`anonymous` when unnamed)",
            graphql.clone(),
        );
        let sagas = Family::<SagaLabels, Gauge>::default();
        registry.register("sagas", "Sagas by status and failure reason", sagas.clone());
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Messages committed but not yet published",
            outbox_pending.clone(),
        );
        let outbox_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest unpublished message (outbox lag)",
            outbox_oldest.clone(),
        );
        Metrics { registry, graphql, operations: Mutex::default(), sagas, outbox_pending, outbox_oldest }
    }

    /// Records one GraphQL request. Client-chosen names are labels only while there are few.
    pub fn observe_graphql(&self, operation: Option<&str>, seconds: f64) {
        let name = match operation {
            None => "anonymous".to_string(),
            Some(op) if op.len() <= 64 && op.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                let mut seen = self.operations.lock().expect("operations");
                if seen.contains(op) || seen.len() < MAX_OPERATIONS {
                    seen.insert(op.to_string());
                    op.to_string()
                } else {
                    "other".to_string()
                }
            }
            Some(_) => "other".to_string(),
        };
        self.graphql.get_or_create(&OperationLabels { operation: name }).observe(seconds);
    }

    /// The metrics as OpenMetrics text, with saga and outbox figures read now.
    pub async fn render(&self, pool: &PgPool) -> Result<String, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT status, coalesce(failure_reason, '') AS reason, count(*) AS n FROM sagas GROUP BY 1, 2",
        )
        .fetch_all(pool)
        .await?;
        self.sagas.clear();
        for r in &rows {
            let labels = SagaLabels { status: r.get("status"), reason: r.get("reason") };
            self.sagas.get_or_create(&labels).set(r.get::<i64, _>("n"));
        }
        let outbox = sqlx::query(
            "SELECT count(*) AS n, coalesce(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS age FROM outbox",
        )
        .fetch_one(pool)
        .await?;
        self.outbox_pending.set(outbox.get::<i64, _>("n"));
        self.outbox_oldest.set(outbox.get::<f64, _>("age"));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::operation_name;

    #[test]
    fn operation_names_come_from_the_request_or_the_document() {
        assert_eq!(operation_name(Some("Given"), "query Other { me { id } }"), Some("Given"));
        assert_eq!(operation_name(None, "  query MyOrders { orders { id } }"), Some("MyOrders"));
        assert_eq!(operation_name(None, "mutation Place($k: String!) { x }"), Some("Place"));
        assert_eq!(operation_name(None, "{ me { id } }"), None);
        assert_eq!(operation_name(None, "query { me { id } }"), None);
        assert_eq!(operation_name(None, "queryX { me }"), None);
    }
}
