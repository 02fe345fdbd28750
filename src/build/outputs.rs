//! Phase 5 of a build: applying the layers, and the files in the output directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::PathBuf;

use super::formats;
use super::layers::{role_key, BuildPlan};
use super::{io_error, BuildError, BuildOptions, BuildReport, BuiltNode, Validated};
use crate::apply;
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
        apply::customize_with_mode(&v.base.path, &path, &role_plan, IMAGE_MODE)?;
        role_images.insert(key, path);
    }

    let encoders = formats::Encoders::new(opts);
    let keep_img = opts.formats.contains(&formats::Format::Img);
    for node in &plan.nodes {
        let Some(role_img) = role_images.get(role_key(node.role)) else {
            continue;
        };
        // Without `--format img` the raw image is only the source of the other formats.
        let raw_dir = if keep_img { &opts.out_dir } else { work.path() };
        let out = raw_dir.join(format!("{}.img", node.name));
        let done = apply::customize_with_mode(role_img, &out, &node.plan, IMAGE_MODE)?;
        let sha256 = source::sha256_file(&out)?;
        let outputs = encoders.write_node(&out, &opts.out_dir, &node.name, IMAGE_MODE)?;
        if !keep_img {
            // Its formats are written: the raw image need not hold its room until the end.
            fs::remove_file(&out).map_err(io_error(&out))?;
        }
        report.nodes.push(BuiltNode {
            name: node.name.clone(),
            role: node.spec_role,
            address: node.address.clone(),
            image: match outputs.get(1) {
                Some(f) if !keep_img => f.path.clone(),
                _ => out,
            },
            sha256,
            bytes: done.image_bytes,
            raw_kept: keep_img,
            outputs,
        });
        if opts.token.is_some() {
            report
                .before_flashing
                .extend(before_reimage(&node.name, node.spec_role));
        }
    }
    drop(encoders);
    drop(work);
    formats::write_os_list(opts, &report.nodes)?;
    report.sha256sums = write_sha256sums(opts, &report.nodes)?;
    Ok(())
}

/// What to run in the cluster before a rebuilt node's card boots: the old Node object goes
/// (kubeadm refuses to join a name that is still Ready), and for a control plane its etcd
/// member (a new member of the same name is refused while the old one is listed).
pub fn before_reimage(node: &str, role: Role) -> Vec<String> {
    let mut v = vec![format!("kubectl delete node {node}")];
    if role == Role::ControlPlane {
        v.push(format!(
            "kubectl -n kube-system exec etcd-<another control plane> -- etcdctl --endpoints https://127.0.0.1:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/server.crt --key /etc/kubernetes/pki/etcd/server.key member remove <member id of {node}>"
        ));
    }
    v
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
        if n.raw_kept {
            sums.insert(format!("{}.img", n.name), n.sha256.clone());
        }
        for f in &n.outputs {
            sums.insert(f.file_name(), f.sha256.clone());
        }
    }
    let text: String = sums.iter().map(|(f, h)| format!("{h}  {f}\n")).collect();
    let mut f = crate::output::AtomicFile::create(&sums_path).map_err(io_error(&sums_path))?;
    f.file()
        .write_all(text.as_bytes())
        .and_then(|_| f.commit().map(|_| ()))
        .map_err(io_error(&sums_path))?;
    Ok(sums_path)
}
