//! Room for first boot: what piforge's first-boot steps still need in the root filesystem
//! (the OS packages step, the container images kubeadm pulls) against the free space of the
//! image as built. The node payload is already in the image, so its size is in that free
//! space. Raspberry Pi OS grows the root filesystem to the card on first boot before any of
//! these run (`resize` in cmdline.txt on trixie, raspberrypi-sys-mods' `firstboot` on
//! bookworm), and Ubuntu through cloud-init's growpart and resizefs: on such a base a small
//! image is normal, and the item passes with that explanation.

use super::{item, CheckItem, Status};
use crate::fs::RootFiles;

const MIB: u64 = 1 << 20;
/// What `install-packages` wants free before it starts apt (its FLOOR_KB plus MARGIN_KB).
pub const PACKAGES_NEED: u64 = 320 * MIB;
/// The container images a control plane pulls (etcd, the API server, controller manager,
/// scheduler, kube-proxy, CoreDNS, pause, the CNI), unpacked: an estimate with headroom.
pub const CONTROL_PLANE_IMAGES_NEED: u64 = 1024 * MIB;
/// The same on a worker (kube-proxy, pause, the CNI).
pub const WORKER_IMAGES_NEED: u64 = 512 * MIB;

/// How the base grows its root filesystem on first boot, if it does.
pub(super) fn grows_on_first_boot(
    fs: &dyn RootFiles,
    cmdline: Option<&str>,
) -> Result<Option<&'static str>, String> {
    let tokens: Vec<&str> = cmdline.unwrap_or("").split_whitespace().collect();
    if tokens.contains(&"resize") {
        return Ok(Some(
            "`resize` in cmdline.txt: Raspberry Pi OS's initramfs grows the root partition and filesystem to the card on first boot",
        ));
    }
    if tokens.contains(&"init=/usr/lib/raspberrypi-sys-mods/firstboot") {
        return Ok(Some(
            "raspberrypi-sys-mods' firstboot (cmdline.txt) grows the root partition to the card on first boot",
        ));
    }
    let cfg = fs.read_string("/etc/cloud/cloud.cfg")?.unwrap_or_default();
    let module = |m: &str| {
        cfg.lines()
            .any(|l| l.trim().trim_start_matches("- ").trim() == m)
    };
    if module("growpart") && module("resizefs") {
        return Ok(Some(
            "cloud-init's growpart and resizefs modules grow the root partition and filesystem to the card on first boot",
        ));
    }
    Ok(None)
}

