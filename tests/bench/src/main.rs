//! `bench`: the benchmark command (run by `bash .ci/bench`). Starts, on random loopback ports,
//! the identity service and the facade (release binaries, separate processes, a fresh
//! database), the floor server and a trivial gRPC server; loads each scenario with wrk (HTTP)
//! or a tonic client (gRPC); prints the table and writes it to BENCHMARKS.md. Every figure is
//! read against a baseline measured in the same run: these machines are shared and noisy.

#![allow(clippy::unwrap_used)]

mod baselines;
mod load;
mod procs;
mod profile;
mod replicas;
mod report;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use e2e::PASSWORD;
use identity_proto::pb;
use load::{Measured, Post};
use procs::{CpuMeter, Proc, free_addr, sibling};
use report::{Report, Row, Runs, Target};
use tonic::transport::Channel;

/// The same allocator as the stack's binaries (stack-process), so that the floor and the
/// trivial server differ from them in architecture only.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WHOAMI: &str = r#"{"query":"{ whoami { id username } }"}"#;

#[derive(Parser)]
#[command(name = "bench", about = "Benchmarks the identity stack against baselines measured in the same run")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs of the token-check scenarios and their baselines (interleaved; the table gives the
    /// median and the spread).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// wrk connections for the token-check scenarios.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Live sessions for the memory scenario.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Revocations measured in scenario 9 (a quarter as many for websockets).
    #[arg(long, default_value_t = 200)]
    lag_trials: usize,
    /// PostgreSQL server for scenarios 7 and 9 (a fresh database is created and dropped); ""
    /// skips them.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// Where to write the table.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Sub {
    /// Serve the floor (used by the bench itself).
    Floor {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        secret: String,
    },
    /// Serve the trivial gRPC call (used by the bench itself).
    Trivial {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Where the CPU of scenarios 1 and 3 goes, by `perf record` on both processes (needs
    /// perf: Debian's linux-perf), and of the floor's whoami.
    Profile {
        /// How the facade reaches the identity service: `tcp` or `unix`.
        #[arg(long, default_value = "tcp")]
        link: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    match cli.command {
        Some(Sub::Floor { addr, secret }) => runtime.block_on(baselines::serve_floor(addr, secret)),
        Some(Sub::Trivial { addr }) => runtime.block_on(baselines::serve_trivial(addr)),
        Some(Sub::Profile { ref link }) => runtime.block_on(profile_run(&cli, link == "unix")),
        None => runtime.block_on(run(&cli)),
    }
}

/// The identity service and the facade as separate processes on one database.
struct Stack {
    identity: Proc,
    facade: Proc,
    _dir: Option<tempfile::TempDir>,
}

/// How the facade reaches the identity service.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// Over loopback TCP, with this many HTTP/2 connections.
    Tcp(usize),
    /// Over a Unix domain socket (`IDENTITY_GRPC_UDS`), one connection.
    Unix,
}

impl Stack {
    fn start(database_url: &str, dir: Option<tempfile::TempDir>) -> Self {
        Self::start_linked(database_url, dir, Link::Tcp(1))
    }

    fn start_linked(database_url: &str, dir: Option<tempfile::TempDir>, link: Link) -> Self {
        let grpc = free_addr();
        let mut command = Command::new(sibling("identity-service"));
        command
            .env("IDENTITY_DATABASE_URL", database_url)
            // Required on PostgreSQL (the signing keys are sealed under it); fixed here.
            .env("IDENTITY_KEY_ENCRYPTION_KEY", "YmVuY2ggb25seToga2V5LWVuY3J5cHRpb24ga2V5ISE=")
            .env("IDENTITY_GRPC_ADDR", grpc.to_string())
            .env("IDENTITY_JWT_ALG", "RS256")
            // Every load comes from one address, many logins at once: the throttle's budgets,
            // which count attempts in flight, are lifted so that logins are measured, not refused.
            .env("IDENTITY_LOGIN_MAX_FAILURES", "1000000")
            .env("IDENTITY_LOGIN_ACCOUNT_MAX_FAILURES", "1000000")
            .env("IDENTITY_LOGIN_ADDRESS_MAX_FAILURES", "1000000")
            .env("RUST_LOG", "warn");
        let (identity_url, connections) = match link {
            Link::Tcp(connections) => (format!("http://{grpc}"), connections),
            Link::Unix => {
                let socket = dir.as_ref().expect("a directory for the socket").path().join("identity.sock");
                command.env("IDENTITY_GRPC_UDS", &socket);
                (format!("unix://{}", socket.display()), 1)
            }
        };
        let mut identity = Proc::spawn("identity", command, grpc);
        identity.wait_listening();
        let http = free_addr();
        let mut command = Command::new(sibling("graphql-facade"));
        command
            .env("FACADE_HTTP_ADDR", http.to_string())
            .env("FACADE_IDENTITY_URL", identity_url)
            .env("FACADE_IDENTITY_CONNECTIONS", connections.to_string())
            .env("RUST_LOG", "warn");
        let mut facade = Proc::spawn("facade", command, http);
        facade.wait_listening();
        Stack { identity, facade, _dir: dir }
    }

    fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.facade.addr)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.identity.addr))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap()
    }
}

