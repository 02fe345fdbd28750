//! The commands as a user types them: the spec may be named positionally or with --spec.

mod common;
use common::*;

use std::fs;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

#[test]
fn the_spec_may_be_positional_everywhere_a_spec_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), "1.34.11");
    let spec = tmp.path().join("lab.yaml");
    fs::write(
        &spec,
        format!(
            "name: lab\nimage:\n  source: {}\nkubernetes:\n  version: \"1.34.11\"\n\
             network:\n  gateway: 192.168.7.1\n  dns: [192.168.7.1]\nuser: pi\n\
             ssh_authorized_keys: [\"{KEY}\"]\nnodes:\n  - name: cp\n    role: control-plane\n    address: 192.168.7.10/24\n",
            fixture("trixie.img").display()
        ),
    )
    .unwrap();
    let s = spec.to_str().unwrap();
    let a = arts.to_str().unwrap();
    // `piforge build SPEC` (what the generated cluster.yaml's header says) builds ...
    let out = tmp.path().join("dist");
    let o = out.to_str().unwrap();
    let r = piforge(
        &["build", s, "--out", o, "--artifacts", a, "--allow-unpinned"],
        &cache,
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("cp.img").is_file());
    assert!(tmp.path().join("secrets/ca.crt").is_file());
    // ... and, the secrets made, prints the same plan as `--spec SPEC`.
    let dry = |args: &[&str]| {
        let r = piforge(args, &cache);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).into_owned()
    };
    let positional = dry(&["build", s, "--artifacts", a, "--dry-run"]);
    let flag = dry(&["build", "--spec", s, "--artifacts", a, "--dry-run"]);
    assert_eq!(positional, flag);
    assert!(positional.contains("== node layer: cp"), "{positional}");
    // Both at once is a usage error, not a silent choice.
    let both = piforge(&["build", s, "--spec", s, "--dry-run"], &cache);
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    // `piforge fetch SPEC` reads the version from it and keeps the lock beside it.
    let r = piforge(&["fetch", s, "--artifacts", a, "--allow-unpinned"], &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let lock = fs::read_to_string(tmp.path().join("piforge.lock")).unwrap();
    assert!(lock.contains("v1.34.11/bin/linux/arm64/kubeadm"), "{lock}");
}
