//! Change detection for the file source: a fingerprint of every zone, YAML and GeoIP file's
//! name, size and modification time, and of every file the last load read (`$INCLUDE`d files,
//! which may sit in subdirectories or have any name). Polling (rather than inotify) sees atomic renames, editors'
//! swap-and-rename and files on network mounts alike, at the cost of one `stat` per file a tick.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Fingerprint of the served files in `dir` plus `extra` (the files the last load read: the
/// GeoIP database, which may sit elsewhere, and included files). Unreadable entries contribute
/// their error kind, so a file disappearing counts as a change too.
pub fn fingerprint(dir: &Path, extra: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            e.kind().hash(&mut h);
            return h.finish();
        }
    };
    entries.sort();
    let served = |p: &Path| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("zone" | "yaml" | "yml" | "mmdb")
        )
    };
    for p in entries
        .iter()
        .filter(|p| served(p))
        .chain(extra)
        .map(|p| p.as_path())
    {
        p.hash(&mut h);
        match std::fs::metadata(p) {
            Ok(m) => {
                m.len().hash(&mut h);
                m.modified().ok().hash(&mut h);
            }
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a.zone");
        std::fs::write(&f, "x").expect("write");
        let a = fingerprint(dir.path(), &[]);
        assert_eq!(a, fingerprint(dir.path(), &[]), "stable without changes");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        assert_eq!(a, fingerprint(dir.path(), &[]), "other files do not count");
        std::fs::write(&f, "xy").expect("write");
        let b = fingerprint(dir.path(), &[]);
        assert_ne!(a, b, "size change");
        std::fs::remove_file(&f).expect("remove");
        assert_ne!(b, fingerprint(dir.path(), &[]), "removal");
        let missing = dir.path().join("geo.mmdb");
        let c = fingerprint(dir.path(), std::slice::from_ref(&missing));
        std::fs::write(&missing, "m").expect("write");
        assert_ne!(
            c,
            fingerprint(dir.path(), std::slice::from_ref(&missing)),
            "extra file appears"
        );
    }
}
