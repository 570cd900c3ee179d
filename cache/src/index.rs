//! The redb index: tags, images, layers, snapshots and cache records.
//!
//! redb allows one process to hold a database open at a time, so every transaction opens the
//! database under an exclusive `flock` on a sibling lock file and closes it afterwards. This
//! makes any number of kiln processes (and threads) on one store safe; redb's own commit
//! protocol makes a crash at any point leave the last committed state.

use std::path::PathBuf;

use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition, WriteTransaction};
use rustix::fs::{FlockOperation, flock};

use crate::error::Result;

/// image name (normalized, with tag) → manifest digest
pub(crate) const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
/// manifest digest → image entry (JSON)
pub(crate) const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// diffID → layer info (JSON)
pub(crate) const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
/// compressed blob digest → diffID
pub(crate) const BLOB_LAYERS: TableDefinition<&str, &str> = TableDefinition::new("blob_layers");
/// chain ID → snapshot directory name
pub(crate) const SNAPSHOTS: TableDefinition<&str, &str> = TableDefinition::new("snapshots");
/// solver cache records: opaque key → opaque value
pub(crate) const CACHE: TableDefinition<&str, &[u8]> = TableDefinition::new("cache");
/// generic small tables: "table\0key" → value
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

#[derive(Debug)]
pub(crate) struct Index {
    db_path: PathBuf,
    lock_path: PathBuf,
}

struct Locked {
    _lock: fs_err::File,
    db: Database,
}

impl Index {
    pub(crate) fn open(db_path: PathBuf, lock_path: PathBuf) -> Result<Index> {
        let index = Index { db_path, lock_path };
        index.write(|txn| {
            txn.open_table(TAGS)?;
            txn.open_table(IMAGES)?;
            txn.open_table(LAYERS)?;
            txn.open_table(BLOB_LAYERS)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(CACHE)?;
            txn.open_table(KV)?;
            Ok(())
        })?;
        Ok(index)
    }

    fn lock(&self) -> Result<Locked> {
        let lock = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)?;
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| crate::Error::sys("flock", &self.lock_path, e))?;
        let mut attempts = 0;
        let db = loop {
            match Database::create(&self.db_path) {
                Ok(db) => break db,
                // Another handle inside this process may still be closing; the flock makes
                // this transient.
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempts < 200 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Locked { _lock: lock, db })
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let locked = self.lock()?;
        let txn = locked.db.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    /// Runs `f` in one read transaction.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let locked = self.lock()?;
        let txn = locked.db.begin_read()?;
        f(&txn)
    }
}
