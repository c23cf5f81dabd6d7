//! The edges: the command line ([`cli`]), the client commands ([`commands`]), `check`
//! ([`check`]) and the serve lifecycle, build → run → drain ([`serve`]). Loading the zones
//! directory is the file source's ([`crate::source::file::load`]).

pub mod check;
pub mod cli;
pub mod commands;
pub mod serve;

use anyhow::Result;

pub use cli::{Cli, Command, LogFormat, SourceArgs};
pub use serve::raise_fd_limit;

use crate::source::file::load::Loaded;

/// Loads, validates and compiles the zones directory `args` names (as `check` does); for
/// tests, benches and the fuzzer, which start from the command line's arguments.
pub fn load(args: &SourceArgs) -> Result<Loaded, Vec<String>> {
    crate::source::file::load::load(&args.paths())
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a pod's log or a file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Check(args) => Ok(check::check(&args)),
        Command::Serve(args) => {
            init_logging(cli.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .worker_threads(2)
                .build()?;
            rt.block_on(serve::serve(*args))?;
            Ok(0)
        }
        Command::Explain(args) => commands::explain(args),
        Command::Drain(a) => commands::drain(a),
        Command::Undrain(a) => commands::undrain(a),
        Command::State(a) => commands::state(a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "meridian", &mut std::io::stdout());
            Ok(0)
        }
    }
}
