//! Cluster secrets, made once on the build host and reused by every later build.
//!
//! The cluster CA is generated before any node boots, so the discovery hash that workers pin
//! is known at build time, and kubeadm on the first control plane keeps the CA it finds in
//! `/etc/kubernetes/pki`. Everything lives in one private directory (0700, files 0600, a
//! `.gitignore` of `*`); nothing in it is ever regenerated, so rebuilding a node gives it the
//! same CA, token and admin credentials. Removing the directory starts a new cluster.
//!
//! Layout: `ca.crt`/`ca.key` (ECDSA P-256, CN `kubernetes`), `token` and `token-created`,
//! `admin.key`/`admin.crt` (the `kubernetes-admin` client certificate), and with more than one
//! control plane `sa.key`/`sa.pub`, `front-proxy-ca.crt`/`.key`, `etcd/ca.crt`/`.key`;
//! `hosts/<node>/ssh_host_ed25519_key` (and `.pub`) and `known_hosts` (see [`ensure_host_keys`]).

mod certs;
mod files;
mod host_keys;
mod token;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use host_keys::{
    ensure_host_keys, installed_pair_fingerprint, known_hosts, marker as host_key_marker,
    parse_marker as parse_host_key_marker, write_known_hosts, HostKey, HostKeyMode, HOST_KEY_FILE,
    HOST_PUB_FILE, KNOWN_HOSTS,
};
pub use token::is_valid as is_valid_token;

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const FRONT_PROXY_CRT: &str = "front-proxy-ca.crt";
const FRONT_PROXY_KEY: &str = "front-proxy-ca.key";
const ETCD_DIR: &str = "etcd";
const ETCD_CRT: &str = "etcd/ca.crt";
const ETCD_KEY: &str = "etcd/ca.key";
const SA_KEY: &str = "sa.key";
const SA_PUB: &str = "sa.pub";
const ADMIN_KEY: &str = "admin.key";
const ADMIN_CRT: &str = "admin.crt";
const TOKEN: &str = "token";
const TOKEN_CREATED: &str = "token-created";
/// The file [`Secrets::renew_token`] writes: the command that creates a renewed token in the
/// running cluster (0600: it holds the token).
pub const TOKEN_CREATE_FILE: &str = "token-create.sh";
/// How the token-age warning begins (so a renewal can withdraw it).
const TOKEN_AGE_WARNING: &str = "the bootstrap token in ";
/// The file [`write_admin_kubeconfig`] writes in the secrets directory.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} has mode {mode:04o}, so others may read the cluster's secrets; \
         make it private with `chmod go= {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "{present} exists but {missing} does not; restore it, or remove both to make new ones \
         (a new CA means rebuilding every node image)"
    )]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("could not generate {what}: {reason}")]
    Crypto { what: &'static str, reason: String },
    #[error("{what} {value:?} is not valid: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// The service-account signing key pair, both PEM (PKCS#8 private, SPKI public).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountKey {
    pub private_pem: String,
    pub public_pem: String,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("private_pem", &"[elided]")
            .field("public_pem", &self.public_pem)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretsOptions {
    /// Seconds since 1970; certificates start one day before it.
    pub build_epoch: i64,
    /// The bootstrap token's lifetime in the cluster; `None` for a token that never expires.
    pub token_ttl_secs: Option<u64>,
}

/// The cluster's secrets as read from (or just written to) the secrets directory.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    pub dir: PathBuf,
    /// The cluster CA (`/etc/kubernetes/pki/ca.crt`, `ca.key`).
    pub ca: CertAndKey,
    /// The keys every control plane must share (front-proxy CA, etcd CA, service-account
    /// key), made on the first build even with one control plane.
    pub front_proxy_ca: CertAndKey,
    pub etcd_ca: CertAndKey,
    pub service_account: ServiceAccountKey,
    /// The `kubernetes-admin` client certificate and key.
    pub admin: CertAndKey,
    /// The bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub token: String,
    /// When the token was made, in seconds since 1970 (wall clock).
    pub token_created: i64,
    /// Things the user should know, such as a token older than its ttl.
    pub warnings: Vec<String>,
    /// Each node's SSH host key, by node name: empty from [`ensure_secrets`], filled by the
    /// build from [`ensure_host_keys`] (`hosts/<node>/` in the secrets directory).
    pub host_keys: std::collections::BTreeMap<String, HostKey>,
    ca_spki_der: Vec<u8>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("dir", &self.dir)
            .field("discovery_hash", &self.discovery_hash())
            .field("token", &"[elided]")
            .field("token_created", &self.token_created)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// A file for a control plane's `/etc/kubernetes/pki`.
#[derive(Clone, PartialEq, Eq)]
pub struct PkiFile {
    /// Relative to `/etc/kubernetes/pki`, such as `etcd/ca.key`.
    pub path: &'static str,
    pub contents: String,
    /// 0644 for certificates and public keys, 0600 for private keys (as kubeadm writes them).
    pub mode: u32,
}

impl fmt::Debug for PkiFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PkiFile({}, {:04o})", self.path, self.mode)
    }
}

impl Secrets {
    /// `sha256:` and the hex SHA-256 of the CA certificate's DER SubjectPublicKeyInfo: the
    /// value of kubeadm's `caCertHashes`.
    pub fn discovery_hash(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.ca_spki_der)))
    }

    /// The files every control plane must have in `/etc/kubernetes/pki` before kubeadm runs:
    /// the CA, and with more than one control plane the keys they share. kubeadm makes the
    /// rest (serving certificates and so on) from these.
    pub fn control_plane_pki(&self) -> Vec<PkiFile> {
        let file = |path, contents: &String, mode| PkiFile {
            path,
            contents: contents.clone(),
            mode,
        };
        let mut out = vec![
            file(CA_CRT, &self.ca.cert_pem, 0o644),
            file(CA_KEY, &self.ca.key_pem, 0o600),
        ];
        let (sa, fp, etcd) = (&self.service_account, &self.front_proxy_ca, &self.etcd_ca);
        out.push(file(SA_KEY, &sa.private_pem, 0o600));
        out.push(file(SA_PUB, &sa.public_pem, 0o644));
        out.push(file(FRONT_PROXY_CRT, &fp.cert_pem, 0o644));
        out.push(file(FRONT_PROXY_KEY, &fp.key_pem, 0o600));
        out.push(file(ETCD_CRT, &etcd.cert_pem, 0o644));
        out.push(file(ETCD_KEY, &etcd.key_pem, 0o600));
        out
    }

    /// A kubeconfig for `kubernetes-admin` (group `system:masters`) on the cluster at
    /// `server_url` (`https://host:6443`), with the CA and client credentials embedded.
    pub fn admin_kubeconfig(
        &self,
        cluster_name: &str,
        server_url: &str,
    ) -> Result<String, PkiError> {
        check_kubeconfig_value("cluster name", cluster_name)?;
        check_kubeconfig_value("API server URL", server_url)?;
        if !server_url.starts_with("https://") || server_url.len() <= "https://".len() {
            return Err(PkiError::InvalidInput {
                what: "API server URL",
                value: server_url.to_string(),
                reason: "it must start with https:// and name a host",
            });
        }
        Ok(crate::render::kubeconfig::render(
            cluster_name,
            server_url,
            certs::ADMIN_CN,
            crate::render::kubeconfig::Credentials {
                ca_cert_pem: &self.ca.cert_pem,
                client_cert_pem: &self.admin.cert_pem,
                client_key_pem: &self.admin.key_pem,
            },
        ))
    }

    /// A warning if the token is older than `ttl_secs` at `now`: the cluster formed with it
    /// has then forgotten it, and nodes built now cannot join. The token itself is not shown.
    pub fn token_age_warning(&self, now: i64, ttl_secs: Option<u64>) -> Option<String> {
        let ttl = i64::try_from(ttl_secs?).ok()?;
        let age = now - self.token_created;
        if ttl == 0 || age <= ttl {
            return None;
        }
        let token = self.dir.join(TOKEN);
        Some(format!(
            "{TOKEN_AGE_WARNING}{} was made {} ago and its ttl is {}: a cluster formed with \
             it no longer accepts it, so nodes built now will not join until you run \
             `kubeadm token create \"$(cat {})\"` on a control plane",
            token.display(),
            human_duration(age),
            human_duration(ttl),
            token.display(),
        ))
    }
}