/// The `first-boot-room` item: `free` bytes in the root filesystem as built.
pub(super) fn first_boot_room(
    fs: &dyn RootFiles,
    cmdline: Option<&str>,
    free: u64,
) -> Result<CheckItem, String> {
    const ID: &str = "first-boot-room";
    const TITLE: &str = "room in the root filesystem for first boot";
    let packages = fs
        .read_string(crate::payload::FIRST_BOOT_PACKAGES)?
        .is_some_and(|l| {
            l.lines()
                .any(|l| !l.split('#').next().unwrap_or("").trim().is_empty())
        });
    let control_plane = fs.exists("/etc/kubernetes/pki/ca.key")?;
    let mut need = if control_plane {
        CONTROL_PLANE_IMAGES_NEED
    } else {
        WORKER_IMAGES_NEED
    };
    let mut what = format!(
        "about {} MiB for the container images a {} pulls",
        need / MIB,
        if control_plane {
            "control plane"
        } else {
            "node"
        }
    );
    let offline_kib = match super::tools::offline_packages(fs)? {
        Some(_) => {
            let list = fs
                .read_string(crate::payload::paths::DEBS_MANIFEST)?
                .unwrap_or_default();
            Some(
                list.lines()
                    .map(|l| l.split('#').next().unwrap_or(""))
                    .filter_map(|l| l.split_whitespace().nth(5)?.parse::<u64>().ok())
                    .sum::<u64>(),
            )
        }
        None => None,
    };
    match offline_kib {
        // The .debs are in the image already: what they unpack to, and install-packages'
        // margin (its MARGIN_KB).
        Some(kib) if packages => {
            let n = kib * 1024 + 64 * MIB;
            need += n;
            what.push_str(&format!(
                " and {} MiB to install the OS packages from the card's .debs",
                n.div_ceil(MIB)
            ));
        }
        _ if packages => {
            need += PACKAGES_NEED;
            what.push_str(&format!(
                " and {} MiB for the OS packages installed on first boot",
                PACKAGES_NEED / MIB
            ));
        }
        _ => {}
    }
    let looked_at = "the root filesystem's free blocks, cmdline.txt, /etc/cloud/cloud.cfg";
    let have = format!("{} MiB free as built; first boot needs {what}", free / MIB);
    if free >= need {
        return Ok(item(ID, TITLE, Status::Pass, have, looked_at));
    }
    Ok(match grows_on_first_boot(fs, cmdline)? {
        Some(how) => item(
            ID,
            TITLE,
            Status::Pass,
            format!("{have}; enough once it is grown: {how}"),
            looked_at,
        ),
        None => item(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "{have}, and nothing grows the root filesystem on first boot: rebuild with \
                 more room (`piforge customize --grow SIZE`)"
            ),
            looked_at,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::root_files::tests::MemFiles;

    const TRIXIE: &str = "console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait resize cgroup_enable=memory";

    #[test]
    fn enough_room_as_built_passes() {
        let fs = MemFiles::with(&[]);
        let i = first_boot_room(&fs, Some(TRIXIE), 600 * MIB).unwrap();
        assert_eq!(i.status, Status::Pass);
        assert_eq!(
            i.reason,
            "600 MiB free as built; first boot needs about 512 MiB for the container images a node pulls"
        );
    }

    #[test]
    fn a_small_image_passes_when_the_base_grows_its_root_on_first_boot() {
        let cp = [
            ("/etc/kubernetes/pki/ca.key", "k"),
            (crate::payload::FIRST_BOOT_PACKAGES, "# list\niptables\n"),
        ];
        // Needs 1024 + 320 MiB; 212 MiB free (the boot test's card).
        let fs = MemFiles::with(&cp);
        let i = first_boot_room(&fs, Some(TRIXIE), 212 * MIB).unwrap();
        assert_eq!(i.status, Status::Pass, "{}", i.reason);
        assert!(
            i.reason.starts_with("212 MiB free as built; first boot needs about 1024 MiB for the container images a control plane pulls and 320 MiB for the OS packages"),
            "{}",
            i.reason
        );
        assert!(
            i.reason
                .contains("enough once it is grown: `resize` in cmdline.txt"),
            "{}",
            i.reason
        );
        // Bookworm's firstboot init, Ubuntu's cloud-init growpart: the same.
        let bookworm =
            "root=PARTUUID=1234abcd-02 rootwait init=/usr/lib/raspberrypi-sys-mods/firstboot";
        let i = first_boot_room(&fs, Some(bookworm), 212 * MIB).unwrap();
        assert_eq!(i.status, Status::Pass);
        assert!(
            i.reason.contains("raspberrypi-sys-mods' firstboot"),
            "{}",
            i.reason
        );
        let cfg = "cloud_init_modules:\n  - growpart\n  - resizefs\n  - users_groups\n";
        let ubuntu = MemFiles::with(&[cp[0], cp[1], ("/etc/cloud/cloud.cfg", cfg)]);
        let i = first_boot_room(
            &ubuntu,
            Some("root=LABEL=writable rootwait fixrtc"),
            212 * MIB,
        )
        .unwrap();
        assert_eq!(i.status, Status::Pass);
        assert!(i.reason.contains("growpart and resizefs"), "{}", i.reason);
    }

    #[test]
    fn a_small_image_that_never_grows_fails_with_what_to_do() {
        let fs = MemFiles::with(&[(crate::payload::FIRST_BOOT_PACKAGES, "socat\n")]);
        let i = first_boot_room(&fs, Some("root=/dev/mmcblk0p2 rootwait"), 700 * MIB).unwrap();
        assert_eq!(i.status, Status::Fail);
        assert!(i.reason.contains("needs about 512 MiB"), "{}", i.reason);
        assert!(
            i.reason.contains("320 MiB for the OS packages"),
            "{}",
            i.reason
        );
        assert!(i.reason.contains("customize --grow SIZE"), "{}", i.reason);
        // growpart alone (no resizefs) does not grow the filesystem.
        let fs = MemFiles::with(&[(
            "/etc/cloud/cloud.cfg",
            "cloud_init_modules:\n  - growpart\n",
        )]);
        let i = first_boot_room(&fs, None, 100 * MIB).unwrap();
        assert_eq!(i.status, Status::Fail);
        // A comment-only package list asks for nothing.
        let fs = MemFiles::with(&[(crate::payload::FIRST_BOOT_PACKAGES, "# none\n")]);
        assert_eq!(
            first_boot_room(&fs, None, 600 * MIB).unwrap().status,
            Status::Pass
        );
    }
}
