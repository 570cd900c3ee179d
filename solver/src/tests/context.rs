//! Context selection and checksums.

use super::fixture::Tree;
use crate::context::{ContextHasher, Error, Matcher, select};
use kiln_graph::LocalSource;
use std::time::Duration;

fn src(include: &[&str], exclude: &[&str]) -> LocalSource {
    LocalSource {
        name: "context".into(),
        include: include.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
    }
}

fn hasher() -> (tempfile::TempDir, ContextHasher) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = ContextHasher::open(&dir.path().join("context-cache")).expect("open");
    (dir, h)
}

fn sample() -> Tree {
    Tree::new()
        .file("requirements.txt", "flask\n")
        .file("app/main.py", "print(1)\n")
        .file("app/util.py", "x = 2\n")
        .file("docs/guide.md", "# guide\n")
        .file("docs/keep.md", "# keep\n")
        .file("node_modules/dep/index.js", "js\n")
        .symlink("app/link", "main.py")
}

fn names(root: &std::path::Path, include: &[&str], exclude: &[&str]) -> Vec<String> {
    let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
    let m = Matcher::new(exclude).expect("patterns");
    select(root, &include, &m)
        .expect("select")
        .into_iter()
        .flat_map(|s| s.entries.into_iter().map(|e| e.name))
        .collect()
}

#[test]
fn checksum_is_machine_independent() {
    let (_d, h) = hasher();
    let a = sample();
    let b = sample();
    // Different mtimes and absolute paths, same content.
    let old =
        std::fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH + Duration::from_secs(7));
    fs_err::File::options()
        .write(true)
        .open(b.join("app/main.py"))
        .expect("open")
        .set_times(old)
        .expect("set times");
    let s = src(&[], &[]);
    assert_eq!(
        h.checksum(a.path(), &s).expect("a"),
        h.checksum(b.path(), &s).expect("b")
    );
}

#[test]
fn checksum_changes_with_content_mode_and_link_target() {
    let (_d, h) = hasher();
    let t = sample();
    let s = src(&["app"], &[]);
    let base = h.checksum(t.path(), &s).expect("base");
    let t = t.file("app/util.py", "x = 3\n");
    let content = h.checksum(t.path(), &s).expect("content");
    assert_ne!(base, content);
    let t = t.mode("app/util.py", 0o755);
    let mode = h.checksum(t.path(), &s).expect("mode");
    assert_ne!(content, mode);
    fs_err::remove_file(t.join("app/link")).expect("rm");
    let t = t.symlink("app/link", "util.py");
    let link = h.checksum(t.path(), &s).expect("link");
    assert_ne!(mode, link);
}

#[test]
fn only_named_sources_count() {
    let (_d, h) = hasher();
    let t = sample();
    let s = src(&["requirements.txt"], &[]);
    let before = h.checksum(t.path(), &s).expect("before");
    let t = t.file("app/main.py", "print(2)\n").file("new.txt", "n");
    assert_eq!(h.checksum(t.path(), &s).expect("after"), before);
    let t = t.file("requirements.txt", "flask\nrequests\n");
    assert_ne!(h.checksum(t.path(), &s).expect("changed"), before);
    assert_eq!(
        names(t.path(), &["requirements.txt"], &[]),
        ["requirements.txt"]
    );
}

#[test]
fn ignored_files_are_not_selected_and_do_not_count() {
    let (_d, h) = hasher();
    let t = sample();
    let s = src(&[], &["node_modules", "docs", "!docs/keep.md", "*.txt"]);
    let before = h.checksum(t.path(), &s).expect("before");
    let t = t
        .file("node_modules/dep/index.js", "changed")
        .file("docs/guide.md", "changed")
        .file("requirements.txt", "changed");
    assert_eq!(h.checksum(t.path(), &s).expect("after"), before);
    let selected = names(
        t.path(),
        &[],
        &["node_modules", "docs", "!docs/keep.md", "*.txt"],
    );
    assert_eq!(
        selected,
        [
            "",
            "app",
            "app/link",
            "app/main.py",
            "app/util.py",
            "docs",
            "docs/keep.md"
        ]
    );
    let t = t.file("docs/keep.md", "changed");
    assert_ne!(h.checksum(t.path(), &s).expect("kept changed"), before);
}

