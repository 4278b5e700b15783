//! Checkpoint archives in transit: the SHA-256 and size of a file, the stream of
//! [`ArchivePart`]s a source sends (a header, then chunks), and the receiving side that
//! writes them to a private temporary file and refuses anything that does not match
//! the header or exceeds the limit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use p4lb_proto::api::{archive_part, ArchiveHeader, ArchivePart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::{Stream, StreamExt};

/// Bytes per chunk on the wire.
pub const CHUNK: usize = 256 << 10;
/// How the files of archives being received start.
pub const INCOMING_PREFIX: &str = "incoming-";

/// Removes the archives that were being received when an earlier run of the agent was
/// killed (nothing was restored from them: a receive restores only a whole archive,
/// from a file it no longer needs afterwards); returns how many. Outgoing archives
/// stay: a failed migration's error may name one for a restore by hand.
pub fn remove_stale_incoming(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(INCOMING_PREFIX) && name.ends_with(".tar") && e.file_type()?.is_file() {
            std::fs::remove_file(e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// Why an archive is refused or could not be sent or stored.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the stream did not start with a header")]
    NoHeader,
    #[error("a second header in the stream")]
    SecondHeader,
    #[error("the header's SHA-256 has {0} bytes, not 32")]
    DigestLength(usize),
    #[error("invalid container name {0:?} in the header")]
    Name(String),
    #[error("the archive has {size} bytes, over this node's limit of {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("the archive is truncated: {got} of {size} bytes received")]
    Truncated { got: u64, size: u64 },
    #[error("more bytes than the header's size of {size}")]
    Overlong { size: u64 },
    #[error("the archive's SHA-256 is {got}, the header says {want}: tampered or corrupted")]
    Digest { got: String, want: String },
    #[error("the transfer broke off after {got} bytes: {reason}")]
    Broken { got: u64, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Size and SHA-256 of the file at `path` (blocking).
pub fn digest_file(path: &Path) -> Result<(u64, [u8; 32]), ArchiveError> {
    let io = |source| ArchiveError::Io {
        what: format!("reading {}", path.display()),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, h.finalize().into()))
}

/// The parts a source sends for the archive at `path`: `header`, then the file's bytes
/// in chunks. Reading stops when the receiver goes away. The flag turns true once the
/// last chunk was handed on.
pub fn send_stream(
    path: PathBuf,
    header: ArchiveHeader,
) -> (
    impl Stream<Item = ArchivePart> + Send + 'static,
    Arc<AtomicBool>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let all_sent = Arc::new(AtomicBool::new(false));
    let done = all_sent.clone();
    tokio::spawn(async move {
        let part = |p| ArchivePart { part: Some(p) };
        if tx
            .send(part(archive_part::Part::Header(header)))
            .await
            .is_err()
        {
            return;
        }
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read the archive: {e}");
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf).await {
                Ok(0) => {
                    done.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(part(archive_part::Part::Chunk(buf))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // The receiver sees a short archive and refuses it.
                    tracing::warn!(path = %path.display(), "reading the archive: {e}");
                    return;
                }
            }
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), all_sent)
}

/// An archive received in full and checked: its header and the private file holding
/// it (removed when dropped).
#[derive(Debug)]
pub struct Received {
    pub header: ArchiveHeader,
    pub file: tempfile::TempPath,
}

/// Reads a header and the archive's bytes from `parts` into a new private file in
/// `dir`, refusing a header over `max` bytes, more or fewer bytes than the header says,
/// and a digest that does not match. Nothing of a refused archive stays on disk.
/// `on_header` sees the header once it is checked, before the bytes arrive (the
/// receiver starts its own checks while they do).
pub async fn receive<S, E>(
    mut parts: S,
    dir: &Path,
    max: u64,
    on_header: impl FnOnce(&ArchiveHeader),
) -> Result<Received, ArchiveError>
where
    S: Stream<Item = Result<ArchivePart, E>> + Unpin,
    E: std::fmt::Display,
{
    let broken = |got, e: E| ArchiveError::Broken {
        got,
        reason: e.to_string(),
    };
    let header = match parts.next().await {
        Some(Ok(ArchivePart {
            part: Some(archive_part::Part::Header(h)),
        })) => h,
        Some(Err(e)) => return Err(broken(0, e)),
        _ => return Err(ArchiveError::NoHeader),
    };
    if header.sha256.len() != 32 {
        return Err(ArchiveError::DigestLength(header.sha256.len()));
    }
    if !crate::config::valid_name(&header.container) {
        return Err(ArchiveError::Name(header.container));
    }
    if header.size > max {
        return Err(ArchiveError::TooLarge {
            size: header.size,
            max,
        });
    }
    on_header(&header);
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ArchiveError::Io { what, source }
    };
    // tempfile creates the file 0600 with O_EXCL, in the agent's 0700 directory.
    let tmp = tempfile::Builder::new()
        .prefix(INCOMING_PREFIX)
        .suffix(".tar")
        .tempfile_in(dir)
        .map_err(io(&format!("creating a file in {}", dir.display())))?;
    let std_file = tmp.reopen().map_err(io("opening the archive file"))?;
    let path = tmp.into_temp_path();
    let mut f = tokio::fs::File::from_std(std_file);
    let mut h = Sha256::new();
    let mut got = 0u64;
    while let Some(p) = parts.next().await {
        let chunk = match p {
            Ok(ArchivePart {
                part: Some(archive_part::Part::Chunk(c)),
            }) => c,
            Ok(ArchivePart {
                part: Some(archive_part::Part::Header(_)),
            }) => return Err(ArchiveError::SecondHeader),
            Ok(ArchivePart { part: None }) => continue,
            Err(e) => return Err(broken(got, e)),
        };
        got += chunk.len() as u64;
        if got > header.size {
            return Err(ArchiveError::Overlong { size: header.size });
        }
        h.update(&chunk);
        f.write_all(&chunk)
            .await
            .map_err(io("writing the archive"))?;
    }
    if got != header.size {
        return Err(ArchiveError::Truncated {
            got,
            size: header.size,
        });
    }
    f.flush().await.map_err(io("writing the archive"))?;
    let digest: [u8; 32] = h.finalize().into();
    if digest[..] != header.sha256[..] {
        return Err(ArchiveError::Digest {
            got: hex(&digest),
            want: hex(&header.sha256),
        });
    }
    Ok(Received { header, file: path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_incoming_archives_are_removed_and_outgoing_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "incoming-a1B2c3.tar",
            "outgoing-web-1.tar",
            "incoming-notes.txt",
        ] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(d.path().join("incoming-dir.tar")).unwrap();
        assert_eq!(remove_stale_incoming(d.path()).unwrap(), 1);
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "incoming-dir.tar",
                "incoming-notes.txt",
                "outgoing-web-1.tar"
            ]
        );
    }

    fn header(data: &[u8]) -> ArchiveHeader {
        ArchiveHeader {
            container: "web".into(),
            size: data.len() as u64,
            sha256: Sha256::digest(data).to_vec(),
            ..Default::default()
        }
    }

    fn parts(h: ArchiveHeader, chunks: &[&[u8]]) -> Vec<Result<ArchivePart, String>> {
        std::iter::once(archive_part::Part::Header(h))
            .chain(chunks.iter().map(|c| archive_part::Part::Chunk(c.to_vec())))
            .map(|p| Ok(ArchivePart { part: Some(p) }))
            .collect()
    }

    type Parts = Vec<Result<ArchivePart, String>>;
    type Outcome = (Result<Received, ArchiveError>, usize, tempfile::TempDir);

    /// Receives `p` into a new directory: the result, how many files it left there, and
    /// the directory.
    async fn run(p: Vec<Result<ArchivePart, String>>, max: u64) -> Outcome {
        let d = tempfile::tempdir().unwrap();
        let r = receive(tokio_stream::iter(p), d.path(), max, |_| {}).await;
        let left = std::fs::read_dir(d.path()).unwrap().count();
        (r, left, d)
    }

    #[tokio::test]
    async fn a_whole_archive_is_kept_and_anything_else_refused_leaving_nothing() {
        let data = b"hello archive".to_vec();
        let (ok, left, _d) = run(parts(header(&data), &[&data[..5], &data[5..]]), 100).await;
        let ok = ok.unwrap();
        assert_eq!(left, 1);
        assert_eq!(std::fs::read(&ok.file).unwrap(), data);

        let mut tampered = data.clone();
        tampered[3] ^= 1;
        let cases: Vec<(Parts, u64, &str)> = vec![
            (parts(header(&data), &[&tampered]), 100, "tampered"),
            (parts(header(&data), &[&data[..4]]), 100, "truncated"),
            (parts(header(&data), &[&data, b"x"]), 100, "more bytes"),
            (parts(header(&data), &[&data]), 5, "over this node's limit"),
            (
                parts(
                    ArchiveHeader {
                        sha256: vec![1],
                        ..header(&data)
                    },
                    &[],
                ),
                100,
                "not 32",
            ),
            (
                parts(
                    ArchiveHeader {
                        container: "../x".into(),
                        ..header(&data)
                    },
                    &[],
                ),
                100,
                "container name",
            ),
            (
                parts(header(&data), &[]).into_iter().skip(1).collect(),
                100,
                "header",
            ),
            (
                {
                    let mut p = parts(header(&data), &[&data[..4]]);
                    p.push(Err("connection reset".into()));
                    p
                },
                100,
                "broke off after 4 bytes: connection reset",
            ),
        ];
        for (p, max, want) in cases {
            let (r, left, _d) = run(p, max).await;
            let e = r.unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert_eq!(left, 0, "{want}: a refused archive left a file");
        }
    }

    #[tokio::test]
    async fn what_is_sent_is_what_is_received() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a.tar");
        let data: Vec<u8> = (0..(CHUNK * 2 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let (size, sha) = digest_file(&src).unwrap();
        let h = ArchiveHeader {
            container: "web".into(),
            size,
            sha256: sha.to_vec(),
            ..Default::default()
        };
        let (s, all_sent) = send_stream(src, h);
        let s = s.map(Ok::<_, String>);
        let mut seen = None;
        let r = receive(Box::pin(s), d.path(), u64::MAX, |h| seen = Some(h.size))
            .await
            .unwrap();
        assert_eq!(seen, Some(data.len() as u64));
        assert_eq!(std::fs::read(&r.file).unwrap(), data);
        assert!(all_sent.load(Ordering::SeqCst));
    }
}
