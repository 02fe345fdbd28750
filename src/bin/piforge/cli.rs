//! The command line (clap derive types only; the binary turns them into library options).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "piforge",
    version,
    about = "Turn one upstream Raspberry Pi image into ready-to-flash Kubernetes node images, without root."
)]
pub struct Cli {
    /// Print no progress (bars on a terminal, a line per long step otherwise); warnings and
    /// errors are still printed.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what an image holds: partitions, disk id, OS, cmdline, cloud-init, swap, ext4 features.
    #[command(mut_arg("image", |a| a.help(
        "The image to read: an upstream image or a node image piforge built; .img, .img.xz, \
         .img.zst, .img.gz or .zip (detected by content)"
    )))]
    Inspect(InspectArgs),
    /// Write a customized copy of an image: overlays, boot settings, removals (never in place).
    Customize(CustomizeArgs),
    /// Write a commented cluster.yaml, node profiles and an empty site overlay to start from.
    Init(InitArgs),
    /// Build one ready-to-flash image per node of a cluster spec.
    Build(BuildArgs),
    /// Download the release artifacts of a Kubernetes version (verified, pinned in the lock).
    Fetch(FetchArgs),
    /// Check an image against what a kubeadm node on a Pi needs: PASS/WARN/FAIL per item;
    /// exits 0 only when nothing fails.
    #[command(mut_arg("image", |a| a.help(
        "The image to check: a node image piforge built (dist/NODE.img) or any other Pi image; \
         .img, .img.xz, .img.zst, .img.gz or .zip (detected by content)"
    )))]
    Check(CheckArgs),
    /// Write an image (or a node of a spec) to a card: only the mapped blocks, the partition
    /// table last, then read back and verified.
    Flash(FlashArgs),
    /// Rebuild one node of a running cluster (same name, address, host key; it joins) and
    /// write it to a card: the whole "a node died" procedure.
    Reimage(ReimageArgs),
}

/// How to open an input image (shared by every command that reads one).
#[derive(Debug, Args, Clone)]
pub struct InputArgs {
    /// The upstream image: .img, .img.xz, .img.zst, .img.gz or .zip (detected by content).
    pub image: PathBuf,

    /// Expected SHA-256 of the input file; otherwise a sibling IMAGE.sha256 or SHA256SUMS is used.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,

    /// Where decompressed images are cached (default: $PIFORGE_CACHE, else
    /// $XDG_CACHE_HOME/piforge, else ~/.cache/piforge).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// The most a compressed image may decompress to, such as 64G (the default): a larger
    /// one is refused and nothing of it is kept in the cache.
    #[arg(long, value_name = "SIZE", value_parser = parse_max_size)]
    pub max_image_size: Option<u64>,
}

fn parse_max_size(s: &str) -> Result<u64, String> {
    piforge::size::parse_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size such as 8G or 64G"))
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CustomizeArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// The image to write (raw, sparse); it appears only when complete.
    #[arg(short, long, value_name = "OUT", required_unless_present = "dry_run")]
    pub output: Option<PathBuf>,

    /// Copy a directory tree into the root filesystem (repeatable; root:root, modes as in DIR,
    /// exceptions in DIR/.piforge-attrs as `PATH MODE UID GID` lines).
    #[arg(long, value_name = "DIR")]
    pub root_overlay: Vec<PathBuf>,

    /// Copy a directory tree's files into the boot (FAT) partition (repeatable).
    #[arg(long, value_name = "DIR")]
    pub boot_overlay: Vec<PathBuf>,

    /// Add a kernel command-line token to cmdline.txt (repeatable; idempotent).
    #[arg(long, value_name = "TOKEN")]
    pub cmdline_add: Vec<String>,

    /// Remove a kernel command-line token, or every token with that key (repeatable).
    #[arg(long, value_name = "TOKEN")]
    pub cmdline_remove: Vec<String>,

    /// Set KEY=VALUE in config.txt, inside piforge's block after an [all] line (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub config: Vec<String>,

    /// Remove a file, symlink or directory tree from the root filesystem (repeatable).
    #[arg(long = "rm", value_name = "PATH")]
    pub remove: Vec<String>,

    /// Grow the root partition: auto (as needed, +10%), off (fail when it does not fit), or a
    /// size for the root partition such as 4G.
    #[arg(long, value_name = "auto|off|SIZE", default_value = "auto")]
    pub grow: String,

    /// Print the changes (path, action, size, mode) and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Add the Kubernetes node payload for this version (containerd, runc, CNI plugins,
    /// kubeadm/kubelet/kubectl, crictl, kernel and OS settings).
    #[arg(long, value_name = "VERSION")]
    pub kubernetes: Option<String>,

    #[command(flatten)]
    pub artifacts: ArtifactArgs,

    /// Make a Pi 5 boot the 4K-page kernel (kernel=kernel8.img); some container images crash
    /// on its default 16K pages.
    #[arg(long)]
    pub pi5_4k_pages: bool,
}

