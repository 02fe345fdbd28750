//! The catalog's value checks: tarball members, version strings, image references and URLs
//! (each answers with the sentence the catalog error carries).

use super::{ArtifactKind, Members};

/// A tarball lists its members (at least one required), other kinds none; each member is a
/// relative path without `.`/`..` components, listed once, and no two installed members share
/// a file name (they are installed by file name).
pub(super) fn check_members(
    kind: ArtifactKind,
    m: Members,
) -> std::result::Result<Members, String> {
    let all: Vec<&String> = m
        .required
        .iter()
        .chain(&m.optional)
        .chain(&m.ignored)
        .collect();
    if kind != ArtifactKind::TarGz {
        return if all.is_empty() {
            Ok(m)
        } else {
            Err("only a tar.gz artifact has members".into())
        };
    }
    if m.required.is_empty() {
        return Err("a tar.gz artifact needs `members`, the files it installs".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &all {
        let ok = !p.is_empty()
            && !p.starts_with('/')
            && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !ok {
            return Err(format!("member {p:?} is not a normalized relative path"));
        }
        if !seen.insert(p.as_str()) {
            return Err(format!("member {p:?} is listed twice"));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for p in m.required.iter().chain(&m.optional) {
        let name = p.rsplit('/').next().unwrap_or(p);
        if !names.insert(name) {
            return Err(format!("two members are installed as {name:?}"));
        }
    }
    Ok(m)
}

pub(super) fn is_version(v: &str) -> bool {
    !v.is_empty()
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// `X.Y.Z` as numbers.
pub(super) fn parse_kube_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.').map(|p| {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            p.parse::<u64>().ok()
        }
    });
    let (a, b, c) = (it.next()??, it.next()??, it.next()??);
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

/// `registry/path:tag` or `registry/path@sha256:...`: no blanks, no quotes, a tag or digest.
pub(super) fn is_image_reference(s: &str) -> bool {
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(['/', '.', '-'])
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"./-_:".contains(&b))
    };
    match s.split_once('@') {
        Some((name, digest)) => {
            name_ok(name)
                && digest
                    .strip_prefix("sha256:")
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        None => match s.rsplit_once(':') {
            Some((name, tag)) => {
                name_ok(name)
                    && !tag.is_empty()
                    && !tag.contains('/')
                    && tag
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }
            None => false,
        },
    }
}

pub(super) fn check_url(what: &str, url: &str) -> std::result::Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{what} {url:?} is not an https:// URL"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || path.is_empty() || url.contains(char::is_whitespace) {
        return Err(format!(
            "{what} {url:?} needs a host and a path, without spaces"
        ));
    }
    if url.contains(['?', '#']) {
        return Err(format!("{what} {url:?} must not have a query or fragment"));
    }
    Ok(())
}
