//! `piforge build`: one cluster spec and one upstream image in, one image per node out.
//!
//! The build runs in five phases, and nothing is written before the first two are through:
//!
//! 1. [`validate`]: the spec, the command-line options, the base image (opened, decompressed
//!    into the cache and inspected: it must have cloud-init) and where each release artifact
//!    will come from. A problem found here leaves no trace (no secrets, no lock entry).
//! 2. secrets (`secrets.rs`): the cluster CA, token and admin credentials, made on the first
//!    build and reused after (`pki`).
//! 3. inputs: the release artifacts, verified against the lock (downloaded when missing).
//! 4. plan: the changes as data ([`BuildPlan`]): a common layer (the node payload), one layer
//!    per kubeadm role (CA, first-boot unit, pod network, the site's overlays) and one small
//!    layer per node (its kubeadm configuration, NoCloud seed and disk id). `--dry-run` stops
//!    here and prints it.
//! 5. apply: the common layer once, each role layer once, then each node's layer on a copy
//!    (a reflink where the filesystem has them) of its role's image, `--jobs` nodes at a time;
//!    each node's files written from its finished image (the raw image, its `.img.bmap`, its
//!    compressed copies: [`formats`]); then `sbom.spdx.json`, `os_list.json`, `SHA256SUMS`
//!    and `manifest.json`, all in a staging directory put in place when the whole build
//!    succeeded ([`staging`]).
//!
//! Secrets never reach the boot partition, which any local user can read once it is mounted.

mod digest_memo;
mod edits;
pub mod formats;
mod image_digests;
mod images;
mod layers;
pub mod manifest;
mod nodes;
mod outputs;
mod reuse;
mod secrets;
pub mod staging;
pub mod state;
mod unchanged;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply;
use crate::artifacts::{self, Catalog, FetchedArtifact, Release};
use crate::inspect;
use crate::payload;
use crate::pki;
use crate::progress::Progress;
use crate::render::kubeadm;
use crate::source;
use crate::spec::{self, Role, Spec};