/// Where release artifacts come from and how they are pinned.
#[derive(Debug, Args, Clone)]
pub struct ArtifactArgs {
    /// A catalog file (the format of piforge's artifacts.toml) laid over the built-in one:
    /// its [[artifact]] tables change built-in artifacts, its [[release]] tables replace or
    /// add Kubernetes releases (see README, "Your own versions").
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,

    /// Use the artifacts in DIR (upstream file names) instead of downloading.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,

    /// The lock file pinning artifact digests.
    #[arg(long, value_name = "FILE", default_value = "piforge.lock")]
    pub lock: PathBuf,

    /// Accept artifacts with no lock entry and no upstream checksum, recording their digests.
    #[arg(long)]
    pub allow_unpinned: bool,

    /// Download through a mirror serving <URL>/<upstream host>/<upstream path>.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The Kubernetes version (e.g. 1.34 or 1.34.2); default: the spec's, else the newest in
    /// the catalog.
    #[arg(long, value_name = "VERSION")]
    pub kubernetes: Option<String>,

    /// Take the version from this cluster spec, and keep the lock beside it (also
    /// `piforge fetch SPEC`).
    #[arg(long = "spec", value_name = "FILE", conflicts_with = "spec_arg")]
    pub spec_flag: Option<PathBuf>,

    /// The cluster spec, as with --spec.
    #[arg(value_name = "SPEC", id = "spec_arg")]
    pub spec_arg: Option<PathBuf>,

    #[command(flatten)]
    pub artifacts: ArtifactArgs,

    /// Re-check against upstream checksum files and replace lock entries that changed.
    #[arg(long)]
    pub update: bool,

    /// Where downloads are cached (default: $PIFORGE_CACHE, else $XDG_CACHE_HOME/piforge, else
    /// ~/.cache/piforge).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Fetch only the release files, not the container images (the nodes then pull them on
    /// first boot).
    #[arg(long)]
    pub no_images: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the files (created if missing; existing files are never overwritten).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The cluster spec (default cluster.yaml; also `piforge build SPEC`).
    #[arg(long = "spec", value_name = "FILE", conflicts_with = "spec_arg")]
    pub spec_flag: Option<PathBuf>,

    /// The cluster spec, as with --spec.
    #[arg(value_name = "SPEC", id = "spec_arg")]
    pub spec_arg: Option<PathBuf>,

    /// Where the node images, SHA256SUMS go.
    #[arg(long, value_name = "DIR", default_value = "dist")]
    pub out: PathBuf,

    /// A catalog file (the format of piforge's artifacts.toml) laid over the built-in one:
    /// its [[artifact]] tables change built-in artifacts, its [[release]] tables replace or
    /// add Kubernetes releases (see README, "Your own versions").
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,

    /// Build only this node (repeatable): to reimage a node that failed.
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,

