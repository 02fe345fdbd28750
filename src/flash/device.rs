//! What a block device is (model, size, bus, removable, partitions and their labels) and
//! whether writing to it would hurt the running system: mounted anywhere
//! (`/proc/self/mountinfo`), holding swap (`/proc/swaps`), used by another block device
//! (`holders/`: LVM, RAID, dm-crypt), or a partition rather than a whole disk. All read from
//! sysfs and procfs; the rules are pure functions over those facts so tests need no disk.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Facts about a block device, read before anything is written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceInfo {
    pub path: PathBuf,
    /// The kernel's name (`sdb`, `mmcblk0`, `loop3`).
    pub name: String,
    pub model: String,
    pub size: u64,
    /// `usb`, `mmc`, `nvme`, `ata`, `scsi`, `virtio`, `loop`, or `unknown`.
    pub bus: String,
    /// sysfs `removable` is 1.
    pub removable: bool,
    /// Set when the path names a partition (`sdb1`): the whole disk's name.
    pub partition_of: Option<String>,
    /// `(name, major:minor)` of the device itself and each of its partitions.
    pub nodes: Vec<(String, (u32, u32))>,
    /// Block devices built on it (dm, md).
    pub holders: Vec<String>,
    /// `(partition number, filesystem label or type)` of its current partition table.
    pub partitions: Vec<(u32, String)>,
    /// The device offloads writing zeros (sysfs `queue/write_zeroes_max_bytes` > 0): zeroing
    /// costs no transfer.
    pub write_zeroes: bool,
}

impl DeviceInfo {
    /// A removable medium: sysfs `removable`, or a disk on the USB or MMC/SD bus (card
    /// readers often report `removable` 0).
    pub fn is_removable(&self) -> bool {
        self.removable || self.bus == "usb" || self.bus == "mmc"
    }

    /// One line for the confirmation: `/dev/sdb: Generic SD/MMC, 29.7 GiB, usb, partitions: 1 bootfs, 2 rootfs`.
    pub fn describe(&self) -> String {
        let parts = if self.partitions.is_empty() {
            "no partition table piforge reads".to_string()
        } else {
            let p: Vec<String> = self
                .partitions
                .iter()
                .map(|(n, l)| format!("{n} {l}"))
                .collect();
            format!("partitions: {}", p.join(", "))
        };
        format!(
            "{}: {}, {}, {}{}, {parts}",
            self.path.display(),
            if self.model.is_empty() {
                "unknown model"
            } else {
                &self.model
            },
            crate::size::human(self.size),
            self.bus,
            if self.is_removable() {
                ", removable"
            } else {
                ""
            }
        )
    }
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn dev_numbers(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Reads what sysfs says about the block device at `path` (its size comes from the caller,
/// which has it open).
pub fn info(path: &Path, size: u64) -> std::io::Result<DeviceInfo> {
    let meta = fs::metadata(path)?;
    if !meta.file_type().is_block_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a block device",
        ));
    }
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let sys = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut d = DeviceInfo {
        path: path.to_path_buf(),
        name: name.clone(),
        size,
        ..Default::default()
    };
    if sys.join("partition").exists() {
        d.partition_of = sys
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
    }
    d.removable = read_trim(&sys.join("removable")).as_deref() == Some("1");
    d.write_zeroes = read_trim(&sys.join("queue/write_zeroes_max_bytes"))
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let model = [
        read_trim(&sys.join("device/vendor")),
        read_trim(&sys.join("device/model")).or_else(|| read_trim(&sys.join("device/name"))),
    ];
    d.model = model
        .iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    d.bus = bus_of(&name, &sys).to_string();
    d.nodes.push((name.clone(), (major, minor)));
    d.holders.extend(list_dir(&sys.join("holders")));
    for entry in list_dir(&sys) {
        let p = sys.join(&entry);
        if entry.starts_with(&name) && p.join("partition").exists() {
            if let Some(n) = read_trim(&p.join("dev")).as_deref().and_then(dev_numbers) {
                d.nodes.push((entry.clone(), n));
            }
            d.holders.extend(list_dir(&p.join("holders")));
        }
    }
    Ok(d)
}

/// The bus of the disk `name` whose resolved sysfs directory is `sys`
/// (`/sys/devices/pci0000:00/.../usb2/.../block/sdb`).
fn bus_of(name: &str, sys: &Path) -> &'static str {
    let sys_str = sys.to_string_lossy();
    if name.starts_with("loop") {
        "loop"
    } else if sys_str.contains("/usb") {
        "usb"
    } else if sys_str.contains("/mmc") || name.starts_with("mmcblk") {
        "mmc"
    } else if name.starts_with("nvme") {
        "nvme"
    } else if sys_str.contains("/virtio") {
        "virtio"
    } else if sys_str.contains("/ata") {
        "ata"
    } else if sys_str.contains("/host") {
        "scsi"
    } else {
        "unknown"
    }
}