async fn sign_up_and_log_in(channel: &Channel, username: &str) -> pb::LoginResponse {
    e2e::sign_up(&mut e2e::Users::new(channel.clone()), username).await;
    e2e::log_in(&mut e2e::Auth::new(channel.clone()), username).await
}

/// One request, checked, before loading: a scenario that measures errors measures nothing.
async fn check(post: &Post<'_>, expect: &str) {
    let mut request = reqwest::Client::new().post(post.url).header("content-type", "application/json");
    for (name, value) in post.headers {
        request = request.header(*name, *value);
    }
    let response = request.body(post.body.to_owned()).send().await.unwrap();
    let text = response.text().await.unwrap();
    assert!(text.contains(expect) && !text.contains("\"errors\""), "{} answered {text}", post.url);
}

async fn run(cli: &Cli) {
    let seconds = Duration::from_secs(cli.seconds);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut report = Report::new(cores);
    println!("bench: {cores} cores, {} s per scenario, load {}", cli.seconds, report.load_at_start);

    // The argon2 bound: cores ÷ the time of one verify, measured now.
    let argon2 = baselines::argon2_verify_seconds(10);
    let argon2_bound = cores as f64 / argon2;
    println!("argon2id verify: {:.1} ms -> bound {:.1} logins/s", argon2 * 1000.0, argon2_bound);
    let parallel = baselines::argon2_parallel_rate(cores, 10);
    report.note(format!(
        "{cores} threads verifying at once managed {parallel:.1} verifies/s here ({:.2}× cores ÷ one \
         verify: the cores do not hash independently of each other). The login rows are read \
         against this parallel bound, the most logins argon2 itself allows on this machine now.",
        parallel / argon2_bound
    ));

    // Encryption at rest: what opening a sealed key costs, next to the hash every login pays.
    let open = baselines::sealed_key_open_seconds(10_000);
    report.note(format!(
        "Signing keys are sealed at rest (AES-256-GCM under the key-encryption key): opening one \
         took {:.1} µs here, {:.5}× one argon2 verify. A key is opened once per process (at start, or \
         when a new key is published), never per login: the login rows above run with sealed keys, \
         and per login encryption at rest adds nothing.",
        open * 1e6,
        open / argon2
    ));
    println!("sealed key open: {:.1} µs", open * 1e6);

    // Baseline servers.
    let (floor, floor_addr, secret) = start_floor();
    let trivial_addr = free_addr();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["trivial", "--addr", &trivial_addr.to_string()]);
    let mut trivial = Proc::spawn("trivial", command, trivial_addr);
    trivial.wait_listening();

    // The stack on SQLite.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    let stack = Stack::start(&sqlite, Some(dir));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = (stack.identity.rss_mib(), stack.facade.rss_mib());
    let channel = stack.channel().await;
    let login = sign_up_and_log_in(&channel, "bench").await;

    // 0.–3. The floor and the token checks read against it, run after run (interleaved, so
    // that a noisy minute weighs on both).
    let floor_url = format!("http://{floor_addr}/graphql");
    let floor_bearer = format!("Bearer {}", baselines::floor_token(&secret));
    let floor_post = Post { url: &floor_url, body: WHOAMI, headers: &[("Authorization", &floor_bearer)] };
    check(&floor_post, "bench").await;
    let url = stack.graphql_url();
    let bearer = format!("Bearer {}", login.access_token);
    let cookie = format!("sessionid={}", login.session_token);
    let verify_body = serde_json::json!({
        "query": "mutation($t: String!) { verifyToken(token: $t) { payload } }",
        "variables": {"t": login.access_token},
    })
    .to_string();
    let scenarios = [
        ("1", "whoami, Bearer RS256, SQLite", Post { url: &url, body: WHOAMI, headers: &[("Authorization", &bearer)] }),
        ("2", "whoami, sessionid cookie, SQLite", Post { url: &url, body: WHOAMI, headers: &[("Cookie", &cookie)] }),
        ("3", "verifyToken, SQLite", Post { url: &url, body: &verify_body, headers: &[] }),
    ];
    // The levers on the facade ↔ identity hop, each a stack of its own read against the same
    // floor: row 1 with the hop over a Unix socket, and over several HTTP/2 connections.
    let levers = [
        ("1.u", "whoami, Bearer RS256, SQLite; the hop over a Unix socket", Link::Unix),
        ("1.c", "whoami, Bearer RS256, SQLite; the hop over 4 HTTP/2 connections", Link::Tcp(4)),
    ];
    let mut lever_stacks = Vec::new();
    for (_, _, link) in &levers {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
        let lever = Stack::start_linked(&sqlite, Some(dir), *link);
        let login = sign_up_and_log_in(&lever.channel().await, "bench").await;
        let (url, bearer) = (lever.graphql_url(), format!("Bearer {}", login.access_token));
        lever_stacks.push((lever, url, bearer));
    }
    let mut floor_runs = Runs::new();
    let mut runs: Vec<Runs> = scenarios.iter().map(|_| Runs::new()).collect();
    let mut lever_runs: Vec<Runs> = levers.iter().map(|_| Runs::new()).collect();
    for _ in 0..cli.runs.max(1) {
        let meter = CpuMeter::start(&[&floor]);
        let floor_load = load::wrk(&floor_post, cli.connections, seconds).await;
        floor_runs.push((floor_load, meter.stop()));
        for ((_, _, post), runs) in scenarios.iter().zip(&mut runs) {
            runs.push(http_row(&stack, post, "bench", cli.connections, seconds).await);
        }
        for ((lever, url, bearer), runs) in lever_stacks.iter().zip(&mut lever_runs) {
            let post = Post { url, body: WHOAMI, headers: &[("Authorization", bearer)] };
            runs.push(http_row(lever, &post, "bench", cli.connections, seconds).await);
        }
    }
    drop(lever_stacks);
    let floor = report.baseline("floor: bare poem + async-graphql whoami, HS256 verify", "floor", floor_runs);
    for ((id, name, _), runs) in scenarios.iter().zip(runs) {
        report.row(Row::new(id, name, runs, floor, Target::CpuPerRequest(1.7)));
    }
    for ((id, name, _), runs) in levers.iter().zip(lever_runs) {
        report.row(Row::new(id, name, runs, floor, Target::CpuPerRequest(1.7)));
    }

    // 4. gRPC Authenticate straight at the identity service, against a trivial unary call.
    let trivial_channel =
        Channel::from_shared(format!("http://{trivial_addr}")).unwrap().tcp_nodelay(true).connect().await.unwrap();
    let token = login.access_token.clone();
    let mut trivial_runs = Runs::new();
    let mut authenticate_runs = Runs::new();
    for _ in 0..cli.runs.max(1) {
        let trivial_channel = trivial_channel.clone();
        let meter = CpuMeter::start(&[&trivial]);
        let trivial_load =
            load::grpc(cli.connections, seconds, move || {
                let mut client = tonic_health::pb::health_client::HealthClient::new(trivial_channel.clone());
                async move {
                    client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.map(|_| ())
                }
            })
            .await;
        trivial_runs.push((trivial_load, meter.stop()));
        let (token, auth_channel) = (token.clone(), channel.clone());
        let meter = CpuMeter::start(&[&stack.identity]);
        let authenticate = load::grpc(cli.connections, seconds, move || {
            let mut client = pb::auth_service_client::AuthServiceClient::new(auth_channel.clone());
            let request = pb::AuthenticateRequest {
                credential: Some(pb::authenticate_request::Credential::AccessToken(token.clone())),
                omit_claims: true,
            };
            async move { client.authenticate(request).await.map(|_| ()) }
        })
        .await;
        authenticate_runs.push((authenticate, meter.stop()));
    }
    let trivial_call = report.baseline("trivial tonic unary call (grpc.health.v1 Check)", "trivial call", trivial_runs);
    report.row(Row::new(
        "4",
        "gRPC Authenticate (RS256 token), SQLite",
        authenticate_runs,
        trivial_call,
        Target::Throughput(0.8),
    ));

    // 5. tokenAuth logins.
    let login_body = serde_json::json!({
        "query": "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }",
        "variables": {"u": "bench", "p": PASSWORD},
    })
    .to_string();
    let login_post = Post { url: &url, body: &login_body, headers: &[] };
    let argon2_against = report::Against { name: "argon2 parallel bound", rps: parallel, cpu_us: None };
    let row = http_row(&stack, &login_post, "token", 16, seconds).await;
    report.row(Row::new("5", "tokenAuth logins, SQLite", Runs::one(row), argon2_against, Target::Throughput(0.9)));

    // 6. whoami while a login flood runs.
    let post = Post { url: &url, body: WHOAMI, headers: &[("Authorization", &bearer)] };
    let meter = CpuMeter::start(&[&stack.facade, &stack.identity]);
    let (whoami, _flood) = tokio::join!(load::wrk(&post, 16, seconds), load::wrk(&login_post, 16, seconds));
    report.flood_row("6", "whoami p99 during a login flood, SQLite", whoami, meter.stop(), 5.0);

    // 8. Memory: idle, then after `sessions` live sessions (logged in and used once each).
    let started = Instant::now();
    let tokens = many_sessions(&channel, cli.sessions).await;
    use_each(&url, &tokens).await;
    let busy = (stack.identity.rss_mib(), stack.facade.rss_mib());
    println!("{} sessions made and used in {:.0} s", cli.sessions, started.elapsed().as_secs_f64());
    report.memory(cli.sessions, idle, busy, 100.0);
    drop(stack);

    // 7. Scenarios 1 and 5 on PostgreSQL.
    if !cli.postgres.is_empty() {
        match Postgres::create(&cli.postgres) {
            Some(postgres) => {
                let stack = Stack::start(&postgres.url, None);
                let channel = stack.channel().await;
                let login = sign_up_and_log_in(&channel, "bench").await;
                let url = stack.graphql_url();
                let bearer = format!("Bearer {}", login.access_token);
                let post = Post { url: &url, body: WHOAMI, headers: &[("Authorization", &bearer)] };
                let row = http_row(&stack, &post, "bench", cli.connections, seconds).await;
                let target = Target::CpuPerRequest(1.7);
                report.row(Row::new("7.1", "whoami, Bearer RS256, PostgreSQL", Runs::one(row), floor, target));
                let login_post = Post { url: &url, body: &login_body, headers: &[] };
                let row = http_row(&stack, &login_post, "token", 16, seconds).await;
                let target = Target::Throughput(0.9);
                report.row(Row::new("7.5", "tokenAuth logins, PostgreSQL", Runs::one(row), argon2_against, target));
                drop(stack);
                drop(postgres);
                // 9. Revocation visibility across replicas, on a database of its own.
                if let Some(postgres) = Postgres::create(&cli.postgres) {
                    report.lag(replicas::run(&postgres.url, cli.lag_trials, cli.lag_trials / 4).await);
                }
            }
            None => report.note(format!("scenario 7 skipped: no PostgreSQL at {}", cli.postgres)),
        }
    }

    report.finish(argon2);
    let table = report.render();
    println!("{table}");
    std::fs::write(&cli.out, splice(&std::fs::read_to_string(&cli.out).unwrap_or_default(), &table)).unwrap();
    println!("written to {}", cli.out.display());
}

