use super::*;
use crate::bootcfg;
use crate::fs::root_files::tests::LinkFiles;
use crate::payload_files::{self, SwapOffOp};

const BOOKWORM_CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=5a7e0b1c-02 \
    rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

const CONFIG_TXT: &str = "dtparam=audio=on\ncamera_auto_detect=1\ndisplay_auto_detect=1\n\
    auto_initramfs=1\ndtoverlay=vc4-kms-v3d\nmax_framebuffers=2\ndisable_fw_kms_setup=1\n\
    arm_64bit=1\ndisable_overscan=1\narm_boost=1\n\n[cm4]\notg_mode=1\n\n[cm5]\n\
    dtoverlay=dwc2,dr_mode=host\n\n[all]\n";

const DPKG_STATUS: &str =
    "Package: base-files\nStatus: install ok installed\nArchitecture: arm64\n\
    Version: 12.4\n\nPackage: dpkg\nStatus: install ok installed\nArchitecture: arm64\n\
    Version: 1.21.22\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: arm64\n";

/// Raspberry Pi OS bookworm Lite as published: merged /usr, dphys-swapfile enabled, no
/// Kubernetes pieces, no iptables.
fn upstream() -> LinkFiles {
    LinkFiles::new()
        .link("/bin", "usr/bin")
        .link("/sbin", "usr/sbin")
        .link("/lib", "usr/lib")
        .dir("/dev")
        .file("/var/lib/dpkg/status", DPKG_STATUS)
        .file("/usr/lib/aarch64-linux-gnu/libc.so.6", "ELF")
        .file("/etc/os-release", "ID=debian\nVERSION_CODENAME=bookworm\n")
        .file("/etc/dphys-swapfile", "CONF_SWAPSIZE=512\n")
        .file(
            "/usr/lib/systemd/system/dphys-swapfile.service",
            "[Unit]\nDescription=swap\n",
        )
        .link(
            "/etc/systemd/system/multi-user.target.wants/dphys-swapfile.service",
            "/lib/systemd/system/dphys-swapfile.service",
        )
        .file("/usr/lib/systemd/system/ssh.service", "[Unit]\n")
        .link(
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
            "/lib/systemd/system/ssh.service",
        )
        .file(
            "/etc/modules",
            "# /etc/modules: kernel modules to load at boot time.\n",
        )
        .link("/etc/modules-load.d/modules.conf", "../modules")
        .file("/etc/sysctl.conf", "#net.ipv4.ip_forward=1\n")
        .link("/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
        .file("/usr/bin/ip", "ELF")
        .file("/usr/bin/mount", "ELF")
        .file("/usr/bin/nsenter", "ELF")
        .file("/usr/bin/touch", "ELF")
        .file("/usr/sbin/tc", "ELF")
        .file("/usr/sbin/ethtool", "ELF")
        .file("/etc/machine-id", "")
        .file(
            "/etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\n",
        )
}

fn upstream_boot() -> BootFiles {
    BootFiles {
        cmdline: Some(BOOKWORM_CMDLINE.to_string()),
        config: Some(CONFIG_TXT.to_string()),
        user_data: None,
    }
}

/// `upstream()` with piforge's payload applied from `payload_files`, plus the binaries a
/// release download would bring.
fn prepared() -> (LinkFiles, BootFiles) {
    let mut fs = upstream();
    for f in payload_files::k8s_overlay() {
        let text = if f.template {
            payload_files::render(f.text(), &[("PAUSE_IMAGE", "registry.k8s.io/pause:3.10.1")])
                .unwrap()
        } else {
            f.text().to_string()
        };
        fs = fs.file(f.path, &text);
    }
    for e in payload_files::enable_units() {
        fs = fs.link(&e.link_path(), &e.link_target());
    }
    for op in payload_files::swap_off_ops() {
        fs = match op {
            SwapOffOp::RemoveIfExists(p) => fs.remove(p),
            SwapOffOp::MaskUnit(_) => {
                let (link, target) = op.mask_link().unwrap();
                fs.link(&link, target)
            }
        };
    }
    for b in [
        "containerd",
        "containerd-shim-runc-v2",
        "ctr",
        "kubelet",
        "kubeadm",
        "kubectl",
        "crictl",
    ] {
        fs = fs.file(&format!("/usr/local/bin/{b}"), "ELF");
    }
    fs = fs.file("/usr/local/sbin/runc", "ELF");
    for p in ["bridge", "host-local", "loopback", "portmap", "dhcp"] {
        fs = fs.file(&format!("/opt/cni/bin/{p}"), "ELF");
    }
    for t in ["iptables", "ebtables", "conntrack"] {
        fs = fs.file(&format!("/usr/sbin/{t}"), "ELF");
    }
    fs = fs.file("/usr/bin/socat", "ELF");
    fs = fs.file(
        "/etc/piforge/kubeadm.yaml",
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n---\n\
         apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n",
    );
    // The card carries its container images.
    fs = fs
        .file(
            paths::IMAGES_LIST,
            "# comment\nregistry.k8s.io_pause_3.10.1.tar registry.k8s.io/pause:3.10.1 sha256:00\n",
        )
        .file(
            &format!("{}/registry.k8s.io_pause_3.10.1.tar", paths::IMAGES_DIR),
            "tar",
        );
    let mut boot = upstream_boot();
    boot.cmdline = Some(
        bootcfg::edit_cmdline(BOOKWORM_CMDLINE, &payload_files::cmdline_tokens(), &[]).unwrap(),
    );
    let mut settings = payload_files::config_settings();
    settings.extend(payload_files::pi5_4k_pages_settings());
    boot.config = Some(bootcfg::edit_config(CONFIG_TXT, &settings).unwrap());
    (fs, boot)
}

fn run(fs: &LinkFiles, boot: &BootFiles) -> Vec<CheckItem> {
    check(fs, boot).unwrap()
}

fn get<'a>(items: &'a [CheckItem], id: &str) -> &'a CheckItem {
    items
        .iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no item {id}"))
}

