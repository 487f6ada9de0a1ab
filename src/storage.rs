//! The storage the accountant (and a store built on it) does its I/O
//! through: one log file plus external blob files.
//!
//! Two traits:
//!
//! - [`Storage`], what the accountant itself calls: it only shortens the
//!   file ([`Storage::len`], [`Storage::set_len`] then [`Storage::sync`],
//!   off the calling thread) and removes garbage blobs. An engine with its
//!   own I/O implements just this one.
//! - [`LogFile`]`: Storage` adds positioned reads and writes, what the
//!   reference [`format`](mod@crate::format), [`scan`](mod@crate::scan) and
//!   [`Accountant::recover`](crate::Accountant::recover) need.
//!
//! [`FileStorage`], [`MemStorage`] and (with the `testing` feature)
//! `fault::FaultStorage` implement both. A store holding an
//! `Arc<dyn LogFile>` hands the accountant `Arc::new(file)` (an `Arc` of a
//! storage is a storage).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::types::BlobId;

/// What the accountant calls on the log file and its blob files:
/// truncation, durability, blob removal.
pub trait Storage: Send + Sync + 'static {
    /// Sets the file's length (truncating or zero-extending).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Makes every completed write and length change durable.
    fn sync(&self) -> io::Result<()>;
    /// Deletes the external blob file `blob`. Removing a blob that does not
    /// exist is not an error.
    fn remove_blob(&self, blob: BlobId) -> io::Result<()>;
}

/// Positioned I/O on the log file: what the reference format, its scan and
/// [`Accountant::recover`](crate::Accountant::recover) need besides
/// [`Storage`].
pub trait LogFile: Storage {
    /// Writes all of `buf` at byte `offset`, extending the file if needed.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` past
    /// the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// A shared storage is a storage: `Arc::new(file)` turns an
/// `Arc<dyn LogFile>` into the accountant's `Arc<dyn Storage>`.
impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn set_len(&self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
    fn remove_blob(&self, blob: BlobId) -> io::Result<()> {
        (**self).remove_blob(blob)
    }
}

impl<S: LogFile + ?Sized> LogFile for std::sync::Arc<S> {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, buf)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
}

/// A [`Storage`] on a real file, with blob files in a sibling directory.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    blob_dir: PathBuf,
}

impl FileStorage {
    /// Opens (creating if needed) the log file at `path`; blob files live in
    /// `<path>.blobs/`.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut blob_dir = path.as_os_str().to_owned();
        blob_dir.push(".blobs");
        Ok(FileStorage {
            file,
            blob_dir: PathBuf::from(blob_dir),
        })
    }

    /// The path of blob `blob`'s file.
    pub fn blob_path(&self, blob: BlobId) -> PathBuf {
        self.blob_dir.join(format!("{blob:016x}"))
    }

    /// Writes a blob file (a convenience for stores and tests).
    pub fn write_blob(&self, blob: BlobId, data: &[u8]) -> io::Result<()> {
        std::fs::create_dir_all(&self.blob_dir)?;
        std::fs::write(self.blob_path(blob), data)
    }
}

impl Storage for FileStorage {
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn remove_blob(&self, blob: BlobId) -> io::Result<()> {
        match std::fs::remove_file(self.blob_path(blob)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl LogFile for FileStorage {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
}

/// A [`Storage`] in memory: every write is immediately "durable".
#[derive(Debug, Default)]
pub struct MemStorage {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    data: Vec<u8>,
    blobs: HashSet<BlobId>,
    syncs: u64,
}

impl MemStorage {
    /// An empty in-memory file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that blob `blob` exists (stores and tests call this when they
    /// write one).
    pub fn add_blob(&self, blob: BlobId) {
        self.lock().blobs.insert(blob);
    }

    /// Whether blob `blob` exists.
    pub fn has_blob(&self, blob: BlobId) -> bool {
        self.lock().blobs.contains(&blob)
    }

    /// How many times [`Storage::sync`] was called.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// A copy of the file's bytes.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().data.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn end_of(offset: u64, len: usize) -> io::Result<usize> {
    offset
        .checked_add(len as u64)
        .and_then(|end| usize::try_from(end).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))
}

impl Storage for MemStorage {
    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = end_of(len, 0)?;
        self.lock().data.resize(len, 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.lock().data.len() as u64)
    }

    fn sync(&self) -> io::Result<()> {
        self.lock().syncs += 1;
        Ok(())
    }

    fn remove_blob(&self, blob: BlobId) -> io::Result<()> {
        self.lock().blobs.remove(&blob);
        Ok(())
    }
}

impl LogFile for MemStorage {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let end = end_of(offset, buf.len())?;
        let mut inner = self.lock();
        if inner.data.len() < end {
            inner.data.resize(end, 0);
        }
        inner.data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = end_of(offset, buf.len())?;
        let inner = self.lock();
        if end > inner.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        buf.copy_from_slice(&inner.data[offset as usize..end]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(s: &dyn LogFile) {
        s.write_at(10, b"hello").unwrap();
        assert_eq!(s.len().unwrap(), 15);
        let mut buf = [0u8; 5];
        s.read_at(10, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(
            s.read_at(12, &mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        s.set_len(12).unwrap();
        assert_eq!(s.len().unwrap(), 12);
        s.sync().unwrap();
        s.remove_blob(99).unwrap();
    }

    #[test]
    fn mem_storage() {
        let s = MemStorage::new();
        exercise(&s);
        s.add_blob(3);
        assert!(s.has_blob(3));
        s.remove_blob(3).unwrap();
        assert!(!s.has_blob(3));
        assert_eq!(s.syncs(), 1);
    }

    #[test]
    fn file_storage() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(dir.path().join("log")).unwrap();
        exercise(&s);
        s.write_blob(5, b"payload").unwrap();
        assert!(s.blob_path(5).exists());
        s.remove_blob(5).unwrap();
        assert!(!s.blob_path(5).exists());
    }
}
