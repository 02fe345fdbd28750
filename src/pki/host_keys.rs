//! SSH host keys, one per node, made once in the secrets directory.
//!
//! A node keeps its SSH identity across rebuilds and reimages: its Ed25519 host key lives in
//! `secrets/hosts/<node>/ssh_host_ed25519_key` (and `.pub`), is never regenerated, and goes
//! into the node's root filesystem only (never the FAT partition). `secrets/known_hosts`
//! lists every node for the user's laptop.
//!
//! Ed25519 only: every OpenSSH since 6.5 (2014) accepts it, and sshd skips the default
//! `HostKey` files that do not exist (a missing file is logged at debug level only), so one
//! key serves. Keys are made with the RustCrypto `ssh-key` crate, which writes the OpenSSH
//! private key format (`openssh-key-v1`) and the one-line public key `ssh-keygen` writes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ssh_key::{rand_core::OsRng, Algorithm, LineEnding, PrivateKey, PublicKey};

use super::{files, PkiError};

/// The directory under the secrets directory that holds one directory per node.
pub const HOSTS_DIR: &str = "hosts";
/// The known_hosts file in the secrets directory.
pub const KNOWN_HOSTS: &str = "known_hosts";
/// The host key's file name, in the secrets directory and in `/etc/ssh` on the node.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
/// The public half's file name.
pub const HOST_PUB_FILE: &str = "ssh_host_ed25519_key.pub";

/// A node's SSH host key pair in OpenSSH formats.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `-----BEGIN OPENSSH PRIVATE KEY-----` ..., unencrypted (sshd reads it at start).
    pub private_openssh: String,
    /// `ssh-ed25519 AAAA... root@<node>` and a newline.
    pub public_openssh: String,
    /// `SHA256:...`, as `ssh-keygen -l` shows it.
    pub fingerprint: String,
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostKey")
            .field("private_openssh", &"[elided]")
            .field("public_openssh", &self.public_openssh)
            .finish()
    }
}

impl HostKey {
    /// The public key without its comment: `ssh-ed25519 AAAA...`.
    pub fn public_key_field(&self) -> &str {
        let mut it = self.public_openssh.trim_end().splitn(3, ' ');
        let alg = it.next().unwrap_or_default();
        let data = it.next().unwrap_or_default();
        &self.public_openssh[..alg.len() + 1 + data.len()]
    }
}

/// Whether host keys are written to the secrets directory or only made in memory (a dry run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyMode {
    /// Missing keys are made and stored.
    Store,
    /// Missing keys are made in memory only; nothing is written.
    InMemory,
}

fn node_dir(secrets_dir: &Path, node: &str) -> PathBuf {
    secrets_dir.join(HOSTS_DIR).join(node)
}

fn crypto(what: &'static str) -> impl FnOnce(ssh_key::Error) -> PkiError {
    move |e| PkiError::Crypto {
        what,
        reason: e.to_string(),
    }
}

/// A new Ed25519 host key for `node`, with the comment `root@<node>` (as `ssh-keygen -A`
/// writes on the node itself).
fn generate(node: &str) -> Result<HostKey, PkiError> {
    let mut key =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(crypto("an SSH host key"))?;
    key.set_comment(format!("root@{node}"));
    encode(&key)
}

fn encode(key: &PrivateKey) -> Result<HostKey, PkiError> {
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(crypto("an SSH host key"))?
        .to_string();
    let public_openssh = format!(
        "{}\n",
        key.public_key()
            .to_openssh()
            .map_err(crypto("an SSH host key"))?
    );
    Ok(HostKey {
        private_openssh,
        public_openssh,
        fingerprint: key.fingerprint(Default::default()).to_string(),
    })
}

fn malformed(path: &Path, reason: impl Into<String>) -> PkiError {
    PkiError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses a stored pair and checks that the two halves belong together.
fn parse_pair(
    key_path: &Path,
    pub_path: &Path,
    private: &str,
    public: &str,
) -> Result<HostKey, PkiError> {
    let key = PrivateKey::from_openssh(private)
        .map_err(|e| malformed(key_path, format!("not an OpenSSH private key ({e})")))?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(malformed(key_path, "not an Ed25519 key"));
    }
    if key.is_encrypted() {
        return Err(malformed(
            key_path,
            "encrypted with a passphrase; sshd could not read it",
        ));
    }
    let stored = PublicKey::from_openssh(public.trim())
        .map_err(|e| malformed(pub_path, format!("not an OpenSSH public key ({e})")))?;
    if stored.key_data() != key.public_key().key_data() {
        return Err(malformed(
            pub_path,
            format!("does not match {}", key_path.display()),
        ));
    }
    // The stored files are returned as they are, byte for byte.
    Ok(HostKey {
        private_openssh: private.to_string(),
        public_openssh: if public.ends_with('\n') {
            public.to_string()
        } else {
            format!("{public}\n")
        },
        fingerprint: key.fingerprint(Default::default()).to_string(),
    })
}

