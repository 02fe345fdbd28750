//! The oracle is the `openssl` command: it parses, verifies and hashes what piforge wrote.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use super::*;
use crate::clock::{civil, DEFAULT_EPOCH};

const EPOCH: i64 = DEFAULT_EPOCH; // 2024-01-01T00:00:00Z

fn opts() -> SecretsOptions {
    SecretsOptions {
        build_epoch: EPOCH,
        token_ttl_secs: Some(86_400),
    }
}

fn secrets_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster").join("secrets");
    (tmp, dir)
}

/// Runs openssl with `args`, returning stdout; panics with stderr on failure.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// openssl reads `crt` as valid from a day before EPOCH for 3650 days.
fn assert_ten_years_from_a_day_before_the_epoch(crt: &Path) {
    let dates = openssl(&[
        "x509",
        "-in",
        path_str(crt),
        "-noout",
        "-dates",
        "-dateopt",
        "iso_8601",
    ]);
    let nb = EPOCH - 86_400;
    assert!(dates.contains(&format!("notBefore={}", iso(nb))), "{dates}");
    assert!(
        dates.contains(&format!("notAfter={}", iso(nb + 3650 * 86_400))),
        "{dates}"
    );
}

/// openssl verifies DIR/admin.crt against DIR/ca.crt at `epoch`.
fn assert_admin_verifies(dir: &Path, epoch: i64) {
    let attime = epoch.to_string();
    let v = openssl(&[
        "verify",
        "-attime",
        &attime,
        "-CAfile",
        path_str(&dir.join("ca.crt")),
        path_str(&dir.join("admin.crt")),
    ]);
    assert!(v.trim_end().ends_with(": OK"), "{v}");
}

/// `YYYY-MM-DD HH:MM:SSZ`, as `openssl x509 -dateopt iso_8601` prints dates.
fn iso(epoch: i64) -> String {
    let c = civil(epoch);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn ca_is_a_backdated_ten_year_ecdsa_ca() {
    let (_tmp, dir) = secrets_dir();
    ensure_secrets(&dir, &opts()).unwrap();
    let ca = dir.join("ca.crt");
    let text = openssl(&["x509", "-in", path_str(&ca), "-noout", "-text"]);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Subject: CN = kubernetes\n"), "{text}");
    assert!(text.contains("Issuer: CN = kubernetes\n"), "{text}");
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    assert!(
        text.contains("Digital Signature, Key Encipherment, Certificate Sign"),
        "{text}"
    );
    assert_ten_years_from_a_day_before_the_epoch(&ca);
    // The key is the certificate's: openssl derives the same public key from both.
    let from_key = openssl(&["pkey", "-in", path_str(&dir.join("ca.key")), "-pubout"]);
    let from_cert = openssl(&["x509", "-in", path_str(&ca), "-noout", "-pubkey"]);
    assert_eq!(from_key, from_cert);
}

#[test]
fn discovery_hash_matches_openssl() {
    let (_tmp, dir) = secrets_dir();
    let s = ensure_secrets(&dir, &opts()).unwrap();
    let out = sh(&format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | sha256sum",
        path_str(&dir.join("ca.crt"))
    ));
    let hex = out.split_whitespace().next().unwrap();
    assert_eq!(s.discovery_hash(), format!("sha256:{hex}"));
}

