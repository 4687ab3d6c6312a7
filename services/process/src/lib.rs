//! What every binary of the stack does around serving: the command line (a bad value is one
//! line naming the setting, exit 2), logging, binding its port, and the shutdown signal. It
//! knows neither the identity domain nor HTTP, so the service, the facade and the stack all
//! use it without depending on each other. (Each binary's `main.rs` picks its allocator.)

pub mod pem;

use std::{fmt::Display, net::SocketAddr, process::ExitCode};

use clap::{Args, Parser, ValueEnum, error::ErrorKind};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The logging settings every binary shares.
#[derive(Debug, Clone, Args)]
#[group(id = "logging")]
pub struct Logging {
    /// Log format: text or json. The filter is RUST_LOG (default "info").
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

impl Logging {
    /// Logs to stdout, filtered by RUST_LOG (default "info").
    pub fn init(&self) {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        match self.log_format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => builder.init(),
        }
    }

    /// For an operator command, whose stdout is its answer: warnings and errors only (unless
    /// `RUST_LOG` says otherwise), on stderr.
    pub fn init_for_command(&self) {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => builder.init(),
        }
    }
}

/// One line on stderr, naming the program, and the exit code.
pub fn fail(program: &str, message: impl Display, code: u8) -> ExitCode {
    eprintln!("{program}: {message}");
    ExitCode::from(code)
}

/// Parses the command line and environment. `--help` and `--version` print and exit; a bad
/// value is one line naming the setting, exit 2.
pub fn parse<C: Parser>(program: &str) -> Result<C, ExitCode> {
    C::try_parse().map_err(|error| {
        if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            error.exit();
        }
        let text = error.to_string();
        fail(program, text.lines().next().unwrap_or_default().trim_start_matches("error: "), 2)
    })
}

/// Binds `address`, or fails naming `setting`.
pub async fn bind(program: &str, setting: &str, address: SocketAddr) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(address)
        .await
        .map_err(|error| fail(program, format!("{setting}: cannot listen on {address}: {error}"), 1))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