fn ids(items: &[CheckItem], status: Status) -> Vec<&'static str> {
    items
        .iter()
        .filter(|i| i.status == status)
        .map(|i| i.id)
        .collect()
}

#[test]
fn upstream_image_lists_what_is_missing() {
    let items = run(&upstream(), &upstream_boot());
    let text = crate::text::check(&items);
    assert_eq!(
        ids(&items, Status::Fail),
        vec![
            "cgroup-memory",
            "swap-off",
            "kernel-modules",
            "sysctl-ip-forward",
            "tools-required",
            "containerd",
            "containerd-config",
            "runc",
            "cni-plugins",
            "containerd-enabled",
            "kube-binaries",
            "kubelet-enabled",
            "kubeadm-dropin",
        ],
        "{text}"
    );
    assert_eq!(
        ids(&items, Status::Warn),
        vec!["sysctl-bridge-nf", "crictl-config", "pi5-page-size"],
        "{text}"
    );
    assert!(!exit_ok(&items));
    let reason = |id| get(&items, id).reason.clone();
    assert!(
        reason("cgroup-memory").contains("add cgroup_enable=memory"),
        "{text}"
    );
    assert!(reason("swap-off").contains("dphys-swapfile"), "{text}");
    assert!(reason("swap-off").contains("CONF_SWAPSIZE=512"), "{text}");
    assert!(
        reason("tools-required").contains("iptables (iptables)"),
        "{text}"
    );
    assert!(reason("tools-required").contains("crictl"), "{text}");
    assert!(
        reason("kernel-modules").contains("overlay, br_netfilter"),
        "{text}"
    );
    assert!(
        reason("kube-binaries").contains("kubelet, kubeadm, kubectl"),
        "{text}"
    );
    assert!(
        reason("containerd-enabled").contains("no containerd.service unit file"),
        "{text}"
    );
    // the ids are unique and kebab-case
    let mut all: Vec<&str> = items.iter().map(|i| i.id).collect();
    assert!(all.iter().all(|i| i
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), items.len());
}

#[test]
fn prepared_image_passes() {
    let (fs, boot) = prepared();
    let items = run(&fs, &boot);
    let text = crate::text::check(&items);
    assert_eq!(ids(&items, Status::Fail), Vec::<&str>::new(), "{text}");
    assert_eq!(ids(&items, Status::Warn), Vec::<&str>::new(), "{text}");
    assert!(exit_ok(&items));
    assert!(
        get(&items, "swap-off").reason.contains("Mechanism=none"),
        "{text}"
    );
    assert!(get(&items, "containerd-enabled").reason.contains(
        "/etc/systemd/system/multi-user.target.wants/containerd.service -> /usr/local/lib/systemd/system/containerd.service"
    ));
    assert_eq!(
        get(&items, "kubeadm-dropin").reason,
        "runs /usr/local/bin/kubelet"
    );
    assert_eq!(
        get(&items, "kernel-modules").looked_at,
        "/etc/modules-load.d/*.conf"
    );
}

/// The prepared tree with one change gives exactly one non-pass item, with this status.
fn only(fs: LinkFiles, boot: BootFiles, id: &str, status: Status) -> CheckItem {
    let items = run(&fs, &boot);
    let bad: Vec<&CheckItem> = items.iter().filter(|i| i.status != Status::Pass).collect();
    assert_eq!(bad.len(), 1, "{}", crate::text::check(&items));
    assert_eq!(
        (bad[0].id, bad[0].status),
        (id, status),
        "{}",
        crate::text::check(&items)
    );
    bad[0].clone()
}

/// Every item passes; returns `id`'s.
fn passing(fs: LinkFiles, boot: BootFiles, id: &str) -> CheckItem {
    let items = run(&fs, &boot);
    assert!(
        items.iter().all(|i| i.status == Status::Pass),
        "{}",
        crate::text::check(&items)
    );
    get(&items, id).clone()
}

#[test]
fn armhf_userland_fails() {
    let (fs, boot) = prepared();
    let fs = fs.file(
        "/var/lib/dpkg/status",
        &DPKG_STATUS.replace("arm64", "armhf"),
    );
    let i = only(fs, boot, "arch-arm64", Status::Fail);
    assert!(i.reason.contains("dpkg is armhf"), "{i:?}");
    // no dpkg database: the multiarch directory decides
    let fs = LinkFiles::new().file("/usr/lib/arm-linux-gnueabihf/libc.so.6", "ELF");
    assert_eq!(arch(&fs).unwrap().status, Status::Fail);
    let fs = LinkFiles::new().file("/usr/lib/aarch64-linux-gnu/libc.so.6", "ELF");
    assert_eq!(arch(&fs).unwrap().status, Status::Pass);
    assert_eq!(arch(&LinkFiles::new()).unwrap().status, Status::Warn);
}

