//! The command line (clap derive types only).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "piforge",
    version,
    about = "Turn one upstream Raspberry Pi image into ready-to-flash Kubernetes node images, without root."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what an image holds: partitions, disk id, OS, cmdline, cloud-init, swap, ext4 features.
    Inspect(InspectArgs),
}

/// How to open an input image (shared by every command that reads one).
#[derive(Debug, Args, Clone)]
pub struct InputArgs {
    /// The upstream image: .img, .img.xz, .img.zst, .img.gz or .zip (detected by content).
    pub image: PathBuf,

    /// Expected SHA-256 of the input file; otherwise a sibling IMAGE.sha256 or SHA256SUMS is used.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,

    /// Where decompressed images are cached (default: $PIFORGE_CACHE, else $XDG_CACHE_HOME/piforge).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
