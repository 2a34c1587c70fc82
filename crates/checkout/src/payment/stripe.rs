//! Stripe's PaymentIntents API as a [`PaymentGateway`]: authorize creates and confirms an intent
//! with `capture_method=manual`, capture captures it, void cancels it (or refunds a capture that went
//! through meanwhile), refund refunds it.
//!
//! Every call carries an `Idempotency-Key` made of the order id, the step and the attempt
//! ([`Call::key`]), so a retried call is the same call at Stripe; after a server error, which
//! Stripe saves and replays to the same key, the worker moves to the next attempt, a new request. Not every server honours the key (localstripe, the fake the tests run
//! against, does not), so the gateway also asks before it acts: authorize first looks for an
//! intent already made for the order (the order id is in the intent's `metadata`) and takes it
//! over (found with Stripe's search API, which can lag by a minute; within that minute the
//! idempotency key makes a repeated create return the first intent); capture, void and refund
//! read the intent's state and do nothing that is already done. A
//! worker that crashed between asking Stripe and recording the answer therefore finds what Stripe
//! did instead of doing it again.
//!
//! Errors: a card error (HTTP 402) is a decline; rate limits, conflicts and network failures leave
//! the outcome unknown (`Unavailable`, which the saga retries), server errors too (`ServerError`:
//! retried as a new request); a refusal of our credentials or parameters is `Permanent` (an
//! operator's to fix); any other refusal (an intent in the wrong state, an unknown payment
//! method) declines the payment with Stripe's code.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use super::gateway::{Authorization, Call, GatewayError, PaymentGateway};
use ecommerce_platform::config::{ExposeSecret, SecretString};

/// The metadata key that names the order an intent belongs to.
const ORDER_KEY: &str = "order_id";
/// Intents read per page when looking one up by order.
const PAGE: usize = 100;

#[derive(Debug, Clone)]
pub struct StripeGateway {
    http: reqwest::Client,
    base: String,
    /// The secret key: `Debug` shows `[REDACTED]`.
    secret: SecretString,
}

impl StripeGateway {
    /// `base` is `https://api.stripe.com` in production (localstripe's address in tests).
    pub fn new(base: &str, secret: SecretString, timeout: Duration) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| GatewayError::Unavailable(format!("http client: {e}")))?;
        Ok(StripeGateway { http, base: base.trim_end_matches('/').to_string(), secret })
    }

    /// Sends a request and reads the answer, mapping Stripe's errors.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, GatewayError> {
        let response = request
            .basic_auth(self.secret.expose_secret(), Some(""))
            .send()
            .await
            .map_err(|e| GatewayError::Unavailable(format!("stripe: {}", without_url(&e))))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            GatewayError::Unavailable(format!("stripe answer unreadable: {}", without_url(&e)))
        })?;
        if status.is_success() {
            return Ok(body);
        }
        Err(classify(status.as_u16(), &body["error"]))
    }

    async fn post(&self, path: &str, key: &str, form: &[(&str, String)]) -> Result<Value, GatewayError> {
        let request =
            self.http.post(format!("{}{path}", self.base)).header("Idempotency-Key", key).form(form);
        self.send(request).await
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, GatewayError> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query)).await
    }

    async fn intent(&self, reference: &str) -> Result<Value, GatewayError> {
        self.get(&format!("/v1/payment_intents/{reference}"), &[]).await
    }

    /// The intents made for `order_id`: through Stripe's search, or, where the server has no
    /// search (localstripe), by listing every intent.
    pub async fn intents_of(&self, order_id: Uuid) -> Result<Vec<Value>, GatewayError> {
        let query = format!("metadata['{ORDER_KEY}']:'{order_id}'");
        match self.get("/v1/payment_intents/search", &[("query", query)]).await {
            Ok(found) => Ok(found["data"].as_array().cloned().unwrap_or_default()),
            Err(GatewayError::Declined(code)) if code.starts_with("stripe_404") => {
                self.listed(order_id).await
            }
            Err(e) => Err(e),
        }
    }

    /// The intents made for `order_id`, from the list of every intent.
    async fn listed(&self, order_id: Uuid) -> Result<Vec<Value>, GatewayError> {
        let order = order_id.to_string();
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit", PAGE.to_string())];
            if let Some(a) = &after {
                query.push(("starting_after", a.clone()));
            }
            let page = self.get("/v1/payment_intents", &query).await?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            after = data.last().and_then(|i| i["id"].as_str()).map(str::to_string);
            found.extend(data.into_iter().filter(|i| i["metadata"][ORDER_KEY] == order.as_str()));
            if page["has_more"] != true || after.is_none() {
                return Ok(found);
            }
        }
    }
}