#[test]
fn missing_or_ignored_source_is_not_found() {
    let (_d, h) = hasher();
    let t = sample();
    let err = h
        .checksum(t.path(), &src(&["missing.txt"], &[]))
        .unwrap_err();
    assert!(matches!(&err, Error::NotFound { path } if path == "missing.txt"));
    assert_eq!(
        err.to_string(),
        "failed to compute cache key: \"/missing.txt\": not found"
    );
    let err = h
        .checksum(t.path(), &src(&["node_modules/dep"], &["node_modules"]))
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = h
        .checksum(
            t.path(),
            &src(&["docs/guide.md"], &["docs", "!docs/keep.md"]),
        )
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    h.checksum(
        t.path(),
        &src(&["docs/keep.md"], &["docs", "!docs/keep.md"]),
    )
    .expect("re-included file is found");
}

#[test]
fn wildcards_select_matching_names() {
    let t = sample().file("b.txt", "b").file("a.md", "a");
    assert_eq!(
        names(t.path(), &["*.txt"], &[]),
        ["b.txt", "requirements.txt"]
    );
    assert_eq!(
        names(t.path(), &["app/*.py"], &[]),
        ["app/main.py", "app/util.py"]
    );
    assert_eq!(names(t.path(), &["*/keep.md"], &[]), ["docs/keep.md"]);
    assert_eq!(
        names(t.path(), &["*.txt"], &["b.txt"]),
        ["requirements.txt"]
    );
    assert!(names(t.path(), &["*.none"], &[]).is_empty());
    // A new match changes the checksum.
    let (_d, h) = hasher();
    let s = src(&["*.txt"], &[]);
    let before = h.checksum(t.path(), &s).expect("before");
    let t = t.file("c.txt", "c");
    assert_ne!(h.checksum(t.path(), &s).expect("after"), before);
}

#[test]
fn symlinks_never_lead_out_of_the_context() {
    let outside = Tree::new().file("secret", "s3cr3t");
    let t = sample()
        .symlink("abs", "/etc")
        .symlink("up", "../../../../../../..")
        .symlink("out", &outside.path().to_string_lossy());
    // Walking records the links as links.
    let all = names(t.path(), &[], &[]);
    assert!(all.contains(&"abs".to_string()) && all.contains(&"up".to_string()));
    assert!(
        !all.iter()
            .any(|n| n.starts_with("abs/") || n.starts_with("out/"))
    );
    // Following a source path resolves inside the root: /etc/passwd is not in the context.
    let (_d, h) = hasher();
    for p in ["abs/passwd", "up/etc/passwd", "out/secret"] {
        let err = h.checksum(t.path(), &src(&[p], &[])).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{p}: {err}");
    }
    // An in-context absolute link resolves against the context root.
    let t = t.symlink("abs_app", "/app");
    assert_eq!(
        names(t.path(), &["abs_app"], &[]),
        [
            "abs_app",
            "abs_app/link",
            "abs_app/main.py",
            "abs_app/util.py"
        ]
    );
    let loop_t = Tree::new().symlink("a", "b").symlink("b", "a");
    let err = h.checksum(loop_t.path(), &src(&["a"], &[])).unwrap_err();
    assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");
}

