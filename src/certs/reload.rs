//! Reloading the serving certificate when its files change.
//!
//! Kubernetes updates a Secret volume by writing a new timestamped directory and
//! swapping the `..data` symlink; the old files are deleted, so an inotify watch on
//! them never fires again. cert-manager's CSI driver and hand-run tools rewrite files in
//! place instead. Polling covers both: every interval the two paths are `stat`ed
//! *through* their symlinks (device, inode, size, modification time of what they now
//! point at) and, on any change, read and parsed again. A pair that does not load (a
//! half-written rotation: new certificate, old key) is skipped with a warning and the
//! current certificate stays in service; the next poll tries again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{CertStore, ServingCert, fmt_time};

/// What identifies the current content of a file without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

/// Polls `cert` and `key` every `interval` and serves their new content when it loads.
pub async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    store: Arc<CertStore>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut loaded = (stamp(&cert), stamp(&key));
    let mut warned_for = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = (stamp(&cert), stamp(&key));
        if now == loaded {
            continue;
        }
        match ServingCert::from_files(&cert, &key) {
            Ok(new) => {
                let changed = store.current().is_none_or(|c| c.leaf() != new.leaf());
                if changed {
                    info!(
                        cert = %cert.display(),
                        not_after = %fmt_time(new.not_after()),
                        "serving certificate reloaded; new connections use it"
                    );
                    store.set(new);
                }
                loaded = now;
                warned_for = None;
            }
            Err(e) => {
                if warned_for.as_ref() != Some(&now) {
                    warn!(error = %e, "certificate files changed but do not load; still serving the previous certificate");
                    warned_for = Some(now);
                }
            }
        }
    }
}

/// The identity of what `path` points at now (through symlinks); `None` if absent.
fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (dev, ino) = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    Some(Stamp {
        dev,
        ino,
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}
