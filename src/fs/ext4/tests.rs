//! Tests against the real oracles: images made by mkfs.ext4, judged by
//! `e2fsck -fn` and `debugfs` after every editing session.

use super::*;
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use tempfile::TempDir;

const EPOCH: i64 = 1_700_000_000;

fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = format!("{dir}/{name}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    name.to_string()
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn attrs(mode: u16, uid: u32, gid: u32) -> Attrs {
    Attrs {
        mode,
        uid,
        gid,
        mtime: EPOCH - 86_400,
    }
}

/// An image file with a filesystem at `offset`, in its own temp dir.
struct Fx {
    dir: TempDir,
    img: PathBuf,
    offset: u64,
}

struct Mkfs<'a> {
    size: &'a str,
    offset: u64,
    opts: &'a [&'a str],
    block_size: Option<u32>,
    /// run e2fsck on the fresh image (mke2fs 1.47.0 -d gets quota usage wrong)
    fresh_check: bool,
}

impl Default for Mkfs<'_> {
    fn default() -> Self {
        Mkfs {
            size: "32M",
            offset: 0,
            opts: &[],
            block_size: Some(4096),
            fresh_check: true,
        }
    }
}

/// A source tree like a tiny Raspberry Pi OS root.
fn populate(src: &Path, bin_files: usize) {
    let w = |p: &str, data: &[u8]| {
        let full = src.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, data).unwrap();
    };
    w("/etc/hostname", b"raspberrypi\n");
    w("/etc/fstab", b"proc /proc proc defaults 0 0\n");
    w("/usr/share/doc/x/readme", b"the real readme\n");
    w("/usr/lib/os-release", b"ID=debian\n");
    w("/opt/tree/a/b/c.txt", b"deep\n");
    w("/opt/tree/a/d.txt", b"d\n");
    w("/opt/tree/e", b"e\n");
    for i in 0..bin_files {
        w(
            &format!("/usr/bin/tool-with-a-longish-name-{i:05}"),
            format!("#!/bin/sh\necho {i}\n").as_bytes(),
        );
    }
    w("/usr/bin/prog", b"\x7fELF program\n");
    std::fs::hard_link(src.join("usr/bin/prog"), src.join("usr/bin/prog-hardlink")).unwrap();
    std::os::unix::fs::symlink("usr/lib", src.join("lib")).unwrap();
    std::fs::create_dir_all(src.join("etc/alternatives")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/share/doc/x/readme",
        src.join("etc/alternatives/readme"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("etc/dangling")).unwrap();
}

impl Fx {
    fn new(m: Mkfs) -> Fx {
        Self::with_tree(m, 10)
    }

    fn with_tree(m: Mkfs, bin_files: usize) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        populate(&src, bin_files);
        let img = dir.path().join("disk.img");
        let mut cmd = Command::new(tool("mkfs.ext4"));
        cmd.args([
            "-q",
            "-F",
            "-L",
            "rootfs",
            "-U",
            "6a1e2b63-4f0e-4c57-9d3e-1b2c3d4e5f60",
        ]);
        cmd.args([
            "-E",
            &format!(
                "hash_seed=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0{}",
                if m.offset > 0 {
                    format!(",offset={}", m.offset)
                } else {
                    String::new()
                }
            ),
        ]);
        if let Some(bs) = m.block_size {
            cmd.args(["-b", &bs.to_string()]);
        }
        for o in m.opts {
            cmd.args(["-O", o]);
        }
        cmd.arg("-d").arg(&src).arg(&img).arg(m.size);
        cmd.env("E2FSPROGS_FAKE_TIME", "1600000000");
        let (rc, out, err) = run(&mut cmd);
        assert_eq!(rc, 0, "mkfs.ext4 failed: {out}{err}");
        if m.offset > 0 {
            // the image continues 1 MiB past the filesystem, like a disk
            let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len + (1 << 20)).unwrap();
        }
        let fx = Fx {
            dir,
            img,
            offset: m.offset,
        };
        if m.fresh_check {
            fx.assert_clean("freshly made");
        }
        fx
    }

    fn spec(&self) -> String {
        if self.offset > 0 {
            format!("{}?offset={}", self.img.display(), self.offset)
        } else {
            self.img.display().to_string()
        }
    }

    fn fsck(&self) -> (i32, String) {
        let (rc, out, err) = run(Command::new(tool("e2fsck")).arg("-fn").arg(self.spec()));
        (rc, format!("{out}{err}"))
    }

    #[track_caller]
    fn assert_clean(&self, when: &str) {
        let (rc, out) = self.fsck();
        assert_eq!(rc, 0, "e2fsck -fn after {when} is not clean:\n{out}");
    }

    fn debugfs(&self, req: &str) -> String {
        let (_, out, _) = run(Command::new(tool("debugfs"))
            .arg("-R")
            .arg(req)
            .arg(self.spec()));
        out
    }

    fn debugfs_w(&self, req: &str) {
        let (rc, out, err) = run(Command::new(tool("debugfs"))
            .arg("-w")
            .arg("-R")
            .arg(req)
            .arg(self.spec()));
        assert_eq!(rc, 0, "debugfs -w {req}: {out}{err}");
    }

    fn rw(&self) -> Ext4 {
        Ext4::open_with_clock(&self.img, self.offset, OpenMode::ReadWrite, EPOCH)
            .expect("open read-write")
    }

    fn ro(&self) -> Ext4 {
        Ext4::open(&self.img, self.offset, OpenMode::ReadOnly).expect("open read-only")
    }

    fn sha(&self) -> String {
        hex::encode(Sha256::digest(std::fs::read(&self.img).unwrap()))
    }

    fn copy(&self) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::copy(&self.img, &img).unwrap();
        Fx {
            dir,
            img,
            offset: self.offset,
        }
    }
}

/// "Mode:  0600" and "User:  1000   Group:  1000" from debugfs stat.
fn debugfs_mode_owner(stat: &str) -> (String, String, String) {
    let field = |key: &str| -> String {
        let i = stat
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {stat}"));
        stat[i + key.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    (field("Mode:"), field("User:"), field("Group:"))
}

/// A deterministic stream of `left` pseudo-random bytes (byte i depends only
/// on the seed and i, so chunking does not matter).
struct Noise {
    left: u64,
    state: u64,
}

fn noise_word(seed: u64, i: u64) -> [u8; 8] {
    // splitmix64
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // odd chunk sizes, so writes do not line up with blocks
        let n = (buf.len() as u64).min(self.left).min(70_001) as usize;
        let mut pos = self.state >> 32; // bytes produced so far
        let seed = self.state & 0xffff_ffff;
        let mut k = 0;
        while k < n {
            let w = noise_word(seed, pos / 8);
            let off = (pos % 8) as usize;
            let take = (8 - off).min(n - k);
            buf[k..k + take].copy_from_slice(&w[off..off + take]);
            k += take;
            pos += take as u64;
        }
        self.state = (pos << 32) | seed;
        self.left -= n as u64;
        Ok(n)
    }
}

fn noise_vec(len: u64, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len as usize);
    Noise {
        left: len,
        state: seed,
    }
    .read_to_end(&mut v)
    .unwrap();
    v
}