/// Reads or makes the host key of every node in `nodes` under `secrets_dir/hosts/`.
/// Existing keys are never replaced; half a pair, a malformed file or a file others may read
/// is refused with a message that says which.
pub fn ensure_host_keys(
    secrets_dir: &Path,
    nodes: &[&str],
    mode: HostKeyMode,
) -> Result<BTreeMap<String, HostKey>, PkiError> {
    let store = mode == HostKeyMode::Store;
    if store {
        files::ensure_private_dir(secrets_dir)?;
    }
    let _lock = if store {
        Some(files::lock(secrets_dir)?)
    } else {
        None
    };
    let mut out = BTreeMap::new();
    for &node in nodes {
        let dir = node_dir(secrets_dir, node);
        let (key_path, pub_path) = (dir.join(HOST_KEY_FILE), dir.join(HOST_PUB_FILE));
        if store {
            files::finish_pairs(&dir)?;
        }
        let (private, public) = if dir.exists() {
            (
                files::read_private(&key_path)?,
                files::read_private(&pub_path)?,
            )
        } else {
            (None, None)
        };
        let key = match (private, public) {
            (Some(k), Some(p)) => parse_pair(&key_path, &pub_path, &k, &p)?,
            (None, None) => {
                let key = generate(node)?;
                if store {
                    files::ensure_private_dir(&secrets_dir.join(HOSTS_DIR))?;
                    files::ensure_private_dir(&dir)?;
                    files::write_private_pair(
                        (&key_path, key.private_openssh.as_bytes()),
                        (&pub_path, key.public_openssh.as_bytes()),
                    )?;
                }
                key
            }
            (Some(_), None) => return Err(super::incomplete(key_path, pub_path)),
            (None, Some(_)) => return Err(super::incomplete(pub_path, key_path)),
        };
        out.insert(node.to_string(), key);
    }
    Ok(out)
}

/// The known_hosts lines for `hosts` (`(name, fixed address)`): `name,addr ssh-ed25519 AAAA...`,
/// or `name ssh-ed25519 AAAA...` for a node on DHCP. Hosts without a key are left out.
pub fn known_hosts(hosts: &[(&str, Option<String>)], keys: &BTreeMap<String, HostKey>) -> String {
    let mut out = String::from("# Written by piforge: the SSH host keys of the cluster's nodes.\n");
    for (name, addr) in hosts {
        let Some(key) = keys.get(*name) else {
            continue;
        };
        let names = match addr {
            Some(a) => format!("{name},{a}"),
            None => name.to_string(),
        };
        out.push_str(&format!("{names} {}\n", key.public_key_field()));
    }
    out
}

/// Writes [`known_hosts`] to `secrets_dir/known_hosts` and returns its path.
pub fn write_known_hosts(
    secrets_dir: &Path,
    hosts: &[(&str, Option<String>)],
    keys: &BTreeMap<String, HostKey>,
) -> Result<PathBuf, PkiError> {
    let path = secrets_dir.join(KNOWN_HOSTS);
    files::write_private(&path, known_hosts(hosts, keys).as_bytes())?;
    Ok(path)
}

/// The marker piforge writes beside a node's host key: which node it was made for and its
/// fingerprint, so that `piforge check` can tell piforge's own key from one baked into a base.
pub fn marker(node: &str, key: &HostKey) -> String {
    format!(
        "# Written by piforge: /etc/ssh/{HOST_KEY_FILE} is this node's own host key, kept in the\n\
         # secrets directory (hosts/{node}/) and the same on every rebuild and reimage.\n\
         node={node}\nfingerprint={}\n",
        key.fingerprint
    )
}

/// `(node, fingerprint)` from a [`marker`].
pub fn parse_marker(text: &str) -> Option<(String, String)> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().to_string())
    };
    Some((field("node")?, field("fingerprint")?))
}

