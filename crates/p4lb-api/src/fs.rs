//! Crash-safe replacement of a file ([`write_atomic`]; [`replace_atomic`] when the
//! file need not survive a crash of the machine), and bounded reads of regular files.
//!
//! Written here rather than with `tempfile::NamedTempFile::persist` or
//! `atomic-write-file` because p4lb wants a fixed temporary name (`.<name>.tmp`
//! next to the file): a crash in the middle of a write leaves at most that one
//! file, which the next write reuses, instead of a randomly named one per crash in
//! state and image directories. The steps are few and the guarantees are the
//! point, so they are spelled out below.
//!
//! [`read_bounded`] is the one way p4lb reads a file someone else may have placed
//! (checkpoint records, run state, the controller's own state files): std's
//! `fs::read` follows symlinks, blocks on a FIFO and reads without limit, so a
//! record that is a symlink to `/dev/zero` or a FIFO would exhaust memory or hang.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Reads the regular file at `path`, at most `max` bytes.
///
/// The file is opened with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` (a symlink as the
/// last component is refused, a FIFO does not block the open) and must be a
/// regular file by `fstat`. A file larger than `max` is refused
/// (`ErrorKind::InvalidData`, also when it grows while being read: at most
/// `max + 1` bytes are ever read). A missing file is `ErrorKind::NotFound`, as
/// with `std::fs::read`.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} is a symbolic link, not a regular file", path.display()),
                )
            } else {
                e
            }
        })?;
    let meta = f.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is {kind}, not a regular file", path.display()),
        ));
    }
    let too_large = |n: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is {n} bytes or more, over the limit of {max} bytes",
                path.display()
            ),
        )
    };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    (&mut f)
        .take(max.saturating_add(1))
        .read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(too_large(data.len() as u64));
    }
    Ok(data)
}

/// Atomically replaces `path` with `data`: temporary file `.<name>.tmp` in the
/// same directory (mode 0600), fsync, rename over `path`, fsync of the
/// directory. A reader sees the old or the new content, and after a crash the
/// file holds one of them. On an error the temporary file is removed.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    replace(path, data, true)
}

/// Atomically replaces `path` with `data` like [`write_atomic`], without its two
/// fsyncs: a reader (another process) sees the old or the new content, never a
/// torn file, and a process that dies mid-write leaves the old content; a crash
/// of the machine may leave the old content, the new one, or (before the kernel
/// wrote the data back) an empty file. For files that need not outlive the
/// machine's uptime or that live among files nobody fsyncs either (CRIU's image
/// directory, the CRIU action script's per-run state on tmpfs): there the two
/// fsyncs cost milliseconds and protect nothing.
pub fn replace_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    replace(path, data, false)
}

fn replace(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn read_bounded_reads_a_regular_file_within_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        let e = read_bounded(&p, 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("limit of 4 bytes"), "{e}");
        let e = read_bounded(&d.path().join("missing"), 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn read_bounded_refuses_a_symlink_to_dev_zero() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("record.json");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let e = read_bounded(&p, 1 << 20).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // The device itself is refused too.
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
    }

    #[test]
    fn read_bounded_refuses_a_fifo_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("record.json");
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK the open would wait for a writer forever.
        let e = read_bounded(&p, 1 << 20).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = read_bounded(d.path(), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(d.path()), vec!["state.json"]);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn replace_atomic_replaces_the_file_like_write_atomic() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("record.json");
        replace_atomic(&p, b"one").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A torn temporary file of an earlier crash is reused, never read.
        std::fs::write(d.path().join(".record.json.tmp"), b"{\"partial").unwrap();
        replace_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(d.path()), vec!["record.json"]);
        let busy = d.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("x"), b"x").unwrap();
        assert!(replace_atomic(&busy, b"data").is_err());
        assert_eq!(names(d.path()), vec!["busy", "record.json"]);
    }

    #[test]
    fn a_torn_temporary_file_is_reused_and_does_not_leak_into_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"old").unwrap();
        // A crash in the middle of a write leaves a partial temporary file.
        std::fs::write(d.path().join(".state.json.tmp"), b"{\"partial").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(names(d.path()), vec!["state.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content_and_removes_the_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails.
        let p = d.path().join("busy");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("x"), b"x").unwrap();
        assert!(write_atomic(&p, b"data").is_err());
        assert_eq!(names(d.path()), vec!["busy"]);
        assert!(write_atomic(Path::new("/"), b"x").is_err());
    }
}
