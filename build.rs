//! Build script: compiles the libext2fs shim (`src/fs/ext4/shim.c`) against the
//! system e2fsprogs headers and links libext2fs and libcom_err.
//!
//! e2fsprogs 1.47.0 or newer is required: 1.46 added htree-aware
//! `ext2fs_link`, 1.47 the `orphan_file` feature Raspberry Pi OS trixie uses;
//! the shim also sets `fs->now` (the one clock). pkg-config's version is
//! checked first, then a small probe compiles against the headers actually
//! found, so a mismatched or partial install gets a sentence, not a C error.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/fs/ext4/shim.c");

    // Probe first (for include paths) but emit the link lines after the shim,
    // so the static shim comes before the libraries it uses on the link line.
    let probe = |name: &str, version: &str| {
        pkg_config::Config::new()
            .atleast_version(version)
            .cargo_metadata(false)
            .probe(name)
            .unwrap_or_else(|e| {
                panic!(
                    "piforge needs {name} >= {version} (Debian/Ubuntu: apt-get install \
                     libext2fs-dev comerr-dev): {e}"
                )
            })
    };
    let ext2fs = probe("ext2fs", "1.47");
    let com_err = probe("com_err", "1.47");
    check_headers(&ext2fs, &com_err);

    let mut build = cc::Build::new();
    build
        .file("src/fs/ext4/shim.c")
        .warnings(true)
        .extra_warnings(true);
    for path in ext2fs
        .include_paths
        .iter()
        .chain(com_err.include_paths.iter())
    {
        build.include(path);
    }
    build.compile("piforge_ext4_shim");

    for lib in [&ext2fs, &com_err] {
        for path in &lib.link_paths {
            println!("cargo:rustc-link-search=native={}", path.display());
        }
        for name in &lib.libs {
            println!("cargo:rustc-link-lib={name}");
        }
    }
}

/// Compiles a probe using everything the shim needs from libext2fs' headers, and fails the
/// build with one sentence naming the minimum version when something is missing.
fn check_headers(ext2fs: &pkg_config::Library, com_err: &pkg_config::Library) {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let probe = out.join("ext2fs_probe.c");
    std::fs::write(
        &probe,
        r#"#include <time.h>
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <et/com_err.h>
/* orphan_file and orphan_present: e2fsprogs 1.47.0 */
unsigned pf_probe_features = EXT4_FEATURE_COMPAT_ORPHAN_FILE | EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT;
/* the handle's clock, which the shim pins to SOURCE_DATE_EPOCH */
void pf_probe_now(ext2_filsys fs) { fs->now = (time_t)1; }
/* the io manager entry points the overlay implements */
struct struct_io_manager pf_probe_io = { .read_blk64 = 0, .write_blk64 = 0, .get_stats = 0 };
"#,
    )
    .expect("writing the libext2fs probe into OUT_DIR");
    let mut build = cc::Build::new();
    build.file(&probe).cargo_metadata(false).warnings(false);
    for path in ext2fs
        .include_paths
        .iter()
        .chain(com_err.include_paths.iter())
    {
        build.include(path);
    }
    if let Err(e) = build.try_compile("piforge_ext2fs_probe") {
        panic!(
            "piforge needs libext2fs 1.47.0 or newer (orphan_file, fs->now); the headers found \
             (ext2fs {}) lack them. Debian/Ubuntu: apt-get install libext2fs-dev comerr-dev \
             (bookworm: from bookworm-backports). Compiler said: {e}",
            ext2fs.version
        );
    }
}
