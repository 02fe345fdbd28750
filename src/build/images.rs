//! The container images of a build: which ones each kubeadm role carries, their OCI archives
//! (written once per build into a staging directory beside the outputs, every blob verified
//! against its digest on the way), and the role-layer operations that put them, their list,
//! and the import unit into the root filesystem.
//!
//! Control planes carry kubeadm's whole list (kube-apiserver, kube-controller-manager,
//! kube-scheduler, etcd, kube-proxy, CoreDNS, pause), kube-vip's image when the spec has a
//! VIP, and flannel's two images; workers carry kube-proxy, pause, CoreDNS (its Deployment
//! may be scheduled on a worker) and flannel's. An image the build has no source for is left
//! out: the node pulls it on first boot (kubeadm's IfNotPresent policy), the online fallback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{io_error, BuildError};
use crate::artifacts::{FetchedImage, ImageNeeds, ImageSpec, Release};
use crate::oci::BlobStore;
use crate::payload::paths;
use crate::plan::{Content, Owner, Plan, RootOp};
use crate::render::kubeadm;
use crate::spec::{self, Spec};

/// What a node of `role` in `spec`'s cluster needs.
pub fn role_needs(spec: &Spec, role: kubeadm::Role) -> ImageNeeds {
    ImageNeeds {
        control_plane: role.is_control_plane(),
        flannel: spec.kubernetes.cni == spec::Cni::Flannel,
        vip: spec.kubernetes.vip.is_some(),
    }
}

/// Every image `spec`'s cluster runs (what `piforge fetch SPEC` pulls).
pub fn cluster_images(spec: &Spec, release: &Release) -> Vec<ImageSpec> {
    release.images_for(role_needs(spec, kubeadm::Role::InitControlPlane))
}

/// One image's archive, staged for the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedArchive {
    pub reference: String,
    /// The reference's parts (for the manifest and the SBOM).
    pub image: crate::oci::ImageRef,
    pub index_digest: String,
    pub file_name: String,
    /// The staged archive (it may not exist on a dry run).
    pub path: PathBuf,
    pub size: u64,
}

/// The images of a build: archives per image, and which each role gets.
#[derive(Debug, Default)]
pub struct StagedImages {
    /// Keeps the staging directory until the build ends.
    _dir: Option<tempfile::TempDir>,
    pub archives: BTreeMap<String, StagedArchive>,
}

impl StagedImages {
    /// The archives a node of `role` carries, in the catalog's order, and the images it will
    /// pull on first boot instead.
    pub fn for_role(
        &self,
        spec: &Spec,
        release: &Release,
        role: kubeadm::Role,
    ) -> (Vec<&StagedArchive>, Vec<String>) {
        let mut have = Vec::new();
        let mut pull = Vec::new();
        for i in release.images_for(role_needs(spec, role)) {
            let r = i.image.to_string();
            match self.archives.get(&r) {
                Some(a) => have.push(a),
                None => pull.push(r),
            }
        }
        (have, pull)
    }
}

/// Writes (or, with `write` false, only sizes) the archive of every image of `images` into a
/// staging directory under `out_dir`. Each blob is re-read from the store and verified.
pub fn stage(
    images: &[FetchedImage],
    store: &BlobStore,
    out_dir: &Path,
    epoch: i64,
    write: bool,
) -> Result<StagedImages, BuildError> {
    let dir = if write && !images.is_empty() {
        std::fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
        Some(
            tempfile::Builder::new()
                .prefix(".piforge-images.")
                .tempdir_in(out_dir)
                .map_err(io_error(out_dir))?,
        )
    } else {
        None
    };
    let root = dir.as_ref().map_or_else(
        || out_dir.join(".piforge-images"),
        |d| d.path().to_path_buf(),
    );
    let mut archives = BTreeMap::new();
    for i in images {
        let file_name = i.spec.image.archive_file_name();
        let path = root.join(&file_name);
        let size = crate::oci::archive_size(&i.parts);
        if write {
            let f = std::fs::File::create(&path).map_err(io_error(&path))?;
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, f);
            crate::oci::write_archive(&i.parts, store, &mut w, epoch)
                .map_err(crate::artifacts::Error::from)?;
            let f = w
                .into_inner()
                .map_err(|e| io_error(&path)(e.into_error()))?;
            f.sync_all().map_err(io_error(&path))?;
            let written = f.metadata().map_err(io_error(&path))?.len();
            if written != size {
                return Err(io_error(&path)(std::io::Error::other(format!(
                    "the archive has {written} bytes, {size} were planned"
                ))));
            }
        }
        archives.insert(
            i.spec.image.to_string(),
            StagedArchive {
                reference: i.spec.image.to_string(),
                image: i.spec.image.clone(),
                index_digest: i.parts.index_digest.clone(),
                file_name,
                path,
                size,
            },
        );
    }
    Ok(StagedImages {
        _dir: dir,
        archives,
    })
}

