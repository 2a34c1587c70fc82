//! Logs, and traces across processes.
//!
//! Logs go to stderr (`RUST_LOG`, `LOG_FORMAT=json`). With `OTEL_EXPORTER_OTLP_ENDPOINT` set,
//! spans are also exported to that OpenTelemetry collector over OTLP/HTTP (JSON).
//!
//! An order's trace id is chosen when the API receives `placeOrder` (the client's W3C
//! `traceparent` header's, when it sends one) and stored with the saga. Every message of the saga
//! carries it twice: in the envelope, and as a `traceparent` broker header written with the
//! message into the outbox, naming as parent the span that wrote it. A consumer's span joins that
//! context, so API → outbox → broker → worker → reply → orchestrator is one trace.

use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use uuid::Uuid;

/// A parsed `traceparent`: 32 and 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceParent {
    /// Parses version `00` (the only one defined); all-zero ids are invalid, as the spec says.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || !is_hex(flags, 2) {
            return None;
        }
        if !is_hex(trace_id, 32) || !is_hex(parent_id, 16) {
            return None;
        }
        if trace_id.bytes().all(|b| b == b'0') || parent_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceParent { trace_id: trace_id.to_string(), parent_id: parent_id.to_string() })
    }

    /// The header value, sampled.
    pub fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.parent_id)
    }

    /// The context a message is sent in: the saga's trace, and as parent the span that wrote the
    /// message when spans are exported ([`current_span_id`]), else an id derived from the
    /// message's own id (its random low half), so each message is a distinct hop.
    pub fn for_message(trace_id: &str, message_id: Uuid) -> Option<Self> {
        if !is_hex(trace_id, 32) {
            return None;
        }
        match current_span_id() {
            Some(parent_id) => Some(TraceParent { trace_id: trace_id.to_string(), parent_id }),
            None => Self::derived(trace_id, message_id),
        }
    }

    /// `trace_id` with a parent id derived from `id` (its random low half): for a hop whose
    /// writer exported no span.
    pub fn derived(trace_id: &str, id: Uuid) -> Option<Self> {
        if !is_hex(trace_id, 32) {
            return None;
        }
        let low = u64::from_be_bytes(id.as_bytes()[8..].try_into().expect("8 bytes"));
        Some(TraceParent { trace_id: trace_id.to_string(), parent_id: format!("{:016x}", low.max(1)) })
    }
}

/// A new random trace id (32 hex digits).
pub fn new_trace_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// The exported span id of the current `tracing` span; `None` when spans are not exported.
pub fn current_span_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_string())
}

/// Makes `span` a child of `parent` (a remote span) when spans are exported. Returns the trace id
/// `span` is exported under, or `None` when spans are not exported.
pub fn join(span: &tracing::Span, parent: Option<&TraceParent>) -> Option<String> {
    if let Some(p) = parent {
        if let (Ok(trace_id), Ok(span_id)) = (TraceId::from_hex(&p.trace_id), SpanId::from_hex(&p.parent_id))
        {
            let remote =
                SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::default());
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up span export to {endpoint}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// Flushes exported spans when the process ends.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (call before exiting). The exporter blocks its caller, so
    /// this runs it off the async workers.
    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || p.shutdown()).await {
                eprintln!("flushing spans failed: {e}");
            }
        }
    }
}

/// Installs logging and, with `otlp_endpoint` (e.g. `http://127.0.0.1:4318`), span export under
/// `service` as the service name. Call once, inside the Tokio runtime.
pub fn init(service: &str, otlp_endpoint: Option<&str>) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt =
        if std::env::var("LOG_FORMAT").as_deref() == Ok("json") { fmt.json().boxed() } else { fmt.boxed() };
    let Some(endpoint) = otlp_endpoint else {
        let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
        return Ok(Telemetry { provider: None });
    };
    let fail = |reason: String| TelemetryError { endpoint: endpoint.to_string(), reason };
    let handle = tokio::runtime::Handle::try_current().map_err(|e| fail(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(Duration::from_secs(10))
        .with_http_client(OtlpClient { client: reqwest::Client::new(), handle })
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service.to_string()).build())
        .build();
    let tracer = provider.tracer("ecommerce-saga");
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    Ok(Telemetry { provider: Some(provider) })
}

/// The exporter's HTTP client: the project's reqwest, run on the Tokio runtime (the batch
/// exporter calls it from its own thread).
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request)?;
        let sent = self.handle.spawn(async move {
            let response = client.execute(request).await?;
            let mut out = http::Response::builder().status(response.status());
            for (k, v) in response.headers() {
                out = out.header(k, v);
            }
            let body = response.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(out.body(body)?)
        });
        sent.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_the_spec_rejects() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(v).unwrap();
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id, "00f067aa0ba902b7");
        assert_eq!(tp.header(), v);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_message_is_its_own_hop_in_the_sagas_trace() {
        let trace = new_trace_id();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ta = TraceParent::for_message(&trace, a).unwrap();
        let tb = TraceParent::for_message(&trace, b).unwrap();
        assert_eq!(ta.trace_id, trace);
        assert_eq!(tb.trace_id, trace);
        assert_ne!(ta.parent_id, tb.parent_id);
        assert_eq!(TraceParent::parse(&ta.header()), Some(ta));
        assert_eq!(TraceParent::for_message("not-a-trace-id", a), None);
    }
}
