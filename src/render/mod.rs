//! Pure rendering: from a checked spec (and the cluster's public secrets) to the files
//! piforge generates, as text. No disk I/O here; `cluster` decides where each file goes.
//!
//! - [`cloud_init`]: the NoCloud seed (user-data, meta-data, network-config) and the
//!   cloud.cfg.d snippet that points cloud-init at it;
//! - [`kubeadm`]: the node's kubeadm configuration and the Flannel manifest patch;
//! - [`first_boot`]: the systemd unit and the script that run kubeadm on first boot
//!   (plain files under `overlays/first-boot/`);
//! - [`kube_vip`]: the kube-vip static pod that serves `kubernetes.vip` on control planes;
//! - [`kubeconfig`]: the admin kubeconfig;
//! - [`yaml`]: the one YAML writer all of them use.

pub mod cloud_init;
pub mod first_boot;
pub mod kube_vip;
pub mod kubeadm;
pub mod kubeconfig;
pub mod wifi;
pub mod yaml;

#[cfg(test)]
mod snapshots;
#[cfg(test)]
mod tests;
