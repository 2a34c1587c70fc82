//! Operator controls: sagas that ran out of retries stop in NEEDS_ATTENTION; operators find them
//! (filters, cursor pages) and repair them (retry, resume, force-compensate, force-complete, in
//! bulk with a dry run), each action idempotent, audited, and refused with CONFLICT when the
//! saga's state does not allow it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{code, spawn_app_with, TestApp, User};

const SAGA: &str = "id orderId status step attempt failureReason lastError nextAction";

/// Authorization that never answers stops after two short attempts, for an operator. Short, but
/// not so short that a busy machine's round trip through the broker (every reply the other
/// steps wait for) outlasts both attempts: 1 s and 2 s.
async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.saga.step_timeout = Duration::from_millis(1000);
        c.saga.max_attempts = 2;
        c.saga.retry_backoff = Duration::from_millis(50);
        c.saga.needs_attention_steps = vec!["AUTHORIZE_PAYMENT".into()];
        c.workers.payment_gateway_timeout = Duration::from_millis(300);
    })
    .await
}

/// Places an order whose payment never answers and waits until its saga needs attention.
async fn paused(app: &TestApp, op: &User, buyer: &User, key: &str) -> Value {
    app.add_to_cart(buyer, "MUG-001", 1).await;
    let order = app.place(buyer, key, "tok_timeout").await;
    wait_saga(app, op, &order, |s| s["status"] == "NEEDS_ATTENTION").await
}

