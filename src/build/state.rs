//! What piforge remembers about a cluster between builds: `secrets/cluster-state.json`,
//! written by the first build beside the secrets it made.
//!
//! It answers one question a spec cannot: which node ran `kubeadm init`. Once a cluster
//! exists, rebuilding that node alone (`build --node NAME`, a reimage) must not run
//! `kubeadm init` again: a fresh etcd beside the surviving control planes, with the same CA,
//! would split the cluster. Such a node joins as a control plane instead; when it is the
//! only control plane, there is nothing to join and the rebuild is refused unless the user
//! asks for a new cluster (`--new-cluster`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io_error, BuildError};

/// The file's name in the secrets directory.
pub const FILE: &str = "cluster-state.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    /// The cluster's name when it was created.
    pub cluster: String,
    /// The build epoch of the first build (seconds since 1970).
    pub created: i64,
    /// The node whose card runs `kubeadm init`.
    pub init_node: String,
}

/// The state file of the secrets directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the state, `None` before the first build.
pub fn load(dir: &Path) -> Result<Option<ClusterState>, BuildError> {
    let p = path(dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&p)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| BuildError::State {
            path: p.display().to_string(),
            msg: e.to_string(),
        })
}

/// Writes the state (0600, atomically).
pub fn save(dir: &Path, state: &ClusterState) -> Result<(), BuildError> {
    let p = path(dir);
    let mut text = serde_json::to_string_pretty(state).map_err(|e| BuildError::State {
        path: p.display().to_string(),
        msg: e.to_string(),
    })?;
    text.push('\n');
    crate::pki::write_private_file(&p, text.as_bytes())?;
    Ok(())
}

/// Which node runs `kubeadm init` in this build, or `None` when none does; and the error
/// for a rebuild that would start a second cluster.
///
/// - no state (first build) or a full build: the recorded init node if it is still a control
///   plane of the spec, else the spec's first control plane;
/// - a partial build (`--node`, a reimage) of a cluster that exists: nobody inits; the
///   recorded init node, if rebuilt, joins as a control plane, which needs another control
///   plane in the spec; if it is the only one, refused unless `new_cluster`.
pub fn init_node(
    state: Option<&ClusterState>,
    control_planes: &[&str],
    partial: bool,
    building: &[String],
    new_cluster: bool,
) -> Result<Option<String>, BuildError> {
    let first = control_planes.first().map(|s| s.to_string());
    let recorded = state
        .map(|s| s.init_node.clone())
        .filter(|n| control_planes.contains(&n.as_str()));
    let Some(state) = state.filter(|_| partial) else {
        return Ok(recorded.or(first));
    };
    let init = recorded.or(first);
    match init {
        Some(n) if building.contains(&n) => {
            if new_cluster {
                return Ok(Some(n));
            }
            if control_planes.len() < 2 {
                return Err(BuildError::OnlyControlPlane {
                    node: n,
                    cluster: state.cluster.clone(),
                });
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(init: &str) -> ClusterState {
        ClusterState {
            cluster: "home".into(),
            created: 1_704_067_200,
            init_node: init.into(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_build_inits_the_first_control_plane() {
        let r = init_node(
            None,
            &["cp-1", "cp-2"],
            false,
            &names(&["cp-1", "cp-2", "w"]),
            false,
        );
        assert_eq!(r.unwrap().as_deref(), Some("cp-1"));
        // --node on a first build (no cluster yet): still the first control plane.
        let r = init_node(None, &["cp-1"], true, &names(&["cp-1"]), false);
        assert_eq!(r.unwrap().as_deref(), Some("cp-1"));
    }

    #[test]
    fn full_rebuild_keeps_the_recorded_init_node() {
        // cp-0 was added in front of cp-1 later: cp-1 still inits.
        let s = state("cp-1");
        let r = init_node(
            Some(&s),
            &["cp-0", "cp-1"],
            false,
            &names(&["cp-0", "cp-1"]),
            false,
        );
        assert_eq!(r.unwrap().as_deref(), Some("cp-1"));
        // The recorded node left the spec: the first control plane now.
        let r = init_node(Some(&s), &["cp-9"], false, &names(&["cp-9"]), false);
        assert_eq!(r.unwrap().as_deref(), Some("cp-9"));
    }

    #[test]
    fn reimaging_the_init_node_joins_when_other_control_planes_exist() {
        let s = state("cp-1");
        let r = init_node(
            Some(&s),
            &["cp-1", "cp-2", "cp-3"],
            true,
            &names(&["cp-1"]),
            false,
        );
        assert_eq!(r.unwrap(), None);
        // A control plane added later, or a worker, never inits.
        let r = init_node(Some(&s), &["cp-1", "cp-4"], true, &names(&["cp-4"]), false);
        assert_eq!(r.unwrap(), None);
    }

    #[test]
    fn reimaging_the_only_control_plane_is_refused_without_new_cluster() {
        let s = state("cp-1");
        let e = init_node(Some(&s), &["cp-1"], true, &names(&["cp-1"]), false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("cp-1") && msg.contains("--new-cluster"),
            "{msg}"
        );
        let r = init_node(Some(&s), &["cp-1"], true, &names(&["cp-1"]), true);
        assert_eq!(r.unwrap().as_deref(), Some("cp-1"));
        // Reimaging a worker of a one-control-plane cluster is fine.
        let r = init_node(Some(&s), &["cp-1"], true, &names(&["w-1"]), false);
        assert_eq!(r.unwrap(), None);
    }

    #[test]
    fn state_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        save(dir.path(), &state("cp-1")).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state("cp-1")));
        std::fs::write(path(dir.path()), "{\"cluster\": 1}").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE), "{e}");
    }
}
