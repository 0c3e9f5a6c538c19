//! The `fluxwire-bench` command: parses the options, raises the file-descriptor limit,
//! runs the mode on a tokio runtime, prints the summary and the JSON line, and sets the
//! exit code (0 passed, 1 a failure, loss or order violation, 2 a usage or setup error).

use std::process::ExitCode;

use clap::Parser;
use fluxwire_bench::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match fluxwire_bench::raise_nofile_limit() {
        Ok((before, after)) => {
            eprintln!("fluxwire-bench: RLIMIT_NOFILE soft limit {before} -> {after}")
        }
        Err(error) => eprintln!("fluxwire-bench: cannot raise RLIMIT_NOFILE: {error}"),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.common.threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fluxwire-bench: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(fluxwire_bench::run(&cli));
    // Sockets are closed by the modes; anything left is dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let mut outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("fluxwire-bench: {error}");
            return ExitCode::from(2);
        }
    };
    outcome.set("nofile_limit", fluxwire_bench::nofile_limit());
    if !cli.common.json_only {
        print!("{}", outcome.human());
    }
    if !outcome.ok() {
        for problem in &outcome.problems {
            eprintln!("fluxwire-bench: FAIL: {problem}");
        }
    }
    println!("{}", outcome.json());
    if outcome.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
