//! `network.wifi` and a node's `wifi`: ssid, psk or psk_file, country, hidden.

use super::super::wifi::{is_country, is_ssid, Wifi, WifiPsk};
use super::super::yaml::{Item, Kind};
use super::ctx::{Ctx, Fields};

pub(super) const WIFI_KEYS: &[&str] = &["ssid", "psk", "psk_file", "country", "hidden"];

/// A Wi-Fi mapping at `path`; every problem reported at the key or value to fix. The key
/// itself never appears in a message.
pub(super) fn wifi(ctx: &mut Ctx<'_>, item: &Item, path: &str) -> Option<Wifi> {
    let f: Fields<'_> = ctx.fields(item, path, WIFI_KEYS)?;
    let ssid = ctx.required(&f, "ssid").and_then(|v| {
        let p = format!("{path}.ssid");
        let s = ctx.text(v, &p)?;
        if is_ssid(s) {
            Some(s.to_string())
        } else {
            ctx.err(
                v.pos,
                format!(
                    "{p}: an SSID has 1 to 32 bytes and no control characters (this one has {} bytes)",
                    s.len()
                ),
            );
            None
        }
    });
    let psk = match (f.get("psk"), f.get("psk_file")) {
        (Some(_), Some(file)) => {
            ctx.err(file.pos, format!("{path}: give psk or psk_file, not both"));
            None
        }
        (None, None) => {
            ctx.err(
                f.pos,
                format!("{path}: missing required key `psk` (or `psk_file`, a file holding it)"),
            );
            None
        }
        (Some(v), None) => {
            let p = format!("{path}.psk");
            let s = ctx.text(v, &p)?;
            match WifiPsk::parse(s) {
                Ok(k) => Some(k),
                Err(why) => {
                    ctx.err(v.pos, format!("{p}: {why}"));
                    None
                }
            }
        }
        (None, Some(v)) => {
            let p = format!("{path}.psk_file");
            let rel = ctx.text(v, &p)?;
            let file = ctx.resolve(rel);
            match std::fs::read_to_string(&file) {
                Err(e) => {
                    ctx.err(v.pos, format!("{p}: cannot read {}: {e}", file.display()));
                    None
                }
                Ok(text) => {
                    // One line; its end of line is not part of the key.
                    let key = text.strip_suffix('\n').unwrap_or(&text);
                    let key = key.strip_suffix('\r').unwrap_or(key);
                    match WifiPsk::parse(key) {
                        Ok(k) => Some(k),
                        Err(why) => {
                            ctx.err(v.pos, format!("{p}: the key in {}: {why}", file.display()));
                            None
                        }
                    }
                }
            }
        }
    };
    let country = ctx.required(&f, "country").and_then(|v| {
        let p = format!("{path}.country");
        let s = ctx.text(v, &p)?;
        if is_country(s) {
            Some(s.to_string())
        } else {
            ctx.err(
                v.pos,
                format!(
                    "{p}: `{s}` is not an ISO 3166 country code (two capital letters, such as PT, GB or US): it sets the Wi-Fi regulatory domain"
                ),
            );
            None
        }
    });
    let hidden = match f.get("hidden") {
        None => Some(false),
        Some(v) => match &v.kind {
            Kind::Scalar(s) if s.plain && (s.text == "true" || s.text == "false") => {
                Some(s.text == "true")
            }
            _ => {
                ctx.err(v.pos, format!("{path}.hidden: expected true or false"));
                None
            }
        },
    };
    Some(Wifi {
        ssid: ssid?,
        psk: psk?,
        country: country?,
        hidden: hidden?,
    })
}
