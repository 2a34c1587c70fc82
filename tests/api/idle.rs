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
