//! Open order pages cost the database next to nothing while nothing happens: however many
//! `orderEvents` subscriptions wait, the API process reads once a second for all of them, and a
//! change still reaches every one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::spawn_app_with;

const CONNECTIONS: usize = 20;
const PER_CONNECTION: usize = 100;

#[tokio::test]
async fn two_thousand_idle_subscriptions_cost_one_query_a_second_and_all_hear_the_end() {
    let app = spawn_app_with(|c| {
        c.saga.step_timeout = Duration::from_millis(500);
        c.saga.max_attempts = 1;
        c.saga.needs_attention_steps = vec!["AUTHORIZE_PAYMENT".into()];
        // The API's outbox relay polls besides being woken; here it must not, so that what the
        // counter sees is the subscriptions' cost alone.
        c.outbox.poll_interval = Duration::from_secs(600);
    })
    .await;
    let buyer = app.register().await;
    let op = app.operator().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    // The payment never answers and the saga pauses: its streams stay open, nothing happens.
    let order = app.place(&buyer, "idle-1", "tok_timeout").await;
    let mut saga = Value::Null;
    for _ in 0..300 {
        saga = app.order(&buyer, &order).await["data"]["order"]["saga"].clone();
        if saga["status"] == "NEEDS_ATTENTION" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(saga["status"], "NEEDS_ATTENTION", "{saga}");
    let history = saga["events"].as_array().unwrap().len();

    let mut sockets = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut ws = app.ws(Some(&buyer.token)).await;
        ws.expect_ack().await;
        for i in 0..PER_CONNECTION {
            let doc = "subscription($id: ID!) { orderEvents(orderId: $id) { sequence type } }";
            ws.start(&i.to_string(), doc, json!({ "id": order })).await;
        }
        sockets.push(ws);
    }
    // Every subscription first gets the recorded history.
    for ws in &mut sockets {
        let mut got = 0;
        while got < PER_CONNECTION * history {
            let m = ws.next_json().await.expect("connection open");
            assert_ne!(m["type"], "error", "{m}");
            if m["type"] == "next" {
                got += 1;
            }
        }
    }

    // Waiting: a counter, not a clock. One catch-up read a second for the whole process (the
    // streams themselves read nothing); before, each stream re-read once a second (10,000 here).
    let before = app.api_queries.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waited = app.api_queries.load(Ordering::SeqCst) - before;
    assert!(waited <= 10, "{waited} queries while {} subscriptions waited 5 s", CONNECTIONS * PER_CONNECTION);

    // A change reaches every one of them, to the end.
    let force = "mutation($s: ID!) { forceCompensateSaga(input: { sagaId: $s, reason: \"give up\", \
                 idempotencyKey: \"idle-end\" }) { saga { status } } }";
    app.data(Some(&op.token), force, json!({ "s": saga["id"] })).await;
    for ws in &mut sockets {
        let (mut ended, mut completed) = (0, 0);
        while completed < PER_CONNECTION {
            let m = ws.next_json().await.expect("connection open");
            match m["type"].as_str() {
                Some("next") if m["payload"]["data"]["orderEvents"]["type"] == "COMPENSATED" => ended += 1,
                Some("complete") => completed += 1,
                Some("error") => panic!("{m}"),
                _ => {}
            }
        }
        assert_eq!(ended, PER_CONNECTION, "every subscription heard the end");
    }
    app.stop().await;
}

/// Counts `next` messages per subscription id prefix until `done` says enough; fails on an error.
async fn until(ws: &mut crate::helpers::Ws, mut done: impl FnMut(&str, &Value) -> bool) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next_json())
            .await
            .expect("a message within 60 s")
            .expect("connection open");
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "next" {
            assert!(m["payload"].get("errors").is_none(), "{m}");
            if done(m["id"].as_str().unwrap_or_default(), &m["payload"]["data"]) {
                return;
            }
        }
    }
}

/// Waits until `counter` stops moving but for at most `quiet` a second (the catch-up reads), so a
/// measurement starts when the work a change caused is over, however long that took.
async fn settle(counter: &std::sync::atomic::AtomicU64, quiet: u64) {
    let mut last = counter.load(Ordering::SeqCst);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counter.load(Ordering::SeqCst);
        if now - last <= quiet {
            return;
        }
        last = now;
    }
    panic!("still busy after a minute");
}

const BUYER_CONNECTIONS: usize = 10;
const EACH: usize = 50;

