//! What a long run tells the outside world, and how the outside world stops it.
//!
//! The library never prints and keeps no global state: a caller passes an [`Observer`]
//! (the command line draws progress bars and prints epoch lines from these events; a
//! library user may ignore them with [`Silent`]) and an [`Interrupter`] it can raise from
//! anywhere (the command line raises it on Ctrl-C) to stop a training run between two
//! batches with its state saved.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::strategy::EpochRecord;

/// Something that happened in a run.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A pass over `total` images begins.
    ImagesStarted { total: usize },
    /// `count` more images of the pass were processed (read or skipped).
    ImagesDone { count: usize },
    /// The pass is over.
    ImagesFinished,
    /// An image could not be read and was skipped.
    Skipped { path: &'a Path, why: &'a str },
    /// A folder (or a link to one) was left out while looking for images.
    FolderSkipped { path: &'a Path, why: &'a str },
    /// A training epoch ended (`total_epochs` over all phases; `head_only` when only the
    /// new head trained in it, the first phase of a fine-tune).
    Epoch {
        record: &'a EpochRecord,
        total_epochs: usize,
        head_only: bool,
    },
    /// Early stopping: no lower validation loss for `patience` epochs.
    StoppedEarly { patience: usize },
    /// Early stopping keeps this epoch (counted from 1), the one with the lowest
    /// validation loss.
    KeptEpoch { epoch: usize },
    /// A weights download begins (`hub`): `total` bytes when the server says, of which
    /// `resumed` were already on disk from an interrupted download.
    DownloadStarted {
        url: &'a str,
        total: Option<u64>,
        resumed: u64,
    },
    /// `bytes` more bytes of the download arrived.
    Downloaded { bytes: u64 },
    /// The download ended (finished or broken off).
    DownloadFinished,
    /// A cached weights file was passed over: `why` (its hash is not the published one).
    CachedFileIgnored { path: &'a Path, why: &'a str },
}

/// Receives a run's events; called from the thread that runs the network.
pub trait Observer: Sync {
    fn event(&self, event: Event<'_>);
}

/// Ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: Event<'_>) {}
}

/// A flag shared between a run and whoever may stop it (a signal handler, another thread).
/// Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Interrupter(Arc<AtomicBool>);

impl Interrupter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop; returns whether it had been asked already.
    pub fn stop(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub fn should_stop(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
