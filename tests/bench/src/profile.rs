//! `bench profile`: where the CPU of a request goes. Loads one scenario with wrk while `perf
//! record` samples each serving process (software clock: these machines give no hardware
//! counters), then splits each process's CPU per request by what its samples were running:
//! kernel networking and scheduling, HTTP/2 and HTTP, gRPC, GraphQL, JSON, crypto, the
//! allocator, the runtime, our own code. Self time only: a function's samples count for the
//! library it belongs to, not for its callers.

use std::{path::Path, process::Command, time::Duration};

use crate::{
    load::{self, Post},
    procs::{CpuMeter, Proc},
};

/// Categories, in the order they are shown, each with the symbol fragments that make it.
/// The first category whose fragment a symbol holds wins.
const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "kernel: networking",
        &[
            "tcp_",
            "ip_",
            "sock_",
            "skb",
            "__sys_",
            "sys_sendto",
            "sys_recv",
            "unix_",
            "net_",
            "__dev_",
            "loopback",
            "inet_",
            "__x64_sys_sendto",
            "__x64_sys_recvfrom",
            "__x64_sys_write",
            "__x64_sys_read",
        ],
    ),
    ("kernel: epoll, scheduling, other", &["[k]"]),
    ("HTTP/2 (h2)", &["h2::"]),
    ("HTTP (hyper, poem)", &["hyper::", "hyper_util::", "http::", "httparse", "poem::", "headers::"]),
    ("gRPC (tonic, tower, prost)", &["tonic::", "tower::", "prost::", "tonic_"]),
    ("GraphQL (async-graphql)", &["async_graphql"]),
    ("JSON (serde)", &["serde_json::", "serde::"]),
    (
        "crypto (RS256, SHA-2)",
        &["aws_lc", "ring::", "jsonwebtoken", "rsa::", "sha2::", "aws_lc_0", "bn_", "sha256", "SHA256"],
    ),
    ("allocator (mimalloc), memcpy", &["mi_", "_mi_", "memcpy", "memmove", "memset", "malloc", "free", "realloc"]),
    ("runtime (tokio), futures", &["tokio::", "futures_", "parking_lot", "std::sys", "__lll_", "pthread_", "syscall"]),
    (
        "our code (facade, identity)",
        &["graphql_facade::", "identity_core::", "identity_service::", "identity_proto::", "stack_process::"],
    ),
    ("database (sqlx, sea-orm)", &["sqlx", "sea_orm", "sea_query", "sqlite3", "libsqlite"]),
];

/// Samples `procs` with perf while wrk loads `post` for `seconds`; prints, for each process,
/// its CPU per request and how that splits.
pub async fn run(procs: &[&Proc], post: &Post<'_>, connections: usize, seconds: Duration, dir: &Path) {
    let recorders: Vec<_> = procs
        .iter()
        .map(|proc| {
            let data = dir.join(format!("{}.perf", proc.name));
            let child = Command::new("perf")
                .args(["record", "-F", "1999", "-q", "-o"])
                .arg(&data)
                .args(["-p", &proc.pid().to_string(), "--", "sleep", &seconds.as_secs().to_string()])
                .spawn()
                .expect("perf (Debian: linux-perf)");
            (proc, data, child)
        })
        .collect();
    let meter = CpuMeter::start(procs);
    let measured = load::wrk(post, connections, seconds).await;
    let cpu = meter.stop();
    println!("{:.0} req/s, p99 {:.2} ms", measured.rps, measured.p99_ms);
    for (proc, data, mut child) in recorders {
        let _ = child.wait();
        let cores = cpu.iter().find(|(name, _)| *name == proc.name).map(|(_, cores)| *cores).unwrap_or_default();
        let per_request_us = cores * 1e6 / measured.rps.max(1.0);
        println!("\n{}: {:.0}% CPU, {:.1} µs per request", proc.name, cores * 100.0, per_request_us);
        let report = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "sym", "-q", "-i"])
            .arg(&data)
            .output()
            .expect("perf report");
        let shares = split(&String::from_utf8_lossy(&report.stdout));
        for (category, share) in shares {
            if share >= 0.5 {
                println!("  {category:<36} {share:5.1}%  {:6.1} µs", per_request_us * share / 100.0);
            }
        }
    }
}

/// `perf report --sort sym` lines (`  12.34%  [.] symbol`) summed by category; the rest is
/// "other".
fn split(report: &str) -> Vec<(&'static str, f64)> {
    let mut shares: Vec<(&'static str, f64)> = CATEGORIES.iter().map(|(name, _)| (*name, 0.0)).collect();
    let mut other = 0.0;
    for line in report.lines() {
        let line = line.trim();
        let Some((percent, symbol)) = line.split_once('%') else { continue };
        let Ok(percent) = percent.trim().parse::<f64>() else { continue };
        let symbol = symbol.trim();
        let kernel = symbol.starts_with("[k]");
        let found = CATEGORIES.iter().position(|(name, fragments)| {
            (kernel || !name.starts_with("kernel")) && fragments.iter().any(|fragment| symbol.contains(fragment))
        });
        match found {
            Some(index) => shares[index].1 += percent,
            None => other += percent,
        }
    }
    shares.push(("other (unresolved, libc, …)", other));
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_fall_into_their_category() {
        let report = "    10.00%  [k] tcp_sendmsg_locked\n     5.00%  [k] finish_task_switch\n     \
                      7.50%  [.] h2::proto::streams::recv::Recv::recv_data\n     2.50%  [.] mi_free\n     \
                      1.00%  [.] async_graphql::parser::parse_query\n     3.00%  [.] 0x00000000001f2e3a\n";
        let shares = split(report);
        let share = |name: &str| shares.iter().find(|(category, _)| category.starts_with(name)).unwrap().1;
        assert_eq!(share("kernel: networking"), 10.0);
        assert_eq!(share("kernel: epoll"), 5.0);
        assert_eq!(share("HTTP/2"), 7.5);
        assert_eq!(share("allocator"), 2.5);
        assert_eq!(share("GraphQL"), 1.0);
        assert_eq!(share("other"), 3.0);
    }
}
