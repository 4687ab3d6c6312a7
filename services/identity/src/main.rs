//! `identity-service`: parse the configuration once, bind, serve until Ctrl-C or SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use identity_service::Config;
use stack_process::{Logging, bind, fail, parse, shutdown_signal};

// mimalloc, not glibc's malloc: glibc kept, per thread, the 19 MiB block of the last argon2
// hash and the peak of every burst (the identity service sat at 120 MiB after a login flood and
// never gave it back); mimalloc returns freed memory to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROGRAM: &str = "identity-service";

#[derive(Debug, Parser)]
#[command(name = "identity-service", version, about = "The identity service: users, sessions and tokens over gRPC.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    logging: Logging,
}

/// What else the binary does than serve, against the configured database.
#[derive(Debug, Subcommand)]
enum Command {
    /// Copy the SQLite database (`IDENTITY_DATABASE_URL`) to PATH, consistently, while the
    /// service runs; the copy is readable by its owner only. PATH must not exist.
    Backup {
        /// Where the copy goes.
        path: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse(PROGRAM) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli.logging.init();
    let config = cli.config;
    if let Some(Command::Backup { path }) = cli.command {
        return backup(&config, &path).await;
    }
    // Settings first: a bad value is reported before anything is opened or bound. Then the
    // database: the port is bound only once the service can answer.
    if let Err(error) = config.validate() {
        return fail(PROGRAM, error, 2);
    }
    let opened = match identity_service::open(&config).await {
        Ok(opened) => opened,
        Err(error) => return fail(PROGRAM, &error, error.exit_code()),
    };
    let listener = match bind(PROGRAM, "IDENTITY_GRPC_ADDR", config.grpc_addr).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    match opened.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(PROGRAM, &error, error.exit_code()),
    }
}

/// `identity-service backup PATH`: one line on stdout saying what was copied, or one on stderr.
async fn backup(config: &Config, path: &std::path::Path) -> ExitCode {
    match identity_core::backup::backup(config.database_url.expose(), path).await {
        Ok(report) => {
            println!(
                "backed up {} users ({} bytes) to {} in {} ms",
                report.users,
                report.bytes,
                report.path.display(),
                report.took.as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(PROGRAM, format!("backup: {error}"), 1),
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