#[tokio::test]
async fn a_thousand_waiting_cart_and_order_streams_and_operator_feeds_cost_a_few_reads_a_second() {
    let app = spawn_app_with(|c| c.outbox.poll_interval = Duration::from_secs(600)).await;
    let buyer = app.register().await;
    let op = app.operator().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;

    let mut sockets = Vec::new();
    for _ in 0..BUYER_CONNECTIONS {
        let mut ws = app.ws(Some(&buyer.token)).await;
        ws.expect_ack().await;
        for i in 0..EACH {
            ws.start(&format!("cart-{i}"), "subscription { myCart { itemCount } }", json!({})).await;
            ws.start(&format!("orders-{i}"), "subscription { myOrders { id status } }", json!({})).await;
        }
        sockets.push(ws);
    }
    let mut ops = app.ws(Some(&op.token)).await;
    ops.expect_ack().await;
    for i in 0..EACH {
        ops.start(&format!("changes-{i}"), "subscription { sagaChanges { orderId status } }", json!({}))
            .await;
    }
    // The cart as it is now, on every cart subscription.
    for ws in &mut sockets {
        let mut carts = 0;
        until(ws, |id, _| {
            carts += id.starts_with("cart-") as usize;
            carts == EACH
        })
        .await;
    }

    // Everything is live: an order reaches every order stream, its saga every operator stream,
    // and the cart it empties every cart stream.
    let order = app.place(&buyer, "idle-streams", "tok_visa").await;
    app.wait_terminal(&buyer, &order).await;
    for ws in &mut sockets {
        let (mut confirmed, mut emptied) = (0, 0);
        until(ws, |id, data| {
            if id.starts_with("orders-") && data["myOrders"]["id"] == order.as_str() {
                confirmed += (data["myOrders"]["status"] == "CONFIRMED") as usize;
            }
            if id.starts_with("cart-") {
                emptied += (data["myCart"]["itemCount"] == 0) as usize;
            }
            confirmed == EACH && emptied == EACH
        })
        .await;
    }
    let mut completed = 0;
    until(&mut ops, |_, data| {
        let s = &data["sagaChanges"];
        completed += (s["orderId"] == order.as_str() && s["status"] == "COMPLETED") as usize;
        completed == EACH
    })
    .await;

    // Waiting: a counter, not a clock. One catch-up read a second for the buyers' orders, one
    // change read a second for the operators, one cart read every two seconds; before, every
    // order stream and every change stream read once a second (2,750 here), every cart stream
    // once every five (500).
    settle(&app.api_queries, 3).await;
    let (pg, mongo) = (app.api_queries.load(Ordering::SeqCst), app.api_mongo_commands.load(Ordering::SeqCst));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pg = app.api_queries.load(Ordering::SeqCst) - pg;
    let mongo = app.api_mongo_commands.load(Ordering::SeqCst) - mongo;
    assert!(
        pg <= 15,
        "{pg} PostgreSQL queries while {} streams waited 5 s",
        BUYER_CONNECTIONS * EACH * 2 + EACH
    );
    assert!(
        mongo <= 5,
        "{mongo} MongoDB commands while {} cart streams waited 5 s",
        BUYER_CONNECTIONS * EACH
    );

    // And a change still reaches all of them.
    app.add_to_cart(&buyer, "TEE-002", 2).await;
    for ws in &mut sockets {
        let mut carts = 0;
        until(ws, |id, data| {
            carts += (id.starts_with("cart-") && data["myCart"]["itemCount"] == 2) as usize;
            carts == EACH
        })
        .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_change_no_notice_announced_still_reaches_order_and_cart_streams() {
    let app = spawn_app_with(|c| c.outbox.poll_interval = Duration::from_secs(600)).await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let order = app.place(&buyer, "quiet-change", "tok_visa").await;
    app.wait_terminal(&buyer, &order).await;
    let mut ws = app.ws(Some(&buyer.token)).await;
    ws.expect_ack().await;
    ws.start("cart", "subscription { myCart { itemCount } }", json!({})).await;
    ws.start("orders", "subscription { myOrders { id status } }", json!({})).await;
    until(&mut ws, |id, _| id == "cart").await;

    // Changed behind the API's back: no broker notice says so. The process's catch-up reads
    // find both and wake the streams.
    let id = crate::helpers::db_id(&order);
    sqlx::query("UPDATE orders SET status = 'CANCELLED', updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(app.pool())
        .await
        .unwrap();
    let carts = app.mongo.db.collection::<mongodb::bson::Document>("carts");
    let user_id = uuid::Uuid::parse_str(&buyer.id).expect("a user id is a UUID").to_string();
    carts
        .update_one(
            mongodb::bson::doc! { "_id": &user_id },
            mongodb::bson::doc! {
                "$set": { "items": [{ "sku": "BAG-003", "quantity": 4 }] },
                "$inc": { "version": 1 },
            },
        )
        .upsert(true)
        .await
        .unwrap();
    let (mut order_seen, mut cart_seen) = (false, false);
    until(&mut ws, |id, data| {
        order_seen |= id == "orders" && data["myOrders"]["status"] == "CANCELLED";
        cart_seen |= id == "cart" && data["myCart"]["itemCount"] == 4;
        order_seen && cart_seen
    })
    .await;
    app.stop().await;
}
