//! `graphql-facade`: parse the configuration once, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use graphql_facade::Config;
use stack_process::{Logging, bind, fail, parse, shutdown_signal};

// mimalloc, not glibc's malloc: glibc kept, per thread, the 19 MiB block of the last argon2
// hash and the peak of every burst (the identity service sat at 120 MiB after a login flood and
// never gave it back); mimalloc returns freed memory to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROGRAM: &str = "graphql-facade";

#[derive(Debug, Parser)]
#[command(name = "graphql-facade", version, about = "The GraphQL facade of the identity service.")]
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
    if let Err(error) = cli.config.validate() {
        return fail(PROGRAM, error, 2);
    }
    let listener = match bind(PROGRAM, "FACADE_HTTP_ADDR", cli.config.http_addr).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    match graphql_facade::serve(cli.config, listener, shutdown_signal()).await {
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
