//! Phase 5 of a build: applying the layers, and the files in the output directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::PathBuf;

use super::layers::{role_key, BuildPlan};
use super::{io_error, BuildError, BuildOptions, BuildReport, BuiltNode, Validated};
use crate::apply;
use crate::progress::{Progress, Task};
use crate::source;
use crate::spec::Role;

/// Node and role images hold the bootstrap token (and control planes the CA key): only their
/// owner may read them.
pub const IMAGE_MODE: u32 = 0o600;

/// Writes a role image per role in use, then each node's image from its role's, then
/// `SHA256SUMS`.
pub(super) fn apply(
    v: &Validated,
    plan: &BuildPlan,
    opts: &BuildOptions,
    progress: Option<&dyn Progress>,
    report: &mut BuildReport,
) -> Result<(), BuildError> {
    fs::create_dir_all(&opts.out_dir).map_err(io_error(&opts.out_dir))?;
    // The role images: in a directory made fresh for this build (0700, a name nobody can
    // plant a link at beforehand), removed when the build ends, whether it succeeded or not.
    let work = tempfile::Builder::new()
        .prefix(".work.")
        .tempdir_in(&opts.out_dir)
        .map_err(io_error(&opts.out_dir))?;

    let mut role_images: BTreeMap<&'static str, PathBuf> = BTreeMap::new();
    for layer in &plan.roles {
        let key = role_key(layer.role);
        let path = work.path().join(format!("{key}.img"));
        let role_plan = plan.common.then(&layer.plan);
        let task = Task::Payload(key);
        step(progress, task, &v.base.path, || {
            apply::customize_with_mode(&v.base.path, &path, &role_plan, IMAGE_MODE)
        })?;
        role_images.insert(key, path);
    }

    for node in &plan.nodes {
        let Some(role_img) = role_images.get(role_key(node.role)) else {
            continue;
        };
        let out = opts.out_dir.join(format!("{}.img", node.name));
        let done = step(progress, Task::Copy(&node.name), role_img, || {
            apply::customize_with_mode(role_img, &out, &node.plan, IMAGE_MODE)
        })?;
        let sha256 = source::sha256_file(&out)?;
        report.nodes.push(BuiltNode {
            name: node.name.clone(),
            role: node.spec_role,
            address: node.address.clone(),
            image: out,
            sha256,
            bytes: done.image_bytes,
        });
        if opts.token.is_some() {
            report
                .before_flashing
                .push(format!("kubectl delete node {}", node.name));
            if node.spec_role == Role::ControlPlane {
                report.before_flashing.push(format!(
                    "kubectl -n kube-system exec etcd-<another control plane> -- etcdctl --endpoints https://127.0.0.1:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/server.crt --key /etc/kubernetes/pki/etcd/server.key member remove <member id of {}>",
                    node.name
                ));
            }
        }
    }
    drop(work);
    report.sha256sums = write_sha256sums(opts, &report.nodes)?;
    Ok(())
}

/// Runs one step of the apply phase between `begin` and `finish` of `task`, its size that of
/// the image it starts from (the bytes it copies). The copy itself reports no position: the
/// step's bar shows its elapsed time and, once done, its throughput.
fn step<T>(
    progress: Option<&dyn Progress>,
    task: Task<'_>,
    from: &std::path::Path,
    run: impl FnOnce() -> Result<T, apply::ApplyError>,
) -> Result<T, BuildError> {
    let total = fs::metadata(from).map(|m| m.len()).ok();
    if let Some(p) = progress {
        p.begin(task, total);
    }
    let done = run()?;
    if let Some(p) = progress {
        if let Some(t) = total {
            p.advance(task, t);
        }
        p.finish(task);
    }
    Ok(done)
}

/// `SHA256SUMS` of every image in the output directory, sorted, as sha256sum writes it:
/// the entries of this build, and those of an earlier one whose file is still there.
fn write_sha256sums(opts: &BuildOptions, nodes: &[BuiltNode]) -> Result<PathBuf, BuildError> {
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
    for n in nodes {
        sums.insert(format!("{}.img", n.name), n.sha256.clone());
    }
    let text: String = sums.iter().map(|(f, h)| format!("{h}  {f}\n")).collect();
    let mut f = crate::output::AtomicFile::create(&sums_path).map_err(io_error(&sums_path))?;
    f.file()
        .write_all(text.as_bytes())
        .and_then(|_| f.commit().map(|_| ()))
        .map_err(io_error(&sums_path))?;
    Ok(sums_path)
}
