//! Watching the manifests directory: files are re-read when their fingerprint (size, mtime,
//! inode) changes, bursts of changes are debounced into one update, and a file that stops
//! parsing keeps serving its last good version (with an error saying so) until it is fixed.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::watch;
use tracing::warn;

use super::{
    Snapshot, Update,
    files::{self, FilesError},
};
use crate::diagnostics::{Diagnostic, Severity};

/// How often the directory is looked at. A change serves traffic within about two periods.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A burst of changes settles for this long before one update is published.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    mtime_ns: i128,
    inode: u64,
}

struct FileState {
    fingerprint: Fingerprint,
    /// The objects of the last version that parsed without errors.
    good: Option<Snapshot>,
    /// Problems of the current version.
    diagnostics: Vec<Diagnostic>,
}

/// The files provider with memory: re-reads only what changed, keeps last good versions.
pub struct FilesProvider {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

impl FilesProvider {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
        }
    }

    /// Re-reads changed, new and removed files. `Some` when anything changed.
    pub fn poll(&mut self) -> Result<Option<Update>, FilesError> {
        let paths = files::list_files(&self.dir)?;
        let mut current: HashMap<PathBuf, Fingerprint> = HashMap::new();
        for p in paths {
            if let Ok(meta) = fs::metadata(&p) {
                let fp = Fingerprint {
                    len: meta.len(),
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                    inode: meta.ino(),
                };
                current.insert(p, fp);
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| current.contains_key(p));
        let mut changed = self.files.len() != before;
        for (path, fp) in current {
            if self.files.get(&path).is_some_and(|s| s.fingerprint == fp) {
                continue;
            }
            changed = true;
            let previous = self.files.remove(&path).and_then(|s| s.good);
            self.files
                .insert(path.clone(), read_file(&path, fp, previous));
        }
        Ok(changed.then(|| self.update()))
    }

    /// The merged view of every file.
    pub fn update(&self) -> Update {
        let mut snapshot = Snapshot::default();
        let mut diagnostics = Vec::new();
        for state in self.files.values() {
            if let Some(good) = &state.good {
                snapshot.extend(good.clone());
            }
            diagnostics.extend(state.diagnostics.iter().cloned());
        }
        Update {
            snapshot,
            diagnostics,
            nodes: None,
        }
    }
}

fn read_file(path: &Path, fingerprint: Fingerprint, previous: Option<Snapshot>) -> FileState {
    let label = path.display().to_string();
    let mut snapshot = Snapshot::default();
    let mut diagnostics = Vec::new();
    match fs::read_to_string(path) {
        Ok(text) => files::load_text(&label, &text, &mut snapshot, &mut diagnostics),
        Err(e) => diagnostics.push(Diagnostic::error(&label, "", format!("cannot read: {e}"))),
    }
    let failed = diagnostics.iter().any(|d| d.severity == Severity::Error);
    if !failed {
        return FileState {
            fingerprint,
            good: Some(snapshot),
            diagnostics,
        };
    }
    if previous.is_some() {
        diagnostics.push(Diagnostic::error(
            &label,
            "",
            "this version has errors: the last good version of the file keeps serving",
        ));
    }
    FileState {
        fingerprint,
        good: previous,
        diagnostics,
    }
}

/// Polls `provider` and sends every settled change, until shutdown.
pub async fn run(
    mut provider: FilesProvider,
    tx: watch::Sender<Arc<Update>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shutdown::stopped(&mut shutdown) => return,
        }
        let mut latest = match provider.poll() {
            Ok(Some(u)) => u,
            Ok(None) => continue,
            Err(e) => {
                warn!(error = %e, "manifests directory unreadable; keeping the current configuration");
                continue;
            }
        };
        // Debounce: an editor or `kubectl`-like writer touches several files in a burst.
        for _ in 0..10 {
            tokio::time::sleep(DEBOUNCE).await;
            match provider.poll() {
                Ok(Some(u)) => latest = u,
                _ => break,
            }
        }
        let _ = tx.send(Arc::new(latest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec: {}\n";

    #[test]
    fn change_add_remove_and_last_good() {
        let dir = std::env::temp_dir().join(format!("ebpf-lb-watch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a.yaml");
        fs::write(&file, SVC).expect("write");
        let mut p = FilesProvider::new(&dir);
        let u = p.poll().expect("poll").expect("first poll sees the file");
        assert_eq!(u.snapshot.services.len(), 1);
        assert!(p.poll().expect("poll").is_none(), "no change, no update");

        // Half-written: the old objects keep serving, with an error saying so.
        fs::write(
            &file,
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x",
        )
        .expect("write");
        let u = p.poll().expect("poll").expect("changed");
        assert_eq!(u.snapshot.services.len(), 1, "last good version kept");
        assert!(
            u.diagnostics
                .iter()
                .any(|d| d.message.contains("last good version")),
            "{:?}",
            u.diagnostics
        );

        // Fixed, plus a second file.
        fs::write(&file, SVC.replace("name: a", "name: b")).expect("write");
        fs::write(dir.join("c.yml"), SVC.replace("name: a", "name: c")).expect("write");
        let u = p.poll().expect("poll").expect("changed");
        let mut names: Vec<_> = u
            .snapshot
            .services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["b", "c"]);
        assert!(u.diagnostics.is_empty());

        fs::remove_file(&file).expect("rm");
        let u = p.poll().expect("poll").expect("changed");
        assert_eq!(u.snapshot.services.len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
