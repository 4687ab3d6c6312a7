//! `identity-service`: parse the configuration once, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};
use identity_service::{Config, config::LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => error.exit(),
        Err(error) => {
            let text = error.to_string();
            let line = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            eprintln!("identity-service: {line}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
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

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
