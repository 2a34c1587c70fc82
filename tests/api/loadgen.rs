//! A short smoke run of the load generator against the real system: it must complete every order
//! with no errors. Never a speed threshold (numbers live in docs/benchmarks.md).

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_load_generator_completes_every_order_without_errors() {
    let app = spawn_app().await;
    let opts = loadgen::Options {
        url: app.url(""),
        buyers: 4,
        orders: Some(40),
        payment_tokens: vec!["tok_visa".into(), "tok_visa".into(), "tok_declined".into()],
        progress: false,
        ..loadgen::Options::default()
    };
    let report = loadgen::run(opts).await.expect("load runs");
    println!("{}", report.text());
    assert!(report.errors.is_empty(), "{}", report.text());
    assert_eq!(report.placed, 40);
    assert_eq!(report.completed, 40, "{}", report.text());
    assert_eq!(report.outcomes.values().sum::<u64>(), 40);
    assert!(report.outcomes.get("CANCELLED:PAYMENT_DECLINED").is_some_and(|n| *n > 0), "{}", report.text());
    assert!(report.outcomes.get("CONFIRMED").is_some_and(|n| *n > 0), "{}", report.text());
    app.stop().await;
}

/// Buyers that order for longer than their access tokens live renew them and reconnect their
/// subscriptions before expiry, so the API never has to close one (4 s tokens, a run of 10 s and
/// more at 4 orders a second).
#[tokio::test]
async fn the_load_generator_renews_tokens_that_expire_during_the_run() {
    let app =
        crate::helpers::spawn_app_with(|c| c.api.auth.access_token_ttl = std::time::Duration::from_secs(4))
            .await;
    let opts = loadgen::Options {
        url: app.url(""),
        buyers: 2,
        orders: Some(40),
        rate: Some(4.0),
        payment_tokens: vec!["tok_visa".into()],
        progress: false,
        ..loadgen::Options::default()
    };
    let report = loadgen::run(opts).await.expect("load runs");
    assert!(report.errors.is_empty(), "{}", report.text());
    assert_eq!(report.completed, 40, "{}", report.text());
    assert_eq!(app.metrics().ws_closed_for("session_ended"), 0, "no subscription outlived its token");
    app.stop().await;
}
