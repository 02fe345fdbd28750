//! A reimaged node whose cluster's bootstrap token expired: the build makes a new token
//! itself (control planes and workers alike), never prints it, and writes the command that
//! creates it in the cluster to a 0600 file in the secrets directory, which it names. Judged
//! by debugfs on the images, the secrets directory's files and shellcheck on the command file.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const K8S: &str = "1.34.11";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

fn write_spec(dir: &Path) -> PathBuf {
    let spec = format!(
        "name: tok
image:
  source: {image}
kubernetes:
  version: \"{K8S}\"
  token_ttl: 24h
network:
  gateway: 192.168.70.1
  dns: [192.168.70.1]
ssh_authorized_keys: [\"{KEY}\"]
nodes:
  - name: cp1
    role: control-plane
    address: 192.168.70.10/24
  - name: cp2
    role: control-plane
    address: 192.168.70.11/24
  - name: w1
    role: worker
    address: 192.168.70.20/24
",
        image = fixture("trixie.img").display()
    );
    let p = dir.join("cluster.yaml");
    fs::write(&p, spec).unwrap();
    p
}

fn kubeadm_yaml(img: &Path, cache: &Path) -> String {
    let (_, root) = offsets(img, cache);
    debugfs(img, root, "cat /etc/piforge/kubeadm.yaml")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn an_expired_token_is_renewed_by_the_reimage_and_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = write_spec(tmp.path());
    let out = tmp.path().join("dist");
    let secrets = tmp.path().join("secrets");
    let r = build_with(&spec, &out, &arts, &cache, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let first = fs::read_to_string(secrets.join("token"))
        .unwrap()
        .trim()
        .to_string();
    let command_file = secrets.join("token-create.sh");

    // A reimage while the token is still valid keeps it and writes no command.
    let r = build_with(&spec, &out, &arts, &cache, &["--node", "w1"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(
        fs::read_to_string(secrets.join("token")).unwrap().trim(),
        first
    );
    assert!(!command_file.exists());

    // Two days later (the token's ttl is 24h), the first control plane is reimaged (it joins
    // cp2) and a worker too.
    let expire = || {
        fs::write(
            secrets.join("token-created"),
            format!("{}\n", now() - 2 * 86_400),
        )
        .unwrap()
    };
    for node in ["cp1", "w1"] {
        expire();
        let before = fs::read_to_string(secrets.join("token"))
            .unwrap()
            .trim()
            .to_string();
        let r = build_with(&spec, &out, &arts, &cache, &["--node", node]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let stdout = String::from_utf8_lossy(&r.stdout);
        let stderr = String::from_utf8_lossy(&r.stderr);
        let new = fs::read_to_string(secrets.join("token"))
            .unwrap()
            .trim()
            .to_string();
        assert_ne!(new, before, "{node}: the expired token was kept");
        let created: i64 = fs::read_to_string(secrets.join("token-created"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!((now() - created).abs() < 600, "{node}: {created}");
        // Told on the terminal, naming the file; neither token shown anywhere.
        assert!(stderr.contains("bootstrap token had expired"), "{stderr}");
        assert!(
            stderr.contains(&command_file.display().to_string()),
            "{stderr}"
        );
        for t in [&new, &before] {
            assert!(
                !stdout.contains(t.as_str()) && !stderr.contains(t.as_str()),
                "{node}: token printed"
            );
        }
        assert!(!stderr.contains("was made 2 days ago"), "{stderr}");
        // The command file: 0600, the new token, the spec's ttl, and a valid shell script.
        assert_eq!(
            fs::metadata(&command_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let script = fs::read_to_string(&command_file).unwrap();
        assert!(
            script.contains(&format!("\nkubeadm token create {new} --ttl 24h0m0s\n")),
            "{script}"
        );
        run("shellcheck", &[command_file.to_str().unwrap()]);
        // The card joins with the new token (kubeadm join's discovery token).
        let cfg = kubeadm_yaml(&out.join(format!("{node}.img")), &cache);
        assert!(cfg.contains("kind: JoinConfiguration"), "{node}: {cfg}");
        assert!(cfg.contains(&new) && !cfg.contains(&before), "{node}");
    }

    // --token (a token minted in the cluster by hand) wins: nothing is renewed.
    expire();
    let kept = fs::read_to_string(secrets.join("token")).unwrap();
    fs::remove_file(&command_file).unwrap();
    let given = "abcdef.0123456789abcdef";
    let r = build_with(
        &spec,
        &out,
        &arts,
        &cache,
        &["--node", "w1", "--token", given],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(fs::read_to_string(secrets.join("token")).unwrap(), kept);
    assert!(!command_file.exists());
    assert!(kubeadm_yaml(&out.join("w1.img"), &cache).contains(given));

    // A dry run says what a build would do and changes nothing.
    let r = build_with(&spec, &out, &arts, &cache, &["--node", "w1", "--dry-run"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("has expired: a build would make a new one"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(secrets.join("token")).unwrap(), kept);
    assert!(!command_file.exists());
}