impl Secrets {
    /// Whether the token is older than `ttl_secs` at `now` (`None` or 0: it never expires),
    /// so that a cluster formed with it no longer accepts it.
    pub fn token_expired(&self, now: i64, ttl_secs: Option<u64>) -> bool {
        match ttl_secs.and_then(|t| i64::try_from(t).ok()) {
            Some(ttl) if ttl > 0 => now - self.token_created > ttl,
            _ => false,
        }
    }

    /// Replaces the bootstrap token with a new one dated `now`, for cards built to join a
    /// running cluster after the recorded token expired. The cluster does not know the new
    /// token until someone creates it there, so the command that does
    /// (`kubeadm token create TOKEN --ttl TTL`) is written, mode 0600, to
    /// [`TOKEN_CREATE_FILE`] in the secrets directory, whose path is returned: the token
    /// itself is never printed. `ttl` is kubeadm's form of the spec's ttl (`24h0m0s`).
    /// The token-age warning goes with the old token.
    pub fn renew_token(&mut self, now: i64, ttl: &str) -> Result<PathBuf, PkiError> {
        let _lock = files::lock(&self.dir)?;
        let token = token::generate()?;
        // The token first: a kill between the two writes leaves the new token with the old
        // date, which only makes the next build renew it again.
        files::write_private(&self.dir.join(TOKEN), format!("{token}\n").as_bytes())?;
        files::write_private(&self.dir.join(TOKEN_CREATED), format!("{now}\n").as_bytes())?;
        let path = self.dir.join(TOKEN_CREATE_FILE);
        let script = format!(
            "#!/bin/sh\n\
             # Written by piforge: the bootstrap token recorded in this directory had expired, so\n\
             # piforge made a new one for the cards it built then. A running cluster accepts it\n\
             # once it exists there: run this once, before those cards boot, on a control plane\n\
             # (as root), or anywhere with kubeadm and `--kubeconfig admin.kubeconfig` added.\n\
             # kubeadm refuses a token that exists already, which is harmless.\n\
             kubeadm token create {token} --ttl {ttl}\n"
        );
        files::write_private(&path, script.as_bytes())?;
        self.token = token;
        self.token_created = now;
        self.warnings.retain(|w| !w.starts_with(TOKEN_AGE_WARNING));
        Ok(path)
    }
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 3600 => format!("{} hours", s / 3600),
        s => format!("{s} seconds"),
    }
}

