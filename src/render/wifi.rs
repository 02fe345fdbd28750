//! A Wi-Fi node's connection, in the form its base's network stack reads: a NetworkManager
//! keyfile (Raspberry Pi OS) or a netplan file (Ubuntu). Both go to the root filesystem with
//! mode 0600, because they hold the PSK; nothing here is ever written to the FAT partition.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::yaml;
use crate::spec::{Cidr, Wifi};

/// The Pi's on-board Wi-Fi interface (brcmfmac) on Raspberry Pi OS and Ubuntu.
pub const WIFI_INTERFACE: &str = "wlan0";

/// How the node is addressed on Wi-Fi: its fixed address, or DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WifiAddressing {
    pub address: Option<Cidr>,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

/// A GKeyFile string value: `\` doubled and spaces written `\s`, so leading and trailing
/// blanks survive (GLib's `g_key_file_get_string` undoes both).
fn keyfile_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace(' ', "\\s")
}

/// An SSID for a keyfile: as text when it is plain letters, digits, `-`, `_` and `.` (and
/// not digits only, which NetworkManager would read as a byte list); otherwise as the byte
/// list (`104;111;109;101;`) NetworkManager's keyfile reader also accepts, so no character
/// of the SSID needs escaping.
fn keyfile_ssid(s: &str) -> String {
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.chars().all(|c| c.is_ascii_digit());
    if plain {
        s.to_string()
    } else {
        s.bytes().map(|b| format!("{b};")).collect()
    }
}

