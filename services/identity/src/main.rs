//! `identity-service`: parse the configuration once, bind, serve until Ctrl-C or SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use identity_core::{KeyAdmin, format_ms};
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
    /// The signing keys (docs/keys.md): list, rotate, revoke, rewrap. Works against the
    /// configured database while the service runs; replicas follow within a second.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Every stored key: kid, algorithm, state, and when it was published, signs, retires and
    /// leaves the JWK set.
    List,
    /// A new key, published now and signing after IDENTITY_KEY_PUBLISH_AHEAD.
    Rotate {
        /// Sign with the new key at once (relying parties that cache the JWK set re-fetch it on
        /// the unknown kid).
        #[arg(long)]
        now: bool,
    },
    /// A leaked key: out of the JWK set, and every token it signed refused, at once, by every
    /// replica; if it was signing, another key signs from now on.
    Revoke {
        /// The key's id (`keys list`).
        kid: String,
    },
    /// Re-encrypt every stored private key under IDENTITY_KEY_ENCRYPTION_KEY (opening them with
    /// it or IDENTITY_KEY_ENCRYPTION_PREVIOUS_KEYS).
    Rewrap,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = match parse(PROGRAM) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Some(_) => cli.logging.init_for_command(),
        None => cli.logging.init(),
    }
    let config = cli.config;
    match cli.command {
        Some(Command::Backup { path }) => return backup(&config, &path).await,
        Some(Command::Keys { command }) => return keys(&config, command).await,
        None => {}
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
                "backed up {} users ({} bytes) to {} in {} ms{}",
                report.users,
                report.bytes,
                report.path.display(),
                report.took.as_millis(),
                report.kek.map(|kek| format!(", and its key-encryption key to {}", kek.display())).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(PROGRAM, format!("backup: {error}"), 1),
    }
}

/// `identity-service keys …`: what it did on stdout, or one line on stderr.
async fn keys(config: &Config, command: KeysCommand) -> ExitCode {
    let prepared = config.settings().and_then(|settings| Ok((settings, config.store()?)));
    let (settings, store) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return fail(PROGRAM, error, 2),
    };
    let admin = match KeyAdmin::open(config.database_url.expose(), &store, &settings).await {
        Ok(admin) => admin,
        Err(error) => return fail(PROGRAM, format!("keys: {error}"), 1),
    };
    if let Some(path) = admin.generated_kek() {
        eprintln!("{PROGRAM}: generated a key-encryption key at {}: back it up with the database", path.display());
    }
    let done = match command {
        KeysCommand::List => admin.list().await.map(|listing| print_keys(&listing.keys)),
        KeysCommand::Rotate { now } => admin.rotate(now).await.map(|key| {
            println!(
                "published {} ({}); it signs from {}{}",
                key.kid,
                key.alg,
                format_ms(key.activates_at),
                if now { " (now)" } else { "" }
            );
        }),
        KeysCommand::Revoke { kid } => admin.revoke(&kid).await.map(|revoked| {
            println!("revoked {}: out of the JWK set, its tokens refused", revoked.kid);
            match revoked.successor {
                Some(key) => println!("{} ({}) signs since {}", key.kid, key.alg, format_ms(key.activates_at)),
                None => println!("the HS256 secret signs"),
            }
        }),
        KeysCommand::Rewrap => admin.rewrap().await.map(|(moved, already)| {
            println!(
                "rewrapped {} key(s) under key-encryption key {}; {already} already were",
                moved.len(),
                admin.kek_id()
            );
        }),
    };
    admin.close().await;
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(PROGRAM, format!("keys: {error}"), 1),
    }
}

fn print_keys(keys: &[identity_core::KeyInfo]) {
    let when = |ms: Option<i64>| ms.map_or_else(|| "-".to_owned(), format_ms);
    println!(
        "{:<38} {:<6} {:<8} {:<24} {:<24} {:<24} {:<24}",
        "KID", "ALG", "STATE", "CREATED", "ACTIVATES", "RETIRES", "REMOVED"
    );
    for key in keys {
        println!(
            "{:<38} {:<6} {:<8} {:<24} {:<24} {:<24} {:<24}",
            key.kid,
            key.alg,
            key.state.as_str(),
            format_ms(key.created_at),
            format_ms(key.activates_at),
            when(key.retires_at),
            when(key.removed_at)
        );
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
