//! The formats of single values: host names, `host:port`, user names, time zones, interface
//! names, ssh keys. Pure predicates.

use super::super::values::is_dns_label;

/// A DNS name made of labels (case-insensitive here: resolvers ignore case).
pub(super) fn is_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(&l.to_ascii_lowercase()))
}

/// `host:port` with an IPv4 address, a `[IPv6]` address or a DNS name, and a port 1-65535.
pub(super) fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        host.parse::<std::net::Ipv4Addr>().is_ok()
    } else {
        is_dns_name(host)
    };
    port_ok && host_ok
}

/// Debian's default NAME_REGEX (`^[a-z][-a-z0-9_]*\$?$`), at most 32 characters.
pub(super) fn is_user_name(s: &str) -> bool {
    let body = s.strip_suffix('$').unwrap_or(s);
    let b = body.as_bytes();
    !b.is_empty()
        && s.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// A tz database name: `UTC`, `Europe/Lisbon`, `America/Argentina/Buenos_Aires`, `Etc/GMT+1`.
pub(super) fn is_timezone(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'.'))
        })
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
pub(super) fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// The public key types sshd accepts in authorized_keys without options (OpenSSH's
/// `sshkey.c` keytypes table, less DSA, which OpenSSH 9.8 disabled and 10.0 removed, and the
/// `-cert-v01` types, which need a `cert-authority` option).
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
];

/// An authorized_keys line without options: `TYPE BASE64 [comment]`, where the key blob starts
/// with its own type name (so that a mangled paste is caught). One entry is one line: a line
/// break, carriage return, Unicode line or paragraph separator or any other control character
/// would let one entry become several authorized_keys lines (an options line such as
/// `command="..."` among them), so they are refused anywhere in the entry (issue 12 item 8).
pub(super) fn check_ssh_key(line: &str) -> Result<(), String> {
    if let Some(c) = line.chars().find(|&c| {
        (c.is_control() && c != ' ' && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}')
    }) {
        return Err(format!(
            "it contains the control or line-break character U+{:04X}; write one key per list \
             item, on one line",
            c as u32
        ));
    }
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let kind = words.next().unwrap_or("");
    if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-")) {
        return Err(format!(
            "`{}` is not a key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, sk-...)",
            kind
        ));
    }
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(format!(
            "`{kind}` is not a key type sshd accepts here; use one of {}",
            SSH_KEY_TYPES.join(", ")
        ));
    }
    let Some(b64) = words.next() else {
        return Err("the base64 key is missing".into());
    };
    if b64 == PLACEHOLDER_KEY_DATA {
        return Err(
            "this is the template's placeholder key, with which nobody can log in; replace \
             it with your own public key (the line in ~/.ssh/id_ed25519.pub; `ssh-keygen -t \
             ed25519` makes one)"
                .into(),
        );
    }
    let blob = base64_decode(b64).ok_or("the key is not valid base64 (truncated?)")?;
    check_key_blob(kind, &blob)
}

/// The key data of the placeholder in `examples/cluster.yaml` (a well-formed Ed25519 key
/// nobody holds the private half of): refused, so that a copied template is not built into
/// cards nobody can log in to.
pub(in crate::spec) const PLACEHOLDER_KEY_DATA: &str =
    "AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxREPLACExWITHxYOURxOWNxPUBLICKEY";

/// The key blob of an authorized_keys line, in the SSH wire format (RFC 4253 section 6.6,
/// RFC 5656 section 3.1, OpenSSH's PROTOCOL.u2f): the type name, then exactly the fields of
/// that type, each a `uint32` length and that many bytes, and nothing after them. A key cut
/// short in a paste fails here even when its base64 still decodes.
fn check_key_blob(kind: &str, blob: &[u8]) -> Result<(), String> {
    let mangled = || format!("the key data is not a whole {kind} key (truncated or mangled?)");
    let mut rest = blob;
    let mut field = || -> Option<&[u8]> {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let value = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some(value)
    };
    if field() != Some(kind.as_bytes()) {
        return Err(mangled());
    }
    let curve = |c: &str| match c {
        "nistp256" => Some(65),
        "nistp384" => Some(97),
        "nistp521" => Some(133),
        _ => None,
    };
    let ok = match kind {
        "ssh-ed25519" => field().is_some_and(|k| k.len() == 32),
        // e, then n: at least 1024 bits (OpenSSH refuses smaller RSA keys).
        "ssh-rsa" => {
            field().is_some_and(|e| !e.is_empty()) && field().is_some_and(|n| n.len() >= 128)
        }
        "sk-ssh-ed25519@openssh.com" => {
            field().is_some_and(|k| k.len() == 32) && field().is_some_and(|app| !app.is_empty())
        }
        _ => {
            let name = kind
                .trim_start_matches("sk-")
                .trim_end_matches("@openssh.com")
                .trim_start_matches("ecdsa-sha2-");
            let point = curve(name);
            field() == Some(name.as_bytes())
                && field().is_some_and(|q| Some(q.len()) == point)
                && (!kind.starts_with("sk-") || field().is_some_and(|app| !app.is_empty()))
        }
    };
    if ok && rest.is_empty() {
        Ok(())
    } else {
        Err(mangled())
    }
}

/// Standard base64, `=` padding optional (as OpenSSH writes it, and as people paste it).
pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    use base64::Engine as _;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::PAD
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT.decode(s).ok()
}

/// The tz database names (`zones.txt`, from tzdata's `tzdata.zi`).
fn tz_names() -> impl Iterator<Item = &'static str> {
    include_str!("../zones.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Whether `name` is a zone or link of the tz database (cloud-init writes it into
/// /etc/timezone and links /etc/localtime to /usr/share/zoneinfo/<name>: a name that is not
/// there leaves the node on UTC without a word).
pub(in crate::spec) fn is_known_timezone(name: &str) -> bool {
    tz_names().any(|z| z == name)
}

/// The name of `names` nearest to `name` (edit distance, ignoring case), if one is close
/// enough to be a likely typo: `Europe/Lisboa` -> `Europe/Lisbon`.
pub(crate) fn nearest_name<'a>(
    name: &str,
    names: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let want = name.to_ascii_lowercase();
    let (best, dist) = names
        .map(|z| (z, edit_distance(&want, &z.to_ascii_lowercase())))
        .min_by_key(|&(_, d)| d)?;
    (dist <= (want.len() / 3).max(2)).then_some(best)
}

/// The nearest tz database name to `name`, for a "did you mean" hint.
pub(in crate::spec) fn nearest_timezone(name: &str) -> Option<&'static str> {
    nearest_name(name, tz_names())
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