/// A stable UUID for the node's connection (NetworkManager wants one per profile), derived
/// from the node name: the same on every rebuild.
fn connection_uuid(node: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("piforge wifi connection\0{node}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout, derived rather than random
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The NetworkManager keyfile (`/etc/NetworkManager/system-connections/*.nmconnection`,
/// mode 0600 root, or NetworkManager ignores it) of a node on Wi-Fi. Keys as in
/// NetworkManager's `nm-settings-keyfile(5)`: `[connection]`, `[wifi]`, `[wifi-security]`
/// (`key-mgmt=wpa-psk`: WPA2-Personal, and WPA3-SAE transition networks), `[ipv4]` with
/// `address1=ADDR/PREFIX,GATEWAY` and `dns=A;B;` or `method=auto`.
pub fn nm_keyfile(node: &str, wifi: &Wifi, addr: &WifiAddressing) -> String {
    let mut out =
        String::from("# Written by piforge: this node's Wi-Fi. Mode 0600: it holds the PSK.\n");
    out.push_str(&format!(
        "[connection]\nid=piforge-wifi\nuuid={}\ntype=wifi\ninterface-name={WIFI_INTERFACE}\nautoconnect=true\n\n",
        connection_uuid(node)
    ));
    out.push_str(&format!(
        "[wifi]\nmode=infrastructure\nssid={}\n",
        keyfile_ssid(&wifi.ssid)
    ));
    if wifi.hidden {
        out.push_str("hidden=true\n");
    }
    out.push_str(&format!(
        "\n[wifi-security]\nkey-mgmt=wpa-psk\npsk={}\n\n",
        keyfile_string(wifi.psk.expose())
    ));
    match addr.address {
        Some(a) => {
            out.push_str("[ipv4]\nmethod=manual\n");
            match addr.gateway {
                Some(gw) => out.push_str(&format!("address1={a},{gw}\n")),
                None => out.push_str(&format!("address1={a}\n")),
            }
            if !addr.dns.is_empty() {
                let dns: String = addr.dns.iter().map(|d| format!("{d};")).collect();
                out.push_str(&format!("dns={dns}\n"));
            }
        }
        None => out.push_str("[ipv4]\nmethod=auto\n"),
    }
    out.push_str("\n[ipv6]\nmethod=auto\n");
    out
}

/// NetworkManager's state file with the Wi-Fi radio on: pi-gen writes
/// `WirelessEnabled=false` into it when the image is built without a Wi-Fi country
/// (stage2/02-net-tweaks), which would keep the node off the air.
pub fn nm_state() -> &'static str {
    "[main]\nNetworkingEnabled=true\nWirelessEnabled=true\n"
}

/// The netplan file (`/etc/netplan/90-piforge-wifi.yaml`, mode 0600: netplan warns about
/// anything wider, and it holds the PSK) of a node on Wi-Fi, on a base without
/// NetworkManager (Ubuntu Server). `regulatory-domain` sets the country.
pub fn netplan_wifi(wifi: &Wifi, addr: &WifiAddressing) -> String {
    let mut ap = Map::new();
    ap.insert("password".into(), json!(wifi.psk.expose()));
    if wifi.hidden {
        ap.insert("hidden".into(), json!(true));
    }
    let mut aps = Map::new();
    aps.insert(wifi.ssid.clone(), Value::Object(ap));
    let mut dev = Map::new();
    dev.insert("regulatory-domain".into(), json!(wifi.country));
    match addr.address {
        Some(a) => {
            dev.insert("dhcp4".into(), json!(false));
            dev.insert("addresses".into(), json!([a.to_string()]));
            if let Some(gw) = addr.gateway {
                // `0.0.0.0/0` rather than `default`, as in the cloud-init network-config.
                dev.insert(
                    "routes".into(),
                    json!([{"to": "0.0.0.0/0", "via": gw.to_string()}]),
                );
            }
            if !addr.dns.is_empty() {
                dev.insert(
                    "nameservers".into(),
                    json!({"addresses": addr.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
                );
            }
        }
        None => {
            dev.insert("dhcp4".into(), json!(true));
        }
    }
    dev.insert("access-points".into(), Value::Object(aps));
    let mut wifis = Map::new();
    wifis.insert(WIFI_INTERFACE.into(), Value::Object(dev));
    format!(
        "# Written by piforge: this node's Wi-Fi. Mode 0600: it holds the PSK.\n{}",
        yaml::to_yaml(&json!({"network": {"version": 2, "wifis": wifis}}))
    )
}

/// The kernel command-line token that sets the Wi-Fi regulatory domain at boot on Raspberry
/// Pi OS (what raspi-config's `do_wifi_country` writes to cmdline.txt on NetworkManager
/// systems).
pub fn regdom_cmdline_token(wifi: &Wifi) -> String {
    format!("cfg80211.ieee80211_regdom={}", wifi.country)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::WifiPsk;

    fn wifi(ssid: &str, psk: &str, hidden: bool) -> Wifi {
        Wifi {
            ssid: ssid.into(),
            psk: WifiPsk::parse(psk).unwrap(),
            country: "PT".into(),
            hidden,
        }
    }

    #[test]
    fn keyfile_static_and_dhcp() {
        let w = wifi("home-net", "a \\b c d e", true);
        let fixed = WifiAddressing {
            address: Some("192.168.1.20/24".parse().unwrap()),
            gateway: Some("192.168.1.1".parse().unwrap()),
            dns: vec!["192.168.1.1".parse().unwrap(), "1.1.1.1".parse().unwrap()],
        };
        let k = nm_keyfile("zero", &w, &fixed);
        assert!(k.contains("\nssid=home-net\nhidden=true\n"), "{k}");
        assert!(k.contains("\npsk=a\\s\\\\b\\sc\\sd\\se\n"), "{k}");
        assert!(k.contains("\naddress1=192.168.1.20/24,192.168.1.1\ndns=192.168.1.1;1.1.1.1;\n"));
        assert_eq!(k, nm_keyfile("zero", &w, &fixed), "stable");
        assert_ne!(connection_uuid("zero"), connection_uuid("one"));
        let dhcp = WifiAddressing {
            address: None,
            gateway: None,
            dns: vec![],
        };
        let k = nm_keyfile("zero", &wifi("my wifi;x", "correct horse", false), &dhcp);
        assert!(
            k.contains("\nssid=109;121;32;119;105;102;105;59;120;\n"),
            "{k}"
        );
        assert!(
            k.contains("[ipv4]\nmethod=auto\n") && !k.contains("hidden"),
            "{k}"
        );
        assert_eq!(keyfile_ssid("1234"), "49;50;51;52;");
    }

    #[test]
    fn netplan_and_regdom() {
        let w = wifi("home: net", "correct horse", false);
        let dhcp = WifiAddressing {
            address: None,
            gateway: None,
            dns: vec![],
        };
        let y = netplan_wifi(&w, &dhcp);
        assert!(y.contains("regulatory-domain: PT") || y.contains("regulatory-domain: \"PT\""));
        assert!(y.contains("\"home: net\":"), "{y}");
        assert_eq!(regdom_cmdline_token(&w), "cfg80211.ieee80211_regdom=PT");
    }
}
