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
use piforge::{
    artifacts, build, check, clock, customize, inspect, output, payload, source, spec, text,
};

/// Allocations of 1 MiB or more (the compressors' 4 MiB chunks, liblzma's match finders) are
/// mapped and unmapped by glibc, never kept: by default glibc raises its mmap threshold to the
/// size of the first such block freed (up to 32 MiB) and keeps later ones in its per-thread
/// arenas, which held ~60 MiB more than the live blocks with `--format xz` (peak RSS 220-233
/// MiB against 161 MiB with the threshold fixed, same build; BENCHMARKS.md). Setting it fixes
/// the threshold (mallopt(3)).
fn bound_malloc_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt with integer arguments, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    // A bug must still end in one sentence, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("piforge: internal error (a bug, please report it): {info}");
    }));
    install_interrupt_cleanup();
    bound_malloc_retention();
    let cli = Cli::parse();
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
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
/// thread), then exits 130: temporary files (the cache's partly decoded image and container
/// layers included), a build's staging directory and `build --verify`'s rebuild.
fn install_interrupt_cleanup() {
    let _ = ctrlc::set_handler(|| {
        let card = flash_cmd::on_interrupt();
        output::cleanup_pending();
        build::cleanup_staging();
        eprintln!(
            "{}",
            card.unwrap_or("piforge: interrupted; no output was written")
        );
        std::process::exit(130);
    });
}

/// `--quiet`: no progress report (set once, before any command runs).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The progress reporter to pass down: bars on a terminal, a plain line per step otherwise,
/// nothing with `--quiet`.
/// Says that a build made a new bootstrap token (the recorded one had expired), and where the
/// command that creates it in the cluster is. On stderr, so that --json output stays JSON; the
/// token itself is never shown.
fn tell_token_renewed(report: &build::BuildReport) {
    if let Some(file) = &report.token_renewed {
        eprintln!(
            "piforge: the cluster's bootstrap token had expired, so a new one was made for these \
             cards (recorded in {}). The cluster does not know it yet: before the cards boot, \
             run the command in {} (kubeadm token create ...) on a control plane.",
            file.with_file_name("token").display(),
            file.display()
        );
    }
}

