//! The piforge binary: parse the command line, call the library, turn errors into one line.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use piforge::cli::{Cli, Command, InputArgs, InspectArgs};
use piforge::{inspect, source};

fn main() -> ExitCode {
    // A bug must still end in one sentence, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("piforge: internal error (a bug, please report it): {info}");
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd_inspect(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("piforge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open_input(a: &InputArgs) -> Result<source::SourceImage> {
    let opts = source::OpenOptions {
        sha256: a.sha256.clone(),
        cache_dir: a.cache_dir.clone(),
        progress: std::io::stderr().is_terminal(),
        ..Default::default()
    };
    Ok(source::open_image(&a.image, &opts)?)
}

fn cmd_inspect(a: InspectArgs) -> Result<ExitCode> {
    let img = open_input(&a.input)?;
    let report = inspect::inspect(&a.input.image, &img)?;
    if a.json {
        let s = serde_json::to_string_pretty(&report).context("encoding the report as JSON")?;
        println!("{s}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