#[test]
fn cgroup_tokens() {
    let (fs, mut boot) = prepared();
    boot.cmdline = Some(BOOKWORM_CMDLINE.into());
    let i = only(fs, boot.clone(), "cgroup-memory", Status::Fail);
    assert_eq!(i.looked_at, "cmdline.txt: cgroup_enable=memory");

    let (fs, _) = prepared();
    boot.cmdline = Some("root=x cgroup_enable=cpuset,memory cgroup_disable=memory\n".into());
    let i = only(fs, boot.clone(), "cgroup-memory", Status::Fail);
    assert_eq!(i.looked_at, "cgroup_disable=memory");

    let (fs, _) = prepared();
    boot.cmdline = Some("root=x cgroup_enable=memory systemd.unified_cgroup_hierarchy=0\n".into());
    only(fs, boot.clone(), "cgroup-v2", Status::Fail);

    let (fs, _) = prepared();
    boot.cmdline = None;
    let items = run(&fs, &boot);
    assert_eq!(get(&items, "cgroup-memory").status, Status::Fail);
    assert_eq!(get(&items, "cgroup-v2").status, Status::Warn);
}

#[test]
fn swap_conditions() {
    // masking undone: dphys-swapfile is enabled again
    let (fs, boot) = prepared();
    let fs = fs
        .remove("/etc/systemd/system/dphys-swapfile.service")
        .link(
            "/etc/systemd/system/multi-user.target.wants/dphys-swapfile.service",
            "/lib/systemd/system/dphys-swapfile.service",
        );
    let i = only(fs, boot.clone(), "swap-off", Status::Fail);
    assert!(i.reason.contains("dphys-swapfile"), "{i:?}");

    // trixie: rpi-swap with zram and no piforge drop-in
    let (fs, _) = prepared();
    let fs = fs
        .remove("/etc/rpi/swap.conf.d/90-piforge.conf")
        .file("/etc/rpi/swap.conf", "[Main]\nMechanism=zram\n")
        .remove("/etc/dphys-swapfile");
    let i = only(fs, boot.clone(), "swap-off", Status::Fail);
    assert!(i.reason.contains("Mechanism=zram"), "{i:?}");

    // the same, but kubelet tolerates swap
    let (fs, _) = prepared();
    let fs = fs
        .remove("/etc/rpi/swap.conf.d/90-piforge.conf")
        .file("/etc/rpi/swap.conf", "[Main]\nMechanism=zram\n")
        .file(
            "/var/lib/kubelet/config.yaml",
            "cgroupDriver: systemd\nfailSwapOn: false\n",
        );
    only(fs, boot, "swap-off", Status::Warn);
}

#[test]
fn kernel_modules_conditions() {
    let (fs, boot) = prepared();
    let i = only(
        fs.remove("/etc/modules-load.d/k8s.conf"),
        boot.clone(),
        "kernel-modules",
        Status::Fail,
    );
    assert!(i.reason.contains("overlay, br_netfilter"));
    // one of them in /etc/modules, the other missing
    let (fs, _) = prepared();
    let fs = fs
        .remove("/etc/modules-load.d/k8s.conf")
        .file("/etc/modules", "# comment\noverlay\n");
    let i = only(fs, boot.clone(), "kernel-modules", Status::Fail);
    assert!(
        i.reason.starts_with("not loaded at boot: br_netfilter;"),
        "{i:?}"
    );
    // a vendor file counts; an /etc file of the same name overrides it
    let (fs, _) = prepared();
    let fs = fs.remove("/etc/modules-load.d/k8s.conf").file(
        "/usr/lib/modules-load.d/k8s.conf",
        "overlay\nbr_netfilter\n",
    );
    assert_eq!(kernel_modules(&fs).unwrap().status, Status::Pass);
    let fs = fs.file("/etc/modules-load.d/k8s.conf", "# nothing\n");
    assert_eq!(kernel_modules(&fs).unwrap().status, Status::Fail);
}

#[test]
fn sysctl_order_and_spacing() {
    let (fs, boot) = prepared();
    // a later file turns forwarding off again
    let fs = fs.file("/etc/sysctl.d/99-zz-local.conf", "net.ipv4.ip_forward=0\n");
    let i = only(fs, boot.clone(), "sysctl-ip-forward", Status::Fail);
    assert_eq!(i.looked_at, "/etc/sysctl.d/99-zz-local.conf");
    // an earlier file cannot
    let (fs, _) = prepared();
    let fs = fs.file("/etc/sysctl.d/10-early.conf", "net.ipv4.ip_forward=0\n");
    assert_eq!(
        get(&run(&fs, &boot), "sysctl-ip-forward").status,
        Status::Pass
    );
    // slashes, a leading '-', no spaces; through Debian's 99-sysctl.conf link
    let (fs, _) = prepared();
    let fs = fs.remove("/etc/sysctl.d/99-kubernetes.conf").file(
        "/etc/sysctl.conf",
        "-net/ipv4/ip_forward=1\n  net.bridge.bridge-nf-call-iptables=1\n",
    );
    let i = only(fs, boot.clone(), "sysctl-bridge-nf", Status::Warn);
    assert!(
        i.reason
            .contains("net.bridge.bridge-nf-call-ip6tables not set"),
        "{i:?}"
    );
    // sysctl.conf without the 99-sysctl.conf link still counts, last
    let (fs, _) = prepared();
    let fs = fs
        .remove("/etc/sysctl.d/99-sysctl.conf")
        .file("/etc/sysctl.conf", "net.ipv4.ip_forward = 0\n");
    only(fs, boot, "sysctl-ip-forward", Status::Fail);
}

