//! The redb index: tags, images, layers, snapshots and cache records.
//!
//! The database is opened once per store handle in redb's `MultiWriter` concurrency mode: any
//! number of kiln processes (and threads) keep it open at once, one write transaction at a
//! time, readers seeing the last commit. redb's own commit protocol makes a crash at any point
//! leave the last committed state.

use std::path::PathBuf;

use redb::{
    Builder, ConcurrencyMode, Database, ReadTransaction, ReadableDatabase, TableDefinition,
    WriteTransaction,
};
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

/// The open index. redb's `MultiWriter` mode lets any number of kiln processes keep the file
/// open at once (one write transaction at a time, readers follow commits), so the database is
/// opened once per store handle instead of once per transaction: an open costs several
/// fsyncs, which dominated a no-op build.
pub(crate) struct Index {
    db: Database,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

impl Index {
    pub(crate) fn open(db_path: PathBuf, lock_path: PathBuf) -> Result<Index> {
        // The lock file only serializes the first creation of the database file.
        let lock = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| crate::Error::sys("flock", &lock_path, e))?;
        if !db_path.exists() {
            // A new database is made aside and renamed into place, so a process killed while
            // creating it never leaves a file that is not a database.
            let tmp = db_path.with_extension(format!("redb.new.{}", std::process::id()));
            let _ = fs_err::remove_file(&tmp);
            {
                let db = Database::create(&tmp)?;
                let txn = db.begin_write()?;
                for t in [IMAGES, LAYERS, CACHE, KV] {
                    txn.open_table(t)?;
                }
                for t in [TAGS, BLOB_LAYERS, SNAPSHOTS] {
                    txn.open_table(t)?;
                }
                txn.commit()?;
            }
            fs_err::File::open(&tmp)?.sync_all()?;
            fs_err::rename(&tmp, &db_path)?;
        }
        let db = Builder::new()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&db_path)?;
        drop(lock);
        let index = Index { db };
        // Creating the tables is a write (with fsyncs): only do it when they are missing.
        if index.read(|txn| Ok(txn.open_table(KV).is_ok()))? {
            return Ok(index);
        }
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

    /// Runs `f` in one write transaction and commits it if `f` succeeds.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    /// Runs `f` in one read transaction.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read()?;
        f(&txn)
    }
}
