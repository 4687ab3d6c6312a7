//! Prometheus metrics (prometheus-client; one registry per facade, so tests that start several
//! facades in one process do not mix their counts). Every label value comes from a closed
//! set — a route pattern of the router, a schema field, an error code — never from what a
//! client sent, so no client can grow the number of series.

use std::time::Duration;

use poem::{Endpoint, IntoResponse, Middleware, PathPattern, Request, Response, http::Method};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    /// The root field the operation selected (`whoami`, `tokenAuth`, ...), `(multiple)` or
    /// `(invalid)` when it never ran.
    operation: String,
    /// `ok` or the first error's `extensions.code`.
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    result: &'static str,
    /// The replica's URL, from `FACADE_IDENTITY_URL`.
    upstream: String,
}

/// How a login ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Succeeded,
    Failed,
    Throttled,
    Unavailable,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: HistogramFamily<RouteLabels>,
    graphql_operations: Family<OperationLabels, Counter>,
    authenticate_latency: HistogramFamily<UpstreamLabels>,
    logins: Family<OutcomeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("facade");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", http_requests.clone());
        let http_latency = HistogramFamily::<RouteLabels>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_latency.clone());
        let graphql_operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "graphql_operations",
            "GraphQL operations by root field and outcome (ok or the error code)",
            graphql_operations.clone(),
        );
        let authenticate_latency =
            HistogramFamily::<UpstreamLabels>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "identity_authenticate_duration_seconds",
            "Latency of AuthService.Authenticate calls to the identity service, by result and replica",
            authenticate_latency.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "logins",
            "Logins through the facade: succeeded, failed, throttled, unavailable",
            logins.clone(),
        );
        Metrics { registry, http_requests, http_latency, graphql_operations, authenticate_latency, logins }
    }

    /// The exposition, in the OpenMetrics text format Prometheus scrapes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn login(&self, outcome: LoginOutcome) {
        let result = match outcome {
            LoginOutcome::Succeeded => "succeeded",
            LoginOutcome::Failed => "failed",
            LoginOutcome::Throttled => "throttled",
            LoginOutcome::Unavailable => "unavailable",
        };
        self.logins.get_or_create(&OutcomeLabels { result }).inc();
    }

    pub fn authenticate(&self, upstream: &str, ok: bool, elapsed: Duration) {
        let labels = UpstreamLabels { result: if ok { "ok" } else { "refused" }, upstream: upstream.to_owned() };
        self.authenticate_latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    pub fn graphql_operation(&self, operation: &str, outcome: &str) {
        let labels = OperationLabels { operation: operation.to_owned(), outcome: outcome.to_owned() };
        self.graphql_operations.get_or_create(&labels).inc();
    }

    fn http(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            _ => "other",
        };
        self.http_requests.get_or_create(&HttpLabels { route: route.to_owned(), method, status }).inc();
        self.http_latency.get_or_create(&RouteLabels { route: route.to_owned() }).observe(elapsed.as_secs_f64());
    }
}

/// Counts and times every request by the route pattern the router matched (poem leaves it on
/// the response; `other` when no route matched) and status. Logs nothing: a URI may carry a
/// token (GET GraphQL), and request bodies are never read here.
pub struct RequestMetrics(pub std::sync::Arc<Metrics>);

impl<E: Endpoint> Middleware<E> for RequestMetrics {
    type Output = RequestMetricsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestMetricsEndpoint { inner, metrics: self.0.clone() }
    }
}

pub struct RequestMetricsEndpoint<E> {
    inner: E,
    metrics: std::sync::Arc<Metrics>,
}

impl<E: Endpoint> Endpoint for RequestMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Self::Output> {
        let method = request.method().clone();
        let started = std::time::Instant::now();
        let response = match self.inner.call(request).await {
            Ok(output) => output.into_response(),
            Err(error) => error.into_response(),
        };
        let route = response.data::<PathPattern>().map_or("other", |pattern| &pattern.0);
        self.metrics.http(route, &method, response.status().as_u16(), started.elapsed());
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family() {
        let metrics = Metrics::new();
        metrics.login(LoginOutcome::Throttled);
        metrics.authenticate("http://127.0.0.1:50051", true, Duration::from_millis(1));
        metrics.graphql_operation("whoami", "ok");
        metrics.http("/graphql", &Method::POST, 200, Duration::from_millis(2));
        let text = metrics.render();
        for line in [
            "facade_logins_total{result=\"throttled\"} 1",
            "facade_graphql_operations_total{operation=\"whoami\",outcome=\"ok\"} 1",
            "facade_http_requests_total{route=\"/graphql\",method=\"POST\",status=\"200\"} 1",
            "facade_identity_authenticate_duration_seconds_count{result=\"ok\",upstream=\"http://127.0.0.1:50051\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
