//! A page of orders with their lines, sagas and saga events costs a constant number of queries,
//! not one per order: the DataLoaders batch them. The API's pool counts the connections it hands
//! out, reused or new; nothing else uses that pool meanwhile (no relay polls, no timeout scans,
//! no rate-limit pruning, no re-reading of the signing keys, no subscribers).

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// Queries the API ran since the app started (connections its pool handed out).
fn queries(app: &TestApp) -> u64 {
    app.api_queries.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn a_page_of_orders_with_lines_sagas_and_events_is_a_few_queries() {
    // Nothing else uses the API's pool meanwhile: no relay polls, no timeout scans (the sagas need
    // neither: their commands are published when committed, and none times out), no pruning of
    // rate-limit windows after the first at start, and no re-reading of the signing keys (the
    // first request after a stale period would pay one more query than the next).
    let hour = Duration::from_secs(3600);
    let app = spawn_app_with(|c| {
        c.outbox.poll_interval = hour;
        c.orchestrator.timeout_scan_interval = hour;
        c.api.auth.rate_limits.window = hour;
        c.api.auth.signing_keys_refresh = hour;
    })
    .await;
    let buyer = app.register().await;
    const ORDERS: i64 = 20;
    for n in 0..ORDERS {
        app.add_to_cart(&buyer, "MUG-001", 1).await;
        app.place(&buyer, &format!("page-{n}"), "tok_visa").await;
    }
    for _ in 0..600 {
        let ended: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sagas WHERE status IN ('COMPLETED', 'COMPENSATED')")
                .fetch_one(app.pool())
                .await
                .unwrap();
        // And every message published and its outbox row deleted (deletes are batched and late).
        let unsent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(app.pool()).await.unwrap();
        if ended == ORDERS && unsent == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same page without lines, sagas and events: what the caller's session, the signing keys
    // and the orders cost.
    let before = queries(&app);
    let bare = app.data(Some(&buyer.token), "{ orders(first: 20) { nodes { id } } }", json!({})).await;
    assert_eq!(bare["orders"]["nodes"].as_array().unwrap().len(), ORDERS as usize, "{bare}");
    let bare = queries(&app) - before;
    let before = queries(&app);
    let page = app
        .data(
            Some(&buyer.token),
            "{ orders(first: 20) { nodes { id lines { sku quantity } saga { id status events { type } } } } }",
            json!({}),
        )
        .await;
    let orders = page["orders"]["nodes"].as_array().unwrap();
    assert_eq!(orders.len(), ORDERS as usize, "{page}");
    for o in orders {
        assert_eq!(o["lines"], json!([{ "sku": "MUG-001", "quantity": 1 }]), "{o}");
        assert_eq!(o["saga"]["status"], "COMPLETED", "{o}");
        let kinds: Vec<&str> =
            o["saga"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds.first(), Some(&"ORDER_PLACED"), "{o}");
        assert_eq!(kinds.last(), Some(&"COMPLETED"), "{o}");
    }

    // Lines, sagas and events: a batch per DataLoader however many orders (3 here; a busy machine
    // can split a batch when keys arrive after the loader's 1 ms wait). One query per order
    // would be 60; one field without batching alone makes it over 20.
    let nested = (queries(&app) - before).saturating_sub(bare);
    assert!(
        (3..=15).contains(&nested),
        "{nested} queries for the lines, sagas and events of {ORDERS} orders"
    );
    app.stop().await;
}