// ------------------------------------------------------------------ reading

#[test]
fn info_matches_dumpe2fs() {
    let fx = Fx::new(Mkfs {
        opts: &["metadata_csum_seed,orphan_file"],
        ..Default::default()
    });
    let fs = fx.ro();
    let info = fs.info();
    let (_, dump, _) = run(Command::new(tool("dumpe2fs")).arg("-h").arg(fx.spec()));
    let line = |key: &str| -> String {
        dump.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in dumpe2fs"))
            .trim()
            .to_string()
    };
    assert_eq!(info.features.join(" "), line("Filesystem features:"));
    assert!(info.features.iter().any(|f| f == "orphan_file"));
    assert!(info.features.iter().any(|f| f == "metadata_csum_seed"));
    assert_eq!(info.label, line("Filesystem volume name:"));
    assert_eq!(info.uuid, line("Filesystem UUID:"));
    assert_eq!(info.block_size.to_string(), line("Block size:"));
    assert_eq!(info.blocks_count.to_string(), line("Block count:"));
    assert_eq!(info.free_blocks.to_string(), line("Free blocks:"));
    assert_eq!(info.inodes_count.to_string(), line("Inode count:"));
    assert_eq!(info.free_inodes.to_string(), line("Free inodes:"));
    assert_eq!(
        info.reserved_blocks.to_string(),
        line("Reserved block count:")
    );
}

#[test]
fn feature_names_follow_libe2p() {
    assert_eq!(
        feature_names(0x4 | 0x1000, 0x2 | 0x40, 0x400),
        vec![
            "has_journal",
            "orphan_file",
            "filetype",
            "extent",
            "metadata_csum"
        ]
    );
    assert_eq!(
        feature_names(1 << 20, 1 << 30, 1 << 31),
        vec!["FEATURE_C20", "FEATURE_I30", "FEATURE_R31"]
    );
}

