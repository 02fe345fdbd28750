//! `install-packages` (run by `piforge-packages.service` on first boot), driven on a fake root
//! with stand-in `apt-get`, `dpkg`, `df` and `sleep` first on its PATH that record their calls.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::{first_boot_file, paths, PACKAGES_UNIT_NAME};

/// apt-get: `update` works; `install --assume-no` prints the summary of `$R/apt-format`
/// (apt 3 by default, `2` for apt 2) for `$R/need` kB and aborts; `install -y` fails with
/// dpkg's "interrupted" error while `$R/dpkg-interrupted` exists, fails (and leaves dpkg
/// interrupted) while `$R/fail-installs` counts down, else installs the packages as tools.
const FAKE_APT_GET: &str = r#"#!/bin/sh
R=$PIFORGE_ROOT
echo "apt-get $*" >>"$R/calls"
case "$*" in
update) echo "Reading package lists... Done" ;;
"install --assume-no"*)
    need=$(cat "$R/need" 2>/dev/null || echo 4096)
    if [ "$(cat "$R/apt-format" 2>/dev/null)" = 2 ]; then
        echo "Need to get 1,024 kB of archives."
        echo "After this operation, $need kB of additional disk space will be used."
    else
        echo "Summary:"
        echo "  Upgrading: 0, Installing: 2, Removing: 0, Not Upgrading: 0"
        echo "  Download size: 1,024 kB"
        echo "  Space needed: $need kB / 20.5 GB available"
    fi
    echo "Abort."
    exit 1
    ;;
"-f install -y") echo "0 upgraded, 0 newly installed" ;;
"install -y --no-install-recommends"*)
    if [ -f "$R/dpkg-interrupted" ]; then
        echo "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem."
        exit 100
    fi
    n=$(cat "$R/fail-installs" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
        echo $((n - 1)) >"$R/fail-installs"
        : >"$R/dpkg-interrupted"
        echo "dpkg: error processing archive libperl5.40.deb (--unpack):"
        echo "E: Sub-process /usr/bin/dpkg returned an error code (1)"
        exit 100
    fi
    shift 3
    for p in "$@"; do printf '#!/bin/sh\n' >"$R/usr/local/bin/$p"; chmod 755 "$R/usr/local/bin/$p"; done
    ;;
*) echo "unexpected apt-get call" >&2; exit 2 ;;
esac
"#;

const FAKE_DPKG: &str = r#"#!/bin/sh
R=$PIFORGE_ROOT
# `-i` logs the file names only (the test root's path varies).
[ "$1" = -i ] || echo "dpkg $*" >>"$R/calls"
case "$*" in
--audit)
    if [ -f "$R/dpkg-interrupted" ]; then
        echo "The following packages are only half configured, probably due to problems"
        echo " libperl5.40:arm64 Pathologically Eclectic Rubbish Lister - shared library"
    fi
    ;;
"--configure -a") rm -f "$R/dpkg-interrupted" ;;
-i\ *)
    shift
    names=
    for f in "$@"; do names="$names ${f##*/}"; done
    echo "dpkg -i$names" >>"$R/calls"
    if [ -f "$R/dpkg-i-fails" ]; then
        : >"$R/dpkg-interrupted"
        echo "dpkg: dependency problems prevent configuration of pftool-a:"
        exit 1
    fi
    for f in "$@"; do
        p=${f##*/}; p=${p%%_*}
        printf '#!/bin/sh\n' >"$R/usr/local/bin/$p"; chmod 755 "$R/usr/local/bin/$p"
    done
    ;;
*) exit 2 ;;
esac
"#;

/// df -Pk: `$R/free` KiB available.
const FAKE_DF: &str = r#"#!/bin/sh
R=$PIFORGE_ROOT
echo "Filesystem     1024-blocks    Used Available Capacity Mounted on"
echo "/dev/mmcblk0p2     3000000 2000000 $(cat "$R/free") 60% /"
"#;

const FAKE_SLEEP: &str = r#"#!/bin/sh
echo "$1" >>"$PIFORGE_ROOT/sleeps"
"#;

struct Node(tempfile::TempDir);