/// Kubernetes 1.33 and later no longer ask for ip, iptables, ethtool, tc (kubeadm), socat,
/// ebtables (1.31) or conntrack (1.32): a node without them passes; iptables stays required
/// for the CNI portmap plugin, touch is kubeadm's one warning.
#[test]
fn tools_are_what_current_kubeadm_and_the_cni_ask_for() {
    let (fs, boot) = prepared();
    let mut fs = fs;
    for t in [
        "/usr/bin/ip",
        "/usr/sbin/tc",
        "/usr/sbin/ethtool",
        "/usr/sbin/ebtables",
        "/usr/bin/socat",
        "/usr/sbin/conntrack",
    ] {
        fs = fs.remove(t);
    }
    let items = run(&fs, &boot);
    assert_eq!(get(&items, "tools-required").status, Status::Pass);
    assert_eq!(
        get(&items, "tools-required").reason,
        "found: mount, nsenter, crictl, iptables"
    );
    assert_eq!(get(&items, "tools-optional").status, Status::Pass);
    let no_touch = fs.clone().remove("/usr/bin/touch");
    let i = only(no_touch, boot.clone(), "tools-optional", Status::Warn);
    assert_eq!(i.reason, "missing: touch (coreutils)");
    let no_mount = fs.remove("/usr/bin/mount");
    let i = only(no_mount, boot, "tools-required", Status::Fail);
    assert_eq!(i.reason, "missing: mount (mount)");
}

#[test]
fn tools_and_cloud_init_packages() {
    let (fs, boot) = prepared();
    let fs = fs.remove("/usr/sbin/iptables");
    let i = only(fs, boot.clone(), "tools-required", Status::Fail);
    assert_eq!(i.reason, "missing: iptables (iptables)");

    let (fs, mut boot) = prepared();
    let fs = fs.remove("/usr/sbin/iptables").remove("/usr/bin/touch");
    boot.user_data = Some(
        "#cloud-config\nhostname: node1\npackages:\n  - iptables\n  - [coreutils, 9.7]\nruncmd:\n  - [ls]\n"
            .into(),
    );
    // No apt source at all: neither fetch nor the node can get them, and the WARN says what
    // to change.
    let items = run(&fs, &boot);
    let req = get(&items, "tools-required");
    assert_eq!(req.status, Status::Warn);
    assert!(
        req.reason.contains("the image lists no apt source")
            && req.reason.contains("`overlays:` in cluster.yaml"),
        "{req:?}"
    );
    let fs = fs.file(
        "/etc/apt/sources.list",
        "deb http://deb.debian.org/debian trixie main\n",
    );
    let items = run(&fs, &boot);
    let req = get(&items, "tools-required");
    assert_eq!(req.status, Status::Warn);
    assert_eq!(
        req.reason,
        "iptables (iptables) installed on first boot (by cloud-init or piforge-packages.service \
         with apt; needs network); to carry them in the card, run `piforge fetch` on your \
         cluster.yaml before `piforge build` (it pins their .debs from the base's apt sources)"
    );
    // touch, kubeadm's one optional tool, from cloud-init's packages: installed on first boot.
    let opt = get(&items, "tools-optional");
    assert_eq!(opt.status, Status::Warn);
    assert!(
        opt.reason
            .contains("touch (coreutils) installed on first boot"),
        "{opt:?}"
    );
    assert!(exit_ok(&items));

    // piforge's list with the card's .debs: offline; a listed .deb missing from the card: apt.
    let (fs, boot) = prepared();
    let fs = fs
        .remove("/usr/sbin/iptables")
        .file("/etc/piforge/first-boot-packages", "iptables # why\n")
        .file(
            "/etc/piforge/first-boot-debs",
            "# FILE NAME\nlibx_1_arm64.deb libx 1 arm64 00 1\niptables_1_arm64.deb iptables 1 arm64 00 2\n",
        )
        .file("/var/lib/piforge/debs/libx_1_arm64.deb", "!<arch>")
        .file("/var/lib/piforge/debs/iptables_1_arm64.deb", "!<arch>");
    // Nothing is left to the network: a PASS.
    let req = passing(fs.clone(), boot.clone(), "tools-required");
    assert_eq!(
        req.reason,
        "iptables (iptables) installed on first boot from the card's 2 .debs in /var/lib/piforge/debs with dpkg (piforge-packages.service; no network needed)"
    );
    let fs = fs.remove("/var/lib/piforge/debs/libx_1_arm64.deb").file(
        "/etc/apt/sources.list.d/debian.sources",
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\n",
    );
    let req = only(fs, boot, "tools-required", Status::Warn);
    assert!(req.reason.contains("with apt; needs network"), "{req:?}");

    assert_eq!(
        cloud_config_packages(Some("#cloud-config\npackages: [iptables, \"socat\"]\n")),
        vec!["iptables", "socat"]
    );
    assert_eq!(
        cloud_config_packages(Some(
            "#cloud-config\npackages:\n- a # c\n- b=1.0\nusers: []\n- x\n"
        )),
        vec!["a", "b"]
    );
    assert!(cloud_config_packages(Some("#!/bin/sh\npackages:\n  - iptables\n")).is_empty());
}