#[test]
fn admin_kubeconfig_carries_a_client_cert_the_ca_verifies() {
    let (tmp, dir) = secrets_dir();
    let s = ensure_secrets(&dir, &opts()).unwrap();
    let kc = s
        .admin_kubeconfig("pis", "https://192.168.1.10:6443")
        .unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&kc).unwrap();
    let y = &docs[0];
    assert_eq!(y["kind"].as_str(), Some("Config"));
    assert_eq!(y["current-context"].as_str(), Some("kubernetes-admin@pis"));
    assert_eq!(y["clusters"][0]["name"].as_str(), Some("pis"));
    assert_eq!(
        y["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://192.168.1.10:6443")
    );
    assert_eq!(
        y["contexts"][0]["context"]["user"].as_str(),
        Some("kubernetes-admin")
    );
    let b64 = |v: &yaml_rust2::Yaml| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let user = &y["users"][0]["user"];
    let crt = tmp.path().join("admin-from-kubeconfig.crt");
    let key = tmp.path().join("admin-from-kubeconfig.key");
    let ca = tmp.path().join("ca-from-kubeconfig.crt");
    fs::write(&crt, b64(&user["client-certificate-data"])).unwrap();
    fs::write(&key, b64(&user["client-key-data"])).unwrap();
    fs::write(
        &ca,
        b64(&y["clusters"][0]["cluster"]["certificate-authority-data"]),
    )
    .unwrap();
    assert_eq!(
        fs::read(&ca).unwrap(),
        fs::read(dir.join("ca.crt")).unwrap()
    );

    // Valid at the build epoch, for client authentication, issued by the cluster CA.
    let attime = EPOCH.to_string();
    let verified = openssl(&[
        "verify",
        "-attime",
        &attime,
        "-purpose",
        "sslclient",
        "-CAfile",
        path_str(&ca),
        path_str(&crt),
    ]);
    assert!(verified.trim_end().ends_with(": OK"), "{verified}");
    let subject = openssl(&["x509", "-in", path_str(&crt), "-noout", "-subject"]);
    assert_eq!(
        subject.trim(),
        "subject=O = system:masters, CN = kubernetes-admin"
    );
    let text = openssl(&["x509", "-in", path_str(&crt), "-noout", "-text"]);
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert_ten_years_from_a_day_before_the_epoch(&crt);
    // The key in the kubeconfig is the certificate's.
    assert_eq!(
        openssl(&["pkey", "-in", path_str(&key), "-pubout"]),
        openssl(&["x509", "-in", path_str(&crt), "-noout", "-pubkey"])
    );
}

#[test]
fn write_admin_kubeconfig_writes_it_private() {
    let (_tmp, dir) = secrets_dir();
    let s = ensure_secrets(&dir, &opts()).unwrap();
    let path = write_admin_kubeconfig(&s, "pis", "https://pi-cp.local:6443").unwrap();
    assert_eq!(path, dir.join("admin.kubeconfig"));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        s.admin_kubeconfig("pis", "https://pi-cp.local:6443")
            .unwrap()
    );
    for bad in ["http://x:6443", "https://", "https://a b", "pi:6443"] {
        assert!(
            matches!(
                s.admin_kubeconfig("pis", bad),
                Err(PkiError::InvalidInput { .. })
            ),
            "{bad}"
        );
    }
    assert!(s.admin_kubeconfig("a\nb", "https://x:6443").is_err());
}

#[test]
fn files_are_private_and_ignored_by_git() {
    let (_tmp, dir) = secrets_dir();
    ensure_secrets(&dir, &opts()).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("etcd")), 0o700);
    assert_eq!(fs::read_to_string(dir.join(".gitignore")).unwrap(), "*\n");
    let files = snapshot(&dir);
    assert!(files.len() >= 14, "{files:?}");
    for (p, _) in &files {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    // No temporary file or pair directory is left behind.
    assert!(files.iter().all(|(p, _)| {
        let p = p.to_string_lossy();
        !p.contains("piforge-tmp") && !p.contains("/.pair.")
    }));
}

