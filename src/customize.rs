//! `piforge customize`: turn command-line options into a [`Plan`], then apply it.

use std::path::Path;

use crate::apply::{self, Applied, ApplyError};
use crate::bootcfg;
use crate::cli::CustomizeArgs;
use crate::plan::{self, Grow, Plan, PlanError, RootOp};

#[derive(Debug, thiserror::Error)]
pub enum CustomizeError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("--config {0}")]
    Config(bootcfg::BootCfgError),
    #[error("--grow {0}")]
    Grow(String),
    #[error("--rm {0}")]
    Remove(PlanError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Builds the plan the options describe (no image is touched).
pub fn plan_from_args(a: &CustomizeArgs, epoch: i64) -> Result<Plan, CustomizeError> {
    let mut p = Plan::new(epoch);
    p.grow = a.grow.parse::<Grow>().map_err(CustomizeError::Grow)?;
    for r in &a.remove {
        let path = plan::check_image_path(r).map_err(CustomizeError::Remove)?;
        p.root.push(RootOp::Remove { path });
    }
    for d in &a.root_overlay {
        plan::add_root_overlay(&mut p, d)?;
    }
    for d in &a.boot_overlay {
        plan::add_boot_overlay(&mut p, d)?;
    }
    p.cmdline_add = a.cmdline_add.clone();
    p.cmdline_remove = a.cmdline_remove.clone();
    for c in &a.config {
        p.config
            .push(bootcfg::parse_setting(c).map_err(CustomizeError::Config)?);
    }
    Ok(p)
}

/// Applies a plan to the raw image, writing `out`.
pub fn run(raw: &Path, out: &Path, plan: &Plan) -> Result<Applied, CustomizeError> {
    Ok(apply::customize(raw, out, plan)?)
}

/// Where artifacts come from, for [`node_payload`] and `piforge fetch`.
#[derive(Debug, Clone)]
pub struct ArtifactSource {
    pub dir: Option<std::path::PathBuf>,
    pub lock: std::path::PathBuf,
    pub allow_unpinned: bool,
    pub mirror: Option<String>,
    pub update: bool,
    pub cache_dir: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadSetupError {
    #[error(transparent)]
    Artifacts(Box<crate::artifacts::Error>),
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
    #[error(transparent)]
    Image(#[from] crate::disk::ImageError),
    #[error("root partition: {0}")]
    Ext4(#[from] crate::fs::ext4::Ext4Error),
}

impl From<crate::artifacts::Error> for PayloadSetupError {
    fn from(e: crate::artifacts::Error) -> Self {
        PayloadSetupError::Artifacts(Box::new(e))
    }
}

/// The release artifacts: from the offline directory, else the cache (downloading what is
/// missing). Returns them with the warnings to show (unpinned digests recorded, ...).
pub fn release_artifacts(
    release: &crate::artifacts::Release,
    src: &ArtifactSource,
    progress: Option<crate::artifacts::ProgressFn<'_>>,
) -> Result<(Vec<crate::artifacts::FetchedArtifact>, Vec<String>), PayloadSetupError> {
    let arts = match &src.dir {
        Some(dir) => crate::artifacts::from_dir(release, dir, &src.lock, src.allow_unpinned)?,
        None => {
            let mut o = crate::artifacts::FetchOptions::new(&src.cache_dir, &src.lock);
            o.mirror = src.mirror.clone();
            o.update = src.update;
            o.allow_unpinned = src.allow_unpinned;
            o.progress = progress;
            crate::artifacts::fetch(release, &o)?
        }
    };
    let warnings = arts.iter().filter_map(|a| a.warning()).collect();
    Ok((arts, warnings))
}

/// Adds the Kubernetes node payload to a plan, reading which OS packages the base lacks from
/// the raw image `raw`.
pub fn node_payload(
    plan: &mut Plan,
    raw: &Path,
    release: &crate::artifacts::Release,
    arts: &[crate::artifacts::FetchedArtifact],
    opts: &crate::payload::PayloadOptions,
) -> Result<(), PayloadSetupError> {
    let fs = crate::disk::Image::open(raw)?.root_fs()?;
    let missing = crate::payload::missing_packages(&crate::inspect::Ext4Files(&fs))?;
    drop(fs);
    crate::payload::add_payload(plan, release, arts, &missing, opts)?;
    Ok(())
}