/// The fingerprint of an installed pair, after checking that the private key is an
/// unencrypted Ed25519 key whose public half is `public`; or why it is not.
pub fn installed_pair_fingerprint(private: &str, public: &str) -> Result<String, String> {
    let key = PrivateKey::from_openssh(private)
        .map_err(|e| format!("the private key does not parse ({e})"))?;
    let stored = PublicKey::from_openssh(public.trim())
        .map_err(|e| format!("the public key does not parse ({e})"))?;
    if key.is_encrypted() {
        return Err("the private key is encrypted; sshd cannot read it".into());
    }
    if stored.key_data() != key.public_key().key_data() {
        return Err("the public key is not the private key's".into());
    }
    Ok(key.fingerprint(Default::default()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn keys_are_made_once_private_and_reused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("secrets");
        let a = ensure_host_keys(&dir, &["pi-1", "pi-2"], HostKeyMode::Store).unwrap();
        assert_ne!(a["pi-1"].public_openssh, a["pi-2"].public_openssh);
        assert!(a["pi-1"].public_openssh.starts_with("ssh-ed25519 AAAA"));
        assert!(a["pi-1"].public_openssh.ends_with(" root@pi-1\n"));
        assert!(a["pi-1"]
            .private_openssh
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert_eq!(mode(&dir.join(HOSTS_DIR)), 0o700);
        assert_eq!(mode(&dir.join("hosts/pi-1")), 0o700);
        assert_eq!(mode(&dir.join("hosts/pi-1").join(HOST_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join("hosts/pi-1").join(HOST_PUB_FILE)), 0o600);
        // Read back, not remade; a node added later gets its own.
        let b = ensure_host_keys(&dir, &["pi-1", "pi-2", "pi-3"], HostKeyMode::Store).unwrap();
        assert_eq!(a["pi-1"], b["pi-1"]);
        assert_eq!(a["pi-2"], b["pi-2"]);
        assert!(dir.join("hosts/pi-3").join(HOST_KEY_FILE).is_file());
        assert!(format!("{:?}", b["pi-1"]).contains("[elided]"));
        assert!(!format!("{:?}", b["pi-1"]).contains("PRIVATE"));
    }

    #[test]
    fn dry_run_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("secrets");
        let k = ensure_host_keys(&dir, &["pi-1"], HostKeyMode::InMemory).unwrap();
        assert!(k.contains_key("pi-1"));
        assert!(!dir.exists());
    }

    #[test]
    fn half_a_pair_a_mismatch_or_an_open_mode_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("secrets");
        ensure_host_keys(&dir, &["a", "b"], HostKeyMode::Store).unwrap();
        let a_pub = dir.join("hosts/a").join(HOST_PUB_FILE);
        let b_pub = dir.join("hosts/b").join(HOST_PUB_FILE);
        // Another node's public key beside this node's private key.
        std::fs::copy(&b_pub, &a_pub).unwrap();
        let e = ensure_host_keys(&dir, &["a"], HostKeyMode::Store).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        std::fs::remove_file(&a_pub).unwrap();
        let e = ensure_host_keys(&dir, &["a"], HostKeyMode::Store).unwrap_err();
        assert!(matches!(e, PkiError::Incomplete { .. }), "{e}");
        let b_key = dir.join("hosts/b").join(HOST_KEY_FILE);
        std::fs::set_permissions(&b_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ensure_host_keys(&dir, &["b"], HostKeyMode::Store).unwrap_err();
        assert!(matches!(e, PkiError::Permissions { .. }), "{e}");
        std::fs::set_permissions(&b_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&b_key, "not a key\n").unwrap();
        let e = ensure_host_keys(&dir, &["b"], HostKeyMode::Store).unwrap_err();
        assert!(e.to_string().contains("not an OpenSSH private key"), "{e}");
    }

    #[test]
    fn known_hosts_lists_name_and_fixed_address() {
        let t = tempfile::tempdir().unwrap();
        let keys =
            ensure_host_keys(&t.path().join("s"), &["cp", "w"], HostKeyMode::InMemory).unwrap();
        let text = known_hosts(&[("cp", Some("192.168.1.10".into())), ("w", None)], &keys);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                format!("cp,192.168.1.10 {}", keys["cp"].public_key_field()),
                format!("w {}", keys["w"].public_key_field()),
            ]
        );
        assert!(keys["cp"]
            .public_key_field()
            .starts_with("ssh-ed25519 AAAA"));
        assert!(!keys["cp"].public_key_field().contains("root@"));
    }
}