/// Where disks are found: the kernel's list of disks (`/sys/block`, one entry per disk, a
/// symlink into `/sys/devices`), their device nodes (`/dev`) and what is mounted
/// (`/proc/self/mountinfo`). The tests of `flash --all --wait` point them at a tree of their
/// own, in which cards come and go and get mounted.
#[derive(Debug, Clone)]
pub struct Disks {
    pub sys_block: PathBuf,
    pub dev: PathBuf,
    pub mountinfo: PathBuf,
}

impl Default for Disks {
    fn default() -> Disks {
        Disks {
            sys_block: "/sys/block".into(),
            dev: "/dev".into(),
            mountinfo: "/proc/self/mountinfo".into(),
        }
    }
}

impl Disks {
    /// A tree laid out as the system's: `ROOT/sys/block`, `ROOT/dev` and
    /// `ROOT/proc/self/mountinfo` (no file there: nothing mounted).
    pub fn under(root: &Path) -> Disks {
        Disks {
            sys_block: root.join("sys/block"),
            dev: root.join("dev"),
            mountinfo: root.join("proc/self/mountinfo"),
        }
    }

    /// The mount points of the disk `name` and of its partitions: a mount whose device
    /// numbers are one of theirs (sysfs `dev`), or whose source is one of their device nodes.
    pub fn mounted(&self, name: &str) -> Vec<String> {
        let Ok(text) = fs::read_to_string(&self.mountinfo) else {
            return Vec::new();
        };
        let sys = self.sys_block.join(name);
        let mut nodes = vec![name.to_string()];
        nodes.extend(
            list_dir(&sys)
                .into_iter()
                .filter(|e| e.starts_with(name) && sys.join(e).join("partition").exists()),
        );
        let numbers: Vec<(u32, u32)> = std::iter::once(sys.clone())
            .chain(nodes[1..].iter().map(|p| sys.join(p)))
            .filter_map(|p| read_trim(&p.join("dev")).as_deref().and_then(dev_numbers))
            .collect();
        let sources: Vec<String> = nodes
            .iter()
            .map(|n| self.dev.join(n).display().to_string())
            .collect();
        parse_mountinfo(&text)
            .into_iter()
            .filter(|m| numbers.contains(&m.dev) || sources.contains(&m.source))
            .map(|m| m.mount_point)
            .collect()
    }

    /// The disks holding a medium now (a card reader without a card has size 0).
    pub fn with_media(&self) -> BTreeSet<String> {
        list_dir(&self.sys_block)
            .into_iter()
            .filter(|n| self.sectors(n) > 0)
            .collect()
    }