fn progress_bars() -> Option<Arc<dyn piforge::progress::Progress>> {
    progress::reporter(QUIET.load(std::sync::atomic::Ordering::Relaxed))
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
        let release = artifacts::Catalog::load(a.artifacts.catalog.as_deref())?.release(version)?;
        let src = artifact_source(&a.artifacts, false, None)?;
        let arts = release_artifacts(&release, &src)?;
        if a.pi5_4k_pages {
            let facts = piforge::inspect::inspect(&a.input.image, &img)?;
            payload::pi5_4k_pages_supported(&facts.boot.files)
                .map_err(|why| anyhow::anyhow!("--pi5-4k-pages: {why}"))?;
        }
        // The OS packages the base lacks, as `build` puts them in the card: the `.deb`s the
        // lock pins (from the cache, `--artifacts DIR`, or downloaded by their pinned URL);
        // without pins, first boot installs them with apt, as a warning says.
        let base = payload::read_base_facts(&img.path)?;
        let base_apt = piforge::apt::read_base_image(&img.path)?;
        let pk = piforge::apt::build_packages(
            &base_apt,
            &base.missing_packages,
            &src.lock,
            &src.cache_dir,
            src.dir.as_deref(),
            src.mirror.clone(),
            true,
        )?;
        if !pk.unpinned.is_empty() {
            eprintln!(
                "piforge: warning: {} not pinned in {}: first boot installs {} with apt and needs \
                 the network; `piforge fetch SPEC` (a cluster.yaml naming this image) with \
                 --lock {} pins the .debs, which then go into the card",
                pk.unpinned.join(", "),
                src.lock.display(),
                if pk.unpinned.len() == 1 { "it" } else { "them" },
                src.lock.display()
            );
        }
        let opts = payload::PayloadOptions {
            pi5_4k_pages: a.pi5_4k_pages,
            debs: pk.debs,
        };
        payload::node_payload(&mut plan, &img.path, &release, &arts, &opts)?;
        // Which container images a node runs depends on its role and the cluster's CNI, which
        // only a cluster.yaml tells: `build` carries them, customize does not.
        eprintln!(
            "piforge: note: --kubernetes puts no container image in the image (it knows no \
             cluster, role or CNI): a node made from it pulls them on first boot; `piforge \
             build` puts each role's images in its cards"
        );
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
    let mut catalog = artifacts::Catalog::load(a.artifacts.catalog.as_deref())?;
    let mut spec_loaded = None;
    let from_spec = match &a.spec() {
        Some(p) => {
            let (s, c) = build::load_spec(p, a.artifacts.catalog.as_deref())?;
            catalog = c;
            spec_loaded = Some(s.clone());
            // The lock lives beside the spec unless --lock says otherwise.
            if a.artifacts.lock == std::path::Path::new("piforge.lock") {
                a.artifacts.lock = s.spec_dir.join("piforge.lock");
            }
            if a.artifacts.artifacts.is_none() {
                a.artifacts.artifacts = s.artifacts.clone();
            }
            Some(s)
        }
        None => None,
    };
    let spec = from_spec;
    let from_spec = spec.as_ref().map(|s| s.kubernetes.version.clone());
    let version = match a.kubernetes.clone().or(from_spec) {
        Some(v) => v,
        None => catalog
            .supported_versions()
            .first()
            .map(|v| v.to_string())
            .context("the artifact catalog lists no Kubernetes version")?,
    };
    // The spec's kubernetes.versions replace the catalog's component versions.
    let overrides = spec
        .as_ref()
        .map_or(Vec::new(), |s| s.kubernetes.versions.clone());
    let release = catalog.release_with(&version, &overrides)?;
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
    if !a.no_images {
        // The images the spec's cluster runs, or every image of the release without a spec.
        let wanted = match &spec {
            Some(s) => build::cluster_images(s, &release),
            None => release.images(),
        };
        let set = src.images(&wanted, artifacts::ImageFetch::Pull)?;
        for w in &set.warnings {
            eprintln!("piforge: warning: {w}");
        }
        for i in &set.images {
            println!(
                "{}  {}  {} bytes (linux/arm64 {})",
                i.parts.index_digest,
                i.spec.image,
                i.parts.blob_bytes(),
                i.parts.manifest.digest
            );
        }
        if !set.missing.is_empty() {
            let names: Vec<String> = set.missing.iter().map(|m| m.image.to_string()).collect();
            eprintln!(
                "piforge: warning: {} image(s) not in {}/images (pulled by the nodes on first boot): {}",
                names.len(),
                a.artifacts.artifacts.as_deref().unwrap_or(std::path::Path::new(".")).display(),
                names.join(", ")
            );
        }
        println!(
            "{} images verified; digests pinned in {}",
            set.images.len(),
            a.artifacts.lock.display()
        );
    }
    // OS packages: only with a spec, whose base image says what is installed and where apt
    // takes packages from.
    if let Some(s) = spec_loaded {
        let cache_dir = match a.cache_dir.clone() {
            Some(d) => d,
            None => source::cache_dir()?,
        };
        let (missing, fetched) = build::fetch_packages(
            &s,
            &a.artifacts.lock,
            &cache_dir,
            a.artifacts.mirror.clone(),
            a.update,
        )?;
        if missing.is_empty() {
            println!("OS packages: the base image has every one a node needs");
        } else if let Some(why) = &fetched.unavailable {
            eprintln!(
                "piforge: warning: OS packages {}: {why}",
                missing.join(", ")
            );
        } else {
            for d in &fetched.debs {
                println!("{}  {}  {} bytes  ({})", d.sha256, d.file, d.size, d.why);
            }
            let bytes: u64 = fetched.debs.iter().map(|d| d.size).sum();
            println!(
                "OS packages {}: {} .debs ({} KiB) verified against the base image's apt sources{}; pinned in {}",
                missing.join(", "),
                fetched.debs.len(),
                bytes.div_ceil(1024),
                if fetched.resolved { "" } else { " (as the lock pins them)" },
                a.artifacts.lock.display()
            );
        }
    }
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
        "Next: put your upstream image's path and your ssh key in {}, then `piforge fetch {0} --allow-unpinned` (flannel publishes no checksum for its manifest: its digest is recorded in piforge.lock) and `piforge build {0}`.",
        a.dir.join("cluster.yaml").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The build options every command that builds starts from (`build`, `flash --spec`,
/// `reimage`): the build epoch (SOURCE_DATE_EPOCH, else the default), the wall clock (only
/// to warn about an old token), the cache directory (`--cache-dir`, else the default one,
/// created), and no nodes, token, artifacts, mirror or catalog. Callers set the rest.
pub(crate) fn build_options(
    spec_path: std::path::PathBuf,
    out_dir: std::path::PathBuf,
    cache_dir: Option<std::path::PathBuf>,
) -> Result<build::BuildOptions> {
    let epoch = clock::build_epoch()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(epoch);
    let cache_dir = match cache_dir {
        Some(d) => d,
        None => source::cache_dir()?,
    };
    Ok(build::BuildOptions {
        spec_path,
        catalog: None,
        out_dir,
        nodes: Vec::new(),
        token: None,
        artifacts_dir: None,
        allow_unpinned: false,
        mirror: None,
        cache_dir,
        epoch,
        now,
        new_cluster: false,
        jobs: 0,
        outputs: build::NodeOutputs::default(),
    })
}

fn cmd_build(a: BuildArgs) -> Result<ExitCode> {
    let spec_path = a.spec();
    let mut formats: Vec<build::formats::Format> = a.formats.iter().map(Into::into).collect();
    let mut base_url = a.base_url.clone();
    // `--verify`: what the command line leaves unsaid, as the directory checked was built.
    let mut took = Vec::new();
    let recorded = a.verify.as_deref().map(build::verify::recorded);
    let epoch_set = std::env::var("SOURCE_DATE_EPOCH").is_ok_and(|v| !v.trim().is_empty());
    if let Some(r) = &recorded {
        if formats.is_empty() && !r.formats.is_empty() {
            formats = r.formats.clone();
            let names: Vec<&str> = formats.iter().map(|f| f.name()).collect();
            took.push(format!("--format {}", names.join(",")));
        }
        if base_url.is_none() {
            if let Some(u) = &r.base_url {
                took.push(format!("--base-url {u}"));
                base_url = Some(u.clone());
            }
        }
        if let (false, Some(e)) = (epoch_set, r.epoch) {
            took.push(format!("SOURCE_DATE_EPOCH={e}"));
        }
    }
    for n in build::formats::threads_notes(&formats, a.threads) {
        eprintln!("piforge: note: {n}");
    }
    let mut opts = build::BuildOptions {
        catalog: a.catalog,
        nodes: a.nodes,
        token: match &a.token_file {
            Some(f) => Some(read_token(f)?),
            None => a.token,
        },
        artifacts_dir: a.artifacts,
        allow_unpinned: a.allow_unpinned,
        mirror: a.mirror,
        new_cluster: a.new_cluster,
        jobs: a.jobs.map_or(0, usize::from),
        outputs: build::NodeOutputs {
            reuse: !a.test_no_reuse,
            ..build::formats::node_outputs(&formats, a.threads, base_url.as_deref())?
        },
        ..build_options(spec_path, a.out, a.cache_dir)?
    };
    if let (false, Some(e)) = (epoch_set, recorded.as_ref().and_then(|r| r.epoch)) {
        opts.epoch = e;
    }
    if !took.is_empty() {
        eprintln!(
            "piforge: verify: as the directory checked was built: {}",
            took.join(", ")
        );
    }
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
    if let Some(sums) = &a.verify {
        let v = build::verify::verify(&opts, sums, bars.clone())?;
        if v.differences.is_empty() {
            println!(
                "verified: the rebuild gives the same {} files {} lists",
                v.same.len(),
                sums.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        for d in &v.differences {
            println!("differs: {d}");
        }
        anyhow::bail!(
            "the rebuild differs from {} in {} file(s) (listed above)",
            sums.display(),
            v.differences.len()
        );
    }
    let report = build::build(&opts, bars)?;
    for w in &report.warnings {
        eprintln!("piforge: warning: {w}");
    }
    tell_token_renewed(&report);
    if a.json {
        if let Some(m) = &report.manifest {
            print!("{}", m.to_json());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(p) = &report.packages {
        let (bytes, installed) = p.sizes();
        println!(
            "OS packages in every role's image: {} .debs, {} KiB ({} KiB installed), installed offline with dpkg on first boot",
            p.debs.len(),
            bytes.div_ceil(1024),
            installed.div_ceil(1024)
        );
    }
    // One row per node, every column as wide as its widest cell (names and paths vary).
    let rows: Vec<[String; 5]> = report
        .nodes
        .iter()
        .map(|n| {
            [
                n.name.to_string(),
                n.role.as_str().to_string(),
                n.address.as_deref().unwrap_or("dhcp").to_string(),
                n.image.display().to_string(),
                format!("{} MiB", n.bytes >> 20),
            ]
        })
        .collect();
    let width = |c: usize| rows.iter().map(|r| r[c].len()).max().unwrap_or(0);
    let w = [width(0), width(1), width(2), width(3), width(4)];
    for (r, n) in rows.iter().zip(&report.nodes) {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}  sha256 {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            &n.sha256[..16],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
        );
    }
    for l in &report.images {
        println!("{l}");
    }
    if let Some(l) = report.copies_line() {
        println!("{l}");
    }
    for l in &report.compressed {
        println!("{l}");
    }
    println!(
        "checksums: {}   manifest: {}",
        report.sha256sums.display(),
        report.sha256sums.with_file_name("manifest.json").display()
    );
    println!(
        "kubectl --kubeconfig {} get nodes   (once the control plane is up)",
        report.admin_kubeconfig.display()
    );
    println!(
        "ssh -o UserKnownHostsFile={} <user>@<node>   (the nodes' host keys, the same after a reimage)",
        report.known_hosts.display()
    );
    if !report.before_flashing.is_empty() {
        println!(
            "Reimaged node(s): on first boot a control plane removes its old etcd member and \
             Node object itself, and a worker joins under its old name once that Node is no \
             longer Ready. Should a card's piforge-status.txt say it could not, run in the \
             cluster:"
        );
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
