//! Test disks for the `disk` module's unit tests: small MBR and GPT images made by the real
//! partitioning and mkfs tools.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd` (with `stdin` fed to it), returning success and stdout + stderr.
pub(crate) fn sh(cmd: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), s)
}

pub(crate) const BOOT_START: u64 = 8192;
pub(crate) const ROOT_START: u64 = 24576;

/// A 40 MiB disk: FAT16 `bootfs` at sector 8192, ext4 `rootfs` from sector 24576 to the end.
pub(crate) fn make_disk(dir: &Path, gpt: bool) -> PathBuf {
    let img = dir.join(if gpt { "gpt.img" } else { "mbr.img" });
    std::fs::File::create(&img)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    let p = img.to_str().unwrap();
    let (ok, out) = if gpt {
        sh(
            "sgdisk",
            &[
                "-o",
                "-n",
                "1:8192:24575",
                "-t",
                "1:ef00",
                "-n",
                "2:24576:0",
                "-t",
                "2:8300",
                p,
            ],
            None,
        )
    } else {
        sh(
            "sfdisk",
            &["-q", p],
            Some("label: dos\nlabel-id: 0x11223344\nstart=8192, size=16384, type=c\nstart=24576, type=83\n"),
        )
    };
    assert!(ok, "{out}");
    let (ok, out) = sh(
        "mkfs.vfat",
        &[
            "-F",
            "16",
            "-s",
            "1",
            "-n",
            "bootfs",
            &format!("--offset={BOOT_START}"),
            p,
            "8192",
        ],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "rootfs",
            "-E",
            &format!("offset={}", ROOT_START * 512),
            p,
            "12M",
        ],
        None,
    );
    assert!(ok, "{out}");
    img
}