#[test]
fn containerd_conditions() {
    let (fs, boot) = prepared();
    only(
        fs.remove("/usr/local/bin/containerd"),
        boot.clone(),
        "containerd",
        Status::Fail,
    );

    let (fs, _) = prepared();
    let cfg = "/etc/containerd/config.toml";
    let rendered = fs.read_string(cfg).unwrap().unwrap();
    let off = rendered.replace("SystemdCgroup = true", "SystemdCgroup = false");
    only(
        fs.file(cfg, &off),
        boot.clone(),
        "containerd-config",
        Status::Fail,
    );
    let (fs, _) = prepared();
    let commented = rendered.replace("SystemdCgroup = true", "# SystemdCgroup = true");
    only(
        fs.file(cfg, &commented),
        boot.clone(),
        "containerd-config",
        Status::Fail,
    );
    let (fs, _) = prepared();
    let raw = payload_files::containerd_config(2).text();
    let i = only(
        fs.file(cfg, raw),
        boot.clone(),
        "containerd-config",
        Status::Fail,
    );
    assert!(i.reason.contains("unrendered"));
    let (fs, _) = prepared();
    only(
        fs.remove(cfg),
        boot.clone(),
        "containerd-config",
        Status::Fail,
    );
    // the 1.7 (version 2) config passes too
    let (fs, _) = prepared();
    let v2 = payload_files::render(
        payload_files::containerd_config(1).text(),
        &[("PAUSE_IMAGE", "p:1")],
    )
    .unwrap();
    assert_eq!(
        get(&run(&fs.file(cfg, &v2), &boot), "containerd-config").status,
        Status::Pass
    );

    let (fs, _) = prepared();
    only(
        fs.remove("/usr/local/sbin/runc"),
        boot.clone(),
        "runc",
        Status::Fail,
    );
    let (fs, _) = prepared();
    let i = only(
        fs.remove("/opt/cni/bin/loopback"),
        boot.clone(),
        "cni-plugins",
        Status::Fail,
    );
    assert_eq!(i.reason, "missing: loopback");

    let (fs, _) = prepared();
    only(
        fs.remove("/etc/crictl.yaml"),
        boot.clone(),
        "crictl-config",
        Status::Warn,
    );
    let (fs, _) = prepared();
    let fs = fs.file(
        "/etc/crictl.yaml",
        "runtime-endpoint: unix:///run/crio/crio.sock\n",
    );
    only(fs, boot.clone(), "crictl-config", Status::Warn);
}

#[test]
fn unit_enablement() {
    let wants = "/etc/systemd/system/multi-user.target.wants/containerd.service";
    let (fs, boot) = prepared();
    let i = only(
        fs.remove(wants),
        boot.clone(),
        "containerd-enabled",
        Status::Fail,
    );
    assert!(i.reason.contains("is not enabled"), "{i:?}");
    // a link into another target counts
    let (fs, _) = prepared();
    let fs = fs.remove(wants).link(
        "/etc/systemd/system/kubernetes.target.wants/containerd.service",
        "/usr/local/lib/systemd/system/containerd.service",
    );
    assert_eq!(
        get(&run(&fs, &boot), "containerd-enabled").status,
        Status::Pass
    );
    // a dangling link (the unit file is somewhere else)
    let (fs, _) = prepared();
    let fs = fs
        .remove("/usr/local/lib/systemd/system/containerd.service")
        .file("/etc/systemd/system/containerd.service", "[Unit]\n");
    let i = only(fs, boot.clone(), "containerd-enabled", Status::Fail);
    assert!(i.reason.contains("does not lead to a unit file"), "{i:?}");
    assert_eq!(i.looked_at, wants);
    // masked
    let (fs, _) = prepared();
    let fs = fs.link("/etc/systemd/system/kubelet.service", "/dev/null");
    let i = only(fs, boot.clone(), "kubelet-enabled", Status::Fail);
    assert!(i.reason.contains("masked"));
    // no unit file at all, the link dangles
    let (fs, _) = prepared();
    let fs = fs.remove("/usr/local/lib/systemd/system/kubelet.service");
    only(fs, boot, "kubelet-enabled", Status::Fail);
}

