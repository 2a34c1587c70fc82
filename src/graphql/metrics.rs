//! Request duration per operation, named as the engine resolved it (the request's
//! `operationName`, or the only operation's name in the document), so a leading comment, a
//! fragment first or a persisted query do not hide it. Requests the engine refuses before
//! choosing an operation (parse or validation errors) count as `anonymous`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextRequest};
use async_graphql::Response;
use ecommerce_platform::metrics::Metrics;

/// Observes every request's duration in `graphql_request_duration_seconds{operation}`.
pub struct OperationMetrics(pub Arc<Metrics>);

impl ExtensionFactory for OperationMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Timed { metrics: self.0.clone(), operation: Mutex::new(None) })
    }
}

/// One request's timing (the factory makes one per request).
struct Timed {
    metrics: Arc<Metrics>,
    operation: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Extension for Timed {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let operation = self.operation.lock().expect("operation name").take();
        self.metrics.observe_graphql(operation.as_deref(), started.elapsed().as_secs_f64());
        response
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        *self.operation.lock().expect("operation name") = operation_name.map(str::to_string);
        next.run(ctx, operation_name).await
    }
}