impl StripeGateway {
    /// Leaves nothing held by `intent`: cancels it, or refunds it when it was captured.
    async fn release(&self, call: Call, intent: &Value) -> Result<(), GatewayError> {
        let reference = intent["id"].as_str().unwrap_or_default();
        match intent["status"].as_str() {
            Some("canceled") => Ok(()),
            Some("succeeded") => {
                // What was captured (localstripe has no `amount_received`: the whole amount).
                let captured = intent["amount_received"].as_i64().or_else(|| intent["amount"].as_i64());
                self.refund_as_stripe_writes(call, reference, captured.unwrap_or(0)).await
            }
            _ => self
                .post(
                    &format!("/v1/payment_intents/{reference}/cancel"),
                    &call.key(&format!("void:{reference}")),
                    &[],
                )
                .await
                .map(|_| ()),
        }
    }
}

/// A reqwest error's text without the URL (which is harmless here, but error texts go to logs
/// and replies; keep them short).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<stripe>");
    }
    s
}

/// Stripe's error answer as a gateway error: the card's refusal is a decline; a conflict, rate
/// limit or server error leaves the outcome unknown; a refusal of our credentials or of our
/// parameters is permanent (no retry fixes it, and it is not the buyer's doing); any other
/// refusal of the request (an intent in the wrong state, an unknown payment method) declines
/// this payment.
fn classify(status: u16, error: &Value) -> GatewayError {
    let code = error["decline_code"]
        .as_str()
        .or_else(|| error["code"].as_str())
        .or_else(|| error["type"].as_str())
        .unwrap_or("stripe_error")
        .to_string();
    let kind = error["type"].as_str().unwrap_or_default();
    let ours = matches!(kind, "authentication_error" | "permission_error" | "idempotency_error")
        || code.starts_with("parameter_");
    match status {
        402 => GatewayError::Declined(code),
        409 | 429 => GatewayError::Unavailable(format!("stripe {status}: {code}")),
        500..=599 => GatewayError::ServerError(format!("stripe {status}: {code}")),
        401 | 403 => GatewayError::Permanent(format!("stripe {status}: {code}")),
        _ if ours => GatewayError::Permanent(format!("stripe {status}: {code}")),
        _ => GatewayError::Declined(format!("stripe_{status}_{code}")),
    }
}