fn check_kubeconfig_value(what: &'static str, value: &str) -> Result<(), PkiError> {
    if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(PkiError::InvalidInput {
            what,
            value: value.to_string(),
            reason: "it must be non-empty, without spaces or control characters",
        });
    }
    Ok(())
}

fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Opens the secrets directory `dir`, creating what is missing, and returns its secrets.
///
/// On first use this creates `dir` (0700) with a `.gitignore`, the cluster CA, a bootstrap
/// token, the admin credentials and the keys control planes share (service-account key,
/// front-proxy CA, etcd CA). Later calls read the same files back; nothing that exists is regenerated, except
/// `admin.crt` when it no longer fits (expired at the build epoch, or not from this CA).
/// A directory or file that others may read, a file that does not parse, or half of a pair is
/// refused with an error that says what to do.
pub fn ensure_secrets(dir: &Path, opts: &SecretsOptions) -> Result<Secrets, PkiError> {
    ensure_secrets_at(dir, opts, wall_clock())
}

/// Writes `contents` to `path` in a secrets directory as the secrets are written: mode 0600,
/// atomically.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    files::write_private(path, contents)
}

/// Whether `dir` already holds a cluster's secrets (its CA certificate), so that
/// [`ensure_secrets`] would only read them.
pub fn secrets_exist(dir: &Path) -> bool {
    dir.join(CA_CRT).is_file()
}

