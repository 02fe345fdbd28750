//! A read-only view of a root filesystem: what `inspect`, `check` and `payload` read an image
//! through, so that their rules are pure and tested on in-memory trees. [`Ext4Files`] is the
//! view of a real ext4 filesystem (libext2fs).

use super::ext4::{Ext4, Ext4Error, FileKind};

/// Read access to a root filesystem (paths absolute; symlinks followed inside the filesystem).
pub trait RootFiles {
    /// The file's bytes, `Ok(None)` when it does not exist. Readers of image files refuse
    /// one larger than [`super::CONFIG_FILE_MAX`]: every caller reads a configuration file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
    /// Whether anything (file, directory, symlink, even dangling) exists at `path`.
    fn exists(&self, path: &str) -> Result<bool, String>;
    /// Names in a directory, sorted; empty when it does not exist.
    fn list(&self, dir: &str) -> Result<Vec<String>, String>;

    /// The target of the symlink `path` (its last component not followed), `Ok(None)` when
    /// `path` is not a symlink or does not exist. The default knows no symlinks; readers that
    /// can tell should override it (systemd masks are symlinks to `/dev/null`).
    fn read_link(&self, _path: &str) -> Result<Option<String>, String> {
        Ok(None)
    }

    fn read_string(&self, path: &str) -> Result<Option<String>, String> {
        Ok(self
            .read(path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

/// Root-filesystem reads through libext2fs.
pub struct Ext4Files<'a>(pub &'a Ext4);

impl RootFiles for Ext4Files<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match self.0.read_config(path) {
            Ok(b) => Ok(Some(b)),
            Err(Ext4Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    fn exists(&self, path: &str) -> Result<bool, String> {
        Ok(self.0.stat(path).map_err(|e| e.to_string())?.is_some())
    }
    fn read_link(&self, path: &str) -> Result<Option<String>, String> {
        match self.0.stat(path).map_err(|e| e.to_string())? {
            Some(st) if st.kind == FileKind::Symlink => {
                self.0.read_link(path).map(Some).map_err(|e| e.to_string())
            }
            _ => Ok(None),
        }
    }
    fn list(&self, dir: &str) -> Result<Vec<String>, String> {
        match self.0.read_dir(dir) {
            Ok(entries) => {
                let mut v: Vec<String> = entries.into_iter().map(|e| e.name).collect();
                v.sort();
                Ok(v)
            }
            Err(Ext4Error::NotFound { .. }) | Err(Ext4Error::NotADirectory { .. }) => {
                Ok(Vec::new())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory root filesystem.
    #[derive(Default)]
    pub(crate) struct MemFiles(pub BTreeMap<String, Vec<u8>>);

    impl MemFiles {
        pub(crate) fn with(files: &[(&str, &str)]) -> Self {
            MemFiles(
                files
                    .iter()
                    .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                    .collect(),
            )
        }
    }

    impl RootFiles for MemFiles {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.get(path).cloned())
        }
        fn exists(&self, path: &str) -> Result<bool, String> {
            let dir = format!("{}/", path.trim_end_matches('/'));
            Ok(self.0.contains_key(path) || self.0.keys().any(|k| k.starts_with(&dir)))
        }
        fn list(&self, dir: &str) -> Result<Vec<String>, String> {
            let pre = format!("{}/", dir.trim_end_matches('/'));
            let mut v: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&pre))
                .map(|r| r.split('/').next().unwrap_or(r).to_string())
                .collect();
            v.dedup();
            Ok(v)
        }
    }

    /// An in-memory root filesystem with directories and symlinks, resolved like the ext4
    /// reader: absolute targets inside the tree, intermediate links always followed, the last
    /// component followed by `read`/`list` but not by `exists`/`read_link`.
    #[derive(Clone, Default)]
    pub(crate) struct LinkFiles {
        files: BTreeMap<String, Vec<u8>>,
        links: BTreeMap<String, String>,
        dirs: std::collections::BTreeSet<String>,
    }

    impl LinkFiles {
        pub(crate) fn new() -> Self {
            Self::default()
        }
        pub(crate) fn file(mut self, path: &str, content: &str) -> Self {
            self.links.remove(path);
            self.files.insert(path.into(), content.as_bytes().to_vec());
            self
        }
        pub(crate) fn link(mut self, path: &str, target: &str) -> Self {
            self.files.remove(path);
            self.links.insert(path.into(), target.into());
            self
        }
        pub(crate) fn dir(mut self, path: &str) -> Self {
            self.dirs.insert(path.trim_end_matches('/').into());
            self
        }
        pub(crate) fn remove(mut self, path: &str) -> Self {
            self.files.remove(path);
            self.links.remove(path);
            self
        }

        fn resolve(&self, path: &str, follow_last: bool) -> Option<String> {
            let mut todo: Vec<String> = path.split('/').rev().map(String::from).collect();
            let mut cur: Vec<String> = Vec::new();
            let mut hops = 0;
            while let Some(c) = todo.pop() {
                match c.as_str() {
                    "" | "." => continue,
                    ".." => {
                        cur.pop();
                        continue;
                    }
                    _ => {}
                }
                let here = if cur.is_empty() {
                    format!("/{c}")
                } else {
                    format!("/{}/{c}", cur.join("/"))
                };
                let last = todo.iter().all(|t| t.is_empty() || t == ".");
                match self.links.get(&here) {
                    Some(t) if !last || follow_last => {
                        hops += 1;
                        if hops > 40 {
                            return None;
                        }
                        if t.starts_with('/') {
                            cur.clear();
                        }
                        todo.extend(t.split('/').rev().map(String::from));
                    }
                    _ => cur.push(c),
                }
            }
            Some(format!("/{}", cur.join("/")))
        }

        fn is_dir(&self, p: &str) -> bool {
            let pre = format!("{}/", p.trim_end_matches('/'));
            p == "/"
                || self.dirs.contains(p)
                || self
                    .files
                    .keys()
                    .chain(self.links.keys())
                    .chain(self.dirs.iter())
                    .any(|k| k.starts_with(&pre))
        }
    }

    impl RootFiles for LinkFiles {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self
                .resolve(path, true)
                .and_then(|p| self.files.get(&p).cloned()))
        }
        fn exists(&self, path: &str) -> Result<bool, String> {
            Ok(self.resolve(path, false).is_some_and(|p| {
                self.files.contains_key(&p) || self.links.contains_key(&p) || self.is_dir(&p)
            }))
        }
        fn list(&self, dir: &str) -> Result<Vec<String>, String> {
            let Some(d) = self.resolve(dir, true) else {
                return Ok(Vec::new());
            };
            let pre = format!("{}/", d.trim_end_matches('/'));
            let mut v: Vec<String> = self
                .files
                .keys()
                .chain(self.links.keys())
                .chain(self.dirs.iter())
                .filter_map(|k| k.strip_prefix(&pre))
                .map(|r| r.split('/').next().unwrap_or(r).to_string())
                .collect();
            v.sort();
            v.dedup();
            Ok(v)
        }
        fn read_link(&self, path: &str) -> Result<Option<String>, String> {
            Ok(self
                .resolve(path, false)
                .and_then(|p| self.links.get(&p).cloned()))
        }
    }

    #[test]
    fn link_files_resolve_like_ext4() {
        let fs = LinkFiles::new()
            .file("/usr/lib/x/a", "A")
            .link("/lib", "usr/lib")
            .link("/etc/alt", "/lib/x/a")
            .link("/etc/rel", "../usr/lib/x/a")
            .link("/etc/null", "/dev/null")
            .dir("/dev");
        assert_eq!(fs.read("/lib/x/a").unwrap().unwrap(), b"A");
        assert_eq!(fs.read("/etc/alt").unwrap().unwrap(), b"A");
        assert_eq!(fs.read("/etc/rel").unwrap().unwrap(), b"A");
        assert_eq!(fs.read("/etc/null").unwrap(), None);
        assert!(fs.exists("/etc/null").unwrap());
        assert!(fs.exists("/dev").unwrap());
        assert!(!fs.exists("/dev/null").unwrap());
        assert_eq!(
            fs.read_link("/etc/null").unwrap().as_deref(),
            Some("/dev/null")
        );
        assert_eq!(fs.read_link("/lib/x/a").unwrap(), None);
        assert_eq!(fs.list("/lib").unwrap(), vec!["x"]);
        assert_eq!(fs.list("/etc").unwrap(), vec!["alt", "null", "rel"]);
    }
}