    /// A bootstrap token minted in the running cluster (`kubeadm token create`), for a node
    /// built after the stored token expired. Never printed.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// Like --token, read from FILE's first line, or from standard input with `-`: a token on
    /// the command line is visible to every user in `ps`.
    #[arg(long, value_name = "FILE|-")]
    pub token_file: Option<PathBuf>,

    /// Use the artifacts in DIR (upstream file names) instead of the cache or the spec's.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,

    /// Accept artifacts with no lock entry and no upstream checksum, recording their digests.
    #[arg(long)]
    pub allow_unpinned: bool,

    /// Download missing artifacts through a mirror serving <URL>/<upstream host>/<path>.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,

    /// Where downloads and decompressed images are cached (default: $PIFORGE_CACHE, else
    /// $XDG_CACHE_HOME/piforge, else ~/.cache/piforge).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// With --node: allow rebuilding the only control plane alone, which starts a new, empty
    /// cluster on its first boot (without it, piforge refuses).
    #[arg(long)]
    pub new_cluster: bool,

    /// Print every layer's plan (common, per role, per node) and write nothing: no secrets,
    /// no lock entries, no downloads, no images.
    #[arg(long)]
    pub dry_run: bool,

    /// Nodes built at once (default: the number of CPUs).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,

    /// Print the build's manifest (dist/manifest.json) as JSON on standard output instead of
    /// the table.
    #[arg(long)]
    pub json: bool,

    /// Rebuild into a temporary directory and compare with a SHA256SUMS an earlier build
    /// wrote (e.g. dist/SHA256SUMS): fails naming each file that differs, with the first
    /// differing byte, the partition and the file inside the filesystem it falls in.
    #[arg(long, value_name = "SHA256SUMS", conflicts_with = "dry_run")]
    pub verify: Option<PathBuf>,

    /// Output format per node (repeatable): img (raw, sparse; the default), xz, zst. A
    /// <node>.img.bmap for bmaptool and an os_list.json for Raspberry Pi Imager are written
    /// beside them.
    #[arg(long = "format", value_name = "FORMAT", value_enum)]
    pub formats: Vec<FormatArg>,

    /// Compression threads (default: one per CPU), fewer when their encoders would need more
    /// than 200 MiB (xz: about 4; a note says so). The outputs are the same whatever the
    /// number.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub threads: usize,

    /// The URL os_list.json names the files under (e.g. https://example.com/dist/, where
    /// they will be published); default: the output directory as a file:// URL.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Test hook: hash every chunk of every node image, taking no digest from its role image
    /// (the outputs must be the same; tests/formats.rs compares them).
    #[arg(long, hide = true)]
    pub test_no_reuse: bool,
}

/// `build --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Img,
    Xz,
    Zst,
}

impl From<&FormatArg> for piforge::build::formats::Format {
    fn from(f: &FormatArg) -> Self {
        use piforge::build::formats::Format;
        match f {
            FormatArg::Img => Format::Img,
            FormatArg::Xz => Format::Xz,
            FormatArg::Zst => Format::Zst,
        }
    }
}

impl FetchArgs {
    /// The spec named positionally or with --spec, if any.
    pub fn spec(&self) -> Option<PathBuf> {
        self.spec_arg.clone().or_else(|| self.spec_flag.clone())
    }
}

impl BuildArgs {
    /// The spec named positionally or with --spec, else `cluster.yaml`.
    pub fn spec(&self) -> PathBuf {
        self.spec_arg
            .clone()
            .or_else(|| self.spec_flag.clone())
            .unwrap_or_else(|| PathBuf::from("cluster.yaml"))
    }
}

/// Options shared by `flash` and `reimage`: the safety questions and the verify.
#[derive(Debug, Args, Clone)]
pub struct WriteArgs {
    /// Do not ask before erasing the device (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Skip reading the card back.
    #[arg(long)]
    pub no_verify: bool,