pub use images::{cluster_images, role_needs};
pub use layers::{disk_id, BuildPlan, NodeLayer, RoleLayer};
pub use manifest::Manifest;
pub use outputs::{before_reimage, NodeImage, NodeOutput, NodeOutputs, StagedFile};
pub use staging::cleanup_staging;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(
        "node {0} has Wi-Fi, but the base image has neither NetworkManager nor netplan to read \
         its connection; use Raspberry Pi OS (trixie) or Ubuntu Server for Raspberry Pi"
    )]
    NoWifiStack(String),
    #[error(transparent)]
    Artifacts(Box<artifacts::Error>),
    #[error(transparent)]
    Payload(#[from] payload::PayloadSetupError),
    #[error(transparent)]
    Apt(#[from] crate::apt::AptError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Inspect(#[from] inspect::InspectError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error("secrets: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("kubeadm configuration: {0}")]
    Kubeadm(#[from] kubeadm::KubeadmError),
    #[error("{image} has no cloud-init, which piforge needs to configure each node on first boot; use Raspberry Pi OS Lite trixie (2025-11-24 or later) or Ubuntu Server 24.04 for Raspberry Pi")]
    NoCloudInit { image: String },
    #[error("kubernetes.vip is set, but the artifact catalog names no kube-vip image for Kubernetes {version} (kube_vip_image in its [[release]])")]
    NoKubeVipImage { version: String },
    #[error("--node {0}: no node of that name in the spec")]
    UnknownNode(String),
    #[error("--token must look like abcdef.0123456789abcdef ([a-z0-9]{{6}}.[a-z0-9]{{16}})")]
    BadToken,
    #[error("{path}: {msg}")]
    Overlay { path: String, msg: String },
    #[error("--dry-run does not download: {0}; run `piforge fetch` first or pass --artifacts DIR")]
    DryRunNeedsDownload(String),
    #[error("the token in the secrets directory: {0}")]
    SecretsToken(spec::TokenError),
    #[error("{path}: {msg}")]
    State { path: String, msg: String },
    #[error("{node} is the only control plane of {cluster}, and the node that ran `kubeadm init`: rebuilding it alone would start a new, empty cluster (the other nodes would lose theirs); add a second control plane first, or pass --new-cluster if a new cluster is what you want")]
    OnlyControlPlane { node: String, cluster: String },
    #[error("{holder} is writing into {out}; wait for it to finish, or build into another --out")]
    OutDirBusy { out: String, holder: String },
    #[error("{dir} holds files piforge did not write ({files}); piforge replaces the whole output directory, so move them away or choose another --out")]
    ForeignFiles { dir: String, files: String },
    #[error("--base-url {0}: not an absolute URL (such as https://example.com/dist/ or file:///srv/dist/); Raspberry Pi Imager cannot fetch a relative one")]
    BadBaseUrl(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl From<artifacts::Error> for BuildError {
    fn from(e: artifacts::Error) -> Self {
        BuildError::Artifacts(Box::new(e))
    }
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub spec_path: PathBuf,
    /// A catalog file laid over the built-in `artifacts.toml` (`--catalog FILE`).
    pub catalog: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// Only these nodes (all when empty).
    pub nodes: Vec<String>,
    /// A token minted in the running cluster (`kubeadm token create`), for reimaging.
    pub token: Option<String>,
    /// Offline artifacts (overrides the spec's `artifacts:`).
    pub artifacts_dir: Option<PathBuf>,
    pub allow_unpinned: bool,
    pub mirror: Option<String>,
    pub cache_dir: PathBuf,
    pub epoch: i64,
    /// The wall clock, only to warn about an old bootstrap token.
    pub now: i64,
    /// Rebuilding the only control plane alone starts a new cluster: allowed only with this.
    pub new_cluster: bool,
    /// Nodes built at once (0: the number of CPUs).
    pub jobs: usize,
    /// The files made per node.
    pub outputs: NodeOutputs,
}

/// One node image written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltNode {
    pub name: String,
    pub role: Role,
    pub address: Option<String>,
    /// The node's image in the output directory: the raw one, or (without `--format img`) its
    /// compressed one.
    pub image: PathBuf,
    /// SHA-256 of that file.
    pub sha256: String,
    /// Size of the raw image.
    pub bytes: u64,
}

/// What a build did, and what to tell the user.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub nodes: Vec<BuiltNode>,
    pub sha256sums: PathBuf,
    pub admin_kubeconfig: PathBuf,
    /// `secrets/known_hosts`: every node's SSH host key, by name and fixed address.
    pub known_hosts: PathBuf,
    pub warnings: Vec<String>,
    /// The OS packages in the cards (every role gets the same), when there are any.
    pub packages: Option<crate::apt::CardPackages>,
    /// Commands to run in the cluster before flashing a reimaged node.
    pub before_flashing: Vec<String>,
    /// The recorded bootstrap token had expired and the build made a new one: the file in
    /// the secrets directory holding the command that creates it in the cluster.
    pub token_renewed: Option<PathBuf>,
    /// `dist/manifest.json` as written.
    pub manifest: Option<Manifest>,
    /// How each node's image was copied from its role's (reflink or sparse copy); not those taken
    /// unchanged from the build before ([`Self::taken`]).
    pub copies: Vec<crate::output::CopyKind>,
    /// The build's only node was made from the upstream image itself, all its layers written
    /// over it (no role image).
    pub from_base: bool,
    /// Of the reflinked node images' chunks (4 MiB), those still the role image's blocks,
    /// read from the role image ([`reuse`]); and all the node images' chunks.
    pub shared_chunks: (usize, usize),
    /// The node images whose digests were remembered from an earlier build of the same
    /// bytes, not taken ([`digest_memo`]).
    pub remembered: usize,
    /// The nodes whose files are those the build before left in the output directory, not
    /// made again ([`unchanged`]).
    pub taken: usize,
    /// One line per compressed format: its chunks compressed by this build, and all.
    pub compressed: Vec<String>,
    /// One line per role: the container images its cards carry and the bytes they add.
    pub images: Vec<String>,
}

/// Loads the spec with the artifact catalog's versions: the built-in catalog, with
/// `catalog_file` (`--catalog FILE`) laid over it when given.
pub fn load_spec(path: &Path, catalog_file: Option<&Path>) -> Result<(Spec, Catalog), BuildError> {
    let catalog = Catalog::load(catalog_file)?;
    let versions = catalog.supported_versions();
    let versions: Vec<&str> = versions.iter().map(|v| v.as_ref()).collect();
    let spec = spec::load(path, &versions)?;
    Ok((spec, catalog))
}

/// The release a spec builds: its Kubernetes version's, with the component versions of
/// `kubernetes.versions` in place of the catalog's.
pub fn spec_release(catalog: &Catalog, spec: &Spec) -> Result<Release, BuildError> {
    Ok(catalog.release_with(&spec.kubernetes.version, &spec.kubernetes.versions)?)
}

/// What phase 1 established: everything later phases need that the spec, the options and
/// the base image tell, with nothing written.
pub struct Validated {
    pub spec: Spec,
    pub release: Release,
    /// The decompressed base image (in the cache, or the input itself when raw).
    pub base: source::SourceImage,
    pub base_path: PathBuf,
    pub facts: inspect::Report,
    pub artifact_source: artifacts::ArtifactSource,
    /// The nodes to build, in spec order.
    pub nodes: Vec<String>,
    /// The node that runs `kubeadm init` in this build (see [`state::init_node`]).
    pub init_node: Option<String>,
    /// The cluster's recorded state, `None` before the first build.
    pub state: Option<state::ClusterState>,
    /// The nodes built now whose card replaces one the cluster already had (see
    /// [`state::rejoining`]): they remove their old Node and etcd member before joining.
    pub rejoining: Vec<String>,
    /// What the payload needs to know about the base's root filesystem.
    pub base_facts: payload::BaseFacts,
    /// The base's apt sources, keys and installed packages.
    pub base_apt: crate::apt::BaseApt,
    /// The SHA-256 of a raw base that has no expected digest, being taken on its own thread
    /// while the build goes on ([`Validated::finish_digest`] puts it in `base`).
    pending_digest: Option<PendingDigest>,
}

impl Validated {
    /// Waits for the base's SHA-256 when it is being taken on its own thread, and records it
    /// in `base.input_sha256`. Called before anything uses it (the node layers' instance-id,
    /// the manifest).
    pub fn finish_digest(&mut self) -> Result<(), BuildError> {
        if let Some(p) = self.pending_digest.take() {
            self.base.input_sha256 = Some(p.wait()?);
        }
        Ok(())
    }
}

/// The SHA-256 of a raw input that has no expected digest (nothing to stop the build for):
/// nothing needs it before the plan, so it is taken on its own thread, beside the rest of
/// phase 1 and phases 2 and 3 (the base's metadata read, the secrets, the artifacts verified,
/// the container images staged), instead of before them: a 2 GiB image is ~1.3 s of SHA-256
/// on one core. A raw input with an expected digest is still hashed first, and a mismatch
/// stops the build before anything is written. Dropped without [`PendingDigest::wait`] (the
/// build failed), it stops the hashing and waits for the thread.
struct PendingDigest {
    cancel: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<String, source::SourceError>>>,
}

impl PendingDigest {
    /// Hashes `path`, and remembers its digest in `cache` ([`source::memo`]) for the next
    /// build.
    fn start(path: &Path, cache: &Path, progress: Option<Arc<dyn Progress>>) -> PendingDigest {
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, p, cache) = (cancel.clone(), path.to_path_buf(), cache.to_path_buf());
        let thread = std::thread::spawn(move || {
            let before = std::fs::metadata(&p).map_err(|err| source::SourceError::Read {
                path: p.clone(),
                err,
            })?;
            let digest = source::sha256_file_cancellable(&p, &c, progress)?;
            source::memo::store(&cache, &p, &before, &digest);
            Ok(digest)
        });
        PendingDigest {
            cancel,
            thread: Some(thread),
        }
    }

    fn wait(mut self) -> Result<String, BuildError> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => Ok(r?),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => unreachable!("a pending digest is waited for once"),
        }
    }
}

