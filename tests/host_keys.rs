//! Stable node identity: each node's SSH host key is made once in the secrets directory,
//! written to its root filesystem (never the FAT partition), the same after a rebuild and a
//! reimage, and listed in `secrets/known_hosts`. Judged by ssh-keygen, debugfs, mtools and
//! cloud-init's own schema check.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const NODES: [(&str, Option<&str>); 3] = [
    ("pi-cp-1", Some("192.168.50.10")),
    ("pi-w-1", Some("192.168.50.11")),
    ("pi-w-2", None),
];

/// The two-node spec with a third node, the worker pi-w-2 on DHCP.
fn three_node_spec(dir: &Path, image: &Path) -> PathBuf {
    cluster_spec(dir, "keylab", image, "  - name: pi-w-2\n    role: worker\n")
}

fn build(spec: &Path, out: &Path, arts: &Path, cache: &Path, extra: &[&str]) {
    let r = build_with(spec, out, arts, cache, extra);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // No private key on the terminal.
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!all.contains("PRIVATE KEY"), "{all}");
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The node's key in the secrets directory, checked with ssh-keygen: (private, public,
/// fingerprint).
fn stored_key(secrets: &Path, node: &str) -> (String, String, String) {
    let dir = secrets.join("hosts").join(node);
    let (k, p) = (
        dir.join("ssh_host_ed25519_key"),
        dir.join("ssh_host_ed25519_key.pub"),
    );
    assert_eq!(mode(&secrets.join("hosts")), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&k), 0o600);
    assert_eq!(mode(&p), 0o600);
    let private = fs::read_to_string(&k).unwrap();
    let public = fs::read_to_string(&p).unwrap();
    // ssh-keygen reads the private key and derives the stored public key from it.
    let derived = run("ssh-keygen", &["-y", "-f", k.to_str().unwrap()]);
    let field = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(field(&derived), field(&public), "{node}: pair mismatch");
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    let fp = run("ssh-keygen", &["-l", "-f", p.to_str().unwrap()]);
    assert!(
        fp.starts_with("256 SHA256:") && fp.contains("(ED25519)"),
        "{fp}"
    );
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    (private, public, fp)
}