#[test]
fn stat_cache_skips_reading_unchanged_files_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let t = sample();
    // Outside the racy window, so digests are recorded.
    std::thread::sleep(Duration::from_millis(250));
    let m = Matcher::default();
    let h = ContextHasher::open(&cache).expect("open");
    let (cold, stats) = h.checksum_with_stats(t.path(), &[], &m).expect("cold");
    assert_eq!(stats.files_read, 6);
    assert_eq!(stats.cache_hits, 0);
    let (warm, stats) = h.checksum_with_stats(t.path(), &[], &m).expect("warm");
    assert_eq!(
        (warm.clone(), stats.files_read, stats.cache_hits),
        (cold.clone(), 0, 6)
    );
    h.save().expect("save");
    // A new process (new hasher) loads the cache from disk.
    let h2 = ContextHasher::open(&cache).expect("reopen");
    let (again, stats) = h2.checksum_with_stats(t.path(), &[], &m).expect("again");
    assert_eq!((again, stats.files_read), (cold.clone(), 0));
    // A changed file is read again, even with the same size.
    let t = t.file("app/util.py", "x = 9\n");
    let (changed, stats) = h2.checksum_with_stats(t.path(), &[], &m).expect("changed");
    assert_eq!(stats.files_read, 1);
    assert_ne!(changed, cold);
    // Deleted files are forgotten by the next whole-context checksum.
    let cache_size = |dir: &std::path::Path| -> u64 {
        fs_err::read_dir(dir)
            .expect("ls")
            .map(|f| f.expect("entry").metadata().expect("stat").len())
            .sum()
    };
    h2.save().expect("save");
    let before = cache_size(&cache);
    fs_err::remove_dir_all(t.join("node_modules")).expect("rm");
    h2.checksum_with_stats(t.path(), &[], &m)
        .expect("after delete");
    h2.save().expect("save");
    assert!(cache_size(&cache) < before, "stale record pruned");
    // A corrupt cache file is ignored, not an error.
    for f in fs_err::read_dir(&cache).expect("ls") {
        fs_err::write(f.expect("entry").path(), b"junk").expect("corrupt");
    }
    let h3 = ContextHasher::open(&cache).expect("reopen");
    let (_, stats) = h3
        .checksum_with_stats(t.path(), &[], &m)
        .expect("after corruption");
    assert_eq!(stats.files_read, 5);
}

#[test]
fn parallel_and_sequential_walks_give_one_depth_first_order() {
    // Names that sort differently as whole paths than component by component ('-' and '.'
    // sort before '/'), and enough directories for every walker thread to get some.
    let mut t = Tree::new()
        .file("a.txt", "1")
        .file("a-b/x", "2")
        .file("a/b", "3")
        .file("a/c/d", "4")
        .file("a/c.d", "5")
        .file("b", "6");
    for i in 0..40 {
        t = t.file(&format!("many/d{i:02}/f"), "x");
    }
    // Without `!` patterns the walk is parallel; a `!` pattern that re-includes nothing
    // makes it the sequential one, with the same selection.
    let parallel = names(t.path(), &[], &["ignored-name"]);
    let sequential = names(t.path(), &[], &["ignored-name", "!ignored-name/keep"]);
    assert_eq!(parallel, sequential);
    assert_eq!(
        &parallel[..10],
        [
            "", "a", "a/b", "a/c", "a/c/d", "a/c.d", "a-b", "a-b/x", "a.txt", "b"
        ]
    );
    assert_eq!(parallel.len(), 10 + 1 + 40 * 2);
    assert_eq!(parallel[10], "many");
    assert_eq!(parallel[11..13], ["many/d00", "many/d00/f"]);
    assert_eq!(parallel.last().map(String::as_str), Some("many/d39/f"));
}

#[test]
fn a_directory_name_that_is_not_utf8_is_walked() {
    use std::os::unix::ffi::OsStrExt as _;
    let t = Tree::new().file("a", "1");
    let odd = t.path().join(std::ffi::OsStr::from_bytes(b"d\xff"));
    fs_err::create_dir(&odd).expect("mkdir");
    fs_err::write(odd.join("f"), "2").expect("write");
    let selected = names(t.path(), &[], &[]);
    assert_eq!(selected, ["", "a", "d\u{fffd}", "d\u{fffd}/f"]);
}
