//! `identity-service`: parse the configuration once, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use identity_service::Config;
use stack_process::{Logging, bind, fail, parse, shutdown_signal};

const PROGRAM: &str = "identity-service";

#[derive(Debug, Parser)]
#[command(name = "identity-service", version, about = "The identity service: users, sessions and tokens over gRPC.")]
struct Cli {
    #[command(flatten)]
    config: Config,
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
    let config = cli.config;
    // Settings first: a bad value is reported before anything is bound or opened.
    if let Err(error) = config.settings().and_then(|_| config.bootstrap_manager()) {
        return fail(PROGRAM, error, 2);
    }
    let listener = match bind(PROGRAM, "IDENTITY_GRPC_ADDR", config.grpc_addr).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    match identity_service::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(PROGRAM, error, 1),
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