/// [`ensure_secrets`] with the wall clock passed in (it only dates a new token and decides the
/// token-age warning).
fn ensure_secrets_at(dir: &Path, opts: &SecretsOptions, now: i64) -> Result<Secrets, PkiError> {
    files::ensure_private_dir(dir)?;
    let _lock = files::lock(dir)?;
    // What a build killed half-way left: its temporary files go, its committed pairs are
    // completed (see files::write_private_pair).
    files::remove_stale_temps(dir);
    files::finish_pairs(dir)?;
    files::finish_pairs(&dir.join(ETCD_DIR))?;
    let gitignore = dir.join(".gitignore");
    if std::fs::symlink_metadata(&gitignore).is_err() {
        files::write_private(&gitignore, b"*\n")?;
    }
    let epoch = opts.build_epoch;
    let (ca, ca_info) = ensure_ca(dir, CA_CRT, CA_KEY, "kubernetes", epoch)?;

    // The keys control planes share are made on the first build, even with one control
    // plane: a control plane added later must join with the same ones `kubeadm init` used.
    let front_proxy_ca = ensure_ca(
        dir,
        FRONT_PROXY_CRT,
        FRONT_PROXY_KEY,
        "front-proxy-ca",
        epoch,
    )?
    .0;
    files::ensure_private_dir(&dir.join(ETCD_DIR))?;
    let etcd_ca = ensure_ca(dir, ETCD_CRT, ETCD_KEY, "etcd-ca", epoch)?.0;
    let service_account = ensure_service_account(dir)?;

    let admin = ensure_admin(dir, &ca, epoch)?;
    let (token, token_created) = ensure_token(dir, now)?;
    let mut secrets = Secrets {
        dir: dir.to_path_buf(),
        ca,
        front_proxy_ca,
        etcd_ca,
        service_account,
        admin,
        token,
        token_created,
        warnings: Vec::new(),
        host_keys: Default::default(),
        ca_spki_der: ca_info.spki_der,
    };
    if let Some(w) = secrets.token_age_warning(now, opts.token_ttl_secs) {
        secrets.warnings.push(w);
    }
    Ok(secrets)
}

/// Reads or makes the CA pair `crt`/`key` in `dir`.
fn ensure_ca(
    dir: &Path,
    crt: &str,
    key: &str,
    cn: &str,
    epoch: i64,
) -> Result<(CertAndKey, certs::CertInfo), PkiError> {
    let (crt_path, key_path) = (dir.join(crt), dir.join(key));
    let pair = match (
        files::read_private(&crt_path)?,
        files::read_private(&key_path)?,
    ) {
        (Some(cert_pem), Some(key_pem)) => {
            let pair = CertAndKey { cert_pem, key_pem };
            let info = certs::check_ca(&crt_path, &key_path, &pair)?;
            return Ok((pair, info));
        }
        (None, None) => certs::new_ca(cn, epoch)?,
        (Some(_), None) => return Err(incomplete(crt_path, key_path)),
        (None, Some(_)) => return Err(incomplete(key_path, crt_path)),
    };
    files::write_private_pair(
        (&key_path, pair.key_pem.as_bytes()),
        (&crt_path, pair.cert_pem.as_bytes()),
    )?;
    let info = certs::parse_cert(&crt_path, &pair.cert_pem)?;
    Ok((pair, info))
}

fn incomplete(present: PathBuf, missing: PathBuf) -> PkiError {
    PkiError::Incomplete { present, missing }
}