    /// The disk's size in 512-byte sectors (sysfs `size`), 0 when unknown.
    pub fn sectors(&self, name: &str) -> u64 {
        read_trim(&self.sys_block.join(name).join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// A removable medium, as [`DeviceInfo::is_removable`] tells: sysfs `removable`, or a
    /// disk on the USB or MMC bus.
    pub fn is_removable(&self, name: &str) -> bool {
        let sys = self.sys_block.join(name);
        if read_trim(&sys.join("removable")).as_deref() == Some("1") {
            return true;
        }
        let resolved = fs::canonicalize(&sys).unwrap_or(sys);
        matches!(bus_of(name, &resolved), "usb" | "mmc")
    }

    /// Polls every `every` until a removable disk with a medium appears that is not in
    /// `known` (the disks seen before) and has nothing mounted in two polls in a row (a
    /// desktop mounts a new card's partitions a moment after it appears); returns its device
    /// node. A new card that is mounted is passed to `on_mounted` once, with its mount
    /// points, and waited for until it is unmounted (then returned) or taken out (then
    /// forgotten). A disk taken out is dropped from `known`, so a card put back counts as
    /// new. `None` once `until` has passed (the caller then says so; Ctrl-C ends the process
    /// through its handler either way).
    pub fn wait_for_card(
        &self,
        known: &mut BTreeSet<String>,
        every: Duration,
        until: Option<Instant>,
        on_mounted: &mut dyn FnMut(&Path, &[String]),
    ) -> Option<PathBuf> {
        // New cards told about (mounted), and new cards seen unmounted in the last poll.
        let mut told: BTreeSet<String> = BTreeSet::new();
        let mut free: BTreeSet<String> = BTreeSet::new();
        loop {
            let now = self.with_media();
            let mut next = BTreeSet::new();
            for name in now.difference(known).filter(|n| self.is_removable(n)) {
                let at = self.mounted(name);
                if !at.is_empty() {
                    if told.insert(name.clone()) {
                        on_mounted(&self.dev.join(name), &at);
                    }
                } else if free.contains(name) {
                    let dev = self.dev.join(name);
                    *known = now;
                    return Some(dev);
                } else {
                    next.insert(name.clone());
                }
            }
            free = next;
            known.retain(|n| now.contains(n));
            told.retain(|n| now.contains(n));
            if until.is_some_and(|t| Instant::now() + every > t) {
                return None;
            }
            std::thread::sleep(every);
        }
    }
}

fn list_dir(p: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(p) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One mount from `/proc/self/mountinfo`: the device numbers, the mount point, the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: (u32, u32),
    pub mount_point: String,
    pub source: String,
}

/// Parses mountinfo (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - TYPE SOURCE
/// SUPER`; octal escapes (`\040`) in paths are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 {
            continue;
        }
        let Some(dev) = dev_numbers(f[2]) else {
            continue;
        };
        let source = f
            .iter()
            .position(|x| *x == "-")
            .and_then(|i| f.get(i + 2))
            .map(|s| unescape(s))
            .unwrap_or_default();
        out.push(Mount {
            dev,
            mount_point: unescape(f[4]),
            source,
        });
    }
    out
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first column of `/proc/swaps` after its header: swap devices and swap files.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

/// Why writing to `d` would hurt the running system, one sentence each. `mounts` and `swaps`
/// come from the files above; `swap_dev` tells a swap entry's device numbers (a device's own,
/// or the filesystem's of a swap file).
pub fn refusals(
    d: &DeviceInfo,
    mounts: &[Mount],
    swaps: &[(String, (u32, u32))],
    canonical: &dyn Fn(&str) -> Option<PathBuf>,
) -> Vec<String> {
    let mut why = Vec::new();
    let path = d.path.display();
    if let Some(whole) = &d.partition_of {
        why.push(format!(
            "{path} is a partition of {whole}; write the image to the whole device (/dev/{whole})"
        ));
    }
    let node_paths: Vec<(String, PathBuf)> = d
        .nodes
        .iter()
        .map(|(n, _)| (n.clone(), PathBuf::from(format!("/dev/{n}"))))
        .collect();
    for m in mounts {
        let by_dev = d
            .nodes
            .iter()
            .find(|(_, n)| *n == m.dev)
            .map(|(n, _)| n.clone());
        let by_source = canonical(&m.source).and_then(|src| {
            node_paths
                .iter()
                .find(|(_, p)| canonical(&p.to_string_lossy()).as_ref() == Some(&src))
                .map(|(n, _)| n.clone())
        });
        if let Some(n) = by_dev.or(by_source) {
            let what = match m.mount_point.as_str() {
                "/" => " (the running system's root filesystem)",
                p if p == "/boot" || p.starts_with("/boot/") => {
                    " (the running system's boot partition)"
                }
                _ => "",
            };
            why.push(format!(
                "{path} is in use: /dev/{n} is mounted at {}{what}; unmount it first",
                m.mount_point
            ));
        }
    }
    for (s, dev) in swaps {
        if let Some((n, _)) = d.nodes.iter().find(|(_, x)| x == dev) {
            why.push(format!(
                "{path} holds the running system's swap ({s} on /dev/{n}); swapoff it first"
            ));
        }
    }
    if !d.holders.is_empty() {
        why.push(format!(
            "{path} is in use by {} (LVM, RAID or encryption on top of it)",
            d.holders.join(", ")
        ));
    }
    why
}