impl Drop for PendingDigest {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

/// Phase 1: every check the spec, the options, the base image and the artifact sources
/// allow, before anything is written (the base image is decompressed into the cache, which
/// is not the user's tree).
pub fn validate(
    opts: &BuildOptions,
    progress: Option<Arc<dyn Progress>>,
) -> Result<Validated, BuildError> {
    let (spec, catalog) = load_spec(&opts.spec_path, opts.catalog.as_deref())?;
    // A file in the output directory that piforge did not write: refused before anything.
    staging::check_out_dir(&opts.out_dir)?;
    for n in &opts.nodes {
        if !spec.nodes.iter().any(|x| x.name == *n) {
            return Err(BuildError::UnknownNode(n.clone()));
        }
    }
    if let Some(t) = &opts.token {
        if !pki::is_valid_token(t) {
            return Err(BuildError::BadToken);
        }
    }
    let release = spec_release(&catalog, &spec)?;
    if spec.kubernetes.vip.is_some() && release.kube_vip_image().is_none() {
        return Err(BuildError::NoKubeVipImage {
            version: release.kubernetes().to_string(),
        });
    }
    let artifact_source = artifacts::ArtifactSource {
        dir: opts
            .artifacts_dir
            .clone()
            .or_else(|| spec.artifacts.clone()),
        lock: spec.spec_dir.join("piforge.lock"),
        allow_unpinned: opts.allow_unpinned,
        mirror: opts.mirror.clone(),
        update: false,
        cache_dir: opts.cache_dir.clone(),
    };
    // Offline artifacts must all be there (checked against the lock without writing it), and
    // the container images of an offline directory whole and as pinned.
    artifact_source.check_available(&release.artifacts())?;
    artifact_source.check_image_layouts(&images::cluster_images(&spec, &release))?;
    // And the pinned .debs the directory holds (a changed one is refused here, not after the
    // secrets are made).
    if let Some(dir) = &artifact_source.dir {
        crate::apt::check_offline_debs(&artifact_source.lock, dir)?;
    }

    let base_path = match &spec.image.source {
        spec::Source::Path(p) => p.clone(),
        spec::Source::Url(u) => {
            // The spec's checker requires a sha256 with a URL.
            let digest = spec.image.sha256.clone().unwrap_or_default();
            artifacts::fetch_image(
                u,
                &digest,
                &opts.cache_dir,
                opts.mirror.as_deref(),
                progress.as_deref(),
            )?
        }
    };
    let base = source::open_image(
        &base_path,
        &source::OpenOptions {
            sha256: spec.image.sha256.clone(),
            cache_dir: Some(opts.cache_dir.clone()),
            progress: progress.clone(),
            // A raw base with no expected digest is hashed on its own thread (PendingDigest).
            skip_raw_digest: true,
            ..Default::default()
        },
    )?;
    let pending_digest = base
        .input_sha256
        .is_none()
        .then(|| PendingDigest::start(&base.path, &opts.cache_dir, progress));
    let facts = inspect::inspect(&base_path, &base)?;
    if !facts.cloud_init.installed {
        return Err(BuildError::NoCloudInit {
            image: base_path.display().to_string(),
        });
    }
    let base_facts = payload::read_base_facts(&base.path)?;
    // image.pi5_4k_pages selects Raspberry Pi OS's 4K-page kernel: refused, at the key, on a
    // base that boots a kernel of its own (Ubuntu's and Debian's config.txt boot `vmlinuz`;
    // `kernel=kernel8.img` would name a file their boot partition does not have).
    if let Some(pos) = spec.image.pi5_4k_pages {
        if let Err(why) = payload::pi5_4k_pages_supported(&facts.boot.files) {
            return Err(BuildError::Spec(spec::SpecError::Invalid(vec![
                spec::Diagnostic {
                    file: opts.spec_path.display().to_string(),
                    pos,
                    message: format!("image.pi5_4k_pages: {why}"),
                },
            ])));
        }
    }
    // The time zone is in the embedded tz list (spec check); the base's own tzdata must have
    // it too, or cloud-init cannot set it on first boot. A base with no zoneinfo at all is
    // left to the embedded list.
    if payload::read_zone_in(&base.path, &spec.timezone)? == Some(false) {
        return Err(BuildError::Spec(spec::SpecError::Invalid(vec![
            spec::Diagnostic {
                file: opts.spec_path.display().to_string(),
                pos: spec.timezone_pos.unwrap_or(spec::Pos::START),
                message: format!(
                    "timezone: `{}` is not in the base image's {}/ (its tzdata is older or \
                     trimmed), so cloud-init could not set it on first boot; choose a zone \
                     the base has, or a base whose tzdata has it",
                    spec.timezone,
                    payload::ZONEINFO
                ),
            },
        ])));
    }
    let base_apt = crate::apt::read_base_image(&base.path)?;
    // A Wi-Fi node needs a network stack piforge can configure, known before any secret.
    if !base_facts.network_manager && !base_facts.netplan {
        if let Some(n) = spec.nodes.iter().find(|n| spec.node_wifi(n).is_some()) {
            return Err(BuildError::NoWifiStack(n.name.to_string()));
        }
    }
    // The site's overlays are read (and refused when unsafe) now, not after the secrets.
    for o in &spec.overlays {
        crate::plan::add_root_overlay(&mut crate::plan::Plan::new(opts.epoch), o).map_err(|e| {
            BuildError::Overlay {
                path: o.display().to_string(),
                msg: e.to_string(),
            }
        })?;
    }
    let nodes: Vec<String> = spec
        .nodes
        .iter()
        .filter(|n| opts.nodes.is_empty() || opts.nodes.iter().any(|w| *w == n.name))
        .map(|n| n.name.to_string())
        .collect();
    let state = state::load(&spec.spec_dir.join("secrets"))?;
    let control_planes: Vec<&str> = spec.control_planes().map(|n| &*n.name).collect();
    let init_node = state::init_node(
        state.as_ref(),
        &control_planes,
        !opts.nodes.is_empty(),
        &nodes,
        opts.new_cluster,
    )?;
    let rejoining = nodes
        .iter()
        .filter(|n| state::rejoining(state.as_ref(), !opts.nodes.is_empty(), opts.new_cluster, n))
        .cloned()
        .collect();
    Ok(Validated {
        spec,
        release,
        base,
        base_path,
        facts,
        artifact_source,
        nodes,
        init_node,
        state,
        rejoining,
        base_facts,
        base_apt,
        pending_digest,
    })
}

/// Phase 3: the release artifacts, verified (downloaded when missing from the cache).
fn inputs(
    v: &Validated,
    progress: Option<artifacts::ProgressFn<'_>>,
    report: &mut BuildReport,
) -> Result<Vec<FetchedArtifact>, BuildError> {
    let (arts, warnings) = v.artifact_source.release_artifacts(&v.release, progress)?;
    report.warnings.extend(warnings);
    Ok(arts)
}

/// Phase 3, OS packages: the pinned `.deb`s of what the base lacks (checked against the lock;
/// downloaded by their pinned URL when `download` and the cache lacks them), or none with a
/// warning when `piforge fetch` did not pin them: first boot then installs them with apt.
fn packages(
    v: &Validated,
    download: bool,
    warnings: &mut Vec<String>,
) -> Result<crate::apt::CardPackages, BuildError> {
    let src = &v.artifact_source;
    let pk = crate::apt::build_packages(
        &v.base_apt,
        &v.base_facts.missing_packages,
        &src.lock,
        &src.cache_dir,
        src.dir.as_deref(),
        src.mirror.clone(),
        download,
    )?;
    if !pk.unpinned.is_empty() && v.base_apt.sources.is_empty() {
        // `piforge fetch` has nowhere to take the .debs from: advising it would send the user
        // in a circle (fetch says the same).
        warnings.push(format!(
            "{}: the base image lists no apt source (/etc/apt/sources.list, \
             /etc/apt/sources.list.d) for `piforge fetch` to take the .debs from, so first boot \
             installs {} with apt and needs the network",
            pk.unpinned.join(", "),
            if pk.unpinned.len() == 1 { "it" } else { "them" },
        ));
    } else if !pk.unpinned.is_empty() {
        warnings.push(format!(
            "{} not pinned in {}: first boot installs {} with apt and needs the network; run `piforge fetch {}` to put the .debs in the cards",
            pk.unpinned.join(", "),
            src.lock.display(),
            if pk.unpinned.len() == 1 { "it" } else { "them" },
            v.spec.spec_path.display()
        ));
    }
    Ok(pk)
}

/// Builds the node images a spec describes: the five phases of the module docs.
pub fn build(
    opts: &BuildOptions,
    progress: Option<Arc<dyn Progress>>,
) -> Result<BuildReport, BuildError> {
    let mut report = BuildReport::default();
    let mut v = validate(opts, progress.clone())?;
    let secrets = secrets::ensure(&v, opts, &mut report)?;
    let arts = inputs(&v, progress.as_deref(), &mut report)?;
    // One build at a time per output directory, from its first write there to its last (the
    // output directory is made here: a build failing before leaves none). The image archives
    // are staged in it, so the lock comes first.
    let _out_lock = outputs::lock_out_dir(&opts.out_dir)?;
    let staged = images_input(&v, &arts, opts, true, &mut report.warnings)?;
    let debs = packages(&v, true, &mut report.warnings)?;
    v.finish_digest()?;
    let plan = layers::plan(&v, &secrets, &arts, &staged, &debs.debs, opts)?;
    report.images = images::summary(
        &staged,
        &v.spec,
        &v.release,
        &plan.roles.iter().map(|r| r.role).collect::<Vec<_>>(),
    );
    let added = manifest::Added {
        debs: manifest::deb_entries(&debs.debs),
        container_images: images::manifest_entries(&staged, &v.spec, &v.release),
    };
    if !debs.debs.is_empty() {
        report.packages = Some(debs);
    }
    outputs::apply(
        &v,
        &plan,
        &arts,
        added,
        opts,
        progress.as_deref(),
        &mut report,
    )?;
    Ok(report)
}

/// Phase 3 for container images: the cluster's images from `--artifacts DIR/images/` or the
/// blob store (as `piforge fetch` left them, checked against the lock), their archives
/// staged for the cards (sized only, on a dry run). A build pulls nothing: an image not
/// fetched is left to the nodes, with a warning.
fn images_input(
    v: &Validated,
    arts: &[FetchedArtifact],
    opts: &BuildOptions,
    write: bool,
    warnings: &mut Vec<String>,
) -> Result<images::StagedImages, BuildError> {
    let wanted = images::cluster_images(&v.spec, &v.release);
    let set = v
        .artifact_source
        .images(&wanted, artifacts::ImageFetch::Local)?;
    warnings.extend(set.warnings.iter().cloned());
    if !set.missing.is_empty() {
        let names: Vec<String> = set.missing.iter().map(|m| m.image.to_string()).collect();
        warnings.push(format!(
            "{} container image(s) are not in the cards and will be pulled on first boot ({}): {}",
            names.len(),
            match &v.artifact_source.dir {
                Some(d) => format!("no OCI layout under {}", d.join("images").display()),
                None => "run `piforge fetch` first to carry them".to_string(),
            },
            names.join(", ")
        ));
    }
    // The flannel manifest must run the images the card carries.
    if v.spec.kubernetes.cni == spec::Cni::Flannel {
        if let Some(a) = arts
            .iter()
            .find(|a| a.spec.name == artifacts::ArtifactName::Flannel)
        {
            let text = std::fs::read_to_string(&a.path).map_err(io_error(&a.path))?;
            for i in artifacts::manifest_images(&text) {
                if !v.release.versions().flannel_images.contains(&i) {
                    warnings.push(format!(
                        "{} names the image {i}, which the catalog does not list for flannel {}: it will be pulled on first boot",
                        a.spec.file_name,
                        v.release.versions().flannel
                    ));
                }
            }
        }
    }
    let store = v.artifact_source.blob_store()?;
    images::stage(&set.images, &store, &opts.out_dir, opts.epoch, write)
}

/// `build --dry-run`: phases 1 to 4 with nothing written. Secrets that do not exist yet are
/// made in a throwaway directory (so the plan has their sizes), the lock is not updated, and
/// nothing is downloaded: artifacts must be in the cache or the artifacts directory.
pub fn dry_run(opts: &BuildOptions) -> Result<(BuildPlan, Vec<String>), BuildError> {
    let v = validate(opts, None)?;
    let mut notes = Vec::new();
    let secrets_dir = v.spec.spec_dir.join("secrets");
    let scratch = tempfile::tempdir().map_err(io_error(Path::new("a temporary directory")))?;
    let mut secrets = if pki::secrets_exist(&secrets_dir) {
        pki::ensure_secrets(&secrets_dir, &secrets::options(&v, opts))?
    } else {
        notes.push(format!(
            "the cluster's secrets would be created in {}",
            secrets_dir.display()
        ));
        pki::ensure_secrets(&scratch.path().join("secrets"), &secrets::options(&v, opts))?
    };
    if secrets::needs_new_token(&v, opts, &secrets) {
        notes.push(format!(
            "the bootstrap token in {} has expired: a build would make a new one and write the \
             command that creates it in the cluster to {}",
            secrets_dir.display(),
            secrets_dir.join(pki::TOKEN_CREATE_FILE).display()
        ));
    }
    // Host keys that exist are read; missing ones are made in memory only.
    secrets.host_keys = pki::ensure_host_keys(
        &secrets.dir,
        &secrets::node_names(&v.spec),
        pki::HostKeyMode::InMemory,
    )?;
    // A scratch copy of the lock takes whatever an offline directory would record.
    let lock_copy = scratch.path().join("piforge.lock");
    if v.artifact_source.lock.exists() {
        std::fs::copy(&v.artifact_source.lock, &lock_copy)
            .map_err(io_error(&v.artifact_source.lock))?;
    }
    let mut src = v.artifact_source.clone();
    src.lock = lock_copy;
    if src.dir.is_some() {
        // Files from an offline directory would be copied into the cache: not on a dry run.
        src.cache_dir = scratch.path().join("cache");
    }
    let specs = v.release.artifacts();
    if src.dir.is_none() {
        if let Some(missing) = src.first_not_cached(&specs)? {
            return Err(BuildError::DryRunNeedsDownload(missing));
        }
    }
    let (arts, _) = src.release_artifacts(&v.release, None)?;
    for a in arts.iter().filter(|a| a.pin == artifacts::Pin::Unpinned) {
        notes.push(format!(
            "{} ({}) has no lock entry: a build would record its SHA-256 {} in {}",
            a.spec.name,
            a.path.display(),
            a.sha256,
            v.artifact_source.lock.display()
        ));
    }
    let mut src_v = v;
    src_v.artifact_source = src.clone();
    src_v.finish_digest()?;
    let mut image_notes = Vec::new();
    let staged = images_input(&src_v, &arts, opts, false, &mut image_notes)?;
    let debs = packages(&src_v, false, &mut image_notes)?;
    let plan = layers::plan(&src_v, &secrets, &arts, &staged, &debs.debs, opts)?;
    notes.extend(image_notes);
    notes.extend(images::summary(
        &staged,
        &src_v.spec,
        &src_v.release,
        &plan.roles.iter().map(|r| r.role).collect::<Vec<_>>(),
    ));
    Ok((plan, notes))
}

/// `piforge fetch SPEC`, OS packages: the base image of the spec is opened (downloaded and
/// decompressed into the cache as a build would), and the `.deb`s of the packages it lacks
/// are resolved against its own apt sources, verified, cached and pinned in `lock`
/// (see [`crate::apt::fetch`]). Returns the base's missing packages and what was fetched.
pub fn fetch_packages(
    spec: &Spec,
    lock: &Path,
    cache_dir: &Path,
    mirror: Option<String>,
    update: bool,
) -> Result<(Vec<String>, crate::apt::Fetched), BuildError> {
    let base_path = match &spec.image.source {
        spec::Source::Path(p) => p.clone(),
        spec::Source::Url(u) => {
            let digest = spec.image.sha256.clone().unwrap_or_default();
            artifacts::fetch_image(u, &digest, cache_dir, mirror.as_deref(), None)?
        }
    };
    let base = source::open_image(
        &base_path,
        &source::OpenOptions {
            sha256: spec.image.sha256.clone(),
            cache_dir: Some(cache_dir.to_path_buf()),
            ..Default::default()
        },
    )?;
    let facts = payload::read_base_facts(&base.path)?;
    let apt_base = crate::apt::read_base_image(&base.path)?;
    let fetched = crate::apt::fetch(
        &apt_base,
        &facts.missing_packages,
        &crate::apt::FetchOptions {
            cache_dir: cache_dir.to_path_buf(),
            lock_path: lock.to_path_buf(),
            mirror,
            update,
        },
    )?;
    Ok((facts.missing_packages, fetched))
}
