//! Bounded reads of served files. A reload must never hang or exhaust memory on what it finds in
//! the zones directory: only regular files are read (a FIFO would block `read` forever, a device
//! may never end), and a file larger than its limit is an error rather than an allocation.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use thiserror::Error;

/// Most bytes of one zone or YAML file (and of a zone file together with everything it
/// `$INCLUDE`s).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Most bytes of a GeoIP database (GeoLite2-City is ~70 MB, DB-IP City Lite ~130 MB).
pub const MAX_GEOIP_BYTES: u64 = 1 << 30;

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("not a regular file (a {0}); only regular files are read")]
    NotRegular(&'static str),
    #[error("{size} bytes, larger than the limit of {limit} bytes ({} MiB)", limit >> 20)]
    TooLarge { size: u64, limit: u64 },
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not UTF-8 text: {0}")]
    NotUtf8(std::string::FromUtf8Error),
}

fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Reads a whole regular file of at most `limit` bytes.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    // Look before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(meta.file_type())));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    // O_NONBLOCK: if the file was swapped for a FIFO since the look, open still returns at once
    // (and is a no-op for regular files); the second look, on the open file, then refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(meta.file_type())));
    }
    read_limited(file, limit)
}

fn read_limited(file: File, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    // One byte past the limit tells a file that grew since the look from one that fits.
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// As [`read_bytes`], for text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bytes(path, limit)?).map_err(ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifos_devices_directories_and_large_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("pipe.zone");
        let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_text(&fifo, MAX_FILE_BYTES).expect_err("fifo");
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_text(Path::new("/dev/zero"), MAX_FILE_BYTES).expect_err("device");
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_text(dir.path(), MAX_FILE_BYTES).expect_err("directory");
        assert!(e.to_string().contains("directory"), "{e}");
        let big = dir.path().join("big.zone");
        std::fs::write(&big, vec![b'x'; 2048]).expect("write");
        let e = read_text(&big, 1024).expect_err("too large");
        assert!(e.to_string().contains("2048 bytes"), "{e}");
        assert_eq!(read_text(&big, 2048).expect("fits").len(), 2048);
    }
}