const BEGIN: &str = "<!-- bench:begin (written by `bash .ci/bench`) -->";
const END: &str = "<!-- bench:end -->";

/// `document` with the text between the bench markers replaced by `table` (the rest is
/// written by hand); markers and table appended when absent.
fn splice(document: &str, table: &str) -> String {
    let block = format!("{BEGIN}\n{table}{END}\n");
    match (document.find(BEGIN), document.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{block}{}", &document[..begin], document[end + END.len()..].trim_start_matches('\n'))
        }
        _ if document.is_empty() => format!("# Benchmarks\n\n{block}"),
        _ => format!("{}\n{block}", document.trim_end()),
    }
}

/// The floor server (this binary's `floor`), listening: its process, address and HS256 secret.
fn start_floor() -> (Proc, SocketAddr, String) {
    let secret = uuid::Uuid::new_v4().to_string();
    let addr = free_addr();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["floor", "--addr", &addr.to_string(), "--secret", &secret]);
    let mut floor = Proc::spawn("floor", command, addr);
    floor.wait_listening();
    (floor, addr, secret)
}

/// `bench profile`: the floor, then scenarios 1 and 3, each sampled by perf.
async fn profile_run(cli: &Cli, unix: bool) {
    let seconds = Duration::from_secs(cli.seconds);
    let (floor, floor_addr, secret) = start_floor();
    let floor_url = format!("http://{floor_addr}/graphql");
    let floor_bearer = format!("Bearer {}", baselines::floor_token(&secret));
    let floor_post = Post { url: &floor_url, body: WHOAMI, headers: &[("Authorization", &floor_bearer)] };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    let perf = tempfile::tempdir().unwrap();
    let link = if unix { Link::Unix } else { Link::Tcp(1) };
    let stack = Stack::start_linked(&sqlite, Some(dir), link);
    let login = sign_up_and_log_in(&stack.channel().await, "bench").await;
    let url = stack.graphql_url();
    let bearer = format!("Bearer {}", login.access_token);
    let verify_body = serde_json::json!({
        "query": "mutation($t: String!) { verifyToken(token: $t) { payload } }",
        "variables": {"t": login.access_token},
    })
    .to_string();
    println!("== floor: whoami");
    profile::run(&[&floor], &floor_post, cli.connections, seconds, perf.path()).await;
    println!("\n== 1. whoami, Bearer RS256 ({link:?})");
    let post = Post { url: &url, body: WHOAMI, headers: &[("Authorization", &bearer)] };
    check(&post, "bench").await;
    profile::run(&[&stack.facade, &stack.identity], &post, cli.connections, seconds, perf.path()).await;
    println!("\n== 3. verifyToken ({link:?})");
    let post = Post { url: &url, body: &verify_body, headers: &[] };
    check(&post, "bench").await;
    profile::run(&[&stack.facade, &stack.identity], &post, cli.connections, seconds, perf.path()).await;
}

