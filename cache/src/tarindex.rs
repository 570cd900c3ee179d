//! Tar indexes: the entries of a layer written from directories, in archive order, each with
//! what its header says (times before clamping) and which of the snapshot's directories holds
//! its data. Kept beside the layer's snapshot (`snapshots/HEX.index`), an index lets the next
//! layer stacked over that snapshot (an incremental COPY) be written from the index and the
//! new delta alone: the unchanged tree is neither listed nor stat'ed again, only its files'
//! data read (the layer's tar is still hashed whole, so it is the tar a walk of the merged
//! tree writes, byte for byte).
//!
//! An index is only made for a tree without whiteouts, opaque directories and hardlinks (a
//! hardlink's entry names another path, which a delta may replace). Snapshots are immutable,
//! so the index stays true for as long as the snapshot is there; it is bound to its snapshot
//! by name, checked whole by a BLAKE3 trailer, and one that does not read back is ignored
//! (the layer is then written by walking, as without one).
//!
//! An index also says where each entry's bytes are in that tar, how long the tar is, the
//! mtime clamp it was written with and its diffID: a tar written over it with the same clamp
//! repeats the runs of the old one an unchanged entry writes, so the layer's encoder can take
//! the previous blob's compressed blocks for them without looking at their bytes
//! ([`crate::codec::Prior`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The first line of an index file.
const MAGIC: &[u8] = b"kiln-tar-index 2\n";

/// One archive entry of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// The archive name (a directory's ends with `/`).
    pub(crate) name: Vec<u8>,
    /// The tar entry type (`0`, `5`, `2`, `3`, `4`, `6`).
    pub(crate) kind: u8,
    /// Which directory of the snapshot holds it: 0 for the bottom one, 1 for the delta of a
    /// stack (a stack's deltas are merged into one as it is committed).
    pub(crate) src: u8,
    /// Permission bits as written.
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    /// The file's mtime (seconds) before clamping.
    pub(crate) mtime: i64,
    pub(crate) size: u64,
    /// A symlink's target.
    pub(crate) link: Vec<u8>,
    /// A device's (major, minor).
    pub(crate) dev: (u32, u32),
    /// Extended attributes as written (overlay ones left out).
    pub(crate) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// (device, inode) of a regular file with more than one link (the writer's hardlink
    /// table learns it as a walk would).
    pub(crate) inode: Option<(u64, u64)>,
    /// Where its first byte (of its PAX header, if it has one) is in the tar.
    pub(crate) off: u64,
}

impl IndexEntry {
    /// The path without a directory's trailing `/`.
    pub(crate) fn path(&self) -> &[u8] {
        self.name.strip_suffix(b"/").unwrap_or(&self.name)
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.kind == b'5'
    }
}

