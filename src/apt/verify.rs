//! Checking a repository's `InRelease` signature with the keys the base image trusts.
//!
//! piforge runs `gpgv`, the verifier apt itself ran up to Debian bookworm and Ubuntu 24.04
//! (apt-key's `apt-key verify`; trixie's apt prefers `sqv` but still takes gpgv), rather than
//! linking an OpenPGP implementation: rpgp (`pgp` 0.21) brings 67 crates (every cipher and
//! curve OpenPGP defines) to a two-core build for one check, and `debian-packaging` pins an
//! older rpgp with an async (tokio, reqwest) stack beside piforge's blocking ureq. gpgv is on
//! every Debian and Ubuntu host (apt depends on it or on sqv).
//!
//! Only the signed text that gpgv writes out (`--output`) is read afterwards, never the
//! file as downloaded, so nothing outside the signature can slip into the Release fields.

use std::path::Path;
use std::process::Command;

/// The Release text an InRelease signs, when a key of `keyring` made a good signature.
/// `Err` is one sentence (the caller names the URL).
pub fn verify_inrelease(
    inrelease: &[u8],
    keyring: &[u8],
    scratch: &Path,
) -> Result<String, String> {
    if keyring.is_empty() {
        return Err("the base image trusts no key for it (no Signed-By keyring, nothing in /etc/apt/trusted.gpg.d)".into());
    }
    let home = scratch.join("gnupg");
    std::fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let ring = scratch.join("keyring.gpg");
    let signed = scratch.join("InRelease");
    let out = scratch.join("Release");
    let _ = std::fs::remove_file(&out);
    std::fs::write(&ring, keyring).map_err(|e| format!("cannot write {}: {e}", ring.display()))?;
    std::fs::write(&signed, inrelease)
        .map_err(|e| format!("cannot write {}: {e}", signed.display()))?;
    let result = Command::new("gpgv")
        .arg("--homedir")
        .arg(&home)
        .args(["--status-fd", "1", "--keyring"])
        .arg(&ring)
        .arg("--output")
        .arg(&out)
        .arg(&signed)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run gpgv (install the gpgv package): {e}"))?;
    let status = String::from_utf8_lossy(&result.stdout);
    let has = |tag: &str| {
        status.lines().any(|l| {
            l.strip_prefix("[GNUPG:] ")
                .is_some_and(|r| r.split(' ').next() == Some(tag))
        })
    };
    let refused = [
        "BADSIG",
        "EXPKEYSIG",
        "REVKEYSIG",
        "EXPSIG",
        "ERRSIG",
        "NO_PUBKEY",
    ]
    .into_iter()
    .find(|t| has(t));
    if !result.status.success() || !has("VALIDSIG") || refused.is_some() {
        let why = match refused {
            Some("NO_PUBKEY") | Some("ERRSIG") => "no key the base image trusts made its signature",
            Some("BADSIG") => "its signature is bad (the file was changed after signing)",
            Some("EXPKEYSIG") | Some("EXPSIG") => "its signature or signing key has expired",
            Some("REVKEYSIG") => "its signing key is revoked",
            _ if !has("NEWSIG") => "it is not a signed file",
            _ => "gpgv did not accept its signature",
        };
        return Err(why.to_string());
    }
    let text = std::fs::read(&out).map_err(|e| format!("cannot read gpgv's output: {e}"))?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}