/// What an intent's state says about an authorization.
fn authorized(intent: &Value) -> Result<Authorization, GatewayError> {
    let reference = intent["id"].as_str().unwrap_or_default().to_string();
    match intent["status"].as_str() {
        Some("requires_capture") | Some("succeeded") | Some("processing") => Ok(Authorization { reference }),
        Some("requires_payment_method") | Some("canceled") => Err(GatewayError::Declined(
            intent["last_payment_error"]["decline_code"]
                .as_str()
                .or_else(|| intent["last_payment_error"]["code"].as_str())
                .unwrap_or("card_declined")
                .to_string(),
        )),
        other => Err(GatewayError::Unavailable(format!("intent {reference} is {}", other.unwrap_or("?")))),
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    async fn authorize(
        &self,
        call: Call,
        token: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Authorization, GatewayError> {
        // An intent made by an earlier attempt (whose answer was lost) is taken over.
        if let Some(existing) = self.intents_of(call.order_id).await?.into_iter().next() {
            return authorized(&existing);
        }
        self.authorize_first(call, token, amount_minor, currency).await
    }

    /// Creates the intent without looking for one first (the lookup lists intents where the
    /// server has no search: only retries pay for it).
    async fn authorize_first(
        &self,
        call: Call,
        token: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Authorization, GatewayError> {
        let form = [
            ("amount", to_stripe(currency, amount_minor).to_string()),
            ("currency", currency.to_ascii_lowercase()),
            ("capture_method", "manual".to_string()),
            ("confirm", "true".to_string()),
            ("payment_method", token.to_string()),
            ("metadata[order_id]", call.order_id.to_string()),
        ];
        match self.post("/v1/payment_intents", &call.key("authorize"), &form).await {
            Ok(intent) => authorized(&intent),
            // A refused card leaves an intent behind at Stripe (status requires_payment_method).
            Err(e) => Err(e),
        }
    }

    async fn capture(&self, call: Call, reference: &str, amount_minor: i64) -> Result<(), GatewayError> {
        let intent = self.intent(reference).await?;
        match intent["status"].as_str() {
            Some("succeeded") => return Ok(()),
            Some("canceled") => return Err(GatewayError::Declined("intent_canceled".into())),
            _ => {}
        }
        let currency = intent["currency"].as_str().unwrap_or_default();
        let form = [("amount_to_capture", to_stripe(currency, amount_minor).to_string())];
        self.post(&format!("/v1/payment_intents/{reference}/capture"), &call.key("capture"), &form)
            .await
            .map(|_| ())
    }

    async fn void(&self, call: Call, reference: Option<&str>) -> Result<(), GatewayError> {
        let intents = match reference {
            Some(reference) => vec![self.intent(reference).await?],
            None => self.intents_of(call.order_id).await?,
        };
        for intent in intents {
            self.release(call, &intent).await?;
        }
        Ok(())
    }

    async fn refund(&self, call: Call, reference: &str, amount_minor: i64) -> Result<(), GatewayError> {
        let currency = self.intent(reference).await?["currency"].as_str().unwrap_or_default().to_string();
        self.refund_as_stripe_writes(call, reference, to_stripe(&currency, amount_minor)).await
    }
}

impl StripeGateway {
    /// Refunds `amount` as Stripe writes it (see [`to_stripe`]), unless a refund exists already.
    async fn refund_as_stripe_writes(
        &self,
        call: Call,
        reference: &str,
        amount: i64,
    ) -> Result<(), GatewayError> {
        let refunds = self.get("/v1/refunds", &[("payment_intent", reference.to_string())]).await?;
        let already = refunds["data"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["status"] != "failed" && x["status"] != "canceled"));
        if already {
            return Ok(());
        }
        let form = [("payment_intent", reference.to_string()), ("amount", amount.to_string())];
        self.post("/v1/refunds", &call.key("refund"), &form).await.map(|_| ())
    }
}

/// An amount in the currency's ISO 4217 minor unit, as Stripe's API writes it: the same, except
/// for the currencies Stripe keeps two decimals for although ISO gives them none (ISK and UGX,
/// whose decimals are always 00: 500 ISK is 50000).
pub fn to_stripe(currency: &str, amount_minor: i64) -> i64 {
    match two_decimals_at_stripe(currency) {
        true => amount_minor.saturating_mul(100),
        false => amount_minor,
    }
}

/// An amount as Stripe writes it, in the currency's ISO 4217 minor unit (see [`to_stripe`]).
pub fn from_stripe(currency: &str, amount: i64) -> i64 {
    match two_decimals_at_stripe(currency) {
        true => amount / 100,
        false => amount,
    }
}

fn two_decimals_at_stripe(currency: &str) -> bool {
    currency.eq_ignore_ascii_case("ISK") || currency.eq_ignore_ascii_case("UGX")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_secret_never_shows() {
        let s = SecretString::from("sk_live_very_secret");
        let g = StripeGateway::new("http://127.0.0.1:1", s, Duration::from_secs(1)).unwrap();
        assert!(!format!("{g:?}").contains("very_secret"), "{g:?}");
    }

    #[test]
    fn errors_map_to_decline_or_unknown() {
        let card =
            json!({ "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds" });
        assert_eq!(classify(402, &card), GatewayError::Declined("insufficient_funds".into()));
        assert!(matches!(
            classify(429, &json!({ "type": "rate_limit_error" })),
            GatewayError::Unavailable(_)
        ));
        assert!(matches!(classify(503, &json!({})), GatewayError::ServerError(_)));
        assert!(matches!(
            classify(409, &json!({ "type": "idempotency_error" })),
            GatewayError::Unavailable(_)
        ));
        assert!(matches!(
            classify(400, &json!({ "type": "invalid_request_error", "code": "parameter_missing" })),
            GatewayError::Permanent(_)
        ));
        assert!(matches!(
            classify(401, &json!({ "type": "invalid_request_error" })),
            GatewayError::Permanent(_)
        ));
        assert!(matches!(classify(400, &json!({ "type": "idempotency_error" })), GatewayError::Permanent(_)));
        assert_eq!(
            classify(
                400,
                &json!({ "type": "invalid_request_error", "code": "payment_intent_unexpected_state" })
            ),
            GatewayError::Declined("stripe_400_payment_intent_unexpected_state".into())
        );
    }

    #[test]
    fn an_intents_state_says_whether_it_is_authorized() {
        assert!(authorized(&json!({ "id": "pi_1", "status": "requires_capture" })).is_ok());
        assert_eq!(
            authorized(&json!({ "id": "pi_1", "status": "requires_payment_method",
                                 "last_payment_error": { "code": "card_declined" } })),
            Err(GatewayError::Declined("card_declined".into()))
        );
        assert!(matches!(
            authorized(&json!({ "id": "pi_1", "status": "requires_action" })),
            Err(GatewayError::Unavailable(_))
        ));
    }
}