#[test]
fn read_side() {
    let fx = Fx::new(Mkfs::default());
    let fs = fx.ro();
    assert_eq!(fs.read_file("/etc/hostname").unwrap(), b"raspberrypi\n");
    // absolute symlink resolved inside the filesystem, intermediate symlink /lib
    assert_eq!(
        fs.read_file("/etc/alternatives/readme").unwrap(),
        b"the real readme\n"
    );
    assert_eq!(fs.read_file("/lib/os-release").unwrap(), b"ID=debian\n");
    assert_eq!(
        fs.read_link("/etc/alternatives/readme").unwrap(),
        "/usr/share/doc/x/readme"
    );
    assert_eq!(fs.read_link("/lib").unwrap(), "usr/lib");

    let st = fs.stat("/etc/alternatives/readme").unwrap().unwrap();
    assert_eq!(st.kind, FileKind::Symlink); // final component not followed
    let st = fs.stat("/usr/bin/prog").unwrap().unwrap();
    assert_eq!((st.kind, st.size, st.nlink), (FileKind::File, 13, 2));
    assert_eq!(
        fs.stat("/lib/os-release").unwrap().unwrap().kind,
        FileKind::File
    );
    assert_eq!(fs.stat("/etc").unwrap().unwrap().kind, FileKind::Dir);
    assert!(fs.stat("/etc/nope").unwrap().is_none());
    assert!(fs.stat("/etc/hostname/x").is_err());

    let mut names: Vec<(String, FileKind)> = fs
        .read_dir("/etc")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        vec![
            ("alternatives".into(), FileKind::Dir),
            ("dangling".into(), FileKind::Symlink),
            ("fstab".into(), FileKind::File),
            ("hostname".into(), FileKind::File),
        ]
    );
    assert!(matches!(
        fs.read_file("/etc/dangling"),
        Err(Ext4Error::NotFound { .. })
    ));
    assert!(matches!(
        fs.read_file("/etc"),
        Err(Ext4Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.read_link("/etc/hostname"),
        Err(Ext4Error::NotASymlink { .. })
    ));
    assert!(matches!(
        fs.read_dir("/etc/hostname"),
        Err(Ext4Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.read_file("etc/hostname"),
        Err(Ext4Error::InvalidPath { .. })
    ));
}

#[test]
fn read_only_session_refuses_edits() {
    let fx = Fx::new(Mkfs::default());
    let before = fx.sha();
    let mut fs = fx.ro();
    let e = fs
        .write_file("/etc/x", b"x", &attrs(0o644, 0, 0))
        .unwrap_err();
    assert!(matches!(e, Ext4Error::ReadOnly { .. }), "{e}");
    assert!(matches!(
        fs.mkdir_p("/a", &attrs(0o755, 0, 0)),
        Err(Ext4Error::ReadOnly { .. })
    ));
    fs.commit().unwrap();
    assert_eq!(fx.sha(), before);
    // a read-write session without edits does not touch the image either
    fx.rw().commit().unwrap();
    assert_eq!(fx.sha(), before);
}

#[test]
fn session_is_send() {
    fn send<T: Send>() {}
    send::<Ext4>();
}

// ------------------------------------------------------------------ writing

#[test]
fn mkdir_write_and_attrs() {
    let fx = Fx::new(Mkfs::default());
    let mut fs = fx.rw();
    fs.mkdir_p("/etc/kubernetes/manifests/deep", &attrs(0o750, 1000, 1000))
        .unwrap();
    fs.mkdir_p("/etc/kubernetes/manifests", &attrs(0o700, 0, 0))
        .unwrap(); // exists: untouched
                   // through the /lib -> usr/lib symlink
    fs.mkdir_p("/lib/systemd/system", &attrs(0o755, 0, 0))
        .unwrap();
    fs.write_file(
        "/etc/kubernetes/admin.conf",
        b"secret\n",
        &attrs(0o600, 0, 0),
    )
    .unwrap();
    fs.write_file(
        "/etc/kubernetes/manifests/deep/pod.yaml",
        b"kind: Pod\n",
        &attrs(0o755, 1000, 1000),
    )
    .unwrap();
    fs.write_file(
        "/lib/systemd/system/kubelet.service",
        b"[Unit]\n",
        &attrs(0o644, 0, 0),
    )
    .unwrap();
    fs.write_file("/usr/bin/suid", b"x", &attrs(0o4755, 0, 0))
        .unwrap();
    fs.write_file("/etc/empty", b"", &attrs(0o644, 0, 0))
        .unwrap();
    assert!(matches!(
        fs.mkdir_p("/etc/hostname/sub", &attrs(0o755, 0, 0)),
        Err(Ext4Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.write_file("/nodir/x", b"", &attrs(0o644, 0, 0)),
        Err(Ext4Error::NotFound { .. })
    ));
    assert!(matches!(
        fs.write_file("/etc", b"", &attrs(0o644, 0, 0)),
        Err(Ext4Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.write_file("/etc/../x", b"", &attrs(0o644, 0, 0)),
        Err(Ext4Error::InvalidPath { .. })
    ));
    // read back in the same session
    assert_eq!(
        fs.read_file("/etc/kubernetes/admin.conf").unwrap(),
        b"secret\n"
    );
    let st = fs.stat("/etc/kubernetes/manifests").unwrap().unwrap();
    assert_eq!((st.mode, st.uid, st.gid), (0o750, 1000, 1000));
    fs.commit().unwrap();
    fx.assert_clean("mkdir_p and write_file");

    let (m, u, g) = debugfs_mode_owner(&fx.debugfs("stat /etc/kubernetes/admin.conf"));
    assert_eq!((m.as_str(), u.as_str(), g.as_str()), ("0600", "0", "0"));
    let (m, u, g) = debugfs_mode_owner(&fx.debugfs("stat /etc/kubernetes/manifests/deep/pod.yaml"));
    assert_eq!(
        (m.as_str(), u.as_str(), g.as_str()),
        ("0755", "1000", "1000")
    );
    let (m, u, g) = debugfs_mode_owner(&fx.debugfs("stat /etc/kubernetes/manifests/deep"));
    assert_eq!(
        (m.as_str(), u.as_str(), g.as_str()),
        ("0750", "1000", "1000")
    );
    let (m, _, _) = debugfs_mode_owner(&fx.debugfs("stat /usr/bin/suid"));
    assert_eq!(m, "04755");
    assert_eq!(
        fx.debugfs("cat /etc/kubernetes/manifests/deep/pod.yaml"),
        "kind: Pod\n"
    );
    assert_eq!(
        fx.debugfs("cat /usr/lib/systemd/system/kubelet.service"),
        "[Unit]\n"
    );
    let stat = fx.debugfs("stat /etc/kubernetes/admin.conf");
    assert!(
        stat.contains(&format!("mtime: 0x{:08x}:00000000", EPOCH - 86_400)),
        "{stat}"
    );
    assert!(
        stat.contains(&format!("ctime: 0x{EPOCH:08x}:00000000")),
        "{stat}"
    );
    assert!(
        stat.contains(&format!("crtime: 0x{EPOCH:08x}:00000000")),
        "{stat}"
    );
    // the parent's link count grew with each subdirectory
    let fs = fx.ro();
    assert_eq!(fs.stat("/etc/kubernetes").unwrap().unwrap().nlink, 3);
}

#[test]
fn replace_longer_then_shorter() {
    let fx = Fx::new(Mkfs::default());
    let free0 = fx.ro().info().free_blocks;
    let long: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    {
        let mut fs = fx.rw();
        fs.write_file("/etc/hostname", &long, &attrs(0o644, 0, 0))
            .unwrap();
        fs.commit().unwrap();
    }
    fx.assert_clean("replacing with longer content");
    assert_eq!(fx.ro().read_file("/etc/hostname").unwrap(), long);
    {
        let mut fs = fx.rw();
        fs.write_file("/etc/hostname", b"node-1\n", &attrs(0o644, 0, 0))
            .unwrap();
        fs.commit().unwrap();
    }
    fx.assert_clean("replacing with shorter content");
    assert_eq!(fx.debugfs("cat /etc/hostname"), "node-1\n");
    // the long version's blocks were all given back
    assert_eq!(fx.ro().info().free_blocks, free0);
    // replacing one name of a hard-linked file: the other keeps the old content
    let mut fs = fx.rw();
    fs.write_file("/usr/bin/prog", b"new program", &attrs(0o755, 0, 0))
        .unwrap();
    fs.commit().unwrap();
    fx.assert_clean("replacing a hard-linked file");
    let fs = fx.ro();
    assert_eq!(fs.read_file("/usr/bin/prog").unwrap(), b"new program");
    assert_eq!(
        fs.read_file("/usr/bin/prog-hardlink").unwrap(),
        b"\x7fELF program\n"
    );
    assert_eq!(fs.stat("/usr/bin/prog-hardlink").unwrap().unwrap().nlink, 1);
}

#[test]
fn big_file_is_streamed() {
    let fx = Fx::new(Mkfs {
        size: "128M",
        ..Default::default()
    });
    let len = 60 * 1024 * 1024 + 12_345;
    {
        let mut fs = fx.rw();
        let need = fs.bytes_needed_for_file(len);
        assert!(need >= len && need < len + len / 100, "{need}");
        fs.write_file_from(
            "/usr/bin/kubelet",
            &mut Noise {
                left: len,
                state: 7,
            },
            len,
            &attrs(0o755, 0, 0),
        )
        .unwrap();
        fs.commit().unwrap();
    }
    fx.assert_clean("a 60 MB file");
    let fs = fx.ro();
    assert_eq!(fs.stat("/usr/bin/kubelet").unwrap().unwrap().size, len);
    let expected = noise_vec(len, 7);
    assert!(
        fs.read_file("/usr/bin/kubelet").unwrap() == expected,
        "content differs"
    );
    // and debugfs agrees on the bytes
    let out = fx.dir.path().join("kubelet.out");
    run(Command::new(tool("debugfs"))
        .arg("-R")
        .arg(format!("dump /usr/bin/kubelet {}", out.display()))
        .arg(fx.spec()));
    assert!(
        std::fs::read(&out).unwrap() == expected,
        "debugfs reads different content"
    );
}

#[test]
fn htree_directory_stays_indexed() {
    let fx = Fx::with_tree(
        Mkfs {
            size: "64M",
            ..Default::default()
        },
        1200,
    );
    // index /usr/bin the way e2fsck does
    let (rc, out, err) = run(Command::new(tool("e2fsck")).arg("-fyD").arg(fx.spec()));
    assert!(rc <= 1, "e2fsck -fyD: {out}{err}");
    fx.assert_clean("e2fsck -fyD");
    let flags = |fx: &Fx| {
        let s = fx.debugfs("stat /usr/bin");
        let i = s.find("Flags: 0x").unwrap();
        u32::from_str_radix(s[i + 9..].split_whitespace().next().unwrap(), 16).unwrap()
    };
    assert_ne!(
        flags(&fx) & 0x1000,
        0,
        "/usr/bin was not indexed by e2fsck -D"
    );
    {
        let mut fs = fx.rw();
        for i in 0..200 {
            fs.write_file(
                &format!("/usr/bin/added-by-piforge-{i:04}"),
                format!("{i}\n").as_bytes(),
                &attrs(0o755, 0, 0),
            )
            .unwrap();
        }
        fs.remove("/usr/bin/tool-with-a-longish-name-00007")
            .unwrap();
        fs.commit().unwrap();
    }
    fx.assert_clean("adding 200 entries to an indexed directory");
    assert_ne!(flags(&fx) & 0x1000, 0, "the index was dropped");
    let htree = fx.debugfs("htree /usr/bin");
    assert!(
        htree.contains("Root node dump") && htree.contains("added-by-piforge-0199"),
        "{}",
        &htree[..htree.len().min(2000)]
    );
    let fs = fx.ro();
    assert_eq!(fs.read_dir("/usr/bin").unwrap().len(), 1200 + 2 + 200 - 1);
    assert_eq!(
        fs.read_file("/usr/bin/added-by-piforge-0123").unwrap(),
        b"123\n"
    );
}

#[test]
fn linear_directory_grows() {
    let fx = Fx::new(Mkfs::default());
    let mut fs = fx.rw();
    fs.mkdir_p("/var/lib/many", &attrs(0o755, 0, 0)).unwrap();
    for i in 0..250 {
        fs.write_file(
            &format!("/var/lib/many/file-with-a-long-name-{i:04}"),
            b"x",
            &attrs(0o644, 0, 0),
        )
        .unwrap();
        fs.symlink(
            &format!("/var/lib/many/link-with-a-long-name-{i:04}"),
            "file",
            &attrs(0, 0, 0),
        )
        .unwrap();
        if i % 2 == 0 {
            fs.mkdir_p(
                &format!("/var/lib/many/dir-with-a-long-name-{i:04}"),
                &attrs(0o755, 0, 0),
            )
            .unwrap();
        }
    }
    fs.commit().unwrap();
    fx.assert_clean("growing a linear directory");
    let fs = fx.ro();
    assert_eq!(fs.read_dir("/var/lib/many").unwrap().len(), 625);
    assert!(fs.stat("/var/lib/many").unwrap().unwrap().size > 4096 * 4);
    assert_eq!(fs.stat("/var/lib/many").unwrap().unwrap().nlink, 2 + 125);
}

#[test]
fn symlinks_fast_and_slow() {
    let fx = Fx::new(Mkfs::default());
    let slow_target = format!("/usr/share/doc/x/{}", "long-component/".repeat(12)) + "readme";
    assert!(slow_target.len() > 60);
    {
        let mut fs = fx.rw();
        fs.symlink(
            "/etc/fast",
            "/usr/share/doc/x/readme",
            &attrs(0o644, 1000, 1000),
        )
        .unwrap();
        fs.symlink("/etc/slow", &slow_target, &attrs(0o644, 0, 0))
            .unwrap();
        fs.symlink(
            "/etc/relative",
            "../usr/share/doc/x/readme",
            &attrs(0o644, 0, 0),
        )
        .unwrap();
        // replace an existing symlink (ln -sf)
        fs.symlink(
            "/etc/alternatives/readme",
            "/etc/hostname",
            &attrs(0o644, 0, 0),
        )
        .unwrap();
        assert!(matches!(
            fs.symlink("/etc", "x", &attrs(0, 0, 0)),
            Err(Ext4Error::IsADirectory { .. })
        ));
        fs.commit().unwrap();
    }
    fx.assert_clean("creating symlinks");
    assert!(fx
        .debugfs("stat /etc/fast")
        .contains("Fast link dest: \"/usr/share/doc/x/readme\""));
    let slow = fx.debugfs("stat /etc/slow");
    assert!(
        !slow.contains("Fast link dest") && slow.contains("EXTENTS"),
        "{slow}"
    );
    let (m, u, _) = debugfs_mode_owner(&fx.debugfs("stat /etc/fast"));
    assert_eq!((m.as_str(), u.as_str()), ("0777", "1000"));
    let fs = fx.ro();
    assert_eq!(
        fs.read_link("/etc/fast").unwrap(),
        "/usr/share/doc/x/readme"
    );
    assert_eq!(fs.read_link("/etc/slow").unwrap(), slow_target);
    assert_eq!(fs.read_file("/etc/fast").unwrap(), b"the real readme\n");
    assert_eq!(fs.read_file("/etc/relative").unwrap(), b"the real readme\n");
    assert_eq!(
        fs.read_file("/etc/alternatives/readme").unwrap(),
        b"raspberrypi\n"
    );
}

#[test]
fn remove_files_links_and_trees() {
    let fx = Fx::new(Mkfs::default());
    let free0 = fx.ro().info();
    {
        let mut fs = fx.rw();
        // one of two hard links: the other keeps the content
        fs.remove("/usr/bin/prog").unwrap();
        assert_eq!(
            fs.read_file("/usr/bin/prog-hardlink").unwrap(),
            b"\x7fELF program\n"
        );
        assert_eq!(fs.stat("/usr/bin/prog-hardlink").unwrap().unwrap().nlink, 1);
        fs.remove("/etc/alternatives/readme").unwrap(); // a symlink, not its target
        assert!(fs.stat("/usr/share/doc/x/readme").unwrap().is_some());
        fs.remove("/etc/dangling").unwrap();
        assert!(matches!(
            fs.remove("/etc"),
            Err(Ext4Error::IsADirectory { .. })
        ));
        assert!(matches!(
            fs.remove("/etc/nope"),
            Err(Ext4Error::NotFound { .. })
        ));
        fs.remove_tree("/opt/tree").unwrap();
        fs.remove_tree("/lib").unwrap(); // the symlink only
        assert!(fs.stat("/usr/lib/os-release").unwrap().is_some());
        fs.commit().unwrap();
    }
    fx.assert_clean("removing");
    assert_eq!(
        fx.debugfs("cat /usr/bin/prog-hardlink"),
        "\x7fELF program\n"
    );
    let fs = fx.ro();
    for p in [
        "/usr/bin/prog",
        "/opt/tree",
        "/lib",
        "/etc/dangling",
        "/etc/alternatives/readme",
    ] {
        assert!(fs.stat(p).unwrap().is_none(), "{p} still exists");
    }
    assert_eq!(fs.stat("/opt").unwrap().unwrap().nlink, 2);
    let after = fs.info();
    // 4 inodes under /opt/tree (tree, a, b + 3 files = 6), two symlinks, one path of the hard link
    assert_eq!(after.free_inodes, free0.free_inodes + 6 + 3);
    assert!(after.free_blocks > free0.free_blocks);
    drop(fs);
    // now the last link: inode and block freed
    let mut fs = fx.rw();
    fs.remove("/usr/bin/prog-hardlink").unwrap();
    fs.commit().unwrap();
    fx.assert_clean("removing the last hard link");
    assert_eq!(fx.ro().info().free_inodes, after.free_inodes + 1);
}

#[test]
fn xattrs_set_get_remove_and_preserved() {
    let fx = Fx::new(Mkfs::default());
    // an attribute set by someone else on a file we never touch
    let cap: &[u8] = &[
        1, 0, 0, 2, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let capfile = fx.dir.path().join("cap.bin");
    std::fs::write(&capfile, cap).unwrap();
    fx.debugfs_w(&format!(
        "ea_set -f {} /usr/lib/os-release security.capability",
        capfile.display()
    ));
    {
        let mut fs = fx.rw();
        assert_eq!(
            fs.get_xattr("/usr/lib/os-release", "security.capability")
                .unwrap()
                .as_deref(),
            Some(cap)
        );
        fs.write_file("/usr/bin/ping", b"ping", &attrs(0o755, 0, 0))
            .unwrap();
        fs.set_xattr("/usr/bin/ping", "security.capability", cap)
            .unwrap();
        fs.set_xattr("/usr/bin/ping", "user.note", &[0xAB; 300])
            .unwrap(); // does not fit in the inode
        fs.set_xattr("/etc/fstab", "user.gone", b"bye").unwrap();
        fs.remove_xattr("/etc/fstab", "user.gone").unwrap();
        fs.remove_xattr("/etc/fstab", "user.never-set").unwrap();
        assert_eq!(
            fs.get_xattr("/usr/bin/ping", "security.capability")
                .unwrap()
                .as_deref(),
            Some(cap)
        );
        assert_eq!(fs.get_xattr("/etc/fstab", "user.gone").unwrap(), None);
        fs.write_file("/etc/hostname", b"other\n", &attrs(0o644, 0, 0))
            .unwrap();
        fs.commit().unwrap();
    }
    fx.assert_clean("xattr edits");
    let list = fx.debugfs("ea_list /usr/bin/ping");
    assert!(
        list.contains("security.capability (20)") && list.contains("user.note (300)"),
        "{list}"
    );
    let hexcap = cap
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(fx
        .debugfs("ea_get -x /usr/bin/ping security.capability")
        .contains(&hexcap));
    assert!(
        fx.debugfs("ea_get -x /usr/lib/os-release security.capability")
            .contains(&hexcap),
        "untouched xattr lost"
    );
    assert!(!fx.debugfs("ea_list /etc/fstab").contains("user.gone"));
    // removing a file with an EA block frees that block too
    let free = fx.ro().info().free_blocks;
    let mut fs = fx.rw();
    fs.remove("/usr/bin/ping").unwrap();
    fs.commit().unwrap();
    fx.assert_clean("removing a file with an EA block");
    assert_eq!(fx.ro().info().free_blocks, free + 2);
}

#[test]
fn set_attrs_changes_mode_owner_and_times() {
    let fx = Fx::new(Mkfs::default());
    let mut fs = fx.rw();
    fs.set_attrs(
        "/etc/fstab",
        &Attrs {
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 1_234_567_890,
        },
    )
    .unwrap();
    fs.set_attrs("/usr/bin", &attrs(0o755, 1000, 1000)).unwrap();
    fs.set_attrs("/lib", &attrs(0o600, 1000, 1000)).unwrap(); // a symlink: mode stays 0777
                                                              // beyond 2038: the epoch bits in the extra field
    fs.set_attrs(
        "/etc/hostname",
        &Attrs {
            mode: 0o644,
            uid: 70000,
            gid: 70001,
            mtime: 5_000_000_000,
        },
    )
    .unwrap();
    assert_eq!(
        fs.stat("/etc/hostname").unwrap().unwrap().mtime,
        5_000_000_000
    );
    fs.commit().unwrap();
    fx.assert_clean("set_attrs");
    let (m, u, g) = debugfs_mode_owner(&fx.debugfs("stat /etc/fstab"));
    assert_eq!((m.as_str(), u.as_str(), g.as_str()), ("0600", "0", "0"));
    let (m, u, g) = debugfs_mode_owner(&fx.debugfs("stat /usr/bin"));
    assert_eq!(
        (m.as_str(), u.as_str(), g.as_str()),
        ("0755", "1000", "1000")
    );
    let (m, u, _) = debugfs_mode_owner(&fx.debugfs("stat /lib"));
    assert_eq!((m.as_str(), u.as_str()), ("0777", "1000"));
    let (_, u, g) = debugfs_mode_owner(&fx.debugfs("stat /etc/hostname"));
    assert_eq!((u.as_str(), g.as_str()), ("70000", "70001"));
    assert!(fx
        .debugfs("stat /etc/fstab")
        .contains("mtime: 0x499602d2:00000000"));
    let st = fx.ro().stat("/etc/hostname").unwrap().unwrap();
    assert_eq!((st.mtime, st.uid, st.gid), (5_000_000_000, 70000, 70001));
}

fn the_same_edits(fx: &Fx) {
    the_same_edits_in(fx.rw());
}

fn the_same_edits_in(mut fs: Ext4) {
    fs.mkdir_p("/etc/kubernetes/pki", &attrs(0o700, 0, 0))
        .unwrap();
    fs.write_file(
        "/etc/kubernetes/pki/ca.crt",
        &[b'c'; 5000],
        &attrs(0o644, 0, 0),
    )
    .unwrap();
    fs.write_file_from(
        "/usr/bin/containerd",
        &mut Noise {
            left: 3_000_000,
            state: 1,
        },
        3_000_000,
        &attrs(0o755, 0, 0),
    )
    .unwrap();
    fs.write_file("/etc/hostname", b"node\n", &attrs(0o644, 0, 0))
        .unwrap();
    fs.symlink("/etc/systemd-link", &"x/".repeat(40), &attrs(0, 0, 0))
        .unwrap();
    fs.set_xattr("/usr/bin/containerd", "security.capability", &[1, 2, 3])
        .unwrap();
    fs.remove_tree("/opt/tree").unwrap();
    fs.remove("/usr/bin/prog").unwrap();
    fs.set_attrs("/etc", &attrs(0o755, 0, 0)).unwrap();
    fs.commit().unwrap();
}

#[test]
fn same_edits_give_identical_images() {
    let a = Fx::new(Mkfs {
        opts: &["metadata_csum_seed,orphan_file"],
        ..Default::default()
    });
    let b = a.copy();
    the_same_edits(&a);
    // a different wall clock for the second session
    std::thread::sleep(std::time::Duration::from_millis(1100));
    the_same_edits(&b);
    a.assert_clean("the determinism edits");
    assert_eq!(
        a.sha(),
        b.sha(),
        "two identical sessions produced different images"
    );
    assert_eq!(a.ro().info().last_write_time, EPOCH);
}

#[test]
fn direct_mode_gives_the_same_image_as_the_overlay() {
    let a = Fx::new(Mkfs {
        opts: &["metadata_csum_seed,orphan_file"],
        ..Default::default()
    });
    let b = a.copy();
    the_same_edits(&a);
    let mut opts = OpenOptions::new(OpenMode::ReadWrite);
    opts.clock = Some(EPOCH);
    opts.direct = true;
    the_same_edits_in(Ext4::open_with(&b.img, b.offset, &opts).expect("open direct"));
    b.assert_clean("the edits in direct mode");
    assert_eq!(
        a.sha(),
        b.sha(),
        "direct mode wrote other bytes than the overlay"
    );
}

/// Content written by `write_many_files`: path, size, Noise seed.
const MANY_FILES: &[(&str, u64, u64)] = &[
    ("/usr/bin/kubelet", 5_000_001, 11),
    ("/usr/bin/kubeadm", 3 * 1024 * 1024 - 7, 12),
    ("/opt/cni/bin/bridge", 2_500_003, 13),
    ("/etc/empty", 0, 14),
    ("/etc/tiny", 23, 15),
    ("/etc/one-block", 4096, 16),
    ("/etc/block-and-a-byte", 4097, 17),
    // replaces a file of the image
    ("/etc/hostname", 1_234_567, 18),
];

/// Free space in two-block holes: 300 files of 8 KiB, every other one removed.
fn fragment(fx: &Fx) {
    let mut fs = fx.rw();
    fs.mkdir_p("/var/frag", &attrs(0o755, 0, 0)).unwrap();
    for i in 0..300 {
        fs.write_file(
            &format!("/var/frag/{i}"),
            &[i as u8; 8192],
            &attrs(0o644, 0, 0),
        )
        .unwrap();
    }
    fs.commit().unwrap();
    let mut fs = fx.rw();
    for i in (0..300).step_by(2) {
        fs.remove(&format!("/var/frag/{i}")).unwrap();
    }
    fs.commit().unwrap();
    fx.assert_clean("fragmenting the free space");
}

fn write_many_files(mut fs: Ext4) {
    fs.mkdir_p("/opt/cni/bin", &attrs(0o755, 0, 0)).unwrap();
    // a file replaced in the same session, by a shorter one
    fs.write_file_from(
        "/usr/bin/kubeadm",
        &mut Noise {
            left: 4_000_000,
            state: 99,
        },
        4_000_000,
        &attrs(0o755, 0, 0),
    )
    .unwrap();
    for &(path, len, seed) in MANY_FILES {
        fs.write_file_from(
            path,
            &mut Noise {
                left: len,
                state: seed,
            },
            len,
            &attrs(0o755, 0, 0),
        )
        .unwrap();
    }
    fs.commit().unwrap();
}

/// Multi-MB files, partial last blocks, an empty and a tiny file, in overlay
/// and direct mode, on a fragmented filesystem (extent trees deeper than the
/// inode) and on an inline_data one: the same bytes in both modes, content
/// as debugfs reads it, e2fsck clean, no uninitialized extents.
#[test]
fn many_files_in_both_modes() {
    for opts in [
        &["metadata_csum_seed,orphan_file"][..],
        &["inline_data"][..],
    ] {
        let a = Fx::new(Mkfs {
            size: "64M",
            opts,
            ..Default::default()
        });
        fragment(&a);
        let b = a.copy();
        write_many_files(a.rw());
        let mut direct = OpenOptions::new(OpenMode::ReadWrite);
        direct.clock = Some(EPOCH);
        direct.direct = true;
        write_many_files(Ext4::open_with(&b.img, b.offset, &direct).expect("open direct"));
        a.assert_clean(&format!("writing files ({opts:?})"));
        b.assert_clean(&format!("writing files in direct mode ({opts:?})"));
        assert_eq!(a.sha(), b.sha(), "direct mode wrote other bytes ({opts:?})");

        let fs = a.ro();
        for &(path, len, seed) in MANY_FILES {
            let expected = noise_vec(len, seed);
            assert_eq!(fs.stat(path).unwrap().unwrap().size, len, "{path}");
            assert!(fs.read_file(path).unwrap() == expected, "{path} differs");
            let out = a.dir.path().join("dump.out");
            let _ = std::fs::remove_file(&out);
            run(Command::new(tool("debugfs"))
                .arg("-R")
                .arg(format!("dump {path} {}", out.display()))
                .arg(a.spec()));
            let mut dumped = std::fs::read(&out).unwrap();
            if a.debugfs(&format!("stat {path}"))
                .contains("Size of inline data")
            {
                // debugfs 1.47.0 dumps the whole inline area (60 bytes)
                assert_eq!(dumped.len(), 60, "{path}");
                dumped.truncate(len as usize);
            }
            assert!(
                dumped == expected,
                "debugfs reads other content for {path} ({opts:?})"
            );
            let extents = a.debugfs(&format!("ex {path}"));
            assert!(!extents.contains("Uninit"), "{path}: {extents}");
        }
        // kubeadm went into the two-block holes (again, after its first
        // version was replaced): an extent tree below the inode
        let kubeadm = a.debugfs("ex /usr/bin/kubeadm");
        assert!(kubeadm.contains(" 1/ 1 "), "{kubeadm}");
        let tiny = a.debugfs("stat /etc/tiny");
        let big = a.debugfs("stat /usr/bin/kubelet");
        if opts == ["inline_data"] {
            assert!(tiny.contains("Size of inline data"), "{tiny}");
        }
        assert!(big.contains("EXTENTS:"), "{big}");
    }
}

// --------------------------------------------------------------- refusals

#[test]
fn refuses_journal_needing_recovery() {
    let fx = Fx::new(Mkfs::default());
    fx.debugfs_w("feature needs_recovery");
    for mode in [OpenMode::ReadOnly, OpenMode::ReadWrite] {
        let e = Ext4::open(&fx.img, 0, mode)
            .err()
            .expect("opened a filesystem that needs recovery");
        assert!(matches!(e, Ext4Error::NeedsRecovery { .. }), "{e}");
        assert!(e.to_string().contains("needs recovery"), "{e}");
    }
}

#[test]
fn refuses_to_write_a_filesystem_with_errors() {
    let fx = Fx::new(Mkfs::default());
    fx.debugfs_w("ssv state 3");
    let e = Ext4::open(&fx.img, 0, OpenMode::ReadWrite)
        .err()
        .expect("opened an erroneous fs read-write");
    assert!(matches!(e, Ext4Error::ErrorState { .. }), "{e}");
    assert_eq!(
        fx.ro().read_file("/etc/hostname").unwrap(),
        b"raspberrypi\n"
    );
    fx.debugfs_w("ssv state 0");
    let e = Ext4::open(&fx.img, 0, OpenMode::ReadWrite)
        .err()
        .expect("opened an unclean fs read-write");
    assert!(matches!(e, Ext4Error::NotClean { .. }), "{e}");
}

#[test]
fn refuses_features_it_cannot_write() {
    let fx = Fx::new(Mkfs {
        opts: &["quota"],
        fresh_check: false,
        ..Default::default()
    });
    let e = Ext4::open(&fx.img, 0, OpenMode::ReadWrite)
        .err()
        .expect("opened a quota fs read-write");
    match &e {
        Ext4Error::UnsupportedFeatures {
            features, action, ..
        } => {
            assert_eq!(
                (features.as_slice(), *action),
                (&["quota".to_string()][..], "write")
            )
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("cannot write: quota"), "{e}");
    fx.ro();
    // an incompat feature bit nobody knows: not even readable
    let mut bytes = std::fs::read(&fx.img).unwrap();
    bytes[1024 + 0x60 + 3] |= 0x40; // bit 30
    std::fs::write(&fx.img, &bytes).unwrap();
    let e = Ext4::open(&fx.img, 0, OpenMode::ReadOnly)
        .err()
        .expect("opened an unknown feature");
    assert!(e.to_string().contains("cannot read: FEATURE_I30"), "{e}");
}

#[test]
fn refuses_what_is_not_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("zeros.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let e = Ext4::open(&img, 0, OpenMode::ReadOnly).err().unwrap();
    assert!(matches!(e, Ext4Error::NotExt4 { .. }), "{e}");
    let e = Ext4::open(&img, 4 << 20, OpenMode::ReadOnly).err().unwrap();
    assert!(matches!(e, Ext4Error::NotExt4 { .. }), "{e}");
    let e = Ext4::open(&dir.path().join("missing.img"), 0, OpenMode::ReadOnly)
        .err()
        .unwrap();
    assert!(matches!(e, Ext4Error::Image { .. }), "{e}");
}

#[test]
fn refuses_a_filesystem_larger_than_its_partition() {
    let fx = Fx::new(Mkfs::default()); // 32 MiB
    let ro = OpenOptions::new(OpenMode::ReadOnly);
    let e = Ext4::open_bounded(&fx.img, 0, 16 << 20, &ro)
        .err()
        .expect("opened a filesystem larger than its partition");
    assert!(
        matches!(
            e,
            Ext4Error::LargerThanPartition {
                fs_bytes: 33554432,
                part_bytes: 16777216,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("more than the 16777216 bytes"),
        "{e}"
    );
    // exactly the partition is fine
    let fs = Ext4::open_bounded(&fx.img, 0, 32 << 20, &ro).expect("open bounded");
    assert_eq!(fs.read_file("/etc/hostname").unwrap(), b"raspberrypi\n");
}

#[test]
fn the_shim_refuses_io_past_the_partition() {
    use std::os::unix::ffi::OsStrExt;
    let fx = Fx::new(Mkfs::default());
    let before = std::fs::read(&fx.img).unwrap();
    let path = CString::new(fx.img.as_os_str().as_bytes()).unwrap();
    // Below the Rust-side superblock check: a handle bounded to the first 8 KiB (superblock
    // and group descriptors of a 4 KiB-block filesystem) must fail, not read on.
    for rw in [0, 1] {
        let scratch = tempfile::tempfile().unwrap();
        let fd = if rw == 1 { scratch.as_raw_fd() } else { -1 };
        let mut h = std::ptr::null_mut();
        // SAFETY: valid C string and out pointer; the scratch file outlives the handle.
        let mut code = unsafe {
            ffi::pf_open(
                path.as_ptr(),
                0,
                8192,
                rw,
                EPOCH,
                fd,
                -1,
                std::ptr::null(),
                0,
                &mut h,
            )
        };
        if code == 0 {
            let c = CString::new("/etc/hostname").unwrap();
            let mut ino = 0u32;
            // SAFETY: live handle, valid C string and out pointer.
            code = unsafe { ffi::pf_namei(h, c.as_ptr(), 1, &mut ino) };
            // SAFETY: the handle came from pf_open and is released once.
            unsafe { ffi::pf_abort(h) };
        }
        assert_eq!(
            code,
            et!(pf_et_past_partition),
            "rw={rw}: {}",
            lib_message(code)
        );
    }
    assert!(
        std::fs::read(&fx.img).unwrap() == before,
        "the image changed"
    );
}

#[test]
fn shared_struct_layouts_match_the_shim() {
    // SAFETY: plain functions of the shim returning sizeof.
    let (info, stat) = unsafe { (ffi::pf_sizeof_info(), ffi::pf_sizeof_stat()) };
    assert_eq!(info, std::mem::size_of::<ffi::PfInfo>());
    assert_eq!(stat, std::mem::size_of::<ffi::PfStat>());
}

#[test]
fn feature_masks_come_from_libext2fs() {
    // The masks piforge wrote by hand before the shim exported them: the header-derived
    // values must say the same (a change here is a behaviour change to review).
    assert_eq!(
        write_compat(),
        0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x200 | 0x400 | 0x800 | 0x1000
    );
    assert_eq!(
        write_incompat(),
        0x2 | 0x10 | 0x40 | 0x80 | 0x200 | 0x2000 | 0x4000 | 0x8000
    );
    assert_eq!(
        write_ro_compat(),
        0x1 | 0x2 | 0x8 | 0x10 | 0x20 | 0x40 | 0x400
    );
    let readable = lib_incompat_supp();
    for bit in [0x2, 0x4, 0x40, 0x80, 0x100, 0x200, 0x2000, 0x4000, 0x8000] {
        assert!(readable & bit != 0, "libext2fs reads incompat {bit:#x}");
    }
    assert_eq!(incompat_recover(), 0x4);
    assert_eq!(ro_compat_orphan_present(), 0x10000);
    assert_eq!((state_valid(), state_error()), (1, 2));
}

#[test]
fn one_writer_at_a_time() {
    let fx = Fx::new(Mkfs::default());
    let _a = fx.rw();
    let e = Ext4::open_with_clock(&fx.img, 0, OpenMode::ReadWrite, EPOCH)
        .err()
        .unwrap();
    assert!(matches!(e, Ext4Error::Busy { .. }), "{e}");
}

// ------------------------------------------------------ space and aborts

#[test]
fn no_space_is_typed_and_harmless() {
    let fx = Fx::new(Mkfs {
        size: "16M",
        ..Default::default()
    });
    let before = fx.sha();
    let mut fs = fx.rw();
    let free = fs.free_bytes();
    let size = free + 4096;
    let e = fs
        .write_file_from(
            "/big",
            &mut Noise {
                left: size,
                state: 3,
            },
            size,
            &attrs(0o644, 0, 0),
        )
        .unwrap_err();
    match e {
        Ext4Error::NoSpace {
            needed_bytes,
            free_bytes,
            ..
        } => {
            assert!(needed_bytes > size);
            assert_eq!(free_bytes, free);
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    // the check happened before anything changed: the session goes on
    fs.write_file("/small", b"fits", &attrs(0o644, 0, 0))
        .unwrap();
    drop(fs); // abandoned without commit
    assert_eq!(fx.sha(), before, "an abandoned session changed the image");
    fx.assert_clean("an abandoned session after NoSpace");
}

/// A reader that fails after some bytes, like a broken download.
struct Failing(u64);
impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Err(std::io::Error::other("connection reset"));
        }
        let n = (buf.len() as u64).min(self.0) as usize;
        buf[..n].fill(9);
        self.0 -= n as u64;
        Ok(n)
    }
}

#[test]
fn failed_session_leaves_image_unchanged() {
    let fx = Fx::new(Mkfs::default());
    let before = fx.sha();
    let mut fs = fx.rw();
    fs.mkdir_p("/opt/new", &attrs(0o755, 0, 0)).unwrap();
    fs.write_file("/etc/hostname", b"changed\n", &attrs(0o644, 0, 0))
        .unwrap();
    let e = fs
        .write_file_from(
            "/opt/new/blob",
            &mut Failing(3 << 20),
            8 << 20,
            &attrs(0o644, 0, 0),
        )
        .unwrap_err();
    assert!(matches!(e, Ext4Error::Source { .. }), "{e}");
    assert!(e.to_string().contains("connection reset"), "{e}");
    let e = fs
        .write_file("/etc/other", b"x", &attrs(0o644, 0, 0))
        .unwrap_err();
    assert!(matches!(e, Ext4Error::Poisoned { .. }), "{e}");
    let e = fs.commit().unwrap_err();
    assert!(matches!(e, Ext4Error::Poisoned { .. }), "{e}");
    assert_eq!(fx.sha(), before, "a failed session changed the image");
    fx.assert_clean("a failed session");

    // a short reader is caught too
    let mut fs = fx.rw();
    let e = fs
        .write_file_from("/x", &mut &b"abc"[..], 10, &attrs(0o644, 0, 0))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Ext4Error::SizeMismatch {
                actual: 3,
                expected: 10,
                ..
            }
        ),
        "{e}"
    );
    drop(fs);
    assert_eq!(fx.sha(), before);
}

// ------------------------------------------------------- layouts and features

#[test]
fn filesystem_at_an_offset() {
    // 1 KiB blocks (mkfs' default for small filesystems), 1 MiB into the file
    let fx = Fx::new(Mkfs {
        offset: 1 << 20,
        block_size: None,
        ..Default::default()
    });
    let mut img = std::fs::read(&fx.img).unwrap();
    img[..1 << 20].fill(0xA5); // something that must survive
    std::fs::write(&fx.img, &img).unwrap();
    {
        let fs = fx.ro();
        assert_eq!(fs.info().block_size, 1024);
        assert_eq!(fs.read_file("/etc/hostname").unwrap(), b"raspberrypi\n");
    }
    {
        let mut fs = fx.rw();
        fs.mkdir_p("/etc/a/b", &attrs(0o755, 0, 0)).unwrap();
        // 12 MB across several 8 MiB block groups
        fs.write_file_from(
            "/etc/a/b/f",
            &mut Noise {
                left: 12_000_000,
                state: 5,
            },
            12_000_000,
            &attrs(0o644, 0, 0),
        )
        .unwrap();
        // more inodes than the first group has (2048): uninitialised groups get used
        for d in 0..22 {
            fs.mkdir_p(&format!("/spread/d{d}"), &attrs(0o755, 0, 0))
                .unwrap();
            for f in 0..100 {
                fs.write_file(&format!("/spread/d{d}/f{f}"), b"", &attrs(0o644, 0, 0))
                    .unwrap();
            }
        }
        fs.symlink("/etc/a/l", &"y".repeat(100), &attrs(0, 0, 0))
            .unwrap();
        fs.remove_tree("/opt").unwrap();
        fs.commit().unwrap();
    }
    fx.assert_clean("edits at an offset");
    let after = std::fs::read(&fx.img).unwrap();
    assert!(
        after[..1 << 20].iter().all(|b| *b == 0xA5),
        "bytes before the filesystem changed"
    );
    assert!(
        after[after.len() - (1 << 20)..].iter().all(|b| *b == 0),
        "bytes after the filesystem changed"
    );
    assert_eq!(after.len(), img.len());
    let fs = fx.ro();
    assert!(fs.read_file("/etc/a/b/f").unwrap() == noise_vec(12_000_000, 5));
    assert_eq!(fs.read_dir("/spread/d21").unwrap().len(), 100);
    assert!(fs.stat("/spread/d21/f99").unwrap().unwrap().ino > 2048);
}

#[test]
fn trixie_features() {
    let fx = Fx::new(Mkfs {
        opts: &["metadata_csum_seed,orphan_file", "^huge_file"],
        ..Default::default()
    });
    let mut fs = fx.rw();
    assert!(fs.info().features.iter().any(|f| f == "orphan_file"));
    fs.mkdir_p("/etc/rpi/swap.conf.d", &attrs(0o755, 0, 0))
        .unwrap();
    fs.write_file(
        "/etc/rpi/swap.conf.d/90-off.conf",
        b"[Main]\nMechanism=none\n",
        &attrs(0o644, 0, 0),
    )
    .unwrap();
    fs.set_xattr(
        "/etc/rpi/swap.conf.d/90-off.conf",
        "security.capability",
        &[1; 20],
    )
    .unwrap();
    fs.remove("/etc/fstab").unwrap();
    fs.commit().unwrap();
    fx.assert_clean("edits with metadata_csum_seed and orphan_file");
    assert_eq!(
        fx.debugfs("cat /etc/rpi/swap.conf.d/90-off.conf"),
        "[Main]\nMechanism=none\n"
    );
}

#[test]
fn ext3_style_block_maps() {
    // no extents: indirect blocks
    let fx = Fx::new(Mkfs {
        opts: &["^extent,^64bit,^flex_bg,^metadata_csum"],
        ..Default::default()
    });
    let len = 5_000_000;
    let mut fs = fx.rw();
    assert!(!fs.info().features.iter().any(|f| f == "extent"));
    fs.write_file_from(
        "/big",
        &mut Noise {
            left: len,
            state: 2,
        },
        len,
        &attrs(0o644, 0, 0),
    )
    .unwrap();
    fs.symlink("/slow", &"z".repeat(80), &attrs(0, 0, 0))
        .unwrap();
    fs.mkdir_p("/d/e", &attrs(0o755, 0, 0)).unwrap();
    fs.commit().unwrap();
    fx.assert_clean("edits on a block-mapped filesystem");
    let mut fs = fx.rw();
    fs.remove("/big").unwrap();
    fs.commit().unwrap();
    fx.assert_clean("removing a block-mapped file");
}

#[test]
fn inline_data() {
    let fx = Fx::new(Mkfs {
        opts: &["inline_data"],
        ..Default::default()
    });
    let mut fs = fx.rw();
    fs.write_file("/tiny", b"inline", &attrs(0o644, 0, 0))
        .unwrap();
    fs.write_file("/bigger", &[7u8; 10_000], &attrs(0o644, 0, 0))
        .unwrap();
    fs.mkdir_p("/dir/sub", &attrs(0o755, 0, 0)).unwrap();
    for i in 0..30 {
        fs.write_file(&format!("/dir/f{i}"), b"x", &attrs(0o644, 0, 0))
            .unwrap();
    }
    fs.symlink("/dir/l", &"q".repeat(90), &attrs(0, 0, 0))
        .unwrap();
    fs.commit().unwrap();
    fx.assert_clean("inline data edits");
    let fs = fx.ro();
    assert_eq!(fs.read_file("/tiny").unwrap(), b"inline");
    assert_eq!(fs.read_link("/dir/l").unwrap(), "q".repeat(90));
    drop(fs);
    let mut fs = fx.rw();
    fs.remove_tree("/dir").unwrap();
    fs.remove("/tiny").unwrap();
    fs.commit().unwrap();
    fx.assert_clean("removing inline data");
}

#[test]
fn block_estimate() {
    assert_eq!(blocks_for_size(0, 4096, true), 0);
    assert_eq!(blocks_for_size(1, 4096, true), 1);
    assert_eq!(blocks_for_size(4 * 4096, 4096, true), 4);
    assert_eq!(blocks_for_size(5 * 4096, 4096, true), 6); // one leaf
    assert_eq!(blocks_for_size(12 * 4096, 4096, false), 12);
    assert_eq!(blocks_for_size(13 * 4096, 4096, false), 14);
    let n = 60 * 256; // 60 MiB in 4 KiB blocks
    assert_eq!(
        blocks_for_size(n * 4096, 4096, true),
        n + n.div_ceil(340) + 1
    );
}