#[test]
fn host_keys_are_per_node_stable_and_never_on_the_fat_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    let spec = three_node_spec(tmp.path(), &fixture("trixie.img"));
    let out = tmp.path().join("dist");
    build(&spec, &out, &arts, &cache, &[]);
    let secrets = tmp.path().join("secrets");

    let mut keys = Vec::new();
    for (node, _) in NODES {
        keys.push(stored_key(&secrets, node));
    }
    let mut fps: Vec<&String> = keys.iter().map(|k| &k.2).collect();
    fps.sort();
    fps.dedup();
    assert_eq!(fps.len(), 3, "every node has its own key");

    // known_hosts: every node by name, the fixed ones by address too, each with its key.
    let kh = secrets.join("known_hosts");
    assert_eq!(mode(&kh), 0o600);
    let khs = kh.to_str().unwrap();
    for ((node, addr), (_, _, fp)) in NODES.iter().zip(&keys) {
        let mut names = vec![node.to_string()];
        names.extend(addr.map(str::to_string));
        for name in names {
            let (code, found) = run_status("ssh-keygen", &["-F", &name, "-f", khs]);
            assert_eq!(code, 0, "ssh-keygen -F {name}: {found}");
            let (code, found) = run_status("ssh-keygen", &["-l", "-F", &name, "-f", khs]);
            assert_eq!(code, 0, "ssh-keygen -lF {name}: {found}");
            assert!(found.contains(fp.as_str()), "{name}: {found}");
        }
    }
    let (code, _) = run_status("ssh-keygen", &["-F", "pi-nope", "-f", khs]);
    assert_ne!(code, 0, "an unknown host is not found");
    let listed = run("ssh-keygen", &["-l", "-f", khs]);
    assert_eq!(listed.lines().count(), 3, "{listed}");

    let images = |out: &Path| -> Vec<(String, String)> {
        NODES
            .iter()
            .filter(|(n, _)| out.join(format!("{n}.img")).exists())
            .map(|(n, _)| {
                let img = out.join(format!("{n}.img"));
                let (_, root) = offsets(&img, &cache);
                (
                    debugfs(&img, root, "cat /etc/ssh/ssh_host_ed25519_key"),
                    debugfs(&img, root, "cat /etc/ssh/ssh_host_ed25519_key.pub"),
                )
            })
            .collect()
    };
    for ((node, _), (private, public, fp)) in NODES.iter().zip(&keys) {
        let img = out.join(format!("{node}.img"));
        let (boot, root) = offsets(&img, &cache);
        // In the root filesystem, as sshd wants them, and nothing else of /etc/ssh/ssh_host_*.
        assert_eq!(
            &debugfs(&img, root, "cat /etc/ssh/ssh_host_ed25519_key"),
            private
        );
        assert_eq!(
            &debugfs(&img, root, "cat /etc/ssh/ssh_host_ed25519_key.pub"),
            public
        );
        let st = debugfs(&img, root, "stat /etc/ssh/ssh_host_ed25519_key");
        assert!(
            st.contains("Mode:  0600") && st.contains("User:     0   Group:     0"),
            "{st}"
        );
        let st = debugfs(&img, root, "stat /etc/ssh/ssh_host_ed25519_key.pub");
        assert!(
            st.contains("Mode:  0644") && st.contains("User:     0   Group:     0"),
            "{st}"
        );
        let ls = debugfs(&img, root, "ls -l /etc/ssh");
        let host_files = ls.matches("ssh_host_").count();
        assert_eq!(host_files, 2, "{ls}");
        // cloud-init keeps them: user-data says so, and cloud-init's schema accepts it.
        let fat = format!("{}@@{boot}", img.display());
        let ud = run("mtype", &["-i", &fat, "::user-data"]);
        assert!(ud.contains("ssh_deletekeys: false"), "{ud}");
        let udf = tmp.path().join("user-data");
        fs::write(&udf, &ud).unwrap();
        let (code, text) = run_status(
            "cloud-init",
            &["schema", "--config-file", udf.to_str().unwrap()],
        );
        assert_eq!(code, 0, "cloud-init schema: {text}");
        // No line of the private key on the FAT partition: neither in its files (mcopy) nor
        // anywhere in its bytes (deleted or slack space).
        let files = fat_file_bytes(&img, boot, tmp.path());
        let data = fs::read(&img).unwrap();
        let bootfs = &data[boot as usize..root as usize];
        for line in private.lines().filter(|l| !l.starts_with("-----")) {
            assert!(
                !contains(&files, line.as_bytes()),
                "{node}: key in a FAT file"
            );
            assert!(!contains(bootfs, line.as_bytes()), "{node}: key on the FAT");
        }
        assert!(!contains(bootfs, b"OPENSSH PRIVATE KEY"));
        // piforge check: PASS, naming the node and the fingerprint ssh-keygen computed.
        let c = piforge(&["check", img.to_str().unwrap()], &cache);
        let report = String::from_utf8_lossy(&c.stdout).to_string();
        assert!(c.status.success(), "{node}: {report}");
        let line = report
            .lines()
            .find(|l| l.contains("ssh host keys"))
            .unwrap_or_else(|| panic!("{report}"));
        assert!(line.contains("PASS"), "{line}");
        assert!(
            report.contains(&format!("node {node} ({fp})")),
            "{node}: {report}"
        );
    }

    // A rebuild and a reimage of one node (with a fresh token) keep every key.
    let before = images(&out);
    let kh_before = fs::read_to_string(&kh).unwrap();
    build(&spec, &out, &arts, &cache, &[]);
    assert_eq!(images(&out), before, "a rebuild changed host keys");
    let out2 = tmp.path().join("reimage");
    build(
        &spec,
        &out2,
        &arts,
        &cache,
        &["--node", "pi-w-1", "--token", "abcdef.0123456789abcdef"],
    );
    assert_eq!(images(&out2), vec![before[1].clone()]);
    for (i, (node, _)) in NODES.iter().enumerate() {
        assert_eq!(stored_key(&secrets, node), keys[i]);
    }
    assert_eq!(fs::read_to_string(&kh).unwrap(), kh_before);
}

#[test]
fn a_base_unit_that_remakes_host_keys_is_masked() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), K8S);
    // A trixie-shaped base carrying raspberrypi-sys-mods' first-boot key regenerator.
    let overlay = tmp.path().join("overlay/usr/lib/systemd/system");
    fs::create_dir_all(&overlay).unwrap();
    fs::write(
        overlay.join("regenerate_ssh_host_keys.service"),
        "[Unit]\nDescription=Regenerate SSH host keys\nBefore=ssh.service\n\n[Service]\n\
         Type=oneshot\nExecStartPre=-/bin/sh -c \"/bin/rm -f -v /etc/ssh/ssh_host_*_key*\"\n\
         ExecStart=/usr/bin/ssh-keygen -A -v\n\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    let base = tmp.path().join("base.img");
    trixie_with_overlay(&tmp.path().join("overlay"), &base, &cache);
    let spec = three_node_spec(tmp.path(), &base);
    let out = tmp.path().join("dist");
    build(&spec, &out, &arts, &cache, &[]);
    let img = out.join("pi-w-2.img");
    let (_, root) = offsets(&img, &cache);
    let st = debugfs(
        &img,
        root,
        "stat /etc/systemd/system/regenerate_ssh_host_keys.service",
    );
    assert!(st.contains("Type: symlink"), "{st}");
    assert!(st.contains("Fast link dest: \"/dev/null\""), "{st}");
}
