//! The example storefront (examples/storefront) as a frontend team ships it: its operations typed
//! by GraphQL Code Generator and checked by tsc, and the page walked end to end in headless
//! Chromium (tests/browser/storefront.mjs), with a screenshot of each step kept in the target
//! directory (`storefront-*.png`).

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app_with, BrowserCheck};

/// generated.ts is what GraphQL Code Generator makes of operations.graphql against the committed
/// SDL, and app.js type-checks against it (and against urql's and graphql-ws's own types).
#[tokio::test]
async fn the_storefronts_operation_types_are_current_and_its_code_type_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg("storefront-types.mjs")
        .output()
        .await
        .expect("node runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("TYPES CURRENT") && text.contains("TSC OK"), "{text}");
}

/// A buyer's whole visit: guest cart, sign-up refused by field then made (cart merged), an
/// address refused by field then a confirmed order followed live, a declined card, and a cancel.
#[tokio::test]
async fn a_buyer_shops_as_a_guest_signs_up_and_checks_out_in_the_example_storefront() {
    // A gateway that never answers keeps the last order waiting at authorization long enough to
    // be cancelled from the page.
    let app = spawn_app_with(|c| c.workers.payment_gateway_timeout = Duration::from_secs(60)).await;
    let base = app.url("");
    let base = base.trim_end_matches('/');
    let email = format!("shopper-{}@example.com", uuid::Uuid::new_v4().simple());
    let mut page = BrowserCheck::start("storefront.mjs", &[base, &email], "storefront.png");
    assert_eq!(page.expect("GUEST ", 120).await, "GUEST 3");
    assert_eq!(page.expect("MERGED ", 60).await, "MERGED 3");
    page.expect("CONFIRMED", 90).await;
    assert_eq!(page.expect("DECLINED ", 90).await, "DECLINED PAYMENT_DECLINED");
    assert_eq!(page.expect("CANCELLED ", 90).await, "CANCELLED CANCELLED_BY_USER");
    page.finish(60).await;

    // What the page showed is what the API holds.
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT o.status, coalesce(o.cancel_reason, '') FROM orders o JOIN users u ON u.id = o.user_id
          WHERE u.email = $1 ORDER BY o.created_at",
    )
    .bind(&email)
    .fetch_all(app.pool())
    .await
    .unwrap();
    let want = [("CONFIRMED", ""), ("CANCELLED", "PAYMENT_DECLINED"), ("CANCELLED", "CANCELLED_BY_USER")];
    let want: Vec<(String, String)> = want.iter().map(|(s, r)| (s.to_string(), r.to_string())).collect();
    assert_eq!(statuses, want);
    let address: serde_json::Value = sqlx::query_scalar(
        "SELECT shipping_address FROM orders o JOIN users u ON u.id = o.user_id WHERE u.email = $1 LIMIT 1",
    )
    .bind(&email)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(address["postalCode"], json!("SW1Y 4JH"));
    app.stop().await;
}