impl Node {
    /// A root lacking `pftool-a` and `pftool-b` (names no host has), with `free_mib` free.
    fn new(free_mib: u64) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let n = Node(tmp);
        n.write("usr/local/bin/apt-get", FAKE_APT_GET, 0o755);
        n.write("usr/local/bin/dpkg", FAKE_DPKG, 0o755);
        n.write("usr/local/bin/df", FAKE_DF, 0o755);
        n.write("usr/local/bin/sleep", FAKE_SLEEP, 0o755);
        n.write(
            "usr/local/lib/piforge/install-packages",
            std::str::from_utf8(first_boot_file(paths::INSTALL_PACKAGES_SCRIPT)).unwrap(),
            0o755,
        );
        n.write(
            "etc/piforge/first-boot-packages",
            "# comment\npftool-a\npftool-b\n",
            0o644,
        );
        n.write("free", &(free_mib * 1024).to_string(), 0o644);
        fs::create_dir_all(n.root().join("boot/firmware")).unwrap();
        n
    }

    fn root(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, rel: &str, text: &str, mode: u32) {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel)).unwrap_or_default()
    }

    fn run(&self) -> (bool, String) {
        let out = Command::new("timeout")
            .arg("60")
            .arg("sh")
            .arg(self.root().join("usr/local/lib/piforge/install-packages"))
            .env("PIFORGE_ROOT", self.root())
            .output()
            .unwrap();
        let journal = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), journal)
    }

    fn calls(&self) -> Vec<String> {
        self.read("calls").lines().map(str::to_string).collect()
    }

    fn installed(&self) -> bool {
        self.root()
            .join("var/lib/piforge/packages-installed")
            .exists()
    }
}

const INSTALL: &str = "apt-get install -y --no-install-recommends pftool-a pftool-b";
const ASK: &str = "apt-get install --assume-no --no-install-recommends pftool-a pftool-b";

#[test]
fn no_space_means_no_apt_call_and_a_recorded_failure() {
    let n = Node::new(100);
    let (ok, journal) = n.run();
    assert!(!ok, "{journal}");
    assert!(n.calls().is_empty(), "{:?}", n.calls());
    assert!(!n.installed());
    // Five attempts with a doubling backoff, then the unit's restart takes over.
    assert_eq!(
        n.read("sleeps").split_whitespace().collect::<Vec<_>>(),
        ["30", "60", "120", "240"]
    );
    let state = n.read("var/lib/piforge/packages-status");
    assert!(
        state.starts_with("failed: only 100 MiB free on /, apt needs at least 256 MiB"),
        "{state}"
    );
    let status = n.read("boot/firmware/piforge-status.txt");
    for needle in [
        "phase: packages-failed\n",
        "attempt: 5\n",
        "last error: only 100 MiB free on /",
        "packages: failed: only 100 MiB",
        "next attempt: when piforge-packages.service restarts",
    ] {
        assert!(status.contains(needle), "{needle:?}: {status}");
    }
}

#[test]
fn room_for_the_lists_but_not_the_packages_stops_before_installing() {
    let n = Node::new(300);
    // apt says 1 MB to download and 260 MB unpacked; with the 64 MiB margin that is more
    // than the 300 MiB free.
    n.write("need", "260,000", 0o644);
    let (ok, journal) = n.run();
    assert!(!ok, "{journal}");
    assert!(!n.calls().iter().any(|c| c == INSTALL), "{:?}", n.calls());
    assert!(n.calls().iter().any(|c| c == ASK), "{:?}", n.calls());
    let state = n.read("var/lib/piforge/packages-status");
    assert!(
        state.contains("installing pftool-a pftool-b needs 318 MiB"),
        "{state}"
    );
}

#[test]
fn interrupted_dpkg_is_repaired_then_the_packages_installed() {
    let n = Node::new(2048);
    n.write("dpkg-interrupted", "", 0o644);
    let (ok, journal) = n.run();
    assert!(ok, "{journal}");
    assert_eq!(
        n.calls(),
        [
            "dpkg --audit",
            "dpkg --configure -a",
            "apt-get -f install -y",
            "apt-get update",
            ASK,
            INSTALL
        ]
    );
    assert!(n.installed());
    assert_eq!(n.read("var/lib/piforge/packages-status"), "ok\n");
    assert!(!n.root().join("sleeps").exists());
}

#[test]
fn a_failed_install_is_repaired_before_the_retry() {
    let n = Node::new(2048);
    n.write("fail-installs", "1", 0o644);
    n.write("apt-format", "2", 0o644);
    let (ok, journal) = n.run();
    assert!(ok, "{journal}");
    assert_eq!(
        n.calls(),
        [
            "dpkg --audit",
            "apt-get update",
            ASK,
            INSTALL,
            "dpkg --configure -a",
            "apt-get -f install -y",
            "apt-get update",
            ASK,
            INSTALL
        ]
    );
    assert_eq!(n.read("sleeps").trim(), "30");
    assert!(n.installed());
    // The retry was reported while it waited; the success is left to kubeadm-first-boot.
    let status = n.read("boot/firmware/piforge-status.txt");
    assert!(status.contains("phase: packages-retrying\n"), "{status}");
    assert!(
        status.contains("last error: apt-get install failed: E: Sub-process /usr/bin/dpkg"),
        "{status}"
    );
}

#[test]
fn success_records_ok_and_installs_once() {
    let n = Node::new(2048);
    let (ok, journal) = n.run();
    assert!(ok, "{journal}");
    assert_eq!(n.calls(), ["dpkg --audit", "apt-get update", ASK, INSTALL]);
    assert!(n.installed());
    assert_eq!(n.read("var/lib/piforge/packages-status"), "ok\n");
    assert!(n.root().join("usr/local/bin/pftool-a").exists());
    // Success is not a failure report: the boot partition is left to kubeadm-first-boot.
    assert!(!n.root().join("boot/firmware/piforge-status.txt").exists());
}

