//! Build script: compiles the libext2fs shim (`src/fs/ext4/shim.c`) against the
//! system e2fsprogs headers and links libext2fs and libcom_err.
//!
//! e2fsprogs 1.47 or newer is required: 1.46 added htree-aware
//! `ext2fs_link`, 1.47 the `orphan_file` feature Raspberry Pi OS trixie uses.

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
