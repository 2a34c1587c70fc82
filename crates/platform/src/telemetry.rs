//! Logs, and traces across processes.
//!
//! Logs go to stderr (`RUST_LOG`, `LOG_FORMAT=json`). With `OTEL_EXPORTER_OTLP_ENDPOINT` set,
//! spans are also exported to that OpenTelemetry collector over OTLP/HTTP (JSON).
//!
//! An order's trace id is chosen when the API receives `placeOrder` (the client's W3C
//! `traceparent` header's, when it sends one) and stored with the saga. Every message of the saga
//! carries it twice: in the envelope, and as W3C `traceparent`/`tracestate` broker headers written
//! with the message into the outbox, naming as parent the span that wrote it. A consumer's span
//! joins that context, so API → outbox → broker → worker → reply → orchestrator is one trace, and
//! the client's sampling decision and `tracestate` hold for all of it.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use uuid::Uuid;

/// A request's or a message's W3C trace context: its `traceparent` and `tracestate` headers, read
/// and written by OpenTelemetry's [`TraceContextPropagator`] (versions, flags and the vendors'
/// `tracestate` entries as the spec says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders(Vec<(String, String)>);

impl TraceHeaders {
    /// The headers that carry it.
    pub const FIELDS: [&'static str; 2] = ["traceparent", "tracestate"];

    /// The trace context fields `get` finds (it is asked for each of [`Self::FIELDS`]).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Self {
        TraceHeaders(Self::FIELDS.iter().filter_map(|&f| Some((f.to_string(), get(f)?))).collect())
    }

    /// The headers' names and values, to write them on a message.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The remote span these headers name; `None` when they name none the spec accepts.
    pub fn span_context(&self) -> Option<SpanContext> {
        let cx = TraceContextPropagator::new().extract(self);
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> Option<String> {
        self.span_context().map(|sc| sc.trace_id().to_string())
    }

    /// The headers that name `cx`'s span as the parent.
    fn of(cx: &opentelemetry::Context) -> Self {
        let mut headers = TraceHeaders::default();
        TraceContextPropagator::new().inject_context(cx, &mut headers);
        headers
    }

    /// The context a message is sent in: the current span's, when spans are exported and it is in
    /// the saga's trace (so its sampling decision and `tracestate` travel on); else the saga's
    /// trace with a parent derived from the message id ([`Self::derived`]).
    pub fn for_message(trace_id: &str, message_id: Uuid) -> Self {
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() && sc.trace_id().to_string() == trace_id {
            return Self::of(&cx);
        }
        Self::derived(trace_id, message_id)
    }

    /// `trace_id`, sampled, with a parent id derived from `id` (its random low half): for a hop
    /// whose writer exported no span. Empty when `trace_id` is not a trace id.
    pub fn derived(trace_id: &str, id: Uuid) -> Self {
        let trace = match TraceId::from_hex(trace_id) {
            Ok(t) if trace_id.len() == 32 && t != TraceId::INVALID => t,
            _ => return TraceHeaders::default(),
        };
        let low = u64::from_be_bytes(id.as_bytes()[8..].try_into().expect("8 bytes"));
        let parent = SpanContext::new(
            trace,
            SpanId::from_bytes(low.max(1).to_be_bytes()),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Self::of(&opentelemetry::Context::new().with_remote_span_context(parent))
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| k != key);
        // The propagator writes an empty `tracestate` when there is none; no header says the same.
        if !value.is_empty() {
            self.0.push((key.to_string(), value));
        }
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        TraceHeaders::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// A new random trace id (32 hex digits).
pub fn new_trace_id() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Makes `span` a child of the remote span `parent` names, when spans are exported (its sampling
/// decision and `tracestate` with it). Returns the trace id `span` is exported under, or `None`
/// when spans are not exported.
pub fn join(span: &tracing::Span, parent: &TraceHeaders) -> Option<String> {
    if parent.span_context().is_some() {
        let _ = span.set_parent(TraceContextPropagator::new().extract(parent));
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

    fn headers(pairs: &[(&str, &str)]) -> TraceHeaders {
        TraceHeaders::read(|f| pairs.iter().find(|(k, _)| *k == f).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_propagator_reads_what_the_spec_accepts_and_keeps_flags_and_tracestate() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let h = headers(&[("traceparent", tp), ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")]);
        let sc = h.span_context().unwrap();
        assert_eq!(h.trace_id().as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
        let written = TraceHeaders::of(&opentelemetry::Context::new().with_remote_span_context(sc));
        assert_eq!(written.get("traceparent"), Some(tp));
        assert_eq!(written.get("tracestate"), Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));

        // The caller's decision not to sample travels on.
        let unsampled =
            headers(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]);
        assert!(!unsampled.span_context().unwrap().is_sampled());
        // A later version is read as far as version 00 goes (W3C: parse what it understands).
        let future =
            headers(&[("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-cafe")]);
        assert_eq!(future.trace_id().as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(headers(&[("traceparent", bad)]).span_context(), None, "{bad:?}");
        }
    }

    /// With spans exported, a message names the span that wrote it, under the sampling decision
    /// and `tracestate` that span inherited from the request or message it handles.
    #[test]
    fn a_message_carries_the_context_of_the_span_that_writes_it() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
            for flags in ["01", "00"] {
                let incoming = headers(&[
                    ("traceparent", &format!("00-{trace}-00f067aa0ba902b7-{flags}")),
                    ("tracestate", "shop=web"),
                ]);
                let span = tracing::info_span!("handle");
                assert_eq!(join(&span, &incoming).as_deref(), Some(trace));
                let sent = span.in_scope(|| TraceHeaders::for_message(trace, Uuid::now_v7()));
                let sc = sent.span_context().unwrap();
                assert_eq!(
                    sc.span_id(),
                    span.context().span().span_context().span_id(),
                    "parent: the writer"
                );
                assert_eq!(sc.is_sampled(), flags == "01");
                assert_eq!(sent.get("tracestate"), Some("shop=web"), "{sent:?}");
            }
        });
    }

    #[test]
    fn each_message_is_its_own_hop_in_the_sagas_trace() {
        let trace = new_trace_id();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ta = TraceHeaders::for_message(&trace, a);
        let tb = TraceHeaders::for_message(&trace, b);
        assert_eq!(ta.trace_id().as_deref(), Some(trace.as_str()));
        assert_eq!(tb.trace_id().as_deref(), Some(trace.as_str()));
        assert_ne!(ta.span_context().unwrap().span_id(), tb.span_context().unwrap().span_id());
        assert!(ta.span_context().unwrap().is_sampled());
        assert_eq!(ta.get("tracestate"), None, "no empty tracestate header");
        assert!(TraceHeaders::for_message("not-a-trace-id", a).is_empty());
        assert!(TraceHeaders::derived("4bf92f", a).is_empty(), "too short to be a trace id");
    }
}
