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
