//! The identity service's Prometheus metrics (prometheus-client; one registry per service, so
//! tests that start several in one process do not mix their counts), served as OpenMetrics
//! text at `IDENTITY_METRICS_ADDR` when it is set.
//!
//! - `identity_event_apply_lag_seconds`: from another replica announcing an event (after its
//!   commit) to this replica applying it;
//! - `identity_event_listener_up`: 1 while this replica listens for the others' events (on
//!   PostgreSQL; on SQLite, a single process, it stays 1);
//! - `identity_event_listener_losses_total`: how often that listening connection was lost;
//! - `identity_janitor_runs_total`: janitor runs this replica performed (one replica per
//!   interval does);
//! - `identity_janitor_rows_removed_total{table}`: rows the janitor deleted, by table;
//! - `identity_signing_key_age_seconds`: since the current signing key started signing;
//! - `identity_signing_key_next_activation_seconds`: until the next key signs (the published
//!   one, or the next scheduled rotation); NaN under HS256, which does not rotate by itself;
//! - `identity_mail_queued_total{kind}`: messages queued by this replica (a reset or resend
//!   for an unknown address too: it is dropped when sent, as `skipped`);
//! - `identity_mail_attempts_total{kind,outcome}`: delivery attempts this replica made, by
//!   outcome (`sent`, `failed` — another attempt follows —, `abandoned`, `skipped`);
//! - `identity_mail_outbox_depth`: messages waiting (every replica's, read from the database);
//! - `identity_mail_outbox_oldest_age_seconds`: how long the oldest of them has waited (0 when
//!   none waits).

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use identity_core::{Backlog, KeyClock, MailKind, MailObserver, MailOutcome, ReplicationObserver, Swept};
use prometheus_client::{
    encoding::EncodeLabelSet,
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::net::TcpListener;

pub struct Metrics {
    registry: Registry,
    apply_lag: Histogram,
    listener_up: Gauge<i64, AtomicI64>,
    listener_losses: Counter,
    janitor_runs: Counter,
    janitor_removed: Family<TableLabel, Counter>,
    key_age: Gauge<f64, AtomicU64>,
    key_next: Gauge<f64, AtomicU64>,
    mail_queued: Family<KindLabel, Counter>,
    mail_attempts: Family<AttemptLabel, Counter>,
    outbox_depth: Gauge<i64, AtomicI64>,
    outbox_oldest: Gauge<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabel {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("identity");
        // 1 ms .. ~16 s
        let apply_lag = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "event_apply_lag_seconds",
            "From another replica announcing an event to this replica applying it",
            apply_lag.clone(),
        );
        let listener_up = Gauge::<i64, AtomicI64>::default();
        listener_up.set(1);
        registry.register(
            "event_listener_up",
            "1 while this replica listens for the other replicas' events",
            listener_up.clone(),
        );
        let listener_losses = Counter::default();
        registry.register(
            "event_listener_losses",
            "How often the connection listening for the other replicas' events was lost",
            listener_losses.clone(),
        );
        let janitor_runs = Counter::default();
        registry.register("janitor_runs", "Janitor runs this replica performed", janitor_runs.clone());
        let janitor_removed = Family::<TableLabel, Counter>::default();
        registry.register(
            "janitor_rows_removed",
            "Rows the janitor deleted, past their life, by table",
            janitor_removed.clone(),
        );
        // Unknown (NaN) until the key loop first reads the clock.
        let key_age = Gauge::<f64, AtomicU64>::default();
        key_age.set(f64::NAN);
        registry.register("signing_key_age_seconds", "Since the current signing key started signing", key_age.clone());
        let key_next = Gauge::<f64, AtomicU64>::default();
        key_next.set(f64::NAN);
        registry.register(
            "signing_key_next_activation_seconds",
            "Until the next signing key signs (published, or scheduled)",
            key_next.clone(),
        );
        let mail_queued = Family::<KindLabel, Counter>::default();
        registry.register("mail_queued", "Messages queued by this replica, by kind", mail_queued.clone());
        let mail_attempts = Family::<AttemptLabel, Counter>::default();
        registry.register(
            "mail_attempts",
            "Delivery attempts this replica made, by kind and outcome (sent, failed, abandoned, skipped)",
            mail_attempts.clone(),
        );
        let outbox_depth = Gauge::<i64, AtomicI64>::default();
        registry.register("mail_outbox_depth", "Messages waiting to be sent", outbox_depth.clone());
        let outbox_oldest = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "mail_outbox_oldest_age_seconds",
            "How long the oldest waiting message has waited",
            outbox_oldest.clone(),
        );
        Arc::new(Metrics {
            registry,
            mail_queued,
            mail_attempts,
            outbox_depth,
            outbox_oldest,
            apply_lag,
            listener_up,
            listener_losses,
            janitor_runs,
            janitor_removed,
            key_age,
            key_next,
        })
    }

    /// The key clock, as of now.
    pub fn keys(&self, clock: KeyClock) {
        self.key_age.set(clock.current_age.as_secs_f64());
        self.key_next.set(clock.until_next.map_or(f64::NAN, |until| until.as_secs_f64()));
    }

    /// The outbox as the sender last saw it.
    pub fn mail_backlog(&self, backlog: Backlog) {
        self.outbox_depth.set(i64::try_from(backlog.depth).unwrap_or(i64::MAX));
        self.outbox_oldest.set(backlog.oldest.map_or(0.0, |age| age.as_secs_f64()));
    }

    /// One janitor run and what it deleted.
    pub fn janitor(&self, swept: Swept) {
        self.janitor_runs.inc();
        for (table, rows) in [
            ("sessions", swept.sessions),
            ("refresh_tokens", swept.refresh_tokens),
            ("login_attempts", swept.login_attempts),
            ("account_tokens", swept.account_tokens),
            ("outbox", swept.outbox),
            ("social_states", swept.social_states),
        ] {
            self.janitor_removed.get_or_create(&TableLabel { table }).inc_by(rows);
        }
    }

    /// The exposition, in the OpenMetrics text format Prometheus scrapes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl MailObserver for Metrics {
    fn queued(&self, kind: MailKind) {
        self.mail_queued.get_or_create(&KindLabel { kind: kind.as_str() }).inc();
    }

    fn attempted(&self, kind: MailKind, outcome: MailOutcome) {
        self.mail_attempts.get_or_create(&AttemptLabel { kind: kind.as_str(), outcome: outcome.as_str() }).inc();
    }
}

impl ReplicationObserver for Metrics {
    fn listener(&self, up: bool) {
        // Down first, then counted: whoever sees the loss counted sees it down (or up again).
        self.listener_up.set(i64::from(up));
        if !up {
            self.listener_losses.inc();
        }
    }

    fn applied(&self, lag: Duration) {
        self.apply_lag.observe(lag.as_secs_f64());
    }
}

/// Serves `GET /metrics` (any path, in fact) on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let body = metrics.render();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
