//! The command line: global options, subcommands, their environment fallbacks and `--help` examples.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration;

const TOP_EXAMPLES: &str = "\
Examples:
  etagctl --memcached 10.0.0.5:11211,10.0.0.6:11211 --namespace shop flush --url https://shop.example.com/cart
  etagctl --admin http://127.0.0.1:9091 --admin-token \"$TOKEN\" flush --tag products --grace 30s
  etagctl --memcached 127.0.0.1:11211 inspect --url 'http://api.example.com/api/servers?page=2'
  ETAGD_MEMCACHED=127.0.0.1:11211 etagctl stats --json

Exit codes: 0 done; 1 a server was unreachable, refused the token, or the work was only partly done;
2 the command line is wrong (nothing was done).";

const FLUSH_EXAMPLES: &str = "\
Examples:
  etagctl --memcached 127.0.0.1:11211 flush --url 'http://api.example.com/api/servers?page=2'
  etagctl --memcached 127.0.0.1:11211 flush --url http://shop/a --url http://shop/b --tag cart
  etagctl --memcached 127.0.0.1:11211 flush --tag products --grace 30s
  etagctl --memcached 127.0.0.1:11211 flush --prefix http://api.example.com/api/v2/
  etagctl --memcached 127.0.0.1:11211 --namespace shop flush --all --dry-run
  etagctl --admin http://127.0.0.1:9091 flush --tag products