/// Issue 12 item 14: a kill between writing `ca.key` and `ca.crt` left the key alone, and
/// every later build refused the half pair. Pairs are now committed as one (a `.pair.*.ready`
/// directory): the states a kill can leave are completed or dropped on the next run. The
/// write itself is killed in `tests/build.rs` (a real signal); here each state is made by hand.
#[test]
fn a_pair_interrupted_half_way_is_completed_or_dropped() {
    let (_tmp, dir) = secrets_dir();
    let first = ensure_secrets(&dir, &opts()).unwrap();
    // Killed after the commit point, between moving ca.key and ca.crt into place.
    let ready = dir.join(".pair.AbC123.ready");
    fs::create_dir(&ready).unwrap();
    fs::rename(dir.join("ca.crt"), ready.join("ca.crt")).unwrap();
    // Killed before the commit point: a staging directory holding a pair never committed.
    let staging = dir.join("etcd/.pair.XyZ789");
    fs::create_dir(&staging).unwrap();
    fs::write(staging.join("ca.key"), "not the etcd key").unwrap();
    // Killed while writing a file: its temporary file, from a process that is gone
    // (pid_max is at most 2^22, so this process id never runs).
    let stale = dir.join(".admin.kubeconfig.999999999.q1w2e3r4t5y6.piforge-tmp");
    fs::write(&stale, "secret").unwrap();
    // A live process's temporary file is not touched.
    let live = dir.join(format!(
        ".token.{}.a1b2c3d4e5f6.piforge-tmp",
        std::process::id()
    ));
    fs::write(&live, "in progress").unwrap();

    let again = ensure_secrets(&dir, &opts()).unwrap();
    assert_eq!(again.ca.cert_pem, first.ca.cert_pem);
    assert_eq!(again.etcd_ca.key_pem, first.etcd_ca.key_pem);
    assert_eq!(
        fs::read_to_string(dir.join("ca.crt")).unwrap(),
        first.ca.cert_pem
    );
    assert!(!ready.exists() && !staging.exists() && !stale.exists());
    assert!(live.exists());
    fs::remove_file(&live).unwrap();
    // The pair still verifies (openssl is the judge).
    openssl(&[
        "verify",
        "-CAfile",
        path_str(&dir.join("ca.crt")),
        path_str(&dir.join("ca.crt")),
    ]);
}

#[test]
fn second_call_reuses_everything() {
    let (_tmp, dir) = secrets_dir();
    let first = ensure_secrets(&dir, &opts()).unwrap();
    let before = snapshot(&dir);
    let second = ensure_secrets(&dir, &opts()).unwrap();
    assert_eq!(first, second);
    assert_eq!(before, snapshot(&dir));
    assert_eq!(
        first
            .admin_kubeconfig("pis", "https://10.0.0.1:6443")
            .unwrap(),
        second
            .admin_kubeconfig("pis", "https://10.0.0.1:6443")
            .unwrap()
    );
    // A later build epoch inside the admin certificate's lifetime changes nothing either.
    let later = SecretsOptions {
        build_epoch: EPOCH + 30 * 86_400,
        ..opts()
    };
    assert_eq!(ensure_secrets(&dir, &later).unwrap().admin, first.admin);
}

#[test]
fn admin_cert_stays_valid_as_long_as_the_ca() {
    // The build epoch defaults to a fixed date in the past: a certificate made at it must still
    // verify years later.
    let (_tmp, dir) = secrets_dir();
    let first = ensure_secrets(&dir, &opts()).unwrap();
    let later = SecretsOptions {
        build_epoch: EPOCH + 3000 * 86_400,
        ..opts()
    };
    let second = ensure_secrets(&dir, &later).unwrap();
    assert_eq!(first.ca, second.ca);
    assert_eq!(first.token, second.token);
    assert_eq!(
        first.admin, second.admin,
        "a valid admin certificate is reused"
    );
    assert_admin_verifies(&dir, later.build_epoch);
}

