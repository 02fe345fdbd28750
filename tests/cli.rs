//! The commands as a user types them: the spec may be named positionally or with --spec.

mod common;
use common::*;

use std::fs;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X test@laptop";

/// Writes a spec at `path`: cluster `lab` over the trixie fixture, one control plane `cp`.
fn one_node_spec(path: &std::path::Path) -> std::path::PathBuf {
    fs::write(
        path,
        format!(
            "name: lab\nimage:\n  source: {}\nkubernetes:\n  version: \"1.34.11\"\n\
             network:\n  gateway: 192.168.7.1\n  dns: [192.168.7.1]\nuser: pi\n\
             ssh_authorized_keys: [\"{KEY}\"]\nnodes:\n  - name: cp\n    role: control-plane\n    address: 192.168.7.10/24\n",
            fixture("trixie.img").display()
        ),
    )
    .unwrap();
    path.to_path_buf()
}

#[test]
fn the_spec_may_be_positional_everywhere_a_spec_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), "1.34.11");
    let spec = one_node_spec(&tmp.path().join("lab.yaml"));
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

/// Issue 15 item 4: the offline path holds together. `fetch --artifacts DIR` without a lock
/// says what to do (not "run piforge fetch"); once it succeeded, the files are in the cache
/// and a plain `build` works with neither the directory nor the network; and a build that
/// must download names the offline options when the network fails.
#[test]
fn fetch_from_a_directory_makes_later_builds_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let arts = stand_in_artifacts(&tmp.path().join("artifacts"), "1.34.11");
    let spec = one_node_spec(&tmp.path().join("cluster.yaml"));
    let s = spec.to_str().unwrap();
    let a = arts.to_str().unwrap();
    // Any request would fail at once: the proxy is a closed port on 127.0.0.1.
    let offline = |args: &[&str], cache: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_piforge"))
            .arg("-q")
            .args(args)
            .env("PIFORGE_CACHE", cache)
            .env("https_proxy", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("ALL_PROXY", "http://127.0.0.1:9")
            .output()
            .unwrap()
    };
    let r = offline(&["fetch", s, "--artifacts", a], &cache);
    assert_one_line_error(&r, "--allow-unpinned");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!err.contains("piforge fetch"), "{err}");
    assert!(!tmp.path().join("piforge.lock").exists());

    let r = offline(&["fetch", s, "--artifacts", a, "--allow-unpinned"], &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // The directory goes away; the lock and the cache answer the build.
    fs::rename(&arts, tmp.path().join("elsewhere")).unwrap();
    let out = tmp.path().join("dist");
    let r = offline(&["build", s, "--out", out.to_str().unwrap()], &cache);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("cp.img").is_file());

    // Without the cache, the build has to download: the error names the offline options.
    let fresh = tmp.path().join("fresh-cache");
    let r = offline(&["build", s, "--out", out.to_str().unwrap()], &fresh);
    assert_one_line_error(&r, "--artifacts DIR");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("`artifacts: DIR` in cluster.yaml") && err.contains("--mirror URL"),
        "{err}"
    );
    // A mirror on 127.0.0.1 that does not have the files: the same options.
    let www = tmp.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let mirror = start_mirror(&www);
    let r = piforge(
        &[
            "build",
            s,
            "--out",
            out.to_str().unwrap(),
            "--mirror",
            &mirror.url,
        ],
        &fresh,
    );
    assert_one_line_error(&r, "HTTP status 404");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("--artifacts DIR") && err.contains("--mirror URL"),
        "{err}"
    );
}

/// Issue 15 item 7: help that says what the command takes. `check` reads any image (a built
/// node image first of all), not "the upstream image"; every --cache-dir names the whole
/// fallback chain, ending in ~/.cache/piforge; init's closing text names the spec positionally.
#[test]
fn help_texts_say_what_each_command_takes() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_piforge"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).replace('\n', " ")
    };
    let check = help(&["check", "--help"]);
    assert!(!check.contains("The upstream image"), "{check}");
    assert!(check.contains("a node image piforge built"), "{check}");
    for cmd in ["check", "inspect", "customize", "fetch", "build"] {
        let h = help(&[cmd, "--help"]);
        let squeezed = h.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            squeezed
                .contains("$PIFORGE_CACHE, else $XDG_CACHE_HOME/piforge, else ~/.cache/piforge"),
            "{cmd}: {h}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(["init", "c"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("`piforge fetch c/cluster.yaml --allow-unpinned`"),
        "{text}"
    );
}
