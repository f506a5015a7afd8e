//! `platter`: the one command line in front of the store, the disk server, the importer
//! and the launcher. Thin: it parses arguments, picks the store, sends each command to a
//! running server's control socket or handles it in-process, and prints the result.

mod args;
mod image;
mod interrupt;
mod output;
mod progress;
mod run;
mod serve;
mod vm;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One line, like every other error; `--help` has the rest.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("platter: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    let filter = std::env::var("PLATTER_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match run::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<interrupt::Interrupted>() {
                eprintln!("platter: {i}");
                return ExitCode::from(i.exit_code());
            }
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("platter: error: {}", dedup_chain(&chain));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error chain into one line, skipping causes already quoted by their parent.
fn dedup_chain(chain: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in chain {
        if !out.iter().any(|o| o.contains(c.as_str())) {
            out.push(c);
        }
    }
    out.join(": ")
}