fn ensure_service_account(dir: &Path) -> Result<ServiceAccountKey, PkiError> {
    let (key_path, pub_path) = (dir.join(SA_KEY), dir.join(SA_PUB));
    match (
        files::read_private(&key_path)?,
        files::read_private(&pub_path)?,
    ) {
        (Some(private_pem), Some(public_pem)) => {
            certs::check_key_pair(&key_path, &pub_path, &private_pem, &public_pem)?;
            Ok(ServiceAccountKey {
                private_pem,
                public_pem,
            })
        }
        (None, None) => {
            let (private_pem, public_pem) = certs::new_key_pair()?;
            files::write_private_pair(
                (&key_path, private_pem.as_bytes()),
                (&pub_path, public_pem.as_bytes()),
            )?;
            Ok(ServiceAccountKey {
                private_pem,
                public_pem,
            })
        }
        (Some(_), None) => Err(incomplete(key_path, pub_path)),
        (None, Some(_)) => Err(incomplete(pub_path, key_path)),
    }
}

/// Reads or makes `admin.key` (kept forever) and `admin.crt` (remade only when it no longer
/// fits: expired at the build epoch, or not signed by the current CA).
fn ensure_admin(dir: &Path, ca: &CertAndKey, epoch: i64) -> Result<CertAndKey, PkiError> {
    let (key_path, crt_path, ca_path) =
        (dir.join(ADMIN_KEY), dir.join(ADMIN_CRT), dir.join(CA_KEY));
    let key_pem = match files::read_private(&key_path)? {
        Some(k) => {
            certs::parse_key(&key_path, &k)?;
            k
        }
        None => {
            if crt_path.exists() {
                return Err(incomplete(crt_path, key_path));
            }
            let (k, _) = certs::new_key_pair()?;
            files::write_private(&key_path, k.as_bytes())?;
            k
        }
    };
    if let Some(cert_pem) = files::read_private(&crt_path)? {
        if certs::admin_cert_reusable(
            &crt_path,
            &cert_pem,
            &key_pem,
            &key_path,
            &ca.cert_pem,
            epoch,
        )? {
            return Ok(CertAndKey { cert_pem, key_pem });
        }
    }
    let cert_pem = certs::new_admin_cert(ca, &ca_path, &key_pem, &key_path, epoch)?;
    files::write_private(&crt_path, cert_pem.as_bytes())?;
    Ok(CertAndKey { cert_pem, key_pem })
}

/// Reads or makes the bootstrap token and the time it was made.
fn ensure_token(dir: &Path, now: i64) -> Result<(String, i64), PkiError> {
    let (token_path, created_path) = (dir.join(TOKEN), dir.join(TOKEN_CREATED));
    let token = match files::read_private(&token_path)? {
        Some(t) => {
            let t = t.trim();
            if !token::is_valid(t) {
                return Err(PkiError::Malformed {
                    path: token_path,
                    reason: "not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})".into(),
                });
            }
            // A token with its date is the normal case; a token without one lost its date to a
            // crash between the two writes, and gets today's.
            if let Some(c) = files::read_private(&created_path)? {
                let created = c.trim().parse::<i64>().map_err(|_| PkiError::Malformed {
                    path: created_path.clone(),
                    reason: "not a whole number of seconds since 1970".into(),
                })?;
                return Ok((t.to_string(), created));
            }
            t.to_string()
        }
        None => {
            let t = token::generate()?;
            files::write_private(&token_path, format!("{t}\n").as_bytes())?;
            t
        }
    };
    files::write_private(&created_path, format!("{now}\n").as_bytes())?;
    Ok((token, now))
}

/// Writes [`Secrets::admin_kubeconfig`] to `admin.kubeconfig` in the secrets directory (0600)
/// and returns its path.
pub fn write_admin_kubeconfig(
    secrets: &Secrets,
    cluster_name: &str,
    server_url: &str,
) -> Result<PathBuf, PkiError> {
    let text = secrets.admin_kubeconfig(cluster_name, server_url)?;
    let path = secrets.dir.join(ADMIN_KUBECONFIG);
    files::write_private(&path, text.as_bytes())?;
    Ok(path)
}