#[test]
fn token_is_well_formed_and_random() {
    let (_tmp, dir) = secrets_dir();
    let s = ensure_secrets(&dir, &opts()).unwrap();
    let re_ok = |t: &str| {
        t.len() == 23
            && t.char_indices().all(|(i, c)| {
                if i == 6 {
                    c == '.'
                } else {
                    c.is_ascii_lowercase() || c.is_ascii_digit()
                }
            })
    };
    assert!(re_ok(&s.token), "{}", s.token);
    assert_eq!(
        fs::read_to_string(dir.join("token")).unwrap(),
        format!("{}\n", s.token)
    );
    let created: i64 = fs::read_to_string(dir.join("token-created"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(created, s.token_created);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let t = token::generate().unwrap();
        assert!(re_ok(&t) && is_valid_token(&t), "{t}");
        seen.insert(t);
    }
    assert_eq!(seen.len(), 200);
    for bad in [
        "abcdef0123456789abcdef",
        "ABCDEF.0123456789abcdef",
        "abcdef.0123456789abcde",
        "abcde.0123456789abcdefg",
    ] {
        assert!(!is_valid_token(bad), "{bad}");
    }
}

#[test]
fn old_token_warns_without_showing_it() {
    let (_tmp, dir) = secrets_dir();
    let now = 1_800_000_000;
    let s = ensure_secrets_at(&dir, &opts(), now).unwrap();
    assert_eq!(s.token_created, now);
    assert!(s.warnings.is_empty());
    let s = ensure_secrets_at(&dir, &opts(), now + 3 * 86_400).unwrap();
    assert_eq!(s.token_created, now);
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(s.warnings[0].contains("3 days"), "{}", s.warnings[0]);
    assert!(!s.warnings[0].contains(&s.token));
    let never = SecretsOptions {
        token_ttl_secs: None,
        ..opts()
    };
    assert!(ensure_secrets_at(&dir, &never, now + 300 * 86_400)
        .unwrap()
        .warnings
        .is_empty());
}

#[test]
fn shared_control_plane_keys_are_made_on_the_first_build() {
    let (_tmp, dir) = secrets_dir();
    let first = ensure_secrets(&dir, &opts()).unwrap();
    for f in ["sa.key", "front-proxy-ca.key", "etcd/ca.key"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // A secrets directory from before (CA only) gets them on the next build, the CA kept.
    for f in [
        "sa.key",
        "sa.pub",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
    ] {
        fs::remove_file(dir.join(f)).unwrap();
    }
    let s = ensure_secrets(&dir, &opts()).unwrap();
    assert_eq!(s.ca, first.ca);
    // Reused afterwards, never remade.
    assert_eq!(
        ensure_secrets(&dir, &opts()).unwrap().service_account,
        s.service_account
    );
    for f in [
        "sa.key",
        "sa.pub",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    assert_eq!(
        openssl(&["pkey", "-in", path_str(&dir.join("sa.key")), "-pubout"]),
        fs::read_to_string(dir.join("sa.pub")).unwrap()
    );
    for (crt, cn) in [
        ("front-proxy-ca.crt", "front-proxy-ca"),
        ("etcd/ca.crt", "etcd-ca"),
    ] {
        let text = openssl(&["x509", "-in", path_str(&dir.join(crt)), "-noout", "-text"]);
        assert!(text.contains(&format!("Subject: CN = {cn}\n")), "{text}");
        assert!(text.contains("CA:TRUE"), "{text}");
    }
    let paths: Vec<_> = s
        .control_plane_pki()
        .iter()
        .map(|f| (f.path, f.mode))
        .collect();
    assert_eq!(
        paths,
        [
            ("ca.crt", 0o644),
            ("ca.key", 0o600),
            ("sa.key", 0o600),
            ("sa.pub", 0o644),
            ("front-proxy-ca.crt", 0o644),
            ("front-proxy-ca.key", 0o600),
            ("etcd/ca.crt", 0o644),
            ("etcd/ca.key", 0o600),
        ]
    );
    assert_eq!(first.control_plane_pki().len(), 8);
}

#[test]
fn readable_dir_or_file_is_refused() {
    let (_tmp, dir) = secrets_dir();
    ensure_secrets(&dir, &opts()).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    let err = ensure_secrets(&dir, &opts()).unwrap_err();
    assert!(
        matches!(err, PkiError::Permissions { mode: 0o750, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod go="), "{err}");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(dir.join("ca.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let err = ensure_secrets(&dir, &opts()).unwrap_err();
    assert!(
        matches!(err, PkiError::Permissions { ref path, .. } if path.ends_with("ca.key")),
        "{err}"
    );
    // A fresh directory that already exists with a loose mode is refused before anything is written.
    let loose = dir.parent().unwrap().join("loose");
    fs::create_dir(&loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        ensure_secrets(&loose, &opts()),
        Err(PkiError::Permissions { .. })
    ));
    assert_eq!(fs::read_dir(&loose).unwrap().count(), 0);
}

#[test]
fn malformed_or_half_pairs_are_refused() {
    let fresh = || {
        let (tmp, dir) = secrets_dir();
        ensure_secrets(&dir, &opts()).unwrap();
        (tmp, dir)
    };
    let write = |p: PathBuf, s: &str| files::write_private(&p, s.as_bytes()).unwrap();

    let (_t, dir) = fresh();
    write(dir.join("ca.crt"), "not a certificate\n");
    let err = ensure_secrets(&dir, &opts()).unwrap_err();
    assert!(
        matches!(err, PkiError::Malformed { ref path, .. } if path.ends_with("ca.crt")),
        "{err}"
    );

    let (_t, dir) = fresh();
    write(dir.join("token"), "abc.def\n");
    assert!(matches!(
        ensure_secrets(&dir, &opts()),
        Err(PkiError::Malformed { .. })
    ));

    let (_t, dir) = fresh();
    write(dir.join("token-created"), "yesterday\n");
    assert!(matches!(
        ensure_secrets(&dir, &opts()),
        Err(PkiError::Malformed { .. })
    ));

    // A key that belongs to another CA.
    let (_t, dir) = fresh();
    let (_t2, other) = fresh();
    write(
        dir.join("ca.key"),
        &fs::read_to_string(other.join("ca.key")).unwrap(),
    );
    let err = ensure_secrets(&dir, &opts()).unwrap_err();
    assert!(err.to_string().contains("does not belong to"), "{err}");

    // The admin certificate is not a CA.
    let (_t, dir) = fresh();
    write(
        dir.join("ca.crt"),
        &fs::read_to_string(dir.join("admin.crt")).unwrap(),
    );
    let err = ensure_secrets(&dir, &opts()).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");

    // Half a pair is never completed with a new half.
    let (_t, dir) = fresh();
    fs::remove_file(dir.join("ca.key")).unwrap();
    let err = ensure_secrets(&dir, &opts()).unwrap_err();
    assert!(matches!(err, PkiError::Incomplete { .. }), "{err}");
    assert!(!dir.join("ca.key").exists());
}

#[test]
fn admin_cert_from_an_old_ca_is_remade() {
    let (_t, dir) = secrets_dir();
    let first = ensure_secrets(&dir, &opts()).unwrap();
    // The user starts a new cluster by removing the CA (and the token) but keeps admin.*.
    for f in ["ca.crt", "ca.key", "token", "token-created"] {
        fs::remove_file(dir.join(f)).unwrap();
    }
    let second = ensure_secrets(&dir, &opts()).unwrap();
    assert_ne!(first.ca, second.ca);
    assert_ne!(first.token, second.token);
    assert_eq!(first.admin.key_pem, second.admin.key_pem);
    assert_admin_verifies(&dir, EPOCH);
}

#[test]
fn debug_output_hides_secrets() {
    let (_t, dir) = secrets_dir();
    let s = ensure_secrets(&dir, &opts()).unwrap();
    let dbg = format!("{s:?} {:?} {:?}", s.ca, s.service_account);
    assert!(!dbg.contains(&s.token));
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
}

#[test]
fn an_expired_token_is_renewed_with_the_command_that_creates_it() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir) = secrets_dir();
    let now = 1_800_000_000;
    let s = ensure_secrets_at(&dir, &opts(), now).unwrap();
    assert!(!s.token_expired(now + 86_400, Some(86_400)));
    assert!(s.token_expired(now + 86_401, Some(86_400)));
    assert!(!s.token_expired(now + 1_000 * 86_400, None));
    assert!(!s.token_expired(now + 1_000 * 86_400, Some(0)));
    let later = now + 3 * 86_400;
    let mut s2 = ensure_secrets_at(&dir, &opts(), later).unwrap();
    assert_eq!(s2.warnings.len(), 1);
    let old = s2.token.clone();
    let file = s2.renew_token(later, "24h0m0s").unwrap();
    assert!(s2.warnings.is_empty(), "{:?}", s2.warnings);
    assert_ne!(s2.token, old);
    assert!(is_valid_token(&s2.token));
    assert_eq!(s2.token_created, later);
    assert_eq!(file, dir.join(TOKEN_CREATE_FILE));
    let script = fs::read_to_string(&file).unwrap();
    assert!(
        script.ends_with(&format!(
            "\nkubeadm token create {} --ttl 24h0m0s\n",
            s2.token
        )),
        "{script}"
    );
    assert!(!script.contains(&old));
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The directory now holds the new token and its date: the next build reads them back,
    // fresh, and warns of nothing.
    let again = ensure_secrets_at(&dir, &opts(), later + 60).unwrap();
    assert_eq!(again.token, s2.token);
    assert_eq!(again.token_created, later);
    assert!(again.warnings.is_empty());
}
