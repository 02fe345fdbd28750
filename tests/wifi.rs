//! Wi-Fi nodes: the connection goes where the base's network stack reads it (a
//! NetworkManager keyfile on the trixie-shaped fixture, a netplan file on the Ubuntu-shaped
//! one), mode 0600 in the root filesystem, and no byte of the PSK reaches the FAT partition.
//! Judged by debugfs, mtools, Python's INI parser (NetworkManager's keyfile is a GLib key
//! file) and `netplan generate --root-dir`.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};

const K8S: &str = "1.34.11";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";
const PSK: &str = "wifi secret 42";
const NODE_PSK: &str = "attic-psk-0987";

fn write_spec(dir: &Path, image: &Path) -> PathBuf {
    fs::write(dir.join("attic.psk"), format!("{NODE_PSK}\n")).unwrap();
    let spec = format!(
        "name: wifilab
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
network:
  gateway: 192.168.50.1
  dns: [192.168.50.1]
  wifi:
    ssid: home net
    psk: \"{PSK}\"
    country: PT
user: pi
ssh_authorized_keys: [\"{KEY}\"]
nodes:
  - name: pi-cp-1
    role: control-plane
    address: 192.168.50.10/24
  - name: pi-zero
    role: worker
    wifi: {{ssid: attic, psk_file: attic.psk, country: GB, hidden: true}}
",
        image = image.display()
    );
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

fn build(base: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = write_spec(tmp.path(), &fixture(&format!("{base}.img")));
    let out = tmp.path().join("dist");
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        !all.contains(PSK) && !all.contains(NODE_PSK),
        "a PSK was printed"
    );
    // Nor does the dry run show one.
    let r = build_with(&spec, &out, &arts, &cache, &["--dry-run"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(r.status.success(), "{all}");
    assert!(
        !all.contains(PSK) && !all.contains(NODE_PSK),
        "a PSK was printed"
    );
    (tmp, out, cache)
}

/// No byte of either PSK on the FAT partition (its files, copied out with mcopy, and its
/// raw bytes), and the seed there does not configure Wi-Fi.
fn assert_no_psk_on_fat(img: &Path, tmp: &Path) {
    let (boot, root) = offsets(img, tmp);
    let data = fs::read(img).unwrap();
    let bootfs = &data[boot as usize..root as usize];
    let files = fat_file_bytes(img, boot, tmp);
    for psk in [PSK, NODE_PSK] {
        assert!(
            !contains(&files, psk.as_bytes()),
            "{}: PSK in a FAT file",
            img.display()
        );
        assert!(
            !contains(bootfs, psk.as_bytes()),
            "{}: PSK on the FAT",
            img.display()
        );
    }
    let nc = mtype(img, boot, "network-config");
    assert!(!nc.contains("wifis"), "{nc}");
}

/// Parses a NetworkManager keyfile as the GLib key file it is; returns `section.key = value`
/// lines, sorted.
fn keyfile(text: &str, tmp: &Path) -> Vec<String> {
    let f = tmp.join("conn.ini");
    fs::write(&f, text).unwrap();
    let out = run(
        "python3",
        &[
            "-c",
            "import configparser,sys\n\
             c=configparser.RawConfigParser(delimiters=('=',),comment_prefixes=('#',),strict=True)\n\
             c.optionxform=str\n\
             c.read(sys.argv[1])\n\
             print('\\n'.join(sorted(f'{s}.{k} = {v}' for s in c.sections() for k,v in c[s].items())))",
            f.to_str().unwrap(),
        ],
    );
    out.lines().map(str::to_string).collect()
}

#[test]
fn wifi_on_networkmanager_bases() {
    let (tmp, out, cache) = build("trixie");
    // The control plane: static address on Wi-Fi, cluster-wide network.
    let img = out.join("pi-cp-1.img");
    let (boot, root) = offsets(&img, &cache);
    let path = "/etc/NetworkManager/system-connections/piforge-wifi.nmconnection";
    let st = debugfs(&img, root, &format!("stat {path}"));
    assert!(
        st.contains("Mode:  0600") && st.contains("User:     0   Group:     0"),
        "{st}"
    );
    let kf = debugfs(&img, root, &format!("cat {path}"));
    let entries = keyfile(&kf, tmp.path());
    let uuid = entries
        .iter()
        .find_map(|l| l.strip_prefix("connection.uuid = "))
        .unwrap()
        .to_string();
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(
        entries,
        [
            "connection.autoconnect = true".to_string(),
            "connection.id = piforge-wifi".into(),
            "connection.interface-name = wlan0".into(),
            "connection.type = wifi".into(),
            format!("connection.uuid = {uuid}"),
            "ipv4.address1 = 192.168.50.10/24,192.168.50.1".into(),
            "ipv4.dns = 192.168.50.1;".into(),
            "ipv4.method = manual".into(),
            "ipv6.method = auto".into(),
            "wifi-security.key-mgmt = wpa-psk".into(),
            // GLib's escape for a blank.
            "wifi-security.psk = wifi\\ssecret\\s42".into(),
            // "home net" has a blank: written as its bytes.
            "wifi.mode = infrastructure".into(),
            "wifi.ssid = 104;111;109;101;32;110;101;116;".into(),
        ]
    );
    let state = debugfs(
        &img,
        root,
        "cat /var/lib/NetworkManager/NetworkManager.state",
    );
    assert!(state.contains("WirelessEnabled=true"), "{state}");
    let fat = format!("{}@@{boot}", img.display());
    let cmdline = run("mtype", &["-i", &fat, "::cmdline.txt"]);
    assert!(
        cmdline.contains(" cfg80211.ieee80211_regdom=PT"),
        "{cmdline}"
    );
    assert_eq!(cmdline.lines().count(), 1);
    // Ethernet is only an optional DHCP extra on a Wi-Fi node.
    let nc = mtype(&img, boot, "network-config");
    assert!(
        nc.contains("dhcp4: true") && nc.contains("optional: true"),
        "{nc}"
    );
    assert!(!nc.contains("192.168.50.10"), "{nc}");
    assert_no_psk_on_fat(&img, tmp.path());
    let (code, text) = e2fsck(&img, root);
    assert_eq!(code, 0, "e2fsck: {text}");

    // The Zero: its own network (psk_file, hidden, GB), DHCP.
    let img = out.join("pi-zero.img");
    let (boot, root) = offsets(&img, &cache);
    let kf = debugfs(&img, root, &format!("cat {path}"));
    let entries = keyfile(&kf, tmp.path());
    for want in [
        "ipv4.method = auto",
        "wifi.ssid = attic",
        "wifi.hidden = true",
        "wifi-security.psk = attic-psk-0987",
    ] {
        assert!(entries.iter().any(|e| e == want), "{want}: {entries:?}");
    }
    assert!(!entries.iter().any(|e| e.starts_with("ipv4.address")));
    let fat = format!("{}@@{boot}", img.display());
    let cmdline = run("mtype", &["-i", &fat, "::cmdline.txt"]);
    assert!(
        cmdline.contains(" cfg80211.ieee80211_regdom=GB"),
        "{cmdline}"
    );
    assert_no_psk_on_fat(&img, tmp.path());
}

#[test]
fn wifi_on_netplan_bases() {
    let (tmp, out, cache) = build("ubuntu");
    for (node, ssid, psk, country) in [
        ("pi-cp-1", "home net", PSK, "PT"),
        ("pi-zero", "attic", NODE_PSK, "GB"),
    ] {
        let img = out.join(format!("{node}.img"));
        let (_, root) = offsets(&img, &cache);
        let path = "/etc/netplan/90-piforge-wifi.yaml";
        let st = debugfs(&img, root, &format!("stat {path}"));
        assert!(
            st.contains("Mode:  0600") && st.contains("User:     0   Group:     0"),
            "{st}"
        );
        assert!(!debugfs(&img, root, "ls /etc/NetworkManager").contains("piforge"));
        let text = debugfs(&img, root, &format!("cat {path}"));
        // netplan itself reads it: generate the backend files from a root with only it.
        let r = tmp.path().join(format!("netplan-{node}"));
        fs::create_dir_all(r.join("etc/netplan")).unwrap();
        let f = r.join("etc/netplan/90-piforge-wifi.yaml");
        fs::write(&f, &text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        let (code, msg) = run_status("netplan", &["generate", "--root-dir", r.to_str().unwrap()]);
        assert_eq!(code, 0, "{node}: netplan generate: {msg}\n{text}");
        // systemd-networkd's renderer hands the access point to wpa_supplicant.
        let wpa = fs::read_to_string(r.join("run/netplan/wpa-wlan0.conf")).unwrap();
        assert!(wpa.contains(&format!("ssid=\"{ssid}\"")), "{wpa}");
        assert!(wpa.contains(&format!("psk=\"{psk}\"")), "{wpa}");
        assert!(wpa.contains(&format!("country={country}")), "{wpa}");
        if node == "pi-zero" {
            assert!(wpa.contains("scan_ssid=1"), "hidden: {wpa}");
        }
        let net =
            fs::read_to_string(r.join("run/systemd/network/10-netplan-wlan0.network")).unwrap();
        if node == "pi-cp-1" {
            assert!(
                net.contains("Address=192.168.50.10/24") && net.contains("Gateway=192.168.50.1"),
                "{net}"
            );
        } else {
            assert!(net.contains("DHCP=ipv4"), "{net}");
        }
        assert_no_psk_on_fat(&img, tmp.path());
    }
}

#[test]
fn a_base_without_networkmanager_or_netplan_is_refused_for_wifi() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let base = tmp.path().join("base.img");
    customize_ok(
        &fixture("trixie.img"),
        &base,
        &["--rm", "/usr/sbin/NetworkManager"],
        &cache,
    );
    let spec = write_spec(tmp.path(), &base);
    let out = tmp.path().join("dist");
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert_one_line_error(&r, "neither NetworkManager nor netplan");
    assert!(!out.join("pi-cp-1.img").exists());
    // Found while validating: nothing was written beside the spec.
    assert!(!tmp.path().join("secrets").exists(), "secrets were written");
    assert!(
        !tmp.path().join("piforge.lock").exists(),
        "the lock was written"
    );
}
