//! `identity-stack` (what `cargo run --release` starts): the identity service and the GraphQL
//! facade in one process, on their two ports. The facade still reaches the identity service
//! over real gRPC, exactly as when they run apart: on a Unix socket of this process's own
//! (or over TLS on the gRPC port when that speaks TLS).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
};

use clap::Parser;
use stack_process::{Logging, bind, fail, parse, shutdown_signal};
use tokio::sync::watch;

// mimalloc, not glibc's malloc: glibc kept, per thread, the 19 MiB block of the last argon2
// hash and the peak of every burst (the identity service sat at 120 MiB after a login flood and
// never gave it back); mimalloc returns freed memory to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROGRAM: &str = "identity-stack";

#[derive(Debug, Parser)]
#[command(name = "identity-stack", version, about = "The identity service and its GraphQL facade, together.")]
struct Cli {
    #[command(flatten)]
    identity: identity_service::Config,
    #[command(flatten)]
    facade: graphql_facade::Config,
    #[command(flatten)]
    logging: Logging,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse(PROGRAM) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli.logging.init();
    let (mut identity, mut facade) = (cli.identity, cli.facade);
    if let Err(error) = identity.validate() {
        return fail(PROGRAM, error, 2);
    }
    // The facade talks to this process's identity service: over TLS when its port speaks TLS
    // (checked against FACADE_IDENTITY_CA and, for mutual TLS, presenting
    // FACADE_IDENTITY_CLIENT_CERT), at the address it is bound to (set below).
    let scheme = if identity.tls_cert.is_some() { "https" } else { "http" };
    facade.identity_url = format!("{scheme}://{}", identity.grpc_addr);
    if let Err(error) = facade.validate() {
        return fail(PROGRAM, error, 2);
    }
    // An ephemeral HTTP port is bound first, so that the issuer can name it; nobody can
    // connect to a port nobody knows.
    let mut http = None;
    if facade.http_addr.port() == 0 {
        match bind(PROGRAM, "FACADE_HTTP_ADDR", facade.http_addr).await {
            Ok(listener) => http = Some(listener),
            Err(code) => return code,
        }
    }
    if identity.issuer.is_none() {
        let address = http.as_ref().and_then(|listener| listener.local_addr().ok()).unwrap_or(facade.http_addr);
        identity.issuer = Some(issuer_at(address));
    }
    // The facade reaches the identity half over a Unix socket in a directory of this process's
    // own (owner-only, removed at exit) unless IDENTITY_GRPC_UDS names one or the gRPC port
    // speaks TLS: it costs less per request than loopback TCP (BENCHMARKS.md, row 1.u). The
    // TCP port still serves every other caller.
    let mut _socket_dir = None;
    if identity.tls_cert.is_none() && identity.grpc_uds.is_none() {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o700);
        match tempfile::Builder::new().prefix("identity-stack-").permissions(private).tempdir() {
            Ok(dir) => {
                identity.grpc_uds = Some(dir.path().join("grpc.sock"));
                _socket_dir = Some(dir);
            }
            Err(error) => {
                return fail(PROGRAM, format!("cannot make a directory for the facade's Unix socket: {error}"), 1);
            }
        }
    }
    // The identity half opens its database first, exactly as `identity-service` does and
    // failing with its words; nothing listens before it can answer.
    let opened = match identity_service::open(&identity).await {
        Ok(opened) => opened,
        Err(error) => return fail(PROGRAM, &error, error.exit_code()),
    };
    let grpc = match bind(PROGRAM, "IDENTITY_GRPC_ADDR", identity.grpc_addr).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let http = match http {
        Some(listener) => listener,
        None => match bind(PROGRAM, "FACADE_HTTP_ADDR", facade.http_addr).await {
            Ok(listener) => listener,
            Err(code) => return code,
        },
    };
    match &identity.grpc_uds {
        Some(path) if identity.tls_cert.is_none() => facade.identity_url = format!("unix://{}", path.display()),
        _ => {
            if let Ok(address) = grpc.local_addr() {
                facade.identity_url = format!("{scheme}://{}", loopback_if_unspecified(address));
            }
        }
    }

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let mut identity_task = tokio::spawn(opened.serve(grpc, until_stopped(stopped.clone())));
    let mut facade_task = tokio::spawn(graphql_facade::serve(facade, http, until_stopped(stopped)));
    // Whichever half ends first (or a signal) stops the other; each task is awaited once.
    let (mut identity_result, mut facade_result) = (None, None);
    tokio::select! {
        _ = shutdown_signal() => {}
        result = &mut identity_task => identity_result = Some(result),
        result = &mut facade_task => facade_result = Some(result),
    }
    let _ = stop.send(true);
    let identity_result = match identity_result {
        Some(result) => result,
        None => identity_task.await,
    };
    let facade_result = match facade_result {
        Some(result) => result,
        None => facade_task.await,
    };
    let identity_error = match identity_result {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some((error.to_string(), error.exit_code())),
        Err(panic) => Some((format!("the identity service failed: {panic}"), 1)),
    };
    let facade_error = match facade_result {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some((error.to_string(), 1)),
        Err(panic) => Some((format!("the facade failed: {panic}"), 1)),
    };
    match identity_error.or(facade_error) {
        Some((message, code)) => fail(PROGRAM, message, code),
        None => ExitCode::SUCCESS,
    }
}

/// The issuer when `IDENTITY_ISSUER` is unset: the facade's own address, as a browser on this
/// machine reaches it.
fn issuer_at(address: SocketAddr) -> String {
    if address.ip().is_unspecified() {
        tracing::warn!(%address, "IDENTITY_ISSUER is unset: tokens name this machine's loopback; set it to the facade's public URL");
    }
    format!("http://{}", loopback_if_unspecified(address))
}

/// `0.0.0.0` and `::` are where one listens, not an address one reaches: loopback instead.
fn loopback_if_unspecified(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), address.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), address.port()),
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_issuer_follows_the_facade_address() {
        assert_eq!(issuer_at("127.0.0.1:9000".parse().unwrap()), "http://127.0.0.1:9000");
        assert_eq!(issuer_at("0.0.0.0:8081".parse().unwrap()), "http://127.0.0.1:8081");
        assert_eq!(issuer_at("[::]:8081".parse().unwrap()), "http://[::1]:8081");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
