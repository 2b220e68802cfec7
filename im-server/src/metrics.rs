//! Prometheus metrics for the message server (prefix `im_`).
//!
//! One [`Metrics`] per process, shared behind an `Arc`. The recording
//! methods sit on the hot path (every frame, every delivery), so they never
//! allocate: counters are atomics, and labelled families are keyed by
//! `&'static str` label values, so a lookup takes a read lock on the family
//! and copies nothing. Label values come from closed sets (frame types,
//! error and close code names), which also keeps cardinality bounded.

use im_protocol::{CloseCode, ErrorCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// The server's metrics and the registry that renders them.
///
/// Cheap to share via `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    connections_opened: Counter,
    frames_in: Family<TypeLabel, Counter>,
    frames_out: Counter,
    messages_stored: Counter,
    messages_duplicate: Counter,
    deliveries: Counter,
    errors: Family<CodeLabel, Counter>,
    closes: Family<ReasonLabel, Counter>,
    connections_refused: Family<ReasonLabel, Counter>,
    queue_overflows: Counter,
    push_notifications: Family<ResultLabel, Counter>,
    http_requests: Family<StatusLabel, Counter>,
    feed_delivered: Counter,
    feed_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates all metrics at zero and registers them under the `im_` prefix.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("im"),
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            frames_in: Family::default(),
            frames_out: Counter::default(),
            messages_stored: Counter::default(),
            messages_duplicate: Counter::default(),
            deliveries: Counter::default(),
            errors: Family::default(),
            closes: Family::default(),
            connections_refused: Family::default(),
            queue_overflows: Counter::default(),
            push_notifications: Family::default(),
            http_requests: Family::default(),
            feed_delivered: Counter::default(),
            feed_failures: Counter::default(),
        };
        // Counters get their `_total` suffix from the encoder; help texts get
        // a full stop.
        m.registry.register("connections", "Current WebSocket connections", m.connections.clone());
        m.registry.register(
            "connections_opened",
            "WebSocket connections opened",
            m.connections_opened.clone(),
        );
        m.registry.register(
            "frames_in",
            "Client frames received, by frame type (\"invalid\" for undecodable frames)",
            m.frames_in.clone(),
        );
        m.registry.register("frames_out", "Server frames sent", m.frames_out.clone());
        m.registry.register("messages_stored", "Messages newly stored", m.messages_stored.clone());
        m.registry.register(
            "messages_duplicate",
            "Sends answered with an already stored message (idempotent resend)",
            m.messages_duplicate.clone(),
        );
        m.registry.register("deliveries", "Frames queued to a connection by fan-out", m.deliveries.clone());
        m.registry.register("errors", "Error frames and responses, by error code", m.errors.clone());
        m.registry.register("closes", "Connections closed by the server, by close reason", m.closes.clone());
        m.registry.register(
            "connections_refused",
            "TCP connections closed on arrival, by reason (per_ip_cap)",
            m.connections_refused.clone(),
        );
        m.registry.register(
            "queue_overflows",
            "Connections whose send queue overflowed (slow consumers)",
            m.queue_overflows.clone(),
        );
        m.registry.register(
            "push_notifications",
            "Push notification dispatches, by result (sent, failed, dropped)",
            m.push_notifications.clone(),
        );
        m.registry.register(
            "http_requests",
            "Business API responses, by HTTP status",
            m.http_requests.clone(),
        );
        m.registry.register(
            "feed_delivered",
            "Messages the message feed delivered (each delivery, so redeliveries count again)",
            m.feed_delivered.clone(),
        );
        m.registry.register(
            "feed_failures",
            "Message feed deliveries that failed and will be retried",
            m.feed_failures.clone(),
        );
        m
    }

    /// Renders every metric in the OpenMetrics text format (serve it with
    /// [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// A WebSocket connection was accepted.
    pub fn connection_opened(&self) {
        self.connections.inc();
        self.connections_opened.inc();
    }

    /// A WebSocket connection ended (call once per [`Self::connection_opened`]).
    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// A client frame was received; `type_name` is its type
    /// (`ClientFrame::type_name`) or `"invalid"`. Hot path.
    pub fn frame_in(&self, type_name: &'static str) {
        self.frames_in.get_or_create(&TypeLabel { r#type: type_name }).inc();
    }

    /// `n` server frames were written to sockets. Hot path.
    pub fn frames_out(&self, n: u64) {
        self.frames_out.inc_by(n);
    }

    /// A send was stored (`duplicate: false`) or matched an earlier message
    /// with the same client message id (`duplicate: true`, nothing stored).
    pub fn message_stored(&self, duplicate: bool) {
        if duplicate {
            self.messages_duplicate.inc();
        } else {
            self.messages_stored.inc();
        }
    }

    /// `n` frames were queued to connections by fan-out. Hot path.
    pub fn deliveries(&self, n: u64) {
        self.deliveries.inc_by(n);
    }

    /// An error frame or HTTP error response with `code` was sent.
    pub fn error(&self, code: ErrorCode) {
        self.errors.get_or_create(&CodeLabel { code: code.as_str() }).inc();
    }

    /// The server closed a connection with `code`.
    pub fn close(&self, code: CloseCode) {
        self.closes.get_or_create(&ReasonLabel { reason: code.name() }).inc();
    }

    /// A TCP connection was closed on arrival, for `reason`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A connection's send queue overflowed.
    pub fn queue_overflow(&self) {
        self.queue_overflows.inc();
    }

    /// A push dispatch finished with `result`: `"sent"`, `"failed"`, `"dropped"`, or `"presence_unknown"` (sent to all, presence unreadable).
    pub fn push(&self, result: &'static str) {
        self.push_notifications.get_or_create(&ResultLabel { result }).inc();
    }

    /// The business API answered with HTTP `status`.
    pub fn http_request(&self, status: u16) {
        self.http_requests.get_or_create(&StatusLabel { status }).inc();
    }

    /// The message feed delivered `n` messages.
    pub fn feed_delivered(&self, n: u64) {
        self.feed_delivered.inc_by(n);
    }

    /// A message feed delivery failed (it is retried).
    pub fn feed_failure(&self) {
        self.feed_failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_recorded_values() {
        let m = Metrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.frame_in("send");
        m.frame_in("send");
        m.frame_in("invalid");
        m.frames_out(5);
        m.message_stored(false);
        m.message_stored(true);
        m.deliveries(7);
        m.error(ErrorCode::NotMember);
        m.close(CloseCode::SLOW_CONSUMER);
        m.queue_overflow();
        m.push("dropped");
        m.http_request(404);

        let text = m.render();
        for line in [
            "# TYPE im_connections gauge",
            "im_connections 1\n",
            "im_connections_opened_total 2\n",
            "im_frames_in_total{type=\"send\"} 2\n",
            "im_frames_in_total{type=\"invalid\"} 1\n",
            "im_frames_out_total 5\n",
            "im_messages_stored_total 1\n",
            "im_messages_duplicate_total 1\n",
            "im_deliveries_total 7\n",
            "im_errors_total{code=\"not_member\"} 1\n",
            "im_closes_total{reason=\"slow_consumer\"} 1\n",
            "im_queue_overflows_total 1\n",
            "im_push_notifications_total{result=\"dropped\"} 1\n",
            "im_http_requests_total{status=\"404\"} 1\n",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
