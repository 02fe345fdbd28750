//! Every path the node payload and the build write in the root filesystem, defined once.
//!
//! The payload follows the upstream "without a package manager" layout (binaries in
//! `/usr/local/bin`, units in `/usr/local/lib/systemd/system`), so upstream documentation
//! applies to the nodes. `check` looks for these same paths.

/// Release binaries (kubeadm, kubelet, kubectl, containerd's, crictl).
pub const BIN_DIR: &str = "/usr/local/bin";
/// runc.
pub const SBIN_DIR: &str = "/usr/local/sbin";
/// The CNI plugins.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// The payload's systemd units.
pub const UNIT_DIR: &str = "/usr/local/lib/systemd/system";
/// The node's kubeadm configuration (mode 0600: it holds the bootstrap token).
pub const KUBEADM_CONFIG: &str = "/etc/piforge/kubeadm.yaml";
/// On a card that replaces a node the cluster already had (a reimage): who it replaces and
/// which API servers to ask to remove the old node's leftovers (no secret; see
/// `render::first_boot::rejoin_file`).
pub const REJOIN: &str = "/etc/piforge/rejoin";
/// The unit that runs `kubeadm init` or `join` on first boot, and its script.
pub const FIRST_BOOT_UNIT: &str = "piforge-kubeadm.service";
pub const FIRST_BOOT_SCRIPT: &str = "/usr/local/lib/piforge/kubeadm-first-boot";
/// The unit that installs the OS packages the base lacks on first boot.
pub const PACKAGES_UNIT: &str = "piforge-packages.service";
/// The first-boot progress report on the boot partition (as mounted on the node), readable
/// from any computer; it never holds a secret.
pub const STATUS_FILE: &str = "/boot/firmware/piforge-status.txt";
/// The OS packages `piforge-packages.service` installs on first boot.
pub const FIRST_BOOT_PACKAGES: &str = "/etc/piforge/first-boot-packages";
/// The pinned `.deb`s of those packages and their dependencies (`piforge fetch`), which
/// `install-packages` installs offline with dpkg, and their list (file, name, version, arch,
/// SHA-256, installed KiB; in dependency order).
pub const DEBS_DIR: &str = "/var/lib/piforge/debs";
pub const DEBS_MANIFEST: &str = "/etc/piforge/first-boot-debs";
/// The script `piforge-packages.service` runs.
pub const INSTALL_PACKAGES_SCRIPT: &str = "/usr/local/lib/piforge/install-packages";
/// The pod-network manifest the first control plane applies after `kubeadm init`.
pub const FLANNEL_MANIFEST: &str = "/usr/local/share/piforge/kube-flannel.yml";
/// Where kubeadm keeps (and finds pre-placed) cluster keys.
pub const KUBERNETES_PKI: &str = "/etc/kubernetes/pki";
/// kube-vip's static pod on control planes of a cluster with `kubernetes.vip`.
pub const KUBE_VIP_MANIFEST: &str = crate::render::kube_vip::MANIFEST_PATH;
/// cloud-init's pointer to the NoCloud seed on the boot partition, for bases without one.
pub const NOCLOUD_SNIPPET: &str = "/etc/cloud/cloud.cfg.d/99-piforge-nocloud.cfg";
/// A node's SSH host key (0600) and its public half (0644), from the secrets directory.
pub const SSH_HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
pub const SSH_HOST_KEY_PUB: &str = "/etc/ssh/ssh_host_ed25519_key.pub";
/// Which node [`SSH_HOST_KEY`] was written for, and its fingerprint (read by `check`).
pub const SSH_HOST_KEY_MARKER: &str = "/etc/piforge/ssh-host-key";
/// A Wi-Fi node's NetworkManager connection (0600: it holds the PSK).
pub const NM_WIFI_CONNECTION: &str =
    "/etc/NetworkManager/system-connections/piforge-wifi.nmconnection";
/// NetworkManager's radio state (pi-gen writes `WirelessEnabled=false` when built without
/// a Wi-Fi country).
pub const NM_STATE: &str = "/var/lib/NetworkManager/NetworkManager.state";
/// A Wi-Fi node's netplan file on bases without NetworkManager (0600: it holds the PSK).
pub const NETPLAN_WIFI: &str = "/etc/netplan/90-piforge-wifi.yaml";
/// The container images a card carries: one OCI archive per image
/// (`<registry>_<repository>_<tag>.tar`, see [`crate::oci::ImageRef::archive_file_name`]),
/// imported into containerd on first boot and then deleted.
pub const IMAGES_DIR: &str = "/var/lib/piforge/images";
/// The card's images, one line each: archive file name, reference, pinned digest.
pub const IMAGES_LIST: &str = "/etc/piforge/images.list";
/// A comment line of [`IMAGES_LIST`] naming an image the node needs but the card lacks (the
/// build had no source for it): kubeadm or kubelet pull it on first boot. `piforge check`
/// reads these; the import script skips them as comments.
pub const IMAGES_PULLED_MARKER: &str = "# pulled at first boot: ";
/// The unit that imports them before kubelet and kubeadm, and its script.
pub const IMAGES_UNIT: &str = "piforge-images.service";
pub const IMAGES_SCRIPT: &str = "/usr/local/lib/piforge/import-images";
/// containerd's configuration.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";

/// The path of a payload unit.
pub fn unit(name: &str) -> String {
    format!("{UNIT_DIR}/{name}")
}

/// The symlink `systemctl enable` makes for a payload unit wanted by multi-user.target, and
/// its target: `/etc/systemd/system/multi-user.target.wants/<unit>` -> `<UNIT_DIR>/<unit>`.
pub fn wants_link(unit_name: &str) -> (String, String) {
    wanted_by_link(unit_name, "multi-user.target")
}

/// As [`wants_link`], for another target.
pub fn wanted_by_link(unit_name: &str, target: &str) -> (String, String) {
    (
        format!("/etc/systemd/system/{target}.wants/{unit_name}"),
        unit(unit_name),
    )
}