#[test]
fn kubelet_conditions() {
    let (fs, boot) = prepared();
    let i = only(
        fs.remove("/usr/local/bin/kubeadm"),
        boot.clone(),
        "kube-binaries",
        Status::Fail,
    );
    assert_eq!(i.reason, "missing: kubeadm");

    let dropin = "/usr/local/lib/systemd/system/kubelet.service.d/10-kubeadm.conf";
    let (fs, _) = prepared();
    only(
        fs.remove(dropin),
        boot.clone(),
        "kubeadm-dropin",
        Status::Fail,
    );
    // the packaged drop-in with the packaged path, kubelet installed in /usr/local/bin
    let (fs, _) = prepared();
    let text = fs.read_string(dropin).unwrap().unwrap();
    let fs = fs.file(
        dropin,
        &text.replace("/usr/local/bin/kubelet", "/usr/bin/kubelet"),
    );
    let i = only(fs, boot.clone(), "kubeadm-dropin", Status::Fail);
    assert_eq!(
        i.reason,
        "ExecStart runs /usr/bin/kubelet, which is not in the image"
    );
    // a drop-in in /etc takes precedence
    let (fs, _) = prepared();
    let fs = fs.file(
        "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
        "[Service]\nExecStart=\nExecStart=/usr/local/bin/kubelet\n",
    );
    let i = only(fs, boot, "kubeadm-dropin", Status::Fail);
    assert!(i.reason.contains("$KUBELET_KUBEADM_ARGS"));
}

