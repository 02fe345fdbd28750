//! The `container-images` item of a node image piforge built: does the card carry its
//! container images (imported before kubelet on first boot: offline), or will the node pull
//! them from the registries on first boot?

use super::{item, CheckItem, Status};
use crate::fs::RootFiles;
use crate::payload::paths;

/// `None` on an image that is not a piforge node (no kubeadm configuration).
pub(super) fn container_images(fs: &dyn RootFiles) -> Result<Option<CheckItem>, String> {
    const ID: &str = "container-images";
    const TITLE: &str = "container images for first boot";
    let Some(list) = fs.read_string(paths::IMAGES_LIST)? else {
        if !fs.exists(paths::KUBEADM_CONFIG)? {
            return Ok(None);
        }
        return Ok(Some(item(
            ID,
            TITLE,
            Status::Warn,
            "images: pulled at first boot: the card carries none, so kubeadm and kubelet pull them from registry.k8s.io and ghcr.io (run `piforge fetch` before building to carry them)",
            paths::IMAGES_LIST,
        )));
    };
    let mut have = Vec::new();
    let mut lost = Vec::new();
    let mut pulled = Vec::new();
    for line in list.lines().map(str::trim) {
        if let Some(r) = line.strip_prefix(paths::IMAGES_PULLED_MARKER) {
            pulled.push(r.trim().to_string());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(file), Some(reference)) = (f.next(), f.next()) else {
            return Ok(Some(item(
                ID,
                TITLE,
                Status::Fail,
                format!(
                    "{} has a line without an archive and a reference: {line:?}",
                    paths::IMAGES_LIST
                ),
                paths::IMAGES_LIST,
            )));
        };
        if !file.contains('/') && fs.exists(&format!("{}/{file}", paths::IMAGES_DIR))? {
            have.push(reference.to_string());
        } else {
            lost.push(reference.to_string());
        }
    }
    Ok(Some(if !lost.is_empty() {
        item(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "images: {} in card, but the archives of {} are missing from {}",
                have.len(),
                lost.join(", "),
                paths::IMAGES_DIR
            ),
            paths::IMAGES_DIR,
        )
    } else if !pulled.is_empty() {
        item(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "images: {} in card, {} pulled at first boot (the build had no source for them: run `piforge fetch` before building to carry them), which needs the network: {}",
                have.len(),
                pulled.len(),
                pulled.join(", ")
            ),
            paths::IMAGES_LIST,
        )
    } else {
        item(
            ID,
            TITLE,
            Status::Pass,
            format!(
                "images: {} in card (offline): piforge-images.service imports them into containerd before kubelet and kubeadm run",
                have.len()
            ),
            paths::IMAGES_DIR,
        )
    }))
}
