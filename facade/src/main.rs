//! `graphql-facade`: parse the configuration once, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::{Parser, ValueEnum, error::ErrorKind};
use graphql_facade::Config;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "graphql-facade", version, about = "The GraphQL facade of the identity service.")]
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
            eprintln!("graphql-facade: {}", text.lines().next().unwrap_or_default().trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Json => tracing_subscriber::fmt().with_env_filter(filter).json().init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    if let Err(error) = cli.config.validate() {
        eprintln!("graphql-facade: {error}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(cli.config.http_addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("graphql-facade: FACADE_HTTP_ADDR: cannot listen on {}: {error}", cli.config.http_addr);
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match graphql_facade::serve(cli.config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("graphql-facade: {error}");
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
