//! `piforge build`: one cluster spec and one upstream image in, one image per node out.
//!
//! The build runs in five phases, and nothing is written before the first two are through:
//!
//! 1. [`validate`]: the spec, the command-line options, the base image (opened, decompressed
//!    into the cache and inspected: it must have cloud-init) and where each release artifact
//!    will come from. A problem found here leaves no trace (no secrets, no lock entry).
//! 2. secrets: the cluster CA, token and admin credentials, made on the first build and
//!    reused after (`pki`).
//! 3. inputs: the release artifacts, verified against the lock (downloaded when missing).
//! 4. plan: the changes as data ([`BuildPlan`]): a common layer (the node payload), one layer
//!    per kubeadm role (CA, first-boot unit, pod network, the site's overlays) and one small
//!    layer per node (its kubeadm configuration, NoCloud seed and disk id). `--dry-run` stops
//!    here and prints it.
//! 5. apply: the common and role layers once per role, then each node's layer on a copy of
//!    its role's image; then `SHA256SUMS`.
//!
//! Secrets never reach the boot partition, which any local user can read once it is mounted.

pub mod formats;
mod layers;
mod outputs;
pub mod state;

use std::path::{Path, PathBuf};

use crate::apply;
use crate::artifacts::{self, Catalog, FetchedArtifact, Release};
use crate::inspect;
use crate::payload;
use crate::pki;
use crate::render::kubeadm;
use crate::source;
use crate::spec::{self, Role, Spec};

pub use layers::{disk_id, BuildPlan, NodeLayer, RoleLayer};
pub use outputs::before_reimage;

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
    /// The files to write per node (`--format`; `img` when empty is not allowed: the CLI
    /// defaults to `[Img]`). A `.img.bmap` is written beside them always.
    pub formats: Vec<formats::Format>,
    /// Compression threads (0: one per CPU). The outputs do not depend on it.
    pub threads: usize,
}

/// One node image written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltNode {
    pub name: String,
    pub role: Role,
    pub address: Option<String>,
    pub image: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// Whether the raw image stays in the output directory (`--format img`).
    pub raw_kept: bool,
    /// The node's other files: its `.img.bmap`, then its compressed images.
    pub outputs: Vec<formats::OutputFile>,
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
    /// Commands to run in the cluster before flashing a reimaged node.
    pub before_flashing: Vec<String>,
}

/// Loads the spec with the artifact catalog's versions.
pub fn load_spec(path: &Path) -> Result<(Spec, Catalog), BuildError> {
    let catalog = Catalog::builtin()?;
    let versions = catalog.supported_versions();
    let versions: Vec<&str> = versions.iter().map(|v| v.as_ref()).collect();
    let spec = spec::load(path, &versions)?;
    Ok((spec, catalog))
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
    /// What the payload needs to know about the base's root filesystem.
    pub base_facts: payload::BaseFacts,
}

/// Phase 1: every check the spec, the options, the base image and the artifact sources
/// allow, before anything is written (the base image is decompressed into the cache, which
/// is not the user's tree).
pub fn validate(
    opts: &BuildOptions,
    progress: Option<artifacts::ProgressFn<'_>>,
) -> Result<Validated, BuildError> {
    let (spec, catalog) = load_spec(&opts.spec_path)?;
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
    let release = catalog.release(&spec.kubernetes.version)?;
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
    // Offline artifacts must all be there (checked against the lock without writing it).
    artifact_source.check_available(&release.artifacts())?;

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
                progress,
            )?
        }
    };
    let base = source::open_image(
        &base_path,
        &source::OpenOptions {
            sha256: spec.image.sha256.clone(),
            cache_dir: Some(opts.cache_dir.clone()),
            ..Default::default()
        },
    )?;
    let facts = inspect::inspect(&base_path, &base)?;
    if !facts.cloud_init.installed {
        return Err(BuildError::NoCloudInit {
            image: base_path.display().to_string(),
        });
    }
    let base_facts = payload::read_base_facts(&base.path)?;
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
        base_facts,
    })
}

