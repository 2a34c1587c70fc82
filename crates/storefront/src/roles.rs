//! The workers binary's role: the checkout's workers plus the cart worker, which keeps carts in
//! step with orders.

use std::sync::Arc;

use ecommerce_checkout::payment::PaymentGateway;
use ecommerce_checkout::roles::{self, Services, Worker};
use ecommerce_platform::broker::Topic;
use ecommerce_platform::consumer::counted;
use ecommerce_platform::metrics::ConsumerStats;
use tokio_util::sync::CancellationToken;

use crate::cart::worker::{self as cart_worker, CartWorker};
use crate::mongo::Mongo;

/// Runs the stock, payment and cart workers and an outbox relay until `shutdown`.
pub async fn run_workers(
    s: Services,
    mongo: Mongo,
    gateway: Arc<dyn PaymentGateway>,
    stats: Arc<ConsumerStats>,
    shutdown: CancellationToken,
) {
    let mut workers = roles::checkout_workers(&s, gateway, &stats, &shutdown);
    let cart = CartWorker::new(mongo, s.transport.clone());
    workers.push(Worker {
        name: cart_worker::CONSUMER,
        topic: Topic::OrderEvents,
        handler: counted(stats.clone(), move |e| {
            let w = cart.clone();
            Box::pin(async move { w.handle(e).await })
        }),
        batch: None,
    });
    roles::run_workers(s, workers, stats, shutdown).await
}