A URL is named as clients see it; etagd's key schema canonicalises it (host case, default port, query order),
so every stored variant of it goes. A prefix purges every entry under it on that host only; it must end at a
segment boundary ('/') and be at most --prefix-depth segments deep (the sidecars' setting). Exits 1 when some
target could not be written and the whole namespace could not be invalidated instead.";

const INSPECT_EXAMPLES: &str = "\
Examples:
  etagctl --memcached 127.0.0.1:11211 inspect --url 'http://api.example.com/api/servers?page=2'
  etagctl --admin http://127.0.0.1:9091 --json inspect --url https://shop.example.com/";

const STATS_EXAMPLES: &str = "\
Examples:
  etagctl --memcached 10.0.0.5:11211,10.0.0.6:11211 stats
  etagctl --admin http://127.0.0.1:9091 stats --json

Exits 1 when any server is unreachable (the table still lists every server).";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  etagctl completions bash > /etc/bash_completion.d/etagctl
  etagctl completions zsh > \"${fpath[1]}/_etagctl\"
  etagctl completions fish > ~/.config/fish/completions/etagctl.fish";

/// Operator CLI for etagd: flush, inspect and measure the shared HTTP cache.
///
/// Talks to Memcached directly (--memcached, with the same key schema and invalidation code as the sidecar)
/// or to a running sidecar's admin API (--admin).
#[derive(Debug, Parser)]
#[command(name = "etagctl", version, after_help = TOP_EXAMPLES)]
pub(crate) struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the cache is and how to talk to it.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct GlobalArgs {
    /// Memcached servers, comma separated: the same set the sidecars use (order does not matter).
    #[arg(long, env = "ETAGD_MEMCACHED", value_delimiter = ',', value_name = "HOST:PORT,...", global = true)]
    pub(crate) memcached: Vec<String>,

    /// A running sidecar's admin API (e.g. http://127.0.0.1:9091), instead of --memcached.
    #[arg(long, env = "ETAGCTL_ADMIN", value_name = "URL", global = true)]
    pub(crate) admin: Option<String>,

    /// Bearer token for the admin API.
    #[arg(long, env = "ETAGD_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true, global = true)]
    pub(crate) admin_token: Option<String>,

    /// The deployment's namespace in Memcached (with --memcached; a sidecar uses its own).
    #[arg(long, env = "ETAGD_NAMESPACE", default_value = etagd_client::key::DEFAULT_NAMESPACE, global = true)]
    pub(crate) namespace: String,

    /// Print machine-readable JSON instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Path segments the sidecars tag entries with (their --prefix-depth; with --memcached: a deeper
    /// --prefix is refused, since no entry carries its tag). A sidecar's admin API checks its own.
    #[arg(long, env = "ETAGD_PREFIX_DEPTH", default_value_t = etagd_client::key::DEFAULT_PREFIX_DEPTH, global = true)]
    pub(crate) prefix_depth: u8,
    /// The fleet's entry key (`--entry-key` of the sidecars), when they authenticate entries; needed to read or
    /// write Memcached directly.
    #[arg(long, env = "ETAGD_ENTRY_KEY", hide_env_values = true, global = true)]
    pub(crate) entry_key: Option<String>,

    /// How long to wait for a server before calling it unreachable.
    #[arg(long, default_value = "2s", value_parser = duration::parse_timeout, global = true)]
    pub(crate) timeout: Duration,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Invalidate URLs (every stored variant), tags, path prefixes, or the whole namespace.
    #[command(after_help = FLUSH_EXAMPLES)]
    Flush(FlushArgs),
    /// Show what is stored for a URL: ETag, status, state, age, TTL left, size, tags, Vary names.
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect(InspectArgs),
    /// Per Memcached server: reachable, version, items, bytes, hit ratio, evictions.
    #[command(after_help = STATS_EXAMPLES)]
    Stats,
    /// Print a shell completion script.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
}

/// `flush`: what to invalidate and how.
#[derive(Debug, Args)]
pub(crate) struct FlushArgs {
    /// A URL as clients see it (repeatable); every stored variant of it is invalidated.
    #[arg(long = "url", value_name = "URL")]
    pub(crate) urls: Vec<String>,

    /// A tag (repeatable); every entry carrying it is invalidated.
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,

    /// A path prefix as clients see it, ending in '/' (repeatable; e.g. http://host/api/v2/): every
    /// entry under it on that host. At most --prefix-depth segments deep.
    #[arg(long = "prefix", value_name = "URL")]
    pub(crate) prefixes: Vec<String>,

    /// Everything in the namespace (other namespaces on the same servers are untouched; never flush_all).
    #[arg(long)]
    pub(crate) all: bool,

    /// Soft invalidation: old entries may be served stale for this long while one replica refreshes each.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_grace)]
    pub(crate) grace: Option<u64>,

    /// Print which keys would be written on which servers, and write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// `inspect`: which URL.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The URL as clients see it.
    #[arg(long, value_name = "URL")]
    pub(crate) url: String,
}

/// `completions`: which shell.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to print the script for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples() {
        let command = Cli::command();
        assert!(command.get_after_help().is_some());
        for sub in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
            let help = sub.get_after_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.contains("etagctl"), "{} has no example", sub.get_name());
        }
    }

    #[test]
    fn parses_flags_anywhere() {
        let check = |args: &[&str], urls: usize, tags: usize, all: bool, grace: Option<u64>| {
            let cli = Cli::try_parse_from(args).expect("parses");
            let Command::Flush(flush) = cli.command else { panic!("not flush: {args:?}") };
            assert_eq!((flush.urls.len(), flush.tags.len(), flush.all, flush.grace), (urls, tags, all, grace));
        };
        check(&["etagctl", "--memcached", "a:1", "flush", "--url", "http://h/"], 1, 0, false, None);
        check(&["etagctl", "flush", "--url", "http://h/a", "--url", "http://h/b", "--tag", "t"], 2, 1, false, None);
        check(&["etagctl", "flush", "--all", "--grace", "30s", "--memcached", "a:1"], 0, 0, true, Some(30));
        let cli = Cli::try_parse_from(["etagctl", "flush", "--prefix", "http://h/a/", "--prefix-depth", "3"])
            .expect("parses");
        let Command::Flush(flush) = cli.command else { panic!("not flush") };
        assert_eq!((flush.prefixes.len(), cli.global.prefix_depth), (1, 3));
        let cli = Cli::try_parse_from(["etagctl", "--memcached", "a:1,b:2", "stats", "--json", "--timeout", "1s"])
            .expect("parses");
        assert_eq!(cli.global.memcached, ["a:1", "b:2"]);
        assert!(cli.global.json);
        assert_eq!(cli.global.timeout, Duration::from_secs(1));
        assert!(Cli::try_parse_from(["etagctl", "flush", "--grace", "0s", "--all"]).is_err());
        assert!(Cli::try_parse_from(["etagctl", "completions", "tcsh"]).is_err());
    }
}
