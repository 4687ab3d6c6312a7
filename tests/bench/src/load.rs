//! Load generators: `wrk` for HTTP (installed by `.ci/bench`), and a tonic client for gRPC.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// What one load run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors (HTTP), failed calls (gRPC).
    pub errors: u64,
}

/// An HTTP POST that wrk repeats.
pub struct Post<'a> {
    pub url: &'a str,
    pub body: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

fn lua_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Runs wrk against `post` with `connections` connections on 2 threads for `duration`.
pub async fn wrk(post: &Post<'_>, connections: usize, duration: Duration) -> Measured {
    let mut script = String::from("wrk.method = \"POST\"\n");
    script.push_str(&format!("wrk.body = {}\n", lua_string(post.body)));
    script.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    for (name, value) in post.headers {
        script.push_str(&format!("wrk.headers[{}] = {}\n", lua_string(name), lua_string(value)));
    }
    let file = tempfile::Builder::new().suffix(".lua").tempfile().expect("temp file");
    std::fs::write(file.path(), script).expect("write the wrk script");
    let args = vec![
        "-t2".to_owned(),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".to_owned(),
        "-s".to_owned(),
        file.path().display().to_string(),
        post.url.to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(args).output())
        .await
        .expect("wrk task")
        .expect("cannot run wrk (.ci/bench installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    drop(file);
    parse_wrk(&text)
}

fn parse_wrk(text: &str) -> Measured {
    let mut measured = Measured::default();
    for line in text.lines().map(str::trim) {
        if let Some(rps) = line.strip_prefix("Requests/sec:") {
            measured.rps = rps.trim().parse().unwrap_or_default();
        } else if let Some(latency) = line.strip_prefix("50%") {
            measured.p50_ms = millis(latency.trim());
        } else if let Some(latency) = line.strip_prefix("99%") {
            measured.p99_ms = millis(latency.trim());
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            measured.errors += count.trim().parse::<u64>().unwrap_or_default();
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            measured.errors +=
                errors.split(',').filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok()).sum::<u64>();
        }
    }
    measured
}

/// wrk's latency: `812.00us`, `1.23ms`, `2.01s`.
fn millis(value: &str) -> f64 {
    let split = value.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().unwrap_or_default();
    match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => number,
    }
}

/// Runs `call` from `concurrency` tasks for `duration`; latencies in a histogram.
pub async fn grpc<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Measured
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    if call().await.is_err() {
                        errors += 1;
                    }
                    let _ = histogram.record(sent.elapsed().as_micros().max(1) as u64);
                }
                (histogram, errors)
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for task in tasks {
        let (histogram, failed) = task.await.expect("load task");
        total.add(histogram).expect("merge histograms");
        errors += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Measured {
        rps: total.len() as f64 / elapsed,
        p50_ms: total.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: total.value_at_quantile(0.99) as f64 / 1000.0,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "  Latency Distribution\n     50%  812.00us\n     75%    1.10ms\n     99%    3.20ms\n  \
                    120000 requests in 10.00s, 30.00MB read\n  Non-2xx or 3xx responses: 3\n  \
                    Socket errors: connect 0, read 1, write 0, timeout 2\nRequests/sec:  12000.50\n";
        let measured = parse_wrk(text);
        assert_eq!(measured.rps, 12000.5);
        assert!((measured.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(measured.p99_ms, 3.2);
        assert_eq!(measured.errors, 6);
        assert_eq!(millis("1.5s"), 1500.0);
    }
}
