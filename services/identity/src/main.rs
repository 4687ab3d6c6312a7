//! `identity-service`: parse the configuration once, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};
use identity_service::{
    Config,
    process::{LogFormat, init_tracing, shutdown_signal},
};

#[derive(Debug, Parser)]
#[command(name = "identity-service", version, about = "The identity service: users, sessions and tokens over gRPC.")]
struct Cli {
    #[command(flatten)]
    config: Config,
    /// Log format: text or json. The filter is RUST_LOG (default "info").
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => error.exit(),
        Err(error) => {
            let text = error.to_string();
            eprintln!("identity-service: {}", text.lines().next().unwrap_or_default().trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    init_tracing(cli.log_format);
    let config = cli.config;
    // Settings first: a bad value is reported before anything is bound or opened.
    if let Err(error) = config.settings().and_then(|_| config.bootstrap_manager()) {
        eprintln!("identity-service: {error}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(config.grpc_addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("identity-service: IDENTITY_GRPC_ADDR: cannot listen on {}: {error}", config.grpc_addr);
            return ExitCode::FAILURE;
        }
    };
    match identity_service::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("identity-service: {error}");
            ExitCode::FAILURE
        }
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
