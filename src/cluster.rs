//! `piforge build`: one cluster spec and one upstream image in, one image per node out.
//!
//! Per role (first control plane, other control planes, workers) the root filesystem is edited
//! once: the node payload, the cluster's CA (control planes), the first-boot kubeadm unit and
//! the spec's overlays. Per node, a copy of its role's image gets the node's kubeadm
//! configuration (root filesystem, mode 0600) and its NoCloud seed (boot partition). Secrets
//! never reach the boot partition, which any local user can read once it is mounted.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::apply;
use crate::artifacts::{self, Catalog, FetchedArtifact, Release};
use crate::customize::{self, ArtifactSource};
use crate::inspect;
use crate::payload;
use crate::pki;
use crate::plan::{BootOp, Content, Owner, Plan, RootOp};
use crate::render::{cloud_init, first_boot, kubeadm};
use crate::source;
use crate::spec::{self, Role, Spec};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Artifacts(Box<artifacts::Error>),
    #[error(transparent)]
    Setup(#[from] customize::PayloadSetupError),
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
    #[error("--node {0}: no node of that name in the spec")]
    UnknownNode(String),
    #[error("--token must look like abcdef.0123456789abcdef ([a-z0-9]{{6}}.[a-z0-9]{{16}})")]
    BadToken,
    #[error("the token in the secrets directory: {0}")]
    SecretsToken(spec::TokenError),
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
}

/// What a build did, and what to tell the user.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub nodes: Vec<BuiltNode>,
    pub sha256sums: PathBuf,
    pub admin_kubeconfig: PathBuf,
    pub warnings: Vec<String>,
    /// Commands to run in the cluster before flashing a reimaged node.
    pub before_flashing: Vec<String>,
}

/// The kubeadm role of each node: the first control plane inits, the others join.
fn kubeadm_role(spec: &Spec, node: &spec::Node) -> kubeadm::Role {
    match node.role {
        Role::Worker => kubeadm::Role::Worker,
        Role::ControlPlane if node.name == spec.first_control_plane().name => {
            kubeadm::Role::InitControlPlane
        }
        Role::ControlPlane => kubeadm::Role::JoinControlPlane,
    }
}

fn role_key(r: kubeadm::Role) -> &'static str {
    r.as_str()
}

