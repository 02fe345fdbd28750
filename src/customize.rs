//! `piforge customize`: turn [`CustomizeOptions`] into a [`Plan`], then apply it.

use std::path::{Path, PathBuf};

use crate::apply::{self, Applied, ApplyError};
use crate::bootcfg;
use crate::plan::{self, Grow, Plan, PlanError, RootOp};

/// What to change in an image, as the options of `piforge customize` give it (the binary
/// builds this from its command line; nothing here knows about clap). Every field is checked
/// by [`plan_from_options`], with messages naming the option.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomizeOptions {
    /// Trees copied into the root filesystem (`--root-overlay`).
    pub root_overlays: Vec<PathBuf>,
    /// Trees whose files are copied into the boot partition (`--boot-overlay`).
    pub boot_overlays: Vec<PathBuf>,
    /// Kernel command-line tokens to add (`--cmdline-add`).
    pub cmdline_add: Vec<String>,
    /// Kernel command-line tokens (or keys) to remove (`--cmdline-remove`).
    pub cmdline_remove: Vec<String>,
    /// `KEY=VALUE` config.txt settings (`--config`).
    pub config: Vec<String>,
    /// Paths removed from the root filesystem (`--rm`).
    pub remove: Vec<String>,
    /// `auto`, `off` or a size for the root partition (`--grow`).
    pub grow: String,
}

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
pub fn plan_from_options(a: &CustomizeOptions, epoch: i64) -> Result<Plan, CustomizeError> {
    let mut p = Plan::new(epoch);
    p.grow = a.grow.parse::<Grow>().map_err(CustomizeError::Grow)?;
    for r in &a.remove {
        let path = plan::check_image_path(r).map_err(CustomizeError::Remove)?;
        p.root.push(RootOp::Remove { path });
    }
    for d in &a.root_overlays {
        plan::add_root_overlay(&mut p, d)?;
    }
    for d in &a.boot_overlays {
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

// Where artifacts come from now lives in `artifacts`; re-exported for existing callers.
pub use crate::artifacts::{release_artifacts, ArtifactSource};

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
    let missing = crate::payload::missing_packages(&crate::fs::Ext4Files(&fs))?;
    drop(fs);
    crate::payload::add_payload(plan, release, arts, &missing, opts)?;
    Ok(())
}
