//! `os_list.json` for Raspberry Pi Imager's custom repository (`rpi-imager --repo
//! dist/os_list.json`): one entry per node image, so the right card can be written from the GUI.
//!
//! Keys as Imager reads them (github.com/raspberrypi/rpi-imager, src/oslistmodel.cpp
//! `OSListModel::reload`, and doc/json-schema/os-list-schema.json): `name`, `description`,
//! `url`, `release_date`, `extract_size`, `extract_sha256` (of the raw image: Imager checks the
//! written image against it), `image_download_size`, `image_download_sha256` (of the file at
//! `url`), `bmap_url`, `init_format`.
//!
//! `init_format` is `"none"`: the node's seed (hostname, cloud-init, kubeadm configuration) is
//! already in the image, and Imager's own OS customisation would write over it. Imager 2.x
//! offers no customisation for `"none"` (src/imagewriter.cpp `setSrc` turns it into an empty
//! format; doc/os_customisation_formats.md: "the OS image doesn't support customisation").
//! Imager 1.x (through 1.9.6) honours `"none"` for a download, but sets the format to `auto`
//! for every local file that is not an `.iso` (v1.9.6 src/imagewriter.cpp `setSrc`): with the
//! default `file://` URLs it offers its customisation, and, if accepted, finds the node's
//! `user-data` on the FAT partition and writes its own over it (src/downloadthread.cpp, "user-data
//! found on FAT partition. Assuming cloudinit support"). With 1.x the user must decline its
//! customisation prompt, or serve the files over HTTP (`--base-url`).
//!
//! `url` must be absolute: Imager fetches a URL without a scheme as a remote one and fails
//! (src/imagewriter.cpp `onOsListFetchError`; its own doc/local_json/create_local_json.py
//! writes `file://` URIs). The files are named under `base_url`, by default the output
//! directory as a `file://` URI, so the list depends on where the build wrote it.

use serde::Serialize;

/// One node image in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub description: String,
    /// The file Imager downloads (`<node>.img.xz`, `.img.zst` or `.img`), relative to the base.
    pub file: String,
    pub download_bytes: u64,
    pub download_sha256: String,
    pub extract_bytes: u64,
    pub extract_sha256: String,
    /// `<node>.img.bmap`, relative to the base.
    pub bmap: Option<String>,
}

#[derive(Serialize)]
struct Json<'a> {
    os_list: Vec<JsonEntry<'a>>,
}

#[derive(Serialize)]
struct JsonEntry<'a> {
    name: &'a str,
    description: &'a str,
    url: String,
    release_date: &'a str,
    extract_size: u64,
    extract_sha256: &'a str,
    image_download_size: u64,
    image_download_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bmap_url: Option<String>,
    init_format: &'static str,
}

/// `path` as a `file://` URI (RFC 8089), every byte outside RFC 3986's unreserved set and `/`
/// percent-encoded; ends with `/` (a directory, the base the file names join).
pub fn file_uri_dir(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut s = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// A file name as the last segment of a URL.
fn segment(name: &str) -> String {
    let mut s = String::new();
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The JSON text: entries in the order given, `release_date` as `YYYY-MM-DD` of `epoch`.
pub fn render(entries: &[Entry], base_url: &str, epoch: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(epoch)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_default();
    let json = Json {
        os_list: entries
            .iter()
            .map(|e| JsonEntry {
                name: &e.name,
                description: &e.description,
                url: format!("{base_url}{}", segment(&e.file)),
                release_date: &date,
                extract_size: e.extract_bytes,
                extract_sha256: &e.extract_sha256,
                image_download_size: e.download_bytes,
                image_download_sha256: &e.download_sha256,
                bmap_url: e.bmap.as_ref().map(|b| format!("{base_url}{}", segment(b))),
                init_format: "none",
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&json).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_imagers_keys_and_no_customisation() {
        let e = Entry {
            name: "cp-1".into(),
            description: "piforge node cp-1 (control plane)".into(),
            file: "cp-1.img.xz".into(),
            download_bytes: 10,
            download_sha256: "a".repeat(64),
            extract_bytes: 4096,
            extract_sha256: "b".repeat(64),
            bmap: Some("cp-1.img.bmap".into()),
        };
        let base = file_uri_dir(std::path::Path::new("/srv/my dist"));
        assert_eq!(base, "file:///srv/my%20dist/");
        let text = render(&[e], &base, 1_764_547_200);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let o = &v["os_list"][0];
        assert_eq!(o["url"], "file:///srv/my%20dist/cp-1.img.xz");
        assert_eq!(o["bmap_url"], "file:///srv/my%20dist/cp-1.img.bmap");
        assert_eq!(o["release_date"], "2025-12-01");
        assert_eq!(o["extract_size"], 4096);
        assert_eq!(o["image_download_size"], 10);
        assert_eq!(o["extract_sha256"], "b".repeat(64));
        assert_eq!(o["image_download_sha256"], "a".repeat(64));
        assert_eq!(o["init_format"], "none");
        assert_eq!(o["name"], "cp-1");
    }
}