/// The order of a tar walk: paths compared by components (a directory comes right before
/// what it holds: `a`, `a/b`, `a.txt`). As names hold no NUL, this is a byte comparison
/// with `/` counted lowest.
pub(crate) fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: &u8| if *c == b'/' { 0 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

/// Whether `path` is below the directory `dir`.
pub(crate) fn is_below(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// A layer's tar index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarIndex {
    pub(crate) entries: Vec<IndexEntry>,
    /// The snapshot directory it was kept for (inode and change time: a snapshot removed and
    /// made again under the same name, maybe split differently into a stack, is another).
    pub(crate) tag: [u64; 3],
    /// The tar's length, its end-of-archive blocks included.
    pub(crate) tar_len: u64,
    /// The mtime clamp it was written with.
    pub(crate) clamp: Option<i64>,
    /// The tar's sha256 (its layer's diffID), once the layer is made.
    pub(crate) diff_id: Option<kiln_oci::Digest>,
}

impl TarIndex {
    /// Entries recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many bytes of the tar the entry `i` takes (headers, data and padding).
    pub(crate) fn entry_len(&self, i: usize) -> u64 {
        let end = match self.entries.get(i + 1) {
            Some(next) => next.off,
            None => self.tar_len.saturating_sub(1024),
        };
        end.saturating_sub(self.entries[i].off)
    }

    /// Notes the diffID of the layer the index describes.
    pub fn set_diff_id(&mut self, diff_id: kiln_oci::Digest) {
        self.diff_id = Some(diff_id);
    }

    /// The index's bytes, kept for the snapshot directory `tag` tells.
    pub(crate) fn encode(&self, tag: [u64; 3]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 64);
        out.extend_from_slice(MAGIC);
        for t in tag {
            put_u64(&mut out, t);
        }
        put_u64(&mut out, self.tar_len);
        match self.clamp {
            Some(c) => {
                out.push(1);
                out.extend_from_slice(&c.to_le_bytes());
            }
            None => out.push(0),
        }
        put_bytes(
            &mut out,
            self.diff_id.as_ref().map_or(&[][..], |d| d.bytes()),
        );
        put_u64(&mut out, self.entries.len() as u64);
        for e in &self.entries {
            put_u64(&mut out, e.off);
            put_bytes(&mut out, &e.name);
            out.push(e.kind);
            out.push(e.src);
            out.extend_from_slice(&e.mode.to_le_bytes());
            put_u64(&mut out, e.uid);
            put_u64(&mut out, e.gid);
            out.extend_from_slice(&e.mtime.to_le_bytes());
            put_u64(&mut out, e.size);
            put_bytes(&mut out, &e.link);
            out.extend_from_slice(&e.dev.0.to_le_bytes());
            out.extend_from_slice(&e.dev.1.to_le_bytes());
            match e.inode {
                Some((dev, ino)) => {
                    out.push(1);
                    put_u64(&mut out, dev);
                    put_u64(&mut out, ino);
                }
                None => out.push(0),
            }
            put_u64(&mut out, e.xattrs.len() as u64);
            for (k, v) in &e.xattrs {
                put_bytes(&mut out, k);
                put_bytes(&mut out, v);
            }
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// The index `bytes` encode, or `None` when they are not a whole index.
    pub(crate) fn decode(bytes: &[u8]) -> Option<TarIndex> {
        let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let mut r = Reader(body.strip_prefix(MAGIC)?);
        let tag = [r.u64()?, r.u64()?, r.u64()?];
        let tar_len = r.u64()?;
        let clamp = match r.u8()? {
            0 => None,
            1 => Some(i64::from_le_bytes(r.array()?)),
            _ => return None,
        };
        let diff_id = match r.bytes()? {
            b"" => None,
            d => Some(kiln_oci::Digest::from_bytes(d.try_into().ok()?)),
        };
        let n = r.u64()?;
        let mut entries = Vec::with_capacity(n.min(1 << 24) as usize);
        for _ in 0..n {
            let off = r.u64()?;
            let name = r.bytes()?.to_vec();
            let kind = r.u8()?;
            let src = r.u8()?;
            let mode = u32::from_le_bytes(r.array()?);
            let uid = r.u64()?;
            let gid = r.u64()?;
            let mtime = i64::from_le_bytes(r.array()?);
            let size = r.u64()?;
            let link = r.bytes()?.to_vec();
            let dev = (
                u32::from_le_bytes(r.array()?),
                u32::from_le_bytes(r.array()?),
            );
            let inode = match r.u8()? {
                0 => None,
                1 => Some((r.u64()?, r.u64()?)),
                _ => return None,
            };
            let mut xattrs = BTreeMap::new();
            for _ in 0..r.u64()? {
                let k = r.bytes()?.to_vec();
                let v = r.bytes()?.to_vec();
                xattrs.insert(k, v);
            }
            entries.push(IndexEntry {
                name,
                kind,
                src,
                mode,
                uid,
                gid,
                mtime,
                size,
                link,
                dev,
                xattrs,
                inode,
                off,
            });
        }
        r.0.is_empty().then_some(TarIndex {
            entries,
            tag,
            tar_len,
            clamp,
            diff_id,
        })
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> IndexEntry {
        IndexEntry {
            name: name.as_bytes().to_vec(),
            kind: if name.ends_with('/') { b'5' } else { b'0' },
            src: 1,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: -3,
            size: 4,
            link: b"t".to_vec(),
            dev: (5, 6),
            xattrs: [(b"user.a".to_vec(), b"v".to_vec())].into(),
            inode: Some((7, 8)),
            off: 9,
        }
    }

    #[test]
    fn an_index_reads_back_and_a_damaged_one_does_not() {
        let idx = TarIndex {
            entries: vec![entry("a/"), entry("a/b"), entry("c")],
            tag: [1, 2, 3],
            tar_len: 4096,
            clamp: Some(-5),
            diff_id: Some(kiln_oci::sha256(b"tar")),
        };
        let bytes = idx.encode(idx.tag);
        assert_eq!(TarIndex::decode(&bytes), Some(idx));
        assert_eq!(TarIndex::decode(&bytes[..bytes.len() - 1]), None);
        let mut bad = bytes.clone();
        bad[MAGIC.len() + 33] ^= 1;
        assert_eq!(TarIndex::decode(&bad), None);
        assert_eq!(TarIndex::decode(b""), None);
    }

    #[test]
    fn walk_order_puts_a_directory_right_before_what_it_holds() {
        let mut names = vec!["a.txt", "a/b", "a", "ab", "a/b/c", "a-b", "b"];
        names.sort_by(|x, y| walk_order(x.as_bytes(), y.as_bytes()));
        assert_eq!(names, ["a", "a/b", "a/b/c", "a-b", "a.txt", "ab", "b"]);
        assert!(is_below(b"a/b", b"a"));
        assert!(!is_below(b"ab", b"a"));
        assert!(!is_below(b"a", b"a"));
    }
}