/// [`refusals`] with the running system's mountinfo and swaps.
pub fn system_refusals(d: &DeviceInfo) -> Vec<String> {
    // Fail closed: a system whose mounts cannot be read may have the device mounted.
    let mut unreadable = Vec::new();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_else(|e| {
        unreadable.push(format!(
            "cannot tell whether {} is mounted: reading /proc/self/mountinfo: {e}",
            d.path.display()
        ));
        String::new()
    });
    let mounts = parse_mountinfo(&mountinfo);
    let swaps: Vec<(String, (u32, u32))> =
        parse_swaps(&fs::read_to_string("/proc/swaps").unwrap_or_default())
            .into_iter()
            .filter_map(|s| {
                let m = fs::metadata(&s).ok()?;
                let dev = if m.file_type().is_block_device() {
                    m.rdev()
                } else {
                    m.dev()
                };
                Some((s, (libc::major(dev), libc::minor(dev))))
            })
            .collect();
    let mut why = refusals(d, &mounts, &swaps, &|p| fs::canonicalize(p).ok());
    why.extend(unreadable);
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdb() -> DeviceInfo {
        DeviceInfo {
            path: "/dev/sdb".into(),
            name: "sdb".into(),
            model: "Generic SD".into(),
            size: 32 << 30,
            bus: "usb".into(),
            nodes: vec![
                ("sdb".into(), (8, 16)),
                ("sdb1".into(), (8, 17)),
                ("sdb2".into(), (8, 18)),
            ],
            partitions: vec![(1, "bootfs".into()), (2, "rootfs".into())],
            ..Default::default()
        }
    }

    const MOUNTINFO: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
43 27 8:18 / /media/pi/root\\040fs rw,relatime - ext4 /dev/sdb2 rw
44 27 8:1 / /boot/firmware rw - vfat /dev/sda1 rw
";

    #[test]
    fn a_mounted_partition_is_named_with_its_mount_point() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts[2].mount_point, "/media/pi/root fs");
        assert_eq!(mounts[2].source, "/dev/sdb2");
        let why = refusals(&sdb(), &mounts, &[], &|_| None);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0].contains("/dev/sdb2 is mounted at /media/pi/root fs"),
            "{why:?}"
        );
        // The system disk: root and boot named as such.
        let mut sda = sdb();
        sda.path = "/dev/sda".into();
        sda.nodes = vec![("sda".into(), (8, 0)), ("sda1".into(), (8, 1))];
        let why = refusals(&sda, &mounts, &[], &|_| None);
        assert!(why[0].contains("boot partition"), "{why:?}");
        let mut vda = sdb();
        vda.nodes = vec![("vda".into(), (254, 0))];
        let why = refusals(&vda, &mounts, &[], &|_| None);
        assert!(why[0].contains("root filesystem"), "{why:?}");
    }

    #[test]
    fn swap_holders_and_partitions_are_refused() {
        let swaps = parse_swaps("Filename Type Size Used Priority\n/dev/sdb2 partition 1 0 -2\n");
        assert_eq!(swaps, ["/dev/sdb2"]);
        let why = refusals(&sdb(), &[], &[(swaps[0].clone(), (8, 18))], &|_| None);
        assert!(why[0].contains("swap"), "{why:?}");
        let mut d = sdb();
        d.holders = vec!["dm-0".into()];
        d.partition_of = Some("sdb".into());
        let why = refusals(&d, &[], &[], &|_| None);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why.iter().any(|w| w.contains("dm-0")));
        assert!(why.iter().any(|w| w.contains("whole device")));
        assert!(refusals(&sdb(), &[], &[], &|_| None).is_empty());
    }

    /// A fake sysfs: `sda` fixed, then a USB reader's card (removable 0, found by its bus)
    /// and an ATA disk (ignored) appear; a card taken out and put back counts as new.
    #[test]
    fn a_new_removable_disk_is_found_by_polling() {
        let root = tempfile::tempdir().unwrap();
        let disks = Disks::under(root.path());
        let disk = |name: &str, under: &str, removable: &str, sectors: u64| {
            let real = root.path().join("sys/devices").join(under).join(name);
            fs::create_dir_all(&real).unwrap();
            fs::write(real.join("removable"), removable).unwrap();
            fs::write(real.join("size"), format!("{sectors}\n")).unwrap();
            fs::create_dir_all(&disks.sys_block).unwrap();
            let link = disks.sys_block.join(name);
            if !link.exists() {
                std::os::unix::fs::symlink(&real, link).unwrap();
            }
        };
        disk("sda", "pci0/ata1/host0", "0", 1000);
        let mut known = disks.with_media();
        assert_eq!(known, BTreeSet::from(["sda".to_string()]));
        let fast = Duration::from_millis(20);
        // Nothing new: gives up at the deadline, promptly.
        let t = Instant::now();
        let until = Some(t + Duration::from_millis(200));
        assert_eq!(
            disks.wait_for_card(&mut known, fast, until, &mut |_, _| {}),
            None
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        // A card reader with no card (size 0), an ATA disk, then the card: only the card.
        disk("sdc", "pci0/usb2/2-1/host3/block", "0", 0);
        let found = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let until = Some(Instant::now() + Duration::from_secs(20));
                disks.wait_for_card(&mut known, fast, until, &mut |_, _| {})
            });
            std::thread::sleep(Duration::from_millis(100));
            disk("sdb", "pci0/ata2/host1", "0", 2000);
            std::thread::sleep(Duration::from_millis(100));
            disk("sdc", "pci0/usb2/2-1/host3/block", "0", 4000);
            h.join().unwrap()
        });
        assert_eq!(found, Some(root.path().join("dev/sdc")));
        assert!(known.contains("sdc") && known.contains("sdb"));
        // Still in: not new. Taken out (size 0) and put back (removable 1 now): new again.
        let until = Some(Instant::now() + Duration::from_millis(100));
        assert_eq!(
            disks.wait_for_card(&mut known, fast, until, &mut |_, _| {}),
            None
        );
        disk("sdc", "pci0/usb2/2-1/host3/block", "0", 0);
        assert_eq!(
            disks.wait_for_card(&mut known, fast, until, &mut |_, _| {}),
            None
        );
        assert!(!known.contains("sdc"));
        disk("sdc", "pci0/usb2/2-1/host3/block", "1", 4000);
        let until = Some(Instant::now() + Duration::from_secs(5));
        assert_eq!(
            disks.wait_for_card(&mut known, fast, until, &mut |_, _| {}),
            Some(root.path().join("dev/sdc"))
        );
    }

    /// A card the desktop mounted as it came in: named once with its mount point, not
    /// returned while mounted, returned once unmounted (by device numbers or by source).
    #[test]
    fn a_mounted_new_card_is_named_once_and_taken_when_unmounted() {
        let root = tempfile::tempdir().unwrap();
        let disks = Disks::under(root.path());
        let real = root
            .path()
            .join("sys/devices/pci0/usb2/2-1/host3/block/sdc");
        fs::create_dir_all(real.join("sdc1")).unwrap();
        fs::write(real.join("removable"), "0").unwrap();
        fs::write(real.join("size"), "4000\n").unwrap();
        fs::write(real.join("dev"), "8:32\n").unwrap();
        fs::write(real.join("sdc1/partition"), "1\n").unwrap();
        fs::write(real.join("sdc1/dev"), "8:33\n").unwrap();
        fs::create_dir_all(&disks.sys_block).unwrap();
        std::os::unix::fs::symlink(&real, disks.sys_block.join("sdc")).unwrap();
        fs::create_dir_all(disks.mountinfo.parent().unwrap()).unwrap();
        let by_numbers = "36 25 8:33 / /media/u/bootfs rw - vfat /dev/whatever rw\n";
        fs::write(&disks.mountinfo, by_numbers).unwrap();
        assert_eq!(disks.mounted("sdc"), ["/media/u/bootfs"]);
        let by_source = format!(
            "36 25 0:99 / /media/u/rootfs rw - ext4 {} rw\n",
            disks.dev.join("sdc1").display()
        );
        fs::write(&disks.mountinfo, &by_source).unwrap();
        assert_eq!(disks.mounted("sdc"), ["/media/u/rootfs"]);
        let fast = Duration::from_millis(20);
        let mut known = BTreeSet::new();
        let mut told = Vec::new();
        let until = Some(Instant::now() + Duration::from_millis(300));
        let got = disks.wait_for_card(&mut known, fast, until, &mut |d, at| {
            told.push((d.to_path_buf(), at.to_vec()))
        });
        assert_eq!(got, None, "a mounted card is not taken");
        assert_eq!(
            told,
            [(disks.dev.join("sdc"), vec!["/media/u/rootfs".to_string()])],
            "named once in 15 polls"
        );
        let (found, told) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut told = 0;
                let until = Some(Instant::now() + Duration::from_secs(20));
                let f = disks.wait_for_card(&mut known, fast, until, &mut |_, _| told += 1);
                (f, told)
            });
            std::thread::sleep(Duration::from_millis(200));
            fs::write(&disks.mountinfo, "").unwrap();
            h.join().unwrap()
        });
        assert_eq!(found, Some(disks.dev.join("sdc")));
        assert_eq!(told, 1);
    }

    #[test]
    fn removable_by_flag_or_bus() {
        let mut d = sdb();
        assert!(d.is_removable());
        d.bus = "ata".into();
        assert!(!d.is_removable());
        d.removable = true;
        assert!(d.is_removable());
        assert!(
            d.describe()
                .starts_with("/dev/sdb: Generic SD, 32.0 GiB, ata, removable"),
            "{}",
            d.describe()
        );
    }
}
