//! `identity-stack` (what `cargo run --release` starts): the identity service and the GraphQL
//! facade in one process, on their two ports. The facade still reaches the identity service
//! over real gRPC on loopback, exactly as when they run apart.

use std::process::ExitCode;

use clap::Parser;
use stack_process::{Logging, bind, fail, parse, shutdown_signal};
use tokio::sync::watch;

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
    let (identity, mut facade) = (cli.identity, cli.facade);
    if let Err(error) = identity.settings().and_then(|_| identity.bootstrap_manager()) {
        return fail(PROGRAM, error, 2);
    }
    if let Err(error) = facade.validate() {
        return fail(PROGRAM, error, 2);
    }
    let grpc = match bind(PROGRAM, "IDENTITY_GRPC_ADDR", identity.grpc_addr).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let http = match bind(PROGRAM, "FACADE_HTTP_ADDR", facade.http_addr).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    // The facade talks to this process's identity service, wherever it was bound.
    if let Ok(address) = grpc.local_addr() {
        facade.identity_url = format!("http://{address}");
    }

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let identity_task = tokio::spawn(identity_service::serve(identity, grpc, until_stopped(stopped.clone())));
    let facade_task = tokio::spawn(graphql_facade::serve(facade, http, until_stopped(stopped)));
    tokio::pin!(identity_task, facade_task);
    let first = tokio::select! {
        _ = shutdown_signal() => None,
        result = &mut identity_task => Some(result.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()))),
        result = &mut facade_task => Some(result.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()))),
    };
    let _ = stop.send(true);
    let (identity_result, facade_result) = tokio::join!(identity_task, facade_task);
    let errors: Vec<String> = [
        first.and_then(Result::err),
        identity_result.ok().and_then(Result::err).map(|e| e.to_string()),
        facade_result.ok().and_then(Result::err).map(|e| e.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    match errors.first() {
        Some(error) => fail(PROGRAM, error, 1),
        None => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