/// The role layer's image operations: the archives, their list (with the images of `pull`,
/// which the role needs and the card lacks, as comments), the import unit and script
/// (enabled). Nothing when the role carries no image. Returns the bytes added.
pub fn add_role_images(plan: &mut Plan, archives: &[&StagedArchive], pull: &[String]) -> u64 {
    if archives.is_empty() {
        return 0;
    }
    let owner = |mode| Owner {
        mode,
        uid: 0,
        gid: 0,
    };
    plan.root.push(RootOp::Mkdir {
        path: paths::IMAGES_DIR.to_string(),
        owner: owner(0o700),
        force: false,
    });
    let mut list = String::from(
        "# Written by piforge: the container images this card carries, imported by\n\
         # piforge-images.service on first boot. archive reference pinned-digest\n",
    );
    let mut bytes = 0;
    for a in archives {
        plan.root.push(RootOp::Write {
            path: format!("{}/{}", paths::IMAGES_DIR, a.file_name),
            content: Content::Host {
                path: a.path.clone(),
                size: a.size,
            },
            owner: owner(0o600),
        });
        list.push_str(&format!(
            "{} {} {}\n",
            a.file_name, a.reference, a.index_digest
        ));
        bytes += a.size;
    }
    for r in pull {
        list.push_str(&format!("{}{r}\n", paths::IMAGES_PULLED_MARKER));
    }
    let file = |path: &str| {
        crate::payload_files::builtin_file("first-boot", path)
            .map_or(Vec::new(), |f| f.data.to_vec())
    };
    let unit = paths::unit(paths::IMAGES_UNIT);
    for (path, data, mode) in [
        (paths::IMAGES_LIST.to_string(), list.into_bytes(), 0o644),
        (
            paths::IMAGES_SCRIPT.to_string(),
            file(paths::IMAGES_SCRIPT),
            0o755,
        ),
        (unit.clone(), file(&unit), 0o644),
    ] {
        bytes += data.len() as u64;
        plan.root.push(RootOp::Write {
            path,
            content: Content::Bytes(data),
            owner: owner(mode),
        });
    }
    let (link, target) = paths::wants_link(paths::IMAGES_UNIT);
    plan.root.push(RootOp::Symlink {
        path: link,
        target,
        owner: owner(0o777),
    });
    bytes
}

/// The manifest's entries for the images in the cards, sorted by reference, each with the spec
/// roles (of any node of the spec, built now or kept) whose cards carry it. Both control-plane
/// kubeadm roles carry the same images ([`role_needs`]), so the spec role says it.
pub fn manifest_entries(
    staged: &StagedImages,
    spec: &Spec,
    release: &Release,
) -> Vec<super::manifest::ImageEntry> {
    let mut roles: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in [spec::Role::ControlPlane, spec::Role::Worker] {
        if !spec.nodes.iter().any(|n| n.role == r) {
            continue;
        }
        let role = match r {
            spec::Role::ControlPlane => kubeadm::Role::InitControlPlane,
            spec::Role::Worker => kubeadm::Role::Worker,
        };
        for a in staged.for_role(spec, release, role).0 {
            roles
                .entry(&a.reference)
                .or_default()
                .push(r.as_str().to_string());
        }
    }
    staged
        .archives
        .values()
        .map(|a| {
            let image = &a.image;
            let mut r = roles.get(a.reference.as_str()).cloned().unwrap_or_default();
            r.sort();
            super::manifest::ImageEntry {
                name: format!("{}/{}", image.registry, image.repository),
                tag: image.is_tag().then(|| image.reference.clone()),
                reference: a.reference.clone(),
                digest: a.index_digest.clone(),
                url: image.manifest_url(&a.index_digest),
                archive: a.file_name.clone(),
                bytes: a.size,
                roles: r,
            }
        })
        .collect()
}

/// One line per role for the build summary and the dry run: what its cards carry.
pub fn summary(
    staged: &StagedImages,
    spec: &Spec,
    release: &Release,
    roles: &[kubeadm::Role],
) -> Vec<String> {
    roles
        .iter()
        .map(|&role| {
            let (have, pull) = staged.for_role(spec, release, role);
            let bytes: u64 = have.iter().map(|a| a.size).sum();
            let mut line = format!(
                "images: {}: {} in the card, {} added to the root filesystem",
                super::layers::role_key(role),
                have.len(),
                crate::size::human(bytes)
            );
            if !pull.is_empty() {
                line.push_str(&format!(
                    "; pulled at first boot (not in the cache or --artifacts DIR): {}",
                    pull.join(", ")
                ));
            }
            line
        })
        .collect()
}