/// Phase 2: the cluster's secrets, made on the first build and read back after; and the
/// admin kubeconfig beside them.
fn secrets(
    v: &Validated,
    opts: &BuildOptions,
    report: &mut BuildReport,
) -> Result<pki::Secrets, BuildError> {
    let mut secrets =
        pki::ensure_secrets(&v.spec.spec_dir.join("secrets"), &secrets_options(v, opts))?;
    // Every node of the spec gets its host key now (not only those built), so known_hosts
    // lists the whole cluster.
    secrets.host_keys =
        pki::ensure_host_keys(&secrets.dir, &node_names(&v.spec), pki::HostKeyMode::Store)?;
    report.known_hosts =
        pki::write_known_hosts(&secrets.dir, &known_host_names(&v.spec), &secrets.host_keys)?;
    report.warnings.extend(secrets.warnings.iter().cloned());
    if opts.token.is_none() {
        report
            .warnings
            .extend(secrets.token_age_warning(opts.now, token_ttl_secs(&v.spec)));
    }
    // The first build records which node runs `kubeadm init`; a full build keeps it current.
    let dir = v.spec.spec_dir.join("secrets");
    if let Some(init) = &v.init_node {
        let want = state::ClusterState {
            cluster: v.spec.name.clone(),
            created: v.state.as_ref().map_or(opts.epoch, |s| s.created),
            init_node: init.clone(),
        };
        if v.state.as_ref() != Some(&want) && (v.state.is_none() || opts.nodes.is_empty()) {
            state::save(&dir, &want)?;
        }
    }
    report.admin_kubeconfig = pki::write_admin_kubeconfig(
        &secrets,
        &v.spec.name,
        &format!("https://{}", v.spec.control_plane_endpoint()),
    )?;
    Ok(secrets)
}

fn node_names(spec: &Spec) -> Vec<&str> {
    spec.nodes.iter().map(|n| n.name.as_str()).collect()
}

/// `(name, fixed address)` of every node, for known_hosts.
fn known_host_names(spec: &Spec) -> Vec<(&str, Option<String>)> {
    spec.nodes
        .iter()
        .map(|n| (n.name.as_str(), n.address.map(|a| a.addr.to_string())))
        .collect()
}

fn secrets_options(v: &Validated, opts: &BuildOptions) -> pki::SecretsOptions {
    pki::SecretsOptions {
        build_epoch: opts.epoch,
        token_ttl_secs: token_ttl_secs(&v.spec),
    }
}

fn token_ttl_secs(spec: &Spec) -> Option<u64> {
    let ttl = spec.kubernetes.token_ttl_duration().as_secs();
    (ttl > 0).then_some(ttl)
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

/// Builds the node images a spec describes: the five phases of the module docs.
pub fn build(
    opts: &BuildOptions,
    progress: Option<artifacts::ProgressFn<'_>>,
) -> Result<BuildReport, BuildError> {
    let mut report = BuildReport::default();
    let v = validate(opts, progress)?;
    let secrets = secrets(&v, opts, &mut report)?;
    let arts = inputs(&v, progress, &mut report)?;
    let plan = layers::plan(&v, &secrets, &arts, opts)?;
    outputs::apply(&v, &plan, opts, &mut report)?;
    Ok(report)
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
        pki::ensure_secrets(&secrets_dir, &secrets_options(&v, opts))?
    } else {
        notes.push(format!(
            "the cluster's secrets would be created in {}",
            secrets_dir.display()
        ));
        pki::ensure_secrets(&scratch.path().join("secrets"), &secrets_options(&v, opts))?
    };
    // Host keys that exist are read; missing ones are made in memory only.
    secrets.host_keys = pki::ensure_host_keys(
        &secrets.dir,
        &node_names(&v.spec),
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
    let plan = layers::plan(&v, &secrets, &arts, opts)?;
    Ok((plan, notes))
}