/// Loads the facade with `post` and returns what it measured and the CPU of both processes.
async fn http_row(
    stack: &Stack,
    post: &Post<'_>,
    expect: &str,
    connections: usize,
    seconds: Duration,
) -> (Measured, Vec<(&'static str, f64)>) {
    check(post, expect).await;
    let meter = CpuMeter::start(&[&stack.facade, &stack.identity]);
    let measured = load::wrk(post, connections, seconds).await;
    (measured, meter.stop())
}

/// `count` logins (one user each so that no account throttle applies); their access tokens.
async fn many_sessions(channel: &Channel, count: usize) -> Vec<String> {
    let per_user = 100;
    let mut tokens = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(per_user) {
        let username = format!("many{batch}");
        e2e::sign_up(&mut e2e::Users::new(channel.clone()), &username).await;
        let logins = (0..per_user.min(count - tokens.len())).map(|_| {
            let (mut auth, username) = (e2e::Auth::new(channel.clone()), username.clone());
            async move { e2e::log_in(&mut auth, &username).await.access_token }
        });
        tokens.extend(futures::future::join_all(logins).await);
    }
    tokens
}

/// One authenticated whoami per token through the facade, 32 at a time.
async fn use_each(url: &str, tokens: &[String]) {
    use futures::StreamExt;
    let http = reqwest::Client::new();
    futures::stream::iter(tokens)
        .for_each_concurrent(32, |token| {
            let request = http.post(url).bearer_auth(token).header("content-type", "application/json").body(WHOAMI);
            async move {
                let text = request.send().await.unwrap().text().await.unwrap();
                assert!(text.contains("whoami"), "{text}");
            }
        })
        .await;
}

/// A fresh PostgreSQL database, dropped at the end.
struct Postgres {
    server: String,
    name: String,
    url: String,
}

impl Postgres {
    fn create(server: &str) -> Option<Self> {
        let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let ok = Command::new("psql")
            .args([server, "-qc", &format!("CREATE DATABASE {name}")])
            .output()
            .is_ok_and(|output| output.status.success());
        let (base, _) = server.rsplit_once('/')?;
        ok.then(|| Postgres { server: server.to_owned(), url: format!("{base}/{name}"), name })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&self.server, "-qc", &format!("DROP DATABASE IF EXISTS {}", self.name)])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_replaces_only_the_marked_block() {
        let first = splice("", "T1\n");
        assert!(first.starts_with("# Benchmarks") && first.contains("T1"));
        let edited = first.replace("# Benchmarks\n", "# Benchmarks\n\nhand-written\n") + "\nafter\n";
        let second = splice(&edited, "T2\n");
        assert!(second.contains("hand-written") && second.contains("after") && second.contains("T2"));
        assert!(!second.contains("T1"));
    }
}