const ROOT_FILE: Owner = Owner {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

fn root_write(plan: &mut Plan, path: &str, data: impl Into<Vec<u8>>, mode: u16) {
    plan.root.push(RootOp::Write {
        path: path.to_string(),
        content: Content::Bytes(data.into()),
        owner: Owner { mode, ..ROOT_FILE },
    });
}

/// Loads the spec with the artifact catalog's versions.
pub fn load_spec(path: &Path) -> Result<(Spec, Catalog), BuildError> {
    let catalog = Catalog::builtin()?;
    let versions = catalog.supported_versions();
    let versions: Vec<&str> = versions.iter().map(|v| v.as_ref()).collect();
    let spec = spec::load(path, &versions)?;
    Ok((spec, catalog))
}

/// Builds the node images a spec describes.
pub fn build(
    opts: &BuildOptions,
    progress: Option<artifacts::ProgressFn<'_>>,
) -> Result<BuildReport, BuildError> {
    let (spec, catalog) = load_spec(&opts.spec_path)?;
    for n in &opts.nodes {
        if !spec.nodes.iter().any(|x| x.name == *n) {
            return Err(BuildError::UnknownNode(n.clone()));
        }
    }
    let token = opts
        .token
        .as_deref()
        .map(spec::Token::parse)
        .transpose()
        .map_err(|_| BuildError::BadToken)?;
    let release = catalog.release(&spec.kubernetes.version)?;
    let mut report = BuildReport::default();

    // Secrets: made on the first build, reused after (so rebuilds are identical).
    let ttl = spec.kubernetes.token_ttl_duration().as_secs();
    let ttl_secs = (ttl > 0).then_some(ttl);
    let secrets = pki::ensure_secrets(
        &spec.spec_dir.join("secrets"),
        &pki::SecretsOptions {
            control_planes: spec.control_planes().count(),
            build_epoch: opts.epoch,
            token_ttl_secs: ttl_secs,
        },
    )?;
    report.warnings.extend(secrets.warnings.iter().cloned());
    if opts.token.is_none() {
        report
            .warnings
            .extend(secrets.token_age_warning(opts.now, ttl_secs));
    }
    let endpoint = spec.control_plane_endpoint();
    report.admin_kubeconfig =
        pki::write_admin_kubeconfig(&secrets, &spec.name, &format!("https://{endpoint}"))?;

    // Artifacts and the base image.
    let src = ArtifactSource {
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
    let (arts, warnings) = customize::release_artifacts(&release, &src, progress)?;
    report.warnings.extend(warnings);
    let image_path = match &spec.image.source {
        spec::Source::Path(p) => p.clone(),
        spec::Source::Url(u) => {
            // The spec's checker requires a sha256 with a URL.
            let digest = spec.image.sha256.clone().unwrap_or_default();
            fetch_image(u, &digest, opts, progress)?
        }
    };
    let img = source::open_image(
        &image_path,
        &source::OpenOptions {
            sha256: spec.image.sha256.clone(),
            cache_dir: Some(opts.cache_dir.clone()),
            ..Default::default()
        },
    )?;
    let base = inspect::inspect(&image_path, &img)?;
    if !base.cloud_init.installed {
        return Err(BuildError::NoCloudInit {
            image: image_path.display().to_string(),
        });
    }

    let cluster = kubeadm::ClusterParams {
        cluster_name: spec.name.clone(),
        kubernetes_version: spec.kubernetes.version.clone(),
        control_plane_endpoint: endpoint.clone(),
        pod_subnet: spec.kubernetes.pod_subnet,
        service_subnet: spec.kubernetes.service_subnet,
        token: match token {
            Some(t) => t,
            None => spec::Token::parse(&secrets.token).map_err(BuildError::SecretsToken)?,
        },
        token_ttl: spec::GoDuration::from_secs(ttl_secs.unwrap_or(0)),
        ca_cert_hash: secrets.discovery_hash(),
        cri_socket: "unix:///run/containerd/containerd.sock".into(),
        cni: spec.kubernetes.cni.into(),
    };
    cluster.validate()?;

    fs::create_dir_all(&opts.out_dir).map_err(|source| BuildError::Io {
        path: opts.out_dir.display().to_string(),
        source,
    })?;
    let work = WorkDir(opts.out_dir.join(".work"));
    fs::create_dir_all(&work.0).map_err(|source| BuildError::Io {
        path: work.0.display().to_string(),
        source,
    })?;

    let wanted: Vec<&spec::Node> = spec
        .nodes
        .iter()
        .filter(|n| opts.nodes.is_empty() || opts.nodes.iter().any(|w| n.name == *w))
        .collect();

    // One root filesystem per role.
    let mut role_images: BTreeMap<&'static str, (PathBuf, String)> = BTreeMap::new();
    for node in &wanted {
        let role = kubeadm_role(&spec, node);
        let key = role_key(role);
        if role_images.contains_key(key) {
            continue;
        }
        let plan = role_plan(
            &spec, &release, &arts, &img.path, &base, &secrets, &cluster, role, opts.epoch,
        )?;
        let path = work.0.join(format!("{key}.img"));
        apply::customize(&img.path, &path, &plan)?;
        let digest = plan_digest(&plan);
        role_images.insert(key, (path, digest));
    }

    // One image per node: its kubeadm configuration and its seed.
    for node in &wanted {
        let role = kubeadm_role(&spec, node);
        let (role_img, role_digest) = &role_images[role_key(role)];
        let mut plan = Plan::new(opts.epoch);
        plan.grow = crate::plan::Grow::Off;
        // Every card its own MBR disk id (PARTUUID prefix), and the references to it.
        retarget_disk_id(&mut plan, role_img, disk_id(&spec.name, &node.name))?;
        let np = kubeadm::NodeParams {
            name: node.name.to_string(),
            role,
            advertise_address: node.address.map(|a| a.addr.to_string()),
        };
        root_write(
            &mut plan,
            kubeadm::CONFIG_PATH,
            kubeadm::render_config(&cluster, &np),
            0o600,
        );
        let seed = cloud_init::seed(&spec, node, role_digest);
        for (name, data) in seed.files() {
            plan.boot.push(BootOp::Write {
                path: format!("/{name}"),
                content: Content::Bytes(data.as_bytes().to_vec()),
            });
        }
        let out = opts.out_dir.join(format!("{}.img", node.name));
        let done = apply::customize(role_img, &out, &plan)?;
        let sha256 = source::sha256_file(&out)?;
        report.nodes.push(BuiltNode {
            name: node.name.to_string(),
            role: node.role,
            address: node.address.map(|a| a.to_string()),
            image: out,
            sha256,
            bytes: done.image_bytes,
        });
        if opts.token.is_some() {
            report
                .before_flashing
                .push(format!("kubectl delete node {}", node.name));
            if node.role == Role::ControlPlane {
                report.before_flashing.push(format!(
                    "kubectl -n kube-system exec etcd-<another control plane> -- etcdctl --endpoints https://127.0.0.1:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/server.crt --key /etc/kubernetes/pki/etcd/server.key member remove <member id of {}>",
                    node.name
                ));
            }
        }
    }
    drop(work);

    // SHA256SUMS of every image in the output directory, sorted, as sha256sum writes it.
    let mut sums: BTreeMap<String, String> = BTreeMap::new();
    let sums_path = opts.out_dir.join("SHA256SUMS");
    if let Ok(old) = fs::read_to_string(&sums_path) {
        for l in old.lines() {
            if let Some((h, f)) = l.split_once("  ") {
                if opts.out_dir.join(f).exists() {
                    sums.insert(f.to_string(), h.to_string());
                }
            }
        }
    }
    for n in &report.nodes {
        sums.insert(format!("{}.img", n.name), n.sha256.clone());
    }
    let text: String = sums.iter().map(|(f, h)| format!("{h}  {f}\n")).collect();
    let mut f = crate::output::AtomicFile::create(&sums_path).map_err(|source| BuildError::Io {
        path: sums_path.display().to_string(),
        source,
    })?;
    f.file()
        .write_all(text.as_bytes())
        .and_then(|_| f.commit().map(|_| ()))
        .map_err(|source| BuildError::Io {
            path: sums_path.display().to_string(),
            source,
        })?;
    report.sha256sums = sums_path;
    Ok(report)
}

/// Downloads the upstream image into the artifact cache (resuming, verified against the
/// spec's sha256 before it is used) and returns its path there.
fn fetch_image(
    url: &str,
    sha256: &str,
    opts: &BuildOptions,
    progress: Option<artifacts::ProgressFn<'_>>,
) -> Result<PathBuf, BuildError> {
    let file_name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("image")
        .to_string();
    let spec = artifacts::ArtifactSpec {
        name: "image".into(),
        file_name,
        url: url.to_string(),
        checksum_url: None,
        checksum_kind: artifacts::ChecksumKind::Bare,
        kind: artifacts::ArtifactKind::Binary,
    };
    // A lock of one entry holding the spec's digest: the download is checked against it and
    // the cache answers later builds without the network.
    let lock_path = opts.cache_dir.join("images").join(format!("{sha256}.lock"));
    if let Some(d) = lock_path.parent() {
        fs::create_dir_all(d).map_err(|source| BuildError::Io {
            path: d.display().to_string(),
            source,
        })?;
    }
    let mut lock = artifacts::Lock::load(&lock_path)?;
    lock.insert(artifacts::LockEntry {
        name: spec.name.clone(),
        file: spec.file_name.clone(),
        url: spec.url.clone(),
        sha256: sha256.to_string(),
        size: 0,
    });
    lock.save(&lock_path)?;
    let mut o = artifacts::FetchOptions::new(&opts.cache_dir, &lock_path);
    o.mirror = opts.mirror.clone();
    o.progress = progress;
    let got = artifacts::fetch_artifacts(&[spec], &o)?;
    got.into_iter()
        .next()
        .map(|a| a.path)
        .ok_or_else(|| BuildError::Io {
            path: url.to_string(),
            source: std::io::Error::other("the download returned nothing"),
        })
}

/// A card's MBR disk id, derived from the cluster and node names (never 0): unique per node,
/// the same on every rebuild.
pub fn disk_id(cluster: &str, node: &str) -> u32 {
    let h = Sha256::digest(format!("piforge disk id\0{cluster}\0{node}"));
    match u32::from_le_bytes([h[0], h[1], h[2], h[3]]) {
        0 => 1,
        id => id,
    }
}

/// Gives the image a new MBR disk id and rewrites `PARTUUID=<old id>-` in cmdline.txt and
/// /etc/fstab to match. GPT images keep theirs.
fn retarget_disk_id(plan: &mut Plan, img: &Path, new: u32) -> Result<(), BuildError> {
    let image = crate::disk::Image::open(img).map_err(apply::ApplyError::from)?;
    let layout = image.layout();
    if layout.scheme != crate::disk::Scheme::Mbr {
        return Ok(());
    }
    plan.disk_id = Some(new);
    let (old, new) = (layout.disk_id.to_lowercase(), format!("{new:08x}"));
    let swap = |text: &str| {
        text.replace(&format!("PARTUUID={old}-"), &format!("PARTUUID={new}-"))
            .replace(
                &format!("PARTUUID={}-", old.to_uppercase()),
                &format!("PARTUUID={new}-"),
            )
    };
    let vol = image.boot_fs(plan.epoch).map_err(apply::ApplyError::from)?;
    if let Some(b) = vol
        .read_file("/cmdline.txt")
        .map_err(apply::ApplyError::from)?
    {
        let text = String::from_utf8_lossy(&b);
        let changed = swap(&text);
        if changed != text {
            plan.boot.push(BootOp::Write {
                path: "/cmdline.txt".into(),
                content: Content::Bytes(changed.into_bytes()),
            });
        }
    }
    let ext = image.root_fs().map_err(apply::ApplyError::from)?;
    if let Some(st) = ext.stat("/etc/fstab").map_err(apply::ApplyError::from)? {
        let text = String::from_utf8_lossy(
            &ext.read_file("/etc/fstab")
                .map_err(apply::ApplyError::from)?,
        )
        .into_owned();
        let changed = swap(&text);
        if changed != text {
            plan.root.push(RootOp::Write {
                path: "/etc/fstab".into(),
                content: Content::Bytes(changed.into_bytes()),
                owner: Owner {
                    mode: st.mode,
                    uid: st.uid,
                    gid: st.gid,
                },
            });
        }
    }
    Ok(())
}

/// The role images of a build: removed when the build ends, whether it succeeded or not.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A digest of a role plan's content, so that a node's instance-id changes with it.
fn plan_digest(plan: &Plan) -> String {
    let mut h = Sha256::new();
    for op in &plan.root {
        h.update(op.path().as_bytes());
        if let RootOp::Write {
            content: Content::Bytes(b),
            ..
        } = op
        {
            h.update(Sha256::digest(b));
        }
    }
    hex::encode(h.finalize())
}

#[allow(clippy::too_many_arguments)]
fn role_plan(
    spec: &Spec,
    release: &Release,
    arts: &[FetchedArtifact],
    raw: &Path,
    base: &inspect::Report,
    secrets: &pki::Secrets,
    cluster: &kubeadm::ClusterParams,
    role: kubeadm::Role,
    epoch: i64,
) -> Result<Plan, BuildError> {
    let mut plan = Plan::new(epoch);
    customize::node_payload(
        &mut plan,
        raw,
        release,
        arts,
        &payload::PayloadOptions::default(),
    )?;
    // cloud-init must find the seed on the boot partition.
    if !base.cloud_init.seed_on_boot_partition {
        root_write(
            &mut plan,
            cloud_init::NOCLOUD_SNIPPET_PATH,
            cloud_init::nocloud_snippet(&base.boot.label),
            0o644,
        );
    }
    // The first-boot kubeadm unit and script.
    root_write(
        &mut plan,
        first_boot::FIRST_BOOT_SCRIPT_PATH,
        first_boot::first_boot_script(role, cluster.cni),
        0o755,
    );
    let unit = format!(
        "{}/{}",
        crate::payload_files::UNIT_DIR,
        first_boot::FIRST_BOOT_UNIT_NAME
    );
    root_write(&mut plan, &unit, first_boot::first_boot_unit(), 0o644);
    plan.root.push(RootOp::Symlink {
        path: format!(
            "/etc/systemd/system/multi-user.target.wants/{}",
            first_boot::FIRST_BOOT_UNIT_NAME
        ),
        target: unit,
        owner: Owner {
            mode: 0o777,
            ..ROOT_FILE
        },
    });
    // The CA (and shared keys) on control planes, keys 0600.
    if role.is_control_plane() {
        for f in secrets.control_plane_pki() {
            root_write(
                &mut plan,
                &format!("/etc/kubernetes/pki/{}", f.path),
                f.contents.clone(),
                f.mode as u16,
            );
        }
    }
    // The pod network, patched to the pod subnet, applied by the first control plane.
    if role == kubeadm::Role::InitControlPlane && cluster.cni == kubeadm::Cni::Flannel {
        if let Some(a) = arts.iter().find(|a| a.spec.name == "flannel") {
            let text = fs::read_to_string(&a.path).map_err(|source| BuildError::Io {
                path: a.path.display().to_string(),
                source,
            })?;
            let patched = kubeadm::patch_flannel(&text, cluster.pod_subnet)?;
            root_write(&mut plan, first_boot::FLANNEL_MANIFEST_PATH, patched, 0o644);
        }
    }
    // The site's own overlays last, so they can override anything.
    for o in &spec.overlays {
        crate::plan::add_root_overlay(&mut plan, o).map_err(|e| BuildError::Io {
            path: o.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(plan)
}