    /// Write to a disk that does not look removable (not on USB or MMC, sysfs removable 0).
    /// Never overrides a mounted device, swap or a device that is too small.
    #[arg(long)]
    pub force: bool,

    /// Benchmark knob: join mapped ranges at most BYTES apart into one write, with the
    /// image's bytes between (default 0: each range alone; BENCHMARKS.md).
    #[arg(long, hide = true, value_name = "BYTES")]
    pub max_gap: Option<u64>,

    /// Test hook: flip the byte at this offset after the write, before the verify.
    #[arg(long, hide = true, value_name = "OFFSET")]
    pub test_corrupt_before_verify: Option<u64>,

    /// Test hook: stop (until killed) once this many bytes are written.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub test_pause_after: Option<u64>,
}

/// How a node is built from a spec before it is written (`flash --spec`, `reimage`).
#[derive(Debug, Args, Clone)]
pub struct SpecBuildArgs {
    /// Use the artifacts in DIR (upstream file names) instead of the cache or the spec's.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,

    /// Accept artifacts with no lock entry and no upstream checksum, recording their digests.
    #[arg(long)]
    pub allow_unpinned: bool,

    /// Download missing artifacts through a mirror serving <URL>/<upstream host>/<path>.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,

    /// Where downloads, decompressed images and the node image being written are kept
    /// (default: $PIFORGE_CACHE, else $XDG_CACHE_HOME/piforge, else ~/.cache/piforge).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// A catalog file (the format of piforge's artifacts.toml) laid over the built-in one, as
    /// for `build --catalog` (see README, "Your own versions").
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FlashArgs {
    /// `SOURCE DEVICE`: an image (.img, .img.xz, .img.zst; its .bmap beside it is used) and
    /// a block device or regular file. With --spec: only DEVICE (with --all it may hold
    /// `{node}`, or be left out with --wait).
    #[arg(value_name = "SOURCE|DEVICE", num_args = 0..=2)]
    pub args: Vec<PathBuf>,

    /// The block map to use instead of the .bmap beside SOURCE.
    #[arg(long, value_name = "FILE", conflicts_with = "spec")]
    pub bmap: Option<PathBuf>,

    /// Build from this cluster spec instead of reading SOURCE (with --node or --all).
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,

    /// With --spec: the node to build and write.
    #[arg(long, value_name = "NAME", requires = "spec", conflicts_with = "all")]
    pub node: Option<String>,

    /// With --spec: every node in order, one card each, with a summary at the end.
    #[arg(long, requires = "spec")]
    pub all: bool,

    /// With --all: wait for each card to be inserted (a new removable disk) instead of
    /// asking.
    #[arg(long, requires = "all")]
    pub wait: bool,

    /// Test hook: with --wait, look for disks in DIR/sys/block and DIR/dev instead of the
    /// system's.
    #[arg(long, hide = true, value_name = "DIR")]
    pub test_devices: Option<PathBuf>,

    #[command(flatten)]
    pub write: WriteArgs,

    #[command(flatten)]
    pub build: SpecBuildArgs,
}

#[derive(Debug, Args)]
pub struct ReimageArgs {
    /// The block device (or regular file) to write.
    #[arg(value_name = "DEVICE")]
    pub device: PathBuf,

    /// The cluster spec.
    #[arg(long, value_name = "FILE", default_value = "cluster.yaml")]
    pub spec: PathBuf,

    /// The node to rebuild.
    #[arg(long, value_name = "NAME")]
    pub node: String,

    /// A bootstrap token minted in the running cluster (`kubeadm token create`). Never
    /// printed.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// Like --token, from FILE's first line or standard input (`-`).
    #[arg(long, value_name = "FILE|-")]
    pub token_file: Option<PathBuf>,

    /// Allow rebuilding the only control plane, which starts a new, empty cluster.
    #[arg(long)]
    pub new_cluster: bool,

    #[command(flatten)]
    pub write: WriteArgs,

    #[command(flatten)]
    pub build: SpecBuildArgs,
}