#[test]
fn script_passes_shellcheck_and_the_unit_does_not_hold_the_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("install-packages");
    fs::write(&script, first_boot_file(paths::INSTALL_PACKAGES_SCRIPT)).unwrap();
    let out = Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(&script)
        .output()
        .expect("shellcheck is installed (tests/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let unit = std::str::from_utf8(first_boot_file(&paths::unit(PACKAGES_UNIT_NAME))).unwrap();
    // A oneshot (or a Before= on the target) would hold multi-user.target until apt gave up.
    assert!(unit.lines().any(|l| l == "Type=exec"), "{unit}");
    assert!(!unit.contains("Type=oneshot"), "{unit}");
    assert!(!unit.contains("Before="), "{unit}");
    assert!(unit.lines().any(|l| l == "Restart=on-failure"), "{unit}");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let path = tmp.path().join(PACKAGES_UNIT_NAME);
    fs::write(
        &path,
        unit.replace(paths::INSTALL_PACKAGES_SCRIPT, script.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

/// A card with the .debs: `pftool-a` needs `libpf` (both arm64), `pftool-b` is arch all.
fn with_card_debs(n: &Node) {
    n.write(
        "etc/piforge/first-boot-debs",
        "# FILE NAME VERSION ARCH SHA256 INSTALLED-KIB\n\
         libpf_1.0-1_arm64.deb libpf 1.0-1 arm64 00 100\n\
         pftool-a_2.1-3_arm64.deb pftool-a 2.1-3 arm64 00 200\n\
         pftool-b_5_all.deb pftool-b 5 all 00 300\n",
        0o644,
    );
    for f in [
        "libpf_1.0-1_arm64.deb",
        "pftool-a_2.1-3_arm64.deb",
        "pftool-b_5_all.deb",
    ] {
        n.write(&format!("var/lib/piforge/debs/{f}"), "!<arch>\n", 0o644);
    }
}

const DPKG_I: &str = "dpkg -i libpf_1.0-1_arm64.deb pftool-a_2.1-3_arm64.deb pftool-b_5_all.deb";

#[test]
fn the_cards_debs_are_installed_with_dpkg_and_no_network() {
    let n = Node::new(2048);
    with_card_debs(&n);
    let (ok, journal) = n.run();
    assert!(ok, "{journal}");
    // No apt-get call at all: nothing needed the network.
    assert_eq!(n.calls(), ["dpkg --audit", DPKG_I]);
    assert!(n.installed());
    assert_eq!(n.read("var/lib/piforge/packages-status"), "ok\n");
    // The .debs are deleted once installed (their room goes back to the node).
    assert_eq!(
        fs::read_dir(n.root().join("var/lib/piforge/debs"))
            .unwrap()
            .count(),
        0
    );
    assert!(journal.contains("done (from the card)"), "{journal}");
}

#[test]
fn a_failed_offline_install_falls_back_to_apt_after_repairing_dpkg() {
    let n = Node::new(2048);
    with_card_debs(&n);
    n.write("dpkg-i-fails", "", 0o644);
    let (ok, journal) = n.run();
    assert!(ok, "{journal}");
    assert_eq!(
        n.calls(),
        [
            "dpkg --audit",
            DPKG_I,
            "dpkg --audit",
            "dpkg --configure -a",
            "apt-get -f install -y",
            "apt-get update",
            ASK,
            INSTALL
        ]
    );
    assert!(
        journal.contains("the offline install failed: dpkg -i"),
        "{journal}"
    );
    assert!(n.installed());
}

#[test]
fn no_room_for_the_cards_debs_is_said_before_dpkg_runs() {
    // 600 KiB installed plus the 64 MiB margin do not fit in 50 MiB; apt's floor neither.
    let n = Node::new(50);
    with_card_debs(&n);
    n.write(
        "etc/piforge/first-boot-debs",
        "big_1_arm64.deb big 1 arm64 00 100000\n",
        0o644,
    );
    n.write("var/lib/piforge/debs/big_1_arm64.deb", "x", 0o644);
    let (ok, journal) = n.run();
    assert!(!ok, "{journal}");
    assert!(
        !n.calls().iter().any(|c| c.starts_with("dpkg -i")),
        "{:?}",
        n.calls()
    );
    assert!(
        journal.contains("installing pftool-a pftool-b from the card needs 161 MiB"),
        "{journal}"
    );
}

/// kubeadm-first-boot checks for the tools by the package names in the list.
#[test]
fn every_needed_package_is_named_after_its_tool() {
    for (package, tool, _) in super::NEEDED_PACKAGES {
        assert_eq!(package, tool);
    }
}