#[test]
fn identity_conditions() {
    let (fs, boot) = prepared();
    let fs = fs.file("/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    only(fs, boot.clone(), "machine-id", Status::Fail);
    let (fs, _) = prepared();
    assert_eq!(
        get(
            &run(&fs.file("/etc/machine-id", "uninitialized\n"), &boot),
            "machine-id"
        )
        .status,
        Status::Pass
    );

    let (fs, _) = prepared();
    let fs = fs
        .file("/etc/ssh/ssh_host_ed25519_key", "KEY")
        .file("/etc/ssh/ssh_host_ed25519_key.pub", "PUB");
    let i = only(fs, boot.clone(), "ssh-host-keys", Status::Fail);
    assert!(i
        .reason
        .contains("ssh_host_ed25519_key, ssh_host_ed25519_key.pub"));

    let (fs, _) = prepared();
    let fs = fs.file(
        "/var/lib/dbus/machine-id",
        "0123456789abcdef0123456789abcdef\n",
    );
    only(fs, boot.clone(), "dbus-machine-id", Status::Warn);
    // Debian links it to /etc/machine-id
    let (fs, _) = prepared();
    let fs = fs.link("/var/lib/dbus/machine-id", "/etc/machine-id");
    assert_eq!(
        get(&run(&fs, &boot), "dbus-machine-id").status,
        Status::Pass
    );
}

#[test]
fn pi5_page_size_sections() {
    let (fs, mut boot) = prepared();
    boot.config = Some(CONFIG_TXT.into());
    let i = only(fs, boot.clone(), "pi5-page-size", Status::Warn);
    assert!(i.reason.contains("16K"));
    assert!(
        i.reason.contains("image.pi5_4k_pages: true"),
        "{}",
        i.reason
    );
    assert_eq!(pi5_kernel("[cm4]\nkernel=kernel8.img\n[all]\n"), None);
    assert_eq!(
        pi5_kernel("[pi5]\nkernel=kernel8.img\n[all]\n").as_deref(),
        Some("kernel8.img")
    );
    assert_eq!(
        pi5_kernel("kernel=kernel8.img\n[pi4]\nkernel=x\n").as_deref(),
        Some("kernel8.img")
    );
    assert_eq!(
        pi5_kernel("[all]\nkernel=kernel8.img\n[pi5]\nkernel=kernel_2712.img\n").as_deref(),
        Some("kernel_2712.img")
    );
    assert_eq!(pi5_pages(None).status, Status::Warn);
    let ubuntu = pi5_pages(Some("[all]\nkernel=vmlinuz\n"));
    // Ubuntu boots its own kernel: the spec key would be refused there, so it is not offered,
    // and with nothing to change the item is no WARN.
    assert_eq!(ubuntu.status, Status::Pass);
    assert!(
        ubuntu.reason.contains("kernel of its own"),
        "{}",
        ubuntu.reason
    );
    assert!(!ubuntu.reason.contains("image.pi5_4k_pages: true"));
    let pi_os = pi5_pages(Some("[pi5]\nkernel=kernel_2712.img\n"));
    assert!(
        pi_os.reason.contains("image.pi5_4k_pages: true"),
        "{}",
        pi_os.reason
    );
}

#[test]
fn cgroup_driver_conditions() {
    let (fs, boot) = prepared();
    let fs = fs.file(
        "/var/lib/kubelet/config.yaml",
        "kind: KubeletConfiguration\ncgroupDriver: cgroupfs\n",
    );
    let i = only(fs, boot.clone(), "cgroup-driver", Status::Warn);
    assert!(i.reason.contains("cgroupfs"));
    let (fs, _) = prepared();
    let fs = fs.file(
        "/var/lib/kubelet/config.yaml",
        "kind: KubeletConfiguration\nstaticPodPath: /x\n",
    );
    let i = only(fs, boot.clone(), "cgroup-driver", Status::Warn);
    assert!(
        i.reason.contains("remove it from the image"),
        "{}",
        i.reason
    );
    // Issue 15 item 3: kubeadm defaults an unset driver to systemd, and a joining node takes
    // the cluster's: no warning on an init or a join configuration without one.
    let (fs, _) = prepared();
    let fs = fs.file("/etc/piforge/kubeadm.yaml", "kind: InitConfiguration\n");
    let items = run(&fs, &boot);
    let i = get(&items, "cgroup-driver");
    assert_eq!(i.status, Status::Pass);
    assert!(i.reason.contains("defaults it to systemd"), "{}", i.reason);
    let (fs, _) = prepared();
    let fs = fs.file(
        "/etc/piforge/kubeadm.yaml",
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n",
    );
    let items = run(&fs, &boot);
    let i = get(&items, "cgroup-driver");
    assert_eq!(i.status, Status::Pass);
    assert!(i.reason.contains("joining node"), "{}", i.reason);
    let (fs, _) = prepared();
    let fs = fs.remove("/etc/piforge/kubeadm.yaml");
    assert_eq!(get(&run(&fs, &boot), "cgroup-driver").status, Status::Pass);
}

#[test]
fn text_and_json() {
    let items = vec![
        item("a", "short", Status::Pass, "fine", "/x"),
        item("b-long", "a longer title", Status::Fail, "broken", "/y"),
    ];
    assert_eq!(
        crate::text::check(&items),
        "PASS  short           fine [/x]\n\
         FAIL  a longer title  broken [/y]\n\
         1 passed, 0 warnings, 1 failed\n"
    );
    assert!(!exit_ok(&items));
    assert!(exit_ok(&items[..1]));
    let j = serde_json::to_value(&items[1]).unwrap();
    assert_eq!(j["status"], "fail");
    assert_eq!(j["id"], "b-long");
    assert_eq!(j["looked_at"], "/y");
}

#[test]
fn containerd_config_is_read_as_toml() {
    // Both shipped configurations (containerd 2.x and 1.7) pass.
    for f in [
        payload_files::containerd_config(2),
        payload_files::containerd_config(1),
    ] {
        let text = payload_files::render(f.text(), &[("PAUSE_IMAGE", "p:1")]).unwrap();
        assert_eq!(systemd_cgroup_for_runc(&text), Ok(true), "{}", f.path);
    }
    // Dotted keys and inline tables say the same as a table header.
    let dotted = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n\
                  options.SystemdCgroup = true\n";
    assert_eq!(systemd_cgroup_for_runc(dotted), Ok(true));
    let inline = "[plugins.x.runtimes.runc]\noptions = { SystemdCgroup = true }\n";
    assert_eq!(systemd_cgroup_for_runc(inline), Ok(true));
    // Not in runc's options, a string instead of a boolean, or only in a comment: not set.
    for text in [
        "[plugins.x.runtimes.crun.options]\nSystemdCgroup = true\n",
        "[plugins.x.runtimes.runc.options]\nSystemdCgroup = \"true\"\n",
        "[plugins.x.runtimes.runc.options]\n# SystemdCgroup = true\n",
        "[plugins.x.runtimes.runc]\nSystemdCgroup = true\n",
    ] {
        assert_eq!(systemd_cgroup_for_runc(text), Ok(false), "{text}");
    }

    // A file containerd cannot parse fails, saying so.
    let (fs, boot) = prepared();
    let cfg = "/etc/containerd/config.toml";
    let broken = "[plugins.x.runtimes.runc.options]\nSystemdCgroup = true\nSystemdCgroup = true\n";
    let i = only(
        fs.file(cfg, broken),
        boot,
        "containerd-config",
        Status::Fail,
    );
    assert!(i.reason.starts_with("not valid TOML ("), "{}", i.reason);
}

#[test]
fn kubelet_configuration_is_read_as_yaml() {
    let multi = "kind: InitConfiguration\nnodeRegistration:\n  kubeletExtraArgs: []\n---\n\
                 kind: KubeletConfiguration\ncgroupDriver: \"systemd\"  # quoted\n\
                 nested:\n  failSwapOn: false\n---\n";
    assert_eq!(yaml_values(multi, "cgroupDriver").unwrap(), ["systemd"]);
    assert_eq!(yaml_values(multi, "failSwapOn").unwrap(), ["false"]);
    // A block scalar that mentions the key is text, not a setting.
    let text = "kind: X\nnote: |\n  cgroupDriver: cgroupfs\n";
    assert!(yaml_values(text, "cgroupDriver").unwrap().is_empty());
    let bad = yaml_values("kind: [unclosed\n", "cgroupDriver").unwrap_err();
    assert!(bad.starts_with("line "), "{bad}");

    let (fs, boot) = prepared();
    let fs = fs.file("/etc/piforge/kubeadm.yaml", "kind: [unclosed\n");
    let i = only(fs, boot, "cgroup-driver", Status::Warn);
    assert!(i.reason.starts_with("not valid YAML ("), "{}", i.reason);
}

#[test]
fn crictl_endpoint_is_read_as_yaml() {
    let (fs, boot) = prepared();
    let quoted = "runtime-endpoint: \"unix:///run/containerd/containerd.sock\"\ntimeout: 10\n";
    let items = run(&fs.clone().file("/etc/crictl.yaml", quoted), &boot);
    assert_eq!(get(&items, "crictl-config").status, Status::Pass);
    // Only the top-level key counts; a file that is not YAML names no endpoint.
    for text in [
        "x:\n  runtime-endpoint: unix:///run/containerd/containerd.sock\n",
        "runtime-endpoint: [unix:///run/containerd/containerd.sock\n",
    ] {
        let i = only(
            fs.clone().file("/etc/crictl.yaml", text),
            boot.clone(),
            "crictl-config",
            Status::Warn,
        );
        assert!(i.reason.starts_with("no runtime-endpoint"), "{}", i.reason);
    }
}

#[test]
fn piforge_host_keys_pass_only_as_written() {
    use crate::payload::paths::{SSH_HOST_KEY, SSH_HOST_KEY_MARKER, SSH_HOST_KEY_PUB};
    let t = tempfile::tempdir().unwrap();
    let keys = crate::pki::ensure_host_keys(
        t.path(),
        &["pi-1", "pi-2"],
        crate::pki::HostKeyMode::InMemory,
    )
    .unwrap();
    let (k1, k2) = (&keys["pi-1"], &keys["pi-2"]);
    let with = |private: &str, public: &str, marker: &str| {
        let (fs, boot) = prepared();
        let fs = fs
            .file(SSH_HOST_KEY, private)
            .file(SSH_HOST_KEY_PUB, public)
            .file(SSH_HOST_KEY_MARKER, marker);
        (fs, boot)
    };
    let m1 = crate::pki::host_key_marker("pi-1", k1);
    // piforge's own pair for pi-1: PASS, and the reason is honest about what it cannot know.
    let (fs, boot) = with(&k1.private_openssh, &k1.public_openssh, &m1);
    let items = run(&fs, &boot);
    let i = get(&items, "ssh-host-keys");
    assert_eq!(i.status, Status::Pass, "{}", i.reason);
    assert!(i.reason.contains("node pi-1"), "{}", i.reason);
    assert!(i.reason.contains(&k1.fingerprint), "{}", i.reason);
    assert!(i.reason.contains("known_hosts"), "{}", i.reason);
    // Another node's key under pi-1's marker (a card copied from another): FAIL.
    let (fs, boot) = with(&k2.private_openssh, &k2.public_openssh, &m1);
    let i = only(fs, boot, "ssh-host-keys", Status::Fail);
    assert!(i.reason.contains("replaced"), "{}", i.reason);
    // Halves of two pairs: FAIL.
    let (fs, boot) = with(&k1.private_openssh, &k2.public_openssh, &m1);
    let i = only(fs, boot, "ssh-host-keys", Status::Fail);
    assert!(i.reason.contains("not the private key's"), "{}", i.reason);
    // A base's shared RSA key beside piforge's: FAIL naming it.
    let (fs, boot) = with(&k1.private_openssh, &k1.public_openssh, &m1);
    let fs = fs.file("/etc/ssh/ssh_host_rsa_key", "RSA");
    let i = only(fs, boot, "ssh-host-keys", Status::Fail);
    assert!(i.reason.contains("ssh_host_rsa_key"), "{}", i.reason);
    assert!(!i.reason.contains("ssh_host_ed25519_key"), "{}", i.reason);
    // No marker: as before, a key baked into the image is shared.
    let (fs, boot) = prepared();
    let fs = fs
        .file(SSH_HOST_KEY, &k1.private_openssh)
        .file(SSH_HOST_KEY_PUB, &k1.public_openssh);
    only(fs, boot, "ssh-host-keys", Status::Fail);
}

#[test]
fn container_images_in_the_card_or_pulled() {
    let (fs, boot) = prepared();
    let items = run(&fs, &boot);
    assert_eq!(
        get(&items, "container-images").reason,
        "images: 1 in card (offline): piforge-images.service imports them into containerd before kubelet and kubeadm run"
    );
    // A listed archive that is gone fails.
    let lost = fs.clone().remove(&format!(
        "{}/registry.k8s.io_pause_3.10.1.tar",
        paths::IMAGES_DIR
    ));
    let i = only(lost, boot.clone(), "container-images", Status::Fail);
    assert!(
        i.reason.contains("registry.k8s.io/pause:3.10.1"),
        "{}",
        i.reason
    );
    // Images the build had no source for are named in the list: the card is not offline.
    let partial = fs.clone().file(
        paths::IMAGES_LIST,
        &format!(
            "# comment\nregistry.k8s.io_pause_3.10.1.tar registry.k8s.io/pause:3.10.1 sha256:00\n\
             {}registry.k8s.io/etcd:3.6.10-0\n",
            paths::IMAGES_PULLED_MARKER
        ),
    );
    let i = only(partial, boot.clone(), "container-images", Status::Warn);
    assert!(
        i.reason
            .starts_with("images: 1 in card, 1 pulled at first boot")
            && i.reason
                .ends_with("needs the network: registry.k8s.io/etcd:3.6.10-0"),
        "{}",
        i.reason
    );
    // No list on a piforge node: pulled at first boot.
    let none = fs.clone().remove(paths::IMAGES_LIST);
    let i = only(none, boot.clone(), "container-images", Status::Warn);
    assert!(
        i.reason.starts_with("images: pulled at first boot"),
        "{}",
        i.reason
    );
    // Not a piforge node: no item.
    let plain = fs
        .remove(paths::IMAGES_LIST)
        .remove("/etc/piforge/kubeadm.yaml");
    assert!(run(&plain, &boot)
        .iter()
        .all(|i| i.id != "container-images"));
}
