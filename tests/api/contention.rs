use futures::future::join_all;

use crate::helpers::spawn_app;

/// 100 buyers race for the last unit: exactly one gets it, the others are cancelled for
/// `OUT_OF_STOCK`, and stock never goes negative.
#[tokio::test]
async fn one_hundred_buyers_for_the_last_unit() {
    let app = spawn_app().await;
    const BUYERS: usize = 100;
    let buyers = join_all((0..BUYERS).map(|_| app.register())).await;
    join_all(buyers.iter().map(|b| app.add_to_cart(b, "LMT-005", 1))).await;
    let ids = join_all(buyers.iter().map(|b| app.place(b, "last-unit", "tok_visa"))).await;
    let orders = join_all(buyers.iter().zip(&ids).map(|(b, id)| app.wait_terminal(b, id))).await;

    let confirmed = orders.iter().filter(|o| o["status"] == "CONFIRMED").count();
    let out_of_stock =
        orders.iter().filter(|o| o["status"] == "CANCELLED" && o["cancelReason"] == "OUT_OF_STOCK").count();
    assert_eq!((confirmed, out_of_stock), (1, BUYERS - 1));
    assert_eq!(app.stock("LMT-005").await, 0);
    let captured: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = 'CAPTURED'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(captured, 1, "only the winner paid");
    app.stop().await;
}