/// Polls the order's saga (as an operator) until `done`.
async fn wait_saga(app: &TestApp, op: &User, order: &str, done: impl Fn(&Value) -> bool) -> Value {
    let q =
        format!("query($o: ID!) {{ sagas(filter: {{ orderId: $o }}) {{ edges {{ node {{ {SAGA} }} }} }} }}");
    for _ in 0..300 {
        let d = app.data(Some(&op.token), &q, json!({ "o": order })).await;
        let s = d["sagas"]["edges"][0]["node"].clone();
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("saga of order {order} never got there");
}

async fn act(app: &TestApp, token: &str, mutation: &str, saga: &Value, reason: &str, key: &str) -> Value {
    let doc = format!(
        "mutation($s: ID!, $r: String!, $k: String!) {{ {mutation}(input: {{ sagaId: $s, reason: $r, idempotencyKey: $k }}) {{ replayed saga {{ {SAGA} }} }} }}"
    );
    app.gql(Some(token), &doc, json!({ "s": saga["id"], "r": reason, "k": key })).await
}

async fn audit(app: &TestApp, op: &User, saga: &Value) -> Vec<Value> {
    let d = app
        .data(
            Some(&op.token),
            "query($s: ID!) { saga(id: $s) { auditLog { id action actor reason before after at createdAt } } }",
            json!({ "s": saga["id"] }),
        )
        .await;
    d["saga"]["auditLog"].as_array().unwrap().clone()
}

async fn events(app: &TestApp, op: &User, saga: &Value) -> Vec<String> {
    let d = app
        .data(
            Some(&op.token),
            "query($s: ID!) { saga(id: $s) { events { type } } }",
            json!({ "s": saga["id"] }),
        )
        .await;
    d["saga"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn paused_sagas_are_found_by_status_step_error_and_age() {
    let app = app().await;
    let op = app.operator().await;
    let buyer = app.register().await;
    let saga = paused(&app, &op, &buyer, "find-1").await;
    assert_eq!(saga["step"], "AUTHORIZE_PAYMENT");
    assert_eq!(saga["attempt"], 2);
    assert_eq!(saga["lastError"], "AUTHORIZE_PAYMENT got no reply after 2 attempts");
    assert!(saga["nextAction"].as_str().unwrap().contains("retrySagaStep"), "{saga}");
    // A healthy saga beside it.
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let ok = app.place(&buyer, "find-2", "tok_visa").await;
    wait_saga(&app, &op, &ok, |s| s["status"] == "COMPLETED").await;

    let id = saga["id"].as_str().unwrap().to_string();
    assert_eq!(ids(&app, &op, "{ status: NEEDS_ATTENTION }").await, vec![id.clone()]);
    assert_eq!(
        ids(&app, &op, "{ step: AUTHORIZE_PAYMENT, status: NEEDS_ATTENTION }").await,
        vec![id.clone()]
    );
    assert_eq!(ids(&app, &op, "{ errorContains: \"NO REPLY\" }").await, vec![id.clone()], "case-insensitive");
    assert_eq!(
        ids(&app, &op, "{ errorContains: \"%\" }").await,
        Vec::<String>::new(),
        "literal text, not a pattern"
    );
    assert_eq!(ids(&app, &op, "{ unchangedForMinutes: 0, status: NEEDS_ATTENTION }").await, vec![id.clone()]);
    assert!(ids(&app, &op, "{ unchangedForMinutes: 60 }").await.is_empty(), "nothing stuck for an hour");
    assert!(ids(&app, &op, "{ olderThanMinutes: 60 }").await.is_empty());
    assert_eq!(ids(&app, &op, "{}").await.len(), 2);

    // Pages of one, newest first, with cursors.
    let page = |after: Option<String>| {
        let app = &app;
        let token = op.token.clone();
        async move {
            let d = app
                .data(
                    Some(&token),
                    "query($a: String) { sagas(first: 1, after: $a) { totalCount pageInfo { hasNextPage endCursor } edges { node { id } } } }",
                    json!({ "a": after }),
                )
                .await;
            d["sagas"].clone()
        }
    };
    let first = page(None).await;
    assert_eq!(first["totalCount"], 2);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    let second = page(first["pageInfo"]["endCursor"].as_str().map(String::from)).await;
    assert_eq!(second["pageInfo"]["hasNextPage"], false);
    assert_eq!(second["edges"][0]["node"]["id"], id.as_str(), "the older saga comes second");
    assert_ne!(first["edges"][0]["node"]["id"], second["edges"][0]["node"]["id"]);

    for (bad, why) in [
        ("{ sagas(filter: { status: STUCK }) { totalCount } }", "status"),
        ("{ sagas(filter: { step: SHIP }) { totalCount } }", "step"),
        ("{ sagas(filter: { unchangedForMinutes: -1 }) { totalCount } }", "minutes"),
        ("{ sagas(after: \"not-a-cursor\") { totalCount } }", "cursor"),
        ("{ sagas(first: 101) { totalCount } }", "first"),
    ] {
        assert_eq!(code(&app.gql(Some(&op.token), bad, json!({})).await), "BAD_USER_INPUT", "{why}");
    }
    // A page of 0, as every connection allows: the count without the sagas.
    let none =
        app.data(Some(&op.token), "{ sagas(first: 0) { totalCount edges { cursor } } }", json!({})).await;
    assert_eq!(none["sagas"], json!({ "totalCount": 2, "edges": [] }));
    assert_eq!(code(&app.gql(Some(&buyer.token), "{ sagas { totalCount } }", json!({})).await), "FORBIDDEN");
    app.stop().await;
}

#[tokio::test]
async fn force_compensate_is_idempotent_audited_and_then_refused() {
    let app = app().await;
    let op = app.operator().await;
    let buyer = app.register().await;
    let saga = paused(&app, &op, &buyer, "fc-1").await;
    let stock_before = app.stock("MUG-001").await;

    let r = act(&app, &op.token, "forceCompensateSaga", &saga, "customer called to cancel", "fc-key").await;
    assert!(r.get("errors").is_none(), "{r}");
    assert_eq!(r["data"]["forceCompensateSaga"]["replayed"], false);
    let done =
        wait_saga(&app, &op, saga["orderId"].as_str().unwrap(), |s| s["status"] == "COMPENSATED").await;
    assert_eq!(done["failureReason"], "COMPENSATED_BY_OPERATOR");
    let order = app.order(&buyer, saga["orderId"].as_str().unwrap()).await["data"]["order"].clone();
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(app.stock("MUG-001").await, stock_before + 1, "the reservation was released");
    assert_eq!(app.payment_status(saga["orderId"].as_str().unwrap()).await.as_deref(), Some("VOIDED"));

    // The same key again: nothing more happens, and the answer says so.
    let again =
        act(&app, &op.token, "forceCompensateSaga", &saga, "customer called to cancel", "fc-key").await;
    assert_eq!(again["data"]["forceCompensateSaga"]["replayed"], true, "{again}");
    // The same key for another action is a conflict.
    let other = act(&app, &op.token, "forceCompleteSaga", &saga, "oops", "fc-key").await;
    assert_eq!(code(&other), "CONFLICT", "{other}");

    let log = audit(&app, &op, &saga).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["action"], "FORCE_COMPENSATE");
    assert_eq!(log[0]["actor"], op.email.as_str());
    assert_eq!(log[0]["reason"], "customer called to cancel");
    assert_eq!(log[0]["before"]["status"], "NEEDS_ATTENTION");
    assert_eq!(log[0]["before"]["lastError"], "AUTHORIZE_PAYMENT got no reply after 2 attempts");
    assert_eq!(log[0]["after"]["status"], "COMPENSATING");
    assert!(log[0]["id"].is_string(), "an id for caches: {log:?}");
    assert_eq!(log[0]["createdAt"], log[0]["at"]);
    let history = events(&app, &op, &saga).await;
    assert!(history.contains(&"OPERATOR_COMPENSATED".to_string()), "{history:?}");

    // A finished saga refuses every action, and nothing changes.
    for m in ["retrySagaStep", "resumeSaga", "forceCompensateSaga", "forceCompleteSaga"] {
        let r = act(&app, &op.token, m, &saga, "late", &format!("late-{m}")).await;
        assert_eq!(code(&r), "CONFLICT", "{m}: {r}");
        assert!(r["errors"][0]["message"].as_str().unwrap().contains("already COMPENSATED"), "{r}");
    }
    assert_eq!(audit(&app, &op, &saga).await.len(), 1, "refusals are not applied");

    // Bad input, other callers, unknown sagas.
    let r = act(&app, &op.token, "retrySagaStep", &saga, " ", "k").await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    let r = act(&app, &buyer.token, "retrySagaStep", &saga, "me", "k").await;
    assert_eq!(code(&r), "FORBIDDEN", "{r}");
    let r = act(&app, &op.token, "retrySagaStep", &json!({ "id": uuid::Uuid::nil() }), "why", "k").await;
    assert_eq!(code(&r), "NOT_FOUND", "{r}");

    let metrics = app.http.get(app.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    for series in [
        "ecommerce_saga_saga_repairs_total{action=\"FORCE_COMPENSATE\",outcome=\"applied\"} 1",
        "ecommerce_saga_saga_repairs_total{action=\"FORCE_COMPENSATE\",outcome=\"replayed\"} 1",
        "ecommerce_saga_saga_repairs_total{action=\"RESUME\",outcome=\"refused\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn retry_resume_and_force_complete_move_a_paused_saga_on() {
    let app = app().await;
    let op = app.operator().await;
    let buyer = app.register().await;

    // Retry: the payment still does not answer, so the saga stops again after a fresh budget.
    let a = paused(&app, &op, &buyer, "rr-1").await;
    let r = act(&app, &op.token, "retrySagaStep", &a, "gateway restarted", "retry-1").await;
    assert_eq!(r["data"]["retrySagaStep"]["saga"]["status"], "RUNNING", "{r}");
    assert_eq!(r["data"]["retrySagaStep"]["saga"]["attempt"], 1);
    let order_a = a["orderId"].as_str().unwrap();
    let again =
        wait_saga(&app, &op, order_a, |s| s["status"] == "NEEDS_ATTENTION" && s["attempt"] == 2).await;
    assert_eq!(again["step"], "AUTHORIZE_PAYMENT");
    let history = events(&app, &op, &a).await;
    let tail: Vec<&str> = history.iter().rev().take(4).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["OPERATOR_RETRIED", "STEP_RETRIED", "STEP_TIMED_OUT", "NEEDS_ATTENTION"],
        "{history:?}"
    );

    // Resume: the operator says the authorization went through; the saga goes on to capture,
    // which the payment worker refuses (it never saw an authorization), so it compensates.
    let r = act(&app, &op.token, "resumeSaga", &again, "authorized, seen in the gateway", "resume-1").await;
    assert!(r.get("errors").is_none(), "{r}");
    let end = wait_saga(&app, &op, order_a, |s| s["status"] == "COMPENSATED").await;
    assert_eq!(end["failureReason"], "PAYMENT_CAPTURE_FAILED");
    // The capture may have been sent twice when its refusal came after the first attempt's
    // timeout (the worker answers both alike); what matters is the path after the resume.
    let history = events(&app, &op, &a).await;
    let resumed = history.iter().position(|e| e == "OPERATOR_RESUMED").expect("resumed");
    let after: Vec<&str> =
        history[resumed + 1..].iter().map(String::as_str).filter(|e| *e != "STEP_RETRIED").collect();
    assert_eq!(after[..2], ["PAYMENT_AUTHORIZED", "PAYMENT_CAPTURE_FAILED"], "{history:?}");

    // Force-complete: the order is confirmed.
    let b = paused(&app, &op, &buyer, "rr-2").await;
    let r = act(&app, &op.token, "forceCompleteSaga", &b, "paid by bank transfer", "complete-1").await;
    assert_eq!(r["data"]["forceCompleteSaga"]["saga"]["status"], "COMPLETED", "{r}");
    assert_eq!(r["data"]["forceCompleteSaga"]["saga"]["step"], json!(null), "no step once finished");
    let order = app.order(&buyer, b["orderId"].as_str().unwrap()).await["data"]["order"].clone();
    assert_eq!(order["status"], "CONFIRMED");
    let log = audit(&app, &op, &b).await;
    assert_eq!(log[0]["action"], "FORCE_COMPLETE");
    assert_eq!(log[0]["after"]["status"], "COMPLETED");
    app.stop().await;
}

#[tokio::test]
async fn bulk_repairs_count_first_then_apply_once() {
    let app = app().await;
    let op = app.operator().await;
    let buyer = app.register().await;
    let x = paused(&app, &op, &buyer, "bulk-1").await;
    let y = paused(&app, &op, &buyer, "bulk-2").await;
    let bulk = |dry: bool, key: &str| {
        let doc = format!(
            "mutation {{ bulkRepairSagas(input: {{ filter: {{ status: \"NEEDS_ATTENTION\" }}, action: FORCE_COMPENSATE, reason: \"gateway outage\", idempotencyKey: \"{key}\", dryRun: {dry} }}) {{ dryRun matched applicable applied refused {{ sagaId reason }} }} }}"
        );
        let app = &app;
        let token = op.token.clone();
        async move { app.gql(Some(&token), &doc, json!({})).await }
    };
    let dry = bulk(true, "bulk-key").await;
    assert_eq!(
        dry["data"]["bulkRepairSagas"],
        json!({ "dryRun": true, "matched": 2, "applicable": 2, "applied": 0, "refused": [] }),
        "{dry}"
    );
    for s in [&x, &y] {
        assert!(audit(&app, &op, s).await.is_empty(), "a dry run changes nothing");
    }
    let real = bulk(false, "bulk-key").await;
    assert_eq!(real["data"]["bulkRepairSagas"]["applied"], 2, "{real}");
    for s in [&x, &y] {
        wait_saga(&app, &op, s["orderId"].as_str().unwrap(), |s| s["status"] == "COMPENSATED").await;
        assert_eq!(audit(&app, &op, s).await.len(), 1);
    }
    let again = bulk(false, "bulk-key").await;
    assert_eq!(again["data"]["bulkRepairSagas"]["matched"], 0, "nothing needs attention now: {again}");

    let no_filter = app
        .gql(
            Some(&op.token),
            "mutation { bulkRepairSagas(input: { filter: {}, action: RETRY_STEP, reason: \"all\", idempotencyKey: \"k\" }) { matched } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&no_filter), "BAD_USER_INPUT", "{no_filter}");
    app.stop().await;
}

/// The ids of the sagas `filter` matches (one page), checking `totalCount` agrees.
async fn ids(app: &TestApp, op: &User, filter: &str) -> Vec<String> {
    let q = format!("{{ sagas(filter: {filter}) {{ totalCount edges {{ cursor node {{ id }} }} }} }}");
    let d = app.data(Some(&op.token), &q, json!({})).await;
    let ids: Vec<String> = d["sagas"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(d["sagas"]["totalCount"], ids.len(), "{filter}");
    ids
}

/// A buyer follows their saga (status, step, events) without the operator's text: `lastError`,
/// `nextAction` and event `detail` are `null` for them, over HTTP and over the subscription; every
/// event has an id and links to the saga and the order it changed, so a normalized cache updates
/// both from the event alone.
#[tokio::test]
async fn buyers_follow_their_saga_without_operator_text_and_events_link_to_what_they_change() {
    let app = app().await;
    let op = app.operator().await;
    let buyer = app.register().await;
    let saga = paused(&app, &op, &buyer, "text-1").await;
    assert!(saga["lastError"].is_string() && saga["nextAction"].is_string(), "operators see it: {saga}");
    let order_id = saga["orderId"].as_str().unwrap().to_string();

    let q = "query($id: ID!) { order(id: $id) { id status saga { id status lastError nextAction
        events { id sequence type detail saga { id status } order { id status } } } } }";
    let d = app.data(Some(&buyer.token), q, json!({ "id": order_id })).await;
    let s = &d["order"]["saga"];
    assert_eq!(s["status"], "NEEDS_ATTENTION");
    assert_eq!((&s["lastError"], &s["nextAction"]), (&Value::Null, &Value::Null), "{s}");
    let events = s["events"].as_array().unwrap();
    assert!(events.len() >= 3, "{s}");
    let mut ids = std::collections::HashSet::new();
    for e in events {
        assert_eq!(e["detail"], Value::Null, "{e}");
        assert!(ids.insert(e["id"].as_str().unwrap().to_string()), "event ids are unique: {s}");
        assert_eq!(e["saga"], json!({ "id": s["id"], "status": "NEEDS_ATTENTION" }));
        assert_eq!(e["order"], json!({ "id": order_id, "status": "PENDING" }));
    }
    let op_view = app
        .data(
            Some(&op.token),
            "query($s: ID!) { saga(id: $s) { events { id detail order { id } } } }",
            json!({ "s": saga["id"] }),
        )
        .await;
    let op_events = op_view["saga"]["events"].as_array().unwrap();
    assert!(op_events.iter().any(|e| e["detail"].is_string()), "operators read the details: {op_view}");
    assert_eq!(op_events[0]["id"], events[0]["id"], "the same event has the same id for everyone");
    assert_eq!(op_events[0]["order"], Value::Null, "someone else's order stays theirs");

    let mut ws = app.ws(Some(&buyer.token)).await;
    ws.start(
        "1",
        "subscription($id: ID!) { orderEvents(orderId: $id) { id type detail order { id status } } }",
        json!({ "id": order_id }),
    )
    .await;
    let first = ws.next_payload().await.expect("an event");
    let e = &first["data"]["orderEvents"];
    assert_eq!(e["type"], "ORDER_PLACED", "{first}");
    assert_eq!(e["id"], events[0]["id"]);
    assert_eq!(e["detail"], Value::Null);
    assert_eq!(e["order"], json!({ "id": order_id, "status": "PENDING" }));
    app.stop().await;
}
