//! Phase 5 of a build: applying the layers, and the files in the output directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

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
        .prefix(WORK_PREFIX)
        .tempdir_in(&opts.out_dir)
        .map_err(io_error(&opts.out_dir))?;
    let unfinished = unfinished_outputs(work.path());

    let mut role_images: BTreeMap<&'static str, PathBuf> = BTreeMap::new();
    for layer in &plan.roles {
        let key = role_key(layer.role);
        let path = work.path().join(format!("{key}.img"));
        let role_plan = plan.common.then(&layer.plan);
        apply::customize_with_mode(&v.base.path, &path, &role_plan, IMAGE_MODE)?;
        role_images.insert(key, path);
    }

    for node in &plan.nodes {
        let Some(role_img) = role_images.get(role_key(node.role)) else {
            continue;
        };
        let out = opts.out_dir.join(format!("{}.img", node.name));
        unfinished.output(&out);
        let done = apply::customize_with_mode(role_img, &out, &node.plan, IMAGE_MODE)?;
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
    unfinished.finish();
    Ok(())
}

/// Prefix of the work directory's name in the output directory.
const WORK_PREFIX: &str = ".work.";

/// What this build writes into the output directory, to remove if it fails or is interrupted
/// (Ctrl-C, SIGTERM): the work directory, and each node image as it is about to be written
/// (registered before writing; see [`crate::output::Unfinished`]). Nothing of a build that did
/// not finish stays (issue 12 item 9).
fn unfinished_outputs(work: &Path) -> crate::output::Unfinished {
    let u = crate::output::Unfinished::new();
    u.dir(work);
    u
}

/// Holds an exclusive lock on the output directory (`OUT/.piforge.lock`, `flock`) for a whole
/// build, so that two builds never write into one `--out` (issue 12 item 14). The lock file
/// holds the process id of the build that has it, for the other's message.
#[derive(Debug)]
pub struct OutDirLock(#[allow(dead_code)] fs::File);

/// Name of the lock file in the output directory.
pub const OUT_LOCK: &str = ".piforge.lock";

/// Locks `out` (creating it), or fails at once naming the build that holds it; then removes
/// what a build killed before its cleanup could run left there (its work directory and
/// temporary images), which no other build can be using while the lock is held.
pub(super) fn lock_out_dir(out: &Path) -> Result<OutDirLock, BuildError> {
    use std::io::{Read as _, Seek as _};
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    fs::create_dir_all(out).map_err(io_error(out))?;
    let path = out.join(OUT_LOCK);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        // A link planted at the lock's name is refused, not followed.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io_error(&path))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_error(&path)(e));
        }
        let mut holder = String::new();
        let _ = (&file).take(32).read_to_string(&mut holder);
        let holder = match holder.trim().parse::<u32>() {
            Ok(pid) => format!("another piforge build (process {pid})"),
            Err(_) => "another piforge build".to_string(),
        };
        return Err(BuildError::OutDirBusy {
            out: out.display().to_string(),
            holder,
        });
    }
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| writeln!(file, "{pid}"))
        .map_err(io_error(&path))?;
    remove_leftovers(out);
    Ok(OutDirLock(file))
}

/// Removes the work directories and temporary images of builds that were killed before
/// their cleanup ran (`kill -9`, a power cut). Only under the output directory's lock.
fn remove_leftovers(out: &Path) {
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(kind) = e.file_type() else { continue };
        if name.starts_with(WORK_PREFIX) && kind.is_dir() {
            let _ = fs::remove_dir_all(e.path());
        } else if crate::output::is_temp_name(&name) && !kind.is_dir() {
            let _ = fs::remove_file(e.path());
        }
    }
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
