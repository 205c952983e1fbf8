//! `etagctl`: the operator CLI for etagd.
//!
//! Flushes URLs, tags or a whole namespace, inspects what is stored for a URL, and reports per-server
//! Memcached statistics. It talks to Memcached directly (`--memcached`, through `etagd_client`'s `Cache`, so
//! the key schema and the invalidation code are exactly the sidecar's) or to a running sidecar's admin API
//! (`--admin`). See `docs/etagctl.md` for the full reference.
//!
//! | module | owns |
//! |---|---|
//! | `cli` | flags, environment fallbacks, `--help` examples |
//! | `target` | choosing and building the Memcached or admin-API target; the timeout split |
//! | `admin` | the admin API client |
//! | `flush`, `inspect`, `stats`, `completions` | one subcommand each |
//! | `table` | text output for people |
//! | `duration` | `2s`-style durations |
//! | `error` | failures and their exit codes (2 usage, 1 everything else) |

mod admin;
mod cli;
mod completions;
mod duration;
mod error;
mod flush;
mod inspect;
mod stats;
mod table;
mod target;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::target::Target;

/// How many `--timeout` budgets a whole command may take before it is abandoned. Each server exchange is
/// bounded on its own; this only guards against a command hanging on something unforeseen.
const COMMAND_BUDGETS: u32 = 4;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let Command::Completions(args) = &cli.command {
        completions::run(args);
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded tokio runtime builds on any supported platform");
    match runtime.block_on(run(&cli, &matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.one_line());
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: &Cli, matches: &ArgMatches) -> Result<(), CliError> {
    let global = &cli.global;
    // Checks that need no server come first, so a typo exits 2 before any connection is made.
    match &cli.command {
        Command::Flush(args) => {
            flush::invalidation(args)?;
        }
        Command::Inspect(args) => {
            etagd_client::key::ResourceKey::from_url(&args.url)?;
        }
        Command::Stats | Command::Completions(_) => {}
    }
    let target = Target::from_options(global, matches).await?;
    let limit = global.timeout * COMMAND_BUDGETS;
    let work = async {
        match &cli.command {
            Command::Flush(args) => flush::run(&target, args, global.json).await,
            Command::Inspect(args) => inspect::run(&target, args, global.json).await,
            Command::Stats => stats::run(&target, global.json).await,
            Command::Completions(args) => {
                completions::run(args);
                Ok(())
            }
        }
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_elapsed| {
        Err(CliError::Failed(format!(
            "gave up after {}: the servers did not finish answering and the outcome is unknown; check them and run \
             the command again",
            duration::show(limit)
        )))
    })
}
