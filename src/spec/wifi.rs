//! Wi-Fi settings of the spec (`network.wifi`, a node's `wifi`): typed once, checked here.

use std::fmt;

/// A node's Wi-Fi connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Wifi {
    /// 1 to 32 bytes (IEEE 802.11).
    pub ssid: String,
    pub psk: WifiPsk,
    /// ISO 3166-1 alpha-2, upper case: the regulatory domain.
    pub country: String,
    /// The network does not broadcast its SSID (the node must probe for it).
    pub hidden: bool,
}

impl fmt::Debug for Wifi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wifi")
            .field("ssid", &self.ssid)
            .field("psk", &"[elided]")
            .field("country", &self.country)
            .field("hidden", &self.hidden)
            .finish()
    }
}

/// A WPA2/WPA3-Personal key: a passphrase of 8 to 63 printable ASCII characters, or the
/// 256-bit PSK itself as 64 hex digits. Never printed (its `Debug` is elided).
#[derive(Clone, PartialEq, Eq)]
pub struct WifiPsk(String);

impl fmt::Debug for WifiPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WifiPsk([elided])")
    }
}

impl WifiPsk {
    /// Checks a key; the error says what is wrong without showing the key.
    pub fn parse(s: &str) -> Result<WifiPsk, &'static str> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(WifiPsk(s.to_string()));
        }
        if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err("a passphrase is printable ASCII only (no tabs, newlines or accents)");
        }
        if !(8..=63).contains(&s.len()) {
            return Err("a passphrase has 8 to 63 characters (or give the key as 64 hex digits)");
        }
        Ok(WifiPsk(s.to_string()))
    }

    /// The key as written in the connection file, which is mode 0600 in the root filesystem.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// 64 hex digits (the PSK itself) rather than a passphrase.
    pub fn is_raw_hex(&self) -> bool {
        self.0.len() == 64 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// Whether `s` is an SSID piforge can write: 1 to 32 bytes, no control characters (they
/// would not survive the keyfile and YAML formats).
pub fn is_ssid(s: &str) -> bool {
    (1..=32).contains(&s.len()) && !s.chars().any(char::is_control)
}

/// ISO 3166-1 alpha-2 codes (from tzdata's iso3166.tab).
const ISO3166: &str = "\
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO \
    BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ \
    DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP \
    GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG \
    KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML \
    MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE \
    PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL \
    SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM \
    US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Whether `s` is an ISO 3166-1 alpha-2 country code (upper case).
pub fn is_country(s: &str) -> bool {
    s.len() == 2 && ISO3166.split(' ').any(|c| c == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_forms() {
        assert!(WifiPsk::parse("correct horse").is_ok());
        assert!(WifiPsk::parse("1234567").is_err());
        assert!(WifiPsk::parse(&"a".repeat(63)).is_ok());
        assert!(WifiPsk::parse(&"a".repeat(64)).unwrap().is_raw_hex());
        assert!(WifiPsk::parse(&"g".repeat(64)).is_err());
        assert!(WifiPsk::parse("pässwörter").is_err());
        assert!(WifiPsk::parse("tab\there!").is_err());
        assert!(!format!("{:?}", WifiPsk::parse("correct horse").unwrap()).contains("horse"));
    }

    #[test]
    fn ssid_and_country() {
        assert!(is_ssid("home"));
        assert!(is_ssid(&"x".repeat(32)));
        assert!(!is_ssid(&"x".repeat(33)));
        assert!(!is_ssid(""));
        assert!(!is_ssid("a\nb"));
        for c in ["PT", "GB", "US", "DE"] {
            assert!(is_country(c), "{c}");
        }
        for c in ["pt", "UK", "XX", "P", "PRT"] {
            assert!(!is_country(c), "{c}");
        }
    }
}
