//! Which container or compression an input uses, told by its first bytes.

use std::fmt;

/// The container or compression of an input image, as told by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// An uncompressed disk image.
    Raw,
    /// An `.xz` file: one or more xz streams.
    Xz,
    /// A `.zst` file: one or more zstd frames.
    Zstd,
    /// A `.gz` file: one or more gzip members.
    Gzip,
    /// A `.zip` archive holding exactly one image.
    Zip,
}

const MAGIC: [(&[u8], Format); 4] = [
    (&[0xFD, b'7', b'z', b'X', b'Z', 0x00], Format::Xz),
    (&[0x28, 0xB5, 0x2F, 0xFD], Format::Zstd),
    (&[0x1F, 0x8B], Format::Gzip),
    (b"PK\x03\x04", Format::Zip),
];

/// The number of leading bytes [`detect`] looks at.
pub const MAGIC_LEN: usize = 6;

/// Tells the format of an input from its first bytes (at least [`MAGIC_LEN`] of them when the
/// input is that long). Never looks at a file name; anything unrecognised is [`Format::Raw`].
pub fn detect(head: &[u8]) -> Format {
    MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map_or(Format::Raw, |&(_, format)| format)
}

impl Format {
    /// What a valid input of this format is, for error messages: "xz stream", "zip archive".
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Format::Raw => "raw image",
            Format::Xz => "xz stream",
            Format::Zstd => "zstd stream",
            Format::Gzip => "gzip stream",
            Format::Zip => "zip archive",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::Gzip => "gzip",
            Format::Zip => "zip",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide_the_format() {
        assert_eq!(detect(b"\xFD7zXZ\x00\x00\x04"), Format::Xz);
        assert_eq!(detect(b"\x28\xB5\x2F\xFD\x24\x00"), Format::Zstd);
        assert_eq!(detect(b"\x1F\x8B\x08\x00"), Format::Gzip);
        assert_eq!(detect(b"PK\x03\x04\x14\x00"), Format::Zip);
        // An MBR boot sector, an empty head, and near misses are raw.
        assert_eq!(detect(&[0xFA, 0xB8, 0x00, 0x10]), Format::Raw);
        assert_eq!(detect(b""), Format::Raw);
        assert_eq!(detect(b"\xFD7zXZ"), Format::Raw);
        assert_eq!(detect(b"PK\x05\x06"), Format::Raw);
        assert_eq!(detect(b"\x1F"), Format::Raw);
    }

    #[test]
    fn display_names() {
        let names: Vec<String> = [
            Format::Raw,
            Format::Xz,
            Format::Zstd,
            Format::Gzip,
            Format::Zip,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names, ["raw", "xz", "zstd", "gzip", "zip"]);
    }
}
