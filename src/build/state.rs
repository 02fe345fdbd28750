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
    /// Every node a build of this cluster has made a card for, so that a later `--node`
    /// build tells a reimage (the cluster still holds the old card's Node object, and for a
    /// control plane its etcd member) from a node added to the spec. `None` in a state file
    /// written before piforge recorded it: every node rebuilt alone then counts as a reimage
    /// (the cleanup finds nothing to remove for a node the cluster never had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
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

/// Whether the card of `node`, built now, replaces one the cluster already had: a partial
/// build (`--node`) of a cluster that exists, of a node an earlier build made a card for.
/// Such a card removes its old Node object and etcd member before joining (see
/// `kubeadm-first-boot`). A new cluster (`--new-cluster`) has no old nodes.
pub fn rejoining(
    state: Option<&ClusterState>,
    partial: bool,
    new_cluster: bool,
    node: &str,
) -> bool {
    match state {
        Some(s) if partial && !new_cluster => {
            s.nodes.as_ref().is_none_or(|n| n.iter().any(|x| x == node))
        }
        _ => false,
    }
}

/// What this build does to the state: `None` when it leaves it as it is.
///
/// - no state yet, or `--new-cluster`: a new record (this build's epoch, init node and nodes);
/// - a full build: the init node as [`init_node`] chose it (the recorded one while it is a
///   control plane of the spec), the creation time kept, the nodes now built;
/// - a partial build: the init node and creation time kept, the nodes built added.
pub fn next(
    state: Option<&ClusterState>,
    cluster: &str,
    epoch: i64,
    init_node: Option<&str>,
    built: &[String],
    partial: bool,
    new_cluster: bool,
) -> Option<ClusterState> {
    let want = match state {
        Some(s) if !new_cluster => {
            let nodes = if partial {
                s.nodes.clone().map(|mut n| {
                    for b in built {
                        if !n.contains(b) {
                            n.push(b.clone());
                        }
                    }
                    n
                })
            } else {
                Some(built.to_vec())
            };
            ClusterState {
                cluster: if partial {
                    s.cluster.clone()
                } else {
                    cluster.to_string()
                },
                created: s.created,
                init_node: match init_node {
                    Some(i) if !partial => i.to_string(),
                    _ => s.init_node.clone(),
                },
                nodes,
            }
        }
        _ => ClusterState {
            cluster: cluster.to_string(),
            created: epoch,
            init_node: init_node?.to_string(),
            nodes: Some(built.to_vec()),
        },
    };
    (state != Some(&want)).then_some(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(init: &str) -> ClusterState {
        ClusterState {
            cluster: "home".into(),
            created: 1_704_067_200,
            init_node: init.into(),
            nodes: Some(names(&["cp-1", "cp-2", "w-1"])),
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

    #[test]
    fn state_transitions() {
        let built = |v: &[&str]| names(v);
        // First build: a new record with every node built.
        let first = next(
            None,
            "home",
            100,
            Some("cp-1"),
            &built(&["cp-1", "w-1"]),
            false,
            false,
        )
        .unwrap();
        assert_eq!(first.init_node, "cp-1");
        assert_eq!(first.created, 100);
        assert_eq!(first.nodes, Some(built(&["cp-1", "w-1"])));
        // Nothing rejoins on a first build, not even with --node.
        assert!(!rejoining(None, true, false, "cp-1"));
        // A reimage of a node the cluster had: it rejoins; the state is unchanged.
        assert!(rejoining(Some(&first), true, false, "w-1"));
        assert!(rejoining(Some(&first), true, false, "cp-1"));
        assert_eq!(
            next(
                Some(&first),
                "home",
                200,
                None,
                &built(&["w-1"]),
                true,
                false
            ),
            None
        );
        // A control plane added to the spec later is new, not a rejoin; it is recorded.
        assert!(!rejoining(Some(&first), true, false, "cp-2"));
        let added = next(
            Some(&first),
            "home",
            200,
            None,
            &built(&["cp-2"]),
            true,
            false,
        )
        .unwrap();
        assert_eq!(added.nodes, Some(built(&["cp-1", "w-1", "cp-2"])));
        assert_eq!((added.created, added.init_node.as_str()), (100, "cp-1"));
        assert!(rejoining(Some(&added), true, false, "cp-2"));
        // A full build is not a reimage: every card is new, the init node inits again.
        assert!(!rejoining(Some(&added), false, false, "cp-1"));
        let full = next(
            Some(&added),
            "home",
            300,
            Some("cp-1"),
            &built(&["cp-1", "cp-2"]),
            false,
            false,
        )
        .unwrap();
        assert_eq!(full.nodes, Some(built(&["cp-1", "cp-2"])));
        assert_eq!(full.created, 100);
        // --new-cluster: a new record, nobody rejoins.
        assert!(!rejoining(Some(&full), true, true, "cp-1"));
        let new = next(
            Some(&full),
            "home",
            400,
            Some("cp-1"),
            &built(&["cp-1"]),
            true,
            true,
        )
        .unwrap();
        assert_eq!(
            (new.created, new.nodes.clone()),
            (400, Some(built(&["cp-1"])))
        );
        // A state file from before the node list: every node rebuilt alone rejoins, and the
        // file is left as it was by partial builds.
        let old: ClusterState =
            serde_json::from_str(r#"{"cluster":"home","created":1,"init_node":"cp-1"}"#).unwrap();
        assert!(rejoining(Some(&old), true, false, "anything"));
        assert_eq!(
            next(Some(&old), "home", 5, None, &built(&["w-9"]), true, false),
            None
        );
        // Its serialization has the list once there is one.
        let text = serde_json::to_string(&first).unwrap();
        assert!(text.contains(r#""nodes":["cp-1","w-1"]"#), "{text}");
        assert!(!serde_json::to_string(&old).unwrap().contains("nodes"));
    }
}
