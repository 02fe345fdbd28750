//! `piforge check` on the upstream-shaped fixtures: the failures a stock image has are listed
//! plainly and the exit code says the image is not ready.

mod common;
use common::*;

use serde_json::Value;

fn check_json(img: &std::path::Path, cache: &std::path::Path) -> (i32, Vec<Value>) {
    let out = piforge(&["check", "--json", img.to_str().unwrap()], cache);
    let items: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap_or(-1),
        items.as_array().unwrap().clone(),
    )
}

fn status<'a>(items: &'a [Value], id: &str) -> &'a str {
    items
        .iter()
        .find(|i| i["id"] == id)
        .and_then(|i| i["status"].as_str())
        .unwrap_or_else(|| panic!("no check item {id}"))
}

#[test]
fn stock_images_fail_with_reasons() {
    let cache = tempfile::tempdir().unwrap();
    for base in ["bookworm", "trixie", "ubuntu"] {
        let (code, items) = check_json(&fixture(&format!("{base}.img.xz")), cache.path());
        assert_eq!(code, 1, "{base}: a stock image is not ready");
        for id in [
            "cgroup-memory",
            "kernel-modules",
            "sysctl-ip-forward",
            "containerd",
            "kube-binaries",
            "kubelet-enabled",
        ] {
            assert_eq!(status(&items, id), "fail", "{base}: {id}");
        }
        // Each base grows its root on first boot (resize, firstboot, cloud-init growpart).
        for id in [
            "arch-arm64",
            "machine-id",
            "ssh-host-keys",
            "first-boot-room",
        ] {
            assert_eq!(status(&items, id), "pass", "{base}: {id}");
        }
        // Every item says why and where it looked.
        for i in &items {
            assert!(
                !i["reason"].as_str().unwrap().is_empty()
                    && !i["looked_at"].as_str().unwrap().is_empty(),
                "{i}"
            );
        }
        let swap = status(&items, "swap-off");
        assert_eq!(
            swap,
            if base == "ubuntu" { "pass" } else { "fail" },
            "{base}: swap"
        );
    }
}

#[test]
fn text_output_and_exit_code() {
    let cache = tempfile::tempdir().unwrap();
    let out = piforge(
        &["check", fixture("trixie.img").to_str().unwrap()],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("cgroup_enable=memory")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("PASS")), "{text}");
}
