//! Parsing upstream checksum files.

use super::ChecksumKind;
use crate::digest::{parse_sha256, sum_lines};

/// The SHA-256 (lowercase hex) that a checksum file gives for `file_name`, or `None`.
///
/// - [`ChecksumKind::Bare`]: the first line is a digest, optionally followed by a file
///   name; when a name is there it must be `file_name`.
/// - [`ChecksumKind::Sha256sum`]: `sha256sum` lines, `<hex>  <name>` or `<hex> *<name>`;
///   the line whose name (without a leading `./` or directories) is `file_name`.
///   A digest is never guessed from a line for another file.
///
/// The lines are read by [`crate::digest::sum_lines`], as for input images.
pub fn parse_checksum(text: &str, kind: ChecksumKind, file_name: &str) -> Option<String> {
    let names_us = |name: &str| name.rsplit('/').next() == Some(file_name);
    let lines = sum_lines(text);
    match kind {
        ChecksumKind::Bare => {
            let line = lines.first()?;
            let hex = parse_sha256(line.digest)?;
            match line.file {
                None => Some(hex),
                Some(name) if names_us(name) => Some(hex),
                Some(_) => None,
            }
        }
        ChecksumKind::Sha256sum => lines
            .iter()
            .filter(|l| l.file.is_some_and(names_us))
            .find_map(|l| parse_sha256(l.digest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "b2f2e4ca1b4eb0fd4a3fd5e0d88c6dbb5e07aa6ea9e1e0a1f0e1b7fa8bce0b11";
    const B: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn bare_digest_with_or_without_our_name() {
        assert_eq!(
            parse_checksum(A, ChecksumKind::Bare, "kubeadm").as_deref(),
            Some(A)
        );
        assert_eq!(
            parse_checksum(&format!("{A}\n"), ChecksumKind::Bare, "kubeadm").as_deref(),
            Some(A)
        );
        let upper = A.to_uppercase();
        assert_eq!(
            parse_checksum(&upper, ChecksumKind::Bare, "kubeadm").as_deref(),
            Some(A)
        );
        let named = format!("{A}  crictl-v1.34.0-linux-arm64.tar.gz\n");
        assert_eq!(
            parse_checksum(
                &named,
                ChecksumKind::Bare,
                "crictl-v1.34.0-linux-arm64.tar.gz"
            )
            .as_deref(),
            Some(A)
        );
        assert_eq!(parse_checksum(&named, ChecksumKind::Bare, "kubeadm"), None);
        assert_eq!(parse_checksum("", ChecksumKind::Bare, "kubeadm"), None);
        assert_eq!(
            parse_checksum("<html>Not Found</html>", ChecksumKind::Bare, "kubeadm"),
            None
        );
        assert_eq!(
            parse_checksum(&A[..63], ChecksumKind::Bare, "kubeadm"),
            None
        );
    }

    #[test]
    fn sha256sum_picks_the_line_for_our_file() {
        let text = format!(
            "{B}  runc.amd64\n{A}  runc.arm64\n{B}  runc.armel\n{B} *libseccomp-2.5.5.tar.gz\n"
        );
        assert_eq!(
            parse_checksum(&text, ChecksumKind::Sha256sum, "runc.arm64").as_deref(),
            Some(A)
        );
        assert_eq!(
            parse_checksum(&text, ChecksumKind::Sha256sum, "runc.arm64.asc"),
            None
        );
        assert_eq!(
            parse_checksum(&text, ChecksumKind::Sha256sum, "runc.s390x"),
            None
        );
        let binary_mode = format!("{A} *./dist/runc.arm64\n");
        assert_eq!(
            parse_checksum(&binary_mode, ChecksumKind::Sha256sum, "runc.arm64").as_deref(),
            Some(A)
        );
        // A single line for another file is not ours.
        let other = format!("{A}  containerd-2.1.4-linux-arm64.tar.gz\n");
        assert_eq!(
            parse_checksum(
                &other,
                ChecksumKind::Sha256sum,
                "containerd-static-2.1.4-linux-arm64.tar.gz"
            ),
            None
        );
    }
}
