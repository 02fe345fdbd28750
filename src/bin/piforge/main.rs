//! The piforge binary: parse the command line, call the library, turn errors into one line.
//! clap (the command line), indicatif (progress bars) and ctrlc (interrupts) live here only;
//! the library takes option structs and reports progress through [`piforge::progress`].

mod cli;
mod flash_cmd;
mod progress;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{
    ArtifactArgs, BuildArgs, CheckArgs, Cli, Command, CustomizeArgs, FetchArgs, InitArgs,
    InputArgs, InspectArgs,
};
use piforge::progress::Progress;
use piforge::{
    artifacts, build, check, clock, customize, inspect, output, payload, source, spec, text,
};
use progress::Bars;

fn main() -> ExitCode {
    // A bug must still end in one sentence, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("piforge: internal error (a bug, please report it): {info}");
    }));
    install_interrupt_cleanup();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd_inspect(a),
        Command::Customize(a) => cmd_customize(a),
        Command::Check(a) => cmd_check(a),
        Command::Fetch(a) => cmd_fetch(a),
        Command::Init(a) => cmd_init(a),
        Command::Build(a) => cmd_build(a),
        Command::Flash(a) => flash_cmd::cmd_flash(a),
        Command::Reimage(a) => flash_cmd::cmd_reimage(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("piforge: error: {}", text::error_sentence(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Removes half-written outputs on Ctrl-C and SIGTERM (ctrlc runs the handler on its own
/// thread), then exits 130.
fn install_interrupt_cleanup() {
    let _ = ctrlc::set_handler(|| {
        let card = flash_cmd::on_interrupt();
        output::cleanup_pending();
        eprintln!(
            "{}",
            card.unwrap_or("piforge: interrupted; no output was written")
        );
        std::process::exit(130);
    });
}

/// The progress reporter to pass down: bars on a terminal, nothing otherwise.
fn progress_bars() -> Option<Arc<dyn Progress>> {
    Bars::for_stderr().map(|b| b as Arc<dyn Progress>)
}

/// Opens an input; `hash_raw`: compute the digest of a raw input even when nothing is expected
/// (inspect reports it; customize and check need not read a multi-GiB file twice).
fn open_input(a: &InputArgs, hash_raw: bool) -> Result<source::SourceImage> {
    let opts = source::OpenOptions {
        sha256: a.sha256.clone(),
        cache_dir: a.cache_dir.clone(),
        progress: progress_bars(),
        skip_raw_digest: !hash_raw,
        max_image_size: a.max_image_size,
    };
    Ok(source::open_image(&a.image, &opts)?)
}

fn cmd_inspect(a: InspectArgs) -> Result<ExitCode> {
    let img = open_input(&a.input, true)?;
    let report = inspect::inspect(&a.input.image, &img)?;
    if a.json {
        let s = serde_json::to_string_pretty(&report).context("encoding the report as JSON")?;
        println!("{s}");
    } else {
        print!("{}", text::inspect(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_customize(a: CustomizeArgs) -> Result<ExitCode> {
    let epoch = clock::build_epoch()?;
    // The plan is built (and every option checked) before the image is opened.
    let plan = customize::plan_from_options(&customize_options(&a), epoch)?;
    if a.dry_run {
        print!("{plan}");
        return Ok(ExitCode::SUCCESS);
    }
    let out = a
        .output
        .as_deref()
        .context("-o OUT is required unless --dry-run is given")?;
    refuse_output_on_input(&a.input.image, out)?;
    let img = open_input(&a.input, false)?;
    let mut plan = plan;
    if let Some(version) = &a.kubernetes {
        let release = artifacts::Catalog::builtin()?.release(version)?;
        let src = artifact_source(&a.artifacts, false, None)?;
        let arts = release_artifacts(&release, &src)?;
        let opts = payload::PayloadOptions {
            pi5_4k_pages: a.pi5_4k_pages,
        };
        payload::node_payload(&mut plan, &img.path, &release, &arts, &opts)?;
    }
    let done = customize::run(&img.path, out, &plan)?;
    let grew = match done.grew_root_to {
        Some(n) => format!(", root partition grown to {} MiB", n >> 20),
        None => String::new(),
    };
    println!(
        "{}: {} root and {} boot changes, {} MiB{grew}",
        done.output.display(),
        done.root_ops,
        done.boot_ops,
        done.image_bytes >> 20
    );
    Ok(ExitCode::SUCCESS)
}

/// `-o` naming the input itself (the same file, through any path, hard link or symlink) would
/// replace the input (issue 12 item 14).
fn refuse_output_on_input(input: &std::path::Path, out: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(i), Ok(o)) = (std::fs::metadata(input), std::fs::metadata(out)) {
        if (i.dev(), i.ino()) == (o.dev(), o.ino()) {
            anyhow::bail!(
                "-o {} is the input image itself; write the output to another file",
                out.display()
            );
        }
    }
    Ok(())
}

/// The bootstrap token of `--token-file FILE|-`: the first line, blanks trimmed. At most 1 KiB
/// is read (a token is 23 characters); the token itself never appears in an error.
fn read_token(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    let shown = path.display();
    let result = if path == std::path::Path::new("-") {
        std::io::stdin().take(1024).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(1024).read_to_string(&mut text))
    };
    result.with_context(|| format!("cannot read the token from {shown}"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        anyhow::bail!("--token-file {shown} holds no token on its first line");
    }
    Ok(token.to_string())
}

/// The library's options from the command line.
fn customize_options(a: &CustomizeArgs) -> customize::CustomizeOptions {
    customize::CustomizeOptions {
        root_overlays: a.root_overlay.clone(),
        boot_overlays: a.boot_overlay.clone(),
        cmdline_add: a.cmdline_add.clone(),
        cmdline_remove: a.cmdline_remove.clone(),
        config: a.config.clone(),
        remove: a.remove.clone(),
        grow: a.grow.clone(),
    }
}

fn cmd_check(a: CheckArgs) -> Result<ExitCode> {
    let img = open_input(&a.input, false)?;
    let items = check::check_image(&img.path)?;
    if a.json {
        let s = serde_json::to_string_pretty(&items).context("encoding the check as JSON")?;
        println!("{s}");
    } else {
        print!("{}", text::check(&items));
    }
    Ok(if check::exit_ok(&items) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn artifact_source(
    a: &ArtifactArgs,
    update: bool,
    cache_dir: Option<std::path::PathBuf>,
) -> Result<artifacts::ArtifactSource> {
    let cache_dir = match cache_dir {
        Some(d) => d,
        None => source::cache_dir()?,
    };
    Ok(artifacts::ArtifactSource {
        dir: a.artifacts.clone(),
        lock: a.lock.clone(),
        allow_unpinned: a.allow_unpinned,
        mirror: a.mirror.clone(),
        update,
        cache_dir,
    })
}

/// The release artifacts, with progress bars on a terminal and warnings on stderr.
fn release_artifacts(
    release: &artifacts::Release,
    src: &artifacts::ArtifactSource,
) -> Result<Vec<artifacts::FetchedArtifact>> {
    let bars = progress_bars();
    let (arts, warnings) = src.release_artifacts(release, bars.as_deref())?;
    for w in warnings {
        eprintln!("piforge: warning: {w}");
    }
    Ok(arts)
}

fn cmd_fetch(a: FetchArgs) -> Result<ExitCode> {
    let mut a = a;
    let catalog = artifacts::Catalog::builtin()?;
    let from_spec = match &a.spec() {
        Some(p) => {
            let (s, _) = build::load_spec(p)?;
            // The lock lives beside the spec unless --lock says otherwise.
            if a.artifacts.lock == std::path::Path::new("piforge.lock") {
                a.artifacts.lock = s.spec_dir.join("piforge.lock");
            }
            if a.artifacts.artifacts.is_none() {
                a.artifacts.artifacts = s.artifacts.clone();
            }
            Some(s.kubernetes.version)
        }
        None => None,
    };
    let version = match a.kubernetes.clone().or(from_spec) {
        Some(v) => v,
        None => catalog
            .supported_versions()
            .first()
            .map(|v| v.to_string())
            .context("the artifact catalog lists no Kubernetes version")?,
    };
    let release = catalog.release(&version)?;
    let src = artifact_source(&a.artifacts, a.update, a.cache_dir.clone())?;
    let arts = release_artifacts(&release, &src)?;
    for art in &arts {
        println!("{}  {}  {} bytes", art.sha256, art.spec.file_name, art.size);
    }
    println!(
        "Kubernetes {}: {} artifacts verified; digests pinned in {}",
        release.kubernetes(),
        arts.len(),
        a.artifacts.lock.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_init(a: InitArgs) -> Result<ExitCode> {
    let files = spec::init_files();
    for (rel, _) in &files {
        let p = a.dir.join(rel);
        if p.exists() {
            anyhow::bail!(
                "{} exists already; piforge init never overwrites files",
                p.display()
            );
        }
    }
    for (rel, text) in &files {
        let p = a.dir.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    println!(
        "Next: put your upstream image's path and your ssh key in {}, then `piforge fetch --spec {0}` and `piforge build --spec {0}`.",
        a.dir.join("cluster.yaml").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_build(a: BuildArgs) -> Result<ExitCode> {
    let epoch = clock::build_epoch()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(epoch);
    let spec_path = a.spec();
    let cache_dir = match a.cache_dir {
        Some(d) => d,
        None => source::cache_dir()?,
    };
    let opts = build::BuildOptions {
        spec_path,
        out_dir: a.out,
        nodes: a.nodes,
        token: match &a.token_file {
            Some(f) => Some(read_token(f)?),
            None => a.token,
        },
        artifacts_dir: a.artifacts,
        allow_unpinned: a.allow_unpinned,
        mirror: a.mirror,
        cache_dir,
        epoch,
        now,
        new_cluster: a.new_cluster,
        formats: if a.formats.is_empty() {
            vec![build::formats::Format::Img]
        } else {
            a.formats.iter().map(|f| f.into()).collect()
        },
        threads: a.threads,
    };
    if a.dry_run {
        let (plan, notes) = build::dry_run(&opts)?;
        for n in &notes {
            eprintln!("piforge: dry run: {n}");
        }
        print!("{plan}");
        println!("\n(dry run: nothing was written)");
        return Ok(ExitCode::SUCCESS);
    }
    let bars = progress_bars();
    let report = build::build(&opts, bars.as_deref())?;
    for w in &report.warnings {
        eprintln!("piforge: warning: {w}");
    }
    for n in &report.nodes {
        println!(
            "{:<16} {:<14} {:<18} {}  {} MiB  sha256 {}",
            n.name,
            n.role.as_str(),
            n.address.as_deref().unwrap_or("dhcp"),
            n.image.display(),
            n.bytes >> 20,
            &n.sha256[..16]
        );
    }
    println!("checksums: {}", report.sha256sums.display());
    println!(
        "kubectl --kubeconfig {} get nodes   (once the control plane is up)",
        report.admin_kubeconfig.display()
    );
    println!(
        "ssh -o UserKnownHostsFile={} <user>@<node>   (the nodes' host keys, the same after a reimage)",
        report.known_hosts.display()
    );
    if !report.before_flashing.is_empty() {
        println!("Before flashing the reimaged node(s), run in the cluster:");
        for c in &report.before_flashing {
            println!("  {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::read_token;

    #[test]
    fn token_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  abcdef.0123456789abcdef \nignored\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "abcdef.0123456789abcdef");
        std::fs::write(&f, "\n").unwrap();
        let e = format!("{:#}", read_token(&f).unwrap_err());
        assert!(e.contains("holds no token on its first line"), "{e}");
        let e = format!("{:#}", read_token(&dir.path().join("none")).unwrap_err());
        assert!(e.contains("cannot read the token from"), "{e}");
    }
}
