//! Checkpoints of a training run.
//!
//! After every epoch, and when Ctrl-C stops an epoch between two batches, the whole state
//! of the run (trainable weights with their parameter ids, optimizer state, schedule step,
//! history, best epoch so far, position in the epoch) goes into one file next to the bundle,
//! `<out>.checkpoint`, written to a temporary file and renamed over the previous one: a
//! failed write (a full disk) leaves the previous checkpoint as it was. `--resume` reads it
//! back and the run continues to the same result it would have had without the stop.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use super::gradient::PartialEpoch;
use super::records::{EpochRecord, RunIdentity};
use crate::metrics::Report;
use crate::outputs;

const MAGIC: &[u8] = b"retrain-checkpoint\n";
/// Version of the layout below; a different one is refused with a message.
pub const FORMAT: u32 = 1;
/// Sections: state JSON, model, optimizer, best model (empty when none).
const SECTIONS: usize = 4;

/// Scores of one finished epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochScore {
    pub epoch: usize,
    pub val: Report,
    pub train_accuracy: f64,
    pub train_images: usize,
}

/// Everything about a run besides its tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub retrain_version: String,
    /// What the run is (model, weights, data, strategy, seed): a resumed run must match.
    pub run: RunIdentity,
    /// Phase the saved model belongs to (its structure: which stages train).
    pub phase: usize,
    /// Epochs finished, over all phases.
    pub epochs_done: usize,
    /// Position inside epoch `epochs_done` when it was interrupted.
    pub partial: Option<PartialEpoch>,
    /// Optimizer steps taken in this phase (the schedule's position).
    pub step: usize,
    pub history: Vec<EpochRecord>,
    pub last: Option<EpochScore>,
    /// The epoch with the lowest validation loss so far (early stopping).
    pub best: Option<EpochScore>,
    pub stopped_early_after: Option<usize>,
}

impl State {
    /// The state of a run that has not started.
    pub fn new(run: RunIdentity) -> Self {
        Self {
            format: FORMAT,
            retrain_version: env!("CARGO_PKG_VERSION").to_owned(),
            run,
            phase: 0,
            epochs_done: 0,
            partial: None,
            step: 0,
            history: Vec::new(),
            last: None,
            best: None,
            stopped_early_after: None,
        }
    }
}

/// A state and its tensors, as burnpack bytes that keep parameter ids (the optimizer's
/// state is keyed by them).
pub struct Checkpoint {
    pub state: State,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
    pub best: Option<Vec<u8>>,
}

/// Where the checkpoint of a run writing bundle `out` lives.
pub fn path_for(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".checkpoint");
    PathBuf::from(s)
}

impl Checkpoint {
    /// Writes atomically: the previous checkpoint is replaced only once this one is whole
    /// on disk.
    pub fn write(&self, path: &Path) -> Result<()> {
        let state = serde_json::to_vec(&self.state)?;
        let empty = Vec::new();
        let sections: [&[u8]; SECTIONS] = [
            &state,
            &self.model,
            &self.optimizer,
            self.best.as_ref().unwrap_or(&empty),
        ];
        outputs::write_atomic(path, |w| {
            w.write_all(MAGIC)?;
            w.write_all(&FORMAT.to_le_bytes())?;
            for s in sections {
                w.write_all(&(s.len() as u64).to_le_bytes())?;
                w.write_all(s)?;
            }
            Ok(())
        })
    }

    /// Reads a checkpoint; anything but a whole checkpoint of this format is an error.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let damaged = || {
            anyhow::anyhow!(
                "{} is not a retrain checkpoint or is damaged; remove it and start the run again",
                path.display()
            )
        };
        let rest = bytes.strip_prefix(MAGIC).ok_or_else(damaged)?;
        let (format, mut rest) = rest.split_at_checked(4).ok_or_else(damaged)?;
        let format = u32::from_le_bytes(format.try_into().expect("4 bytes"));
        if format != FORMAT {
            bail!(
                "{} is a checkpoint of format {format}, this retrain {} reads format {FORMAT}; \
                 finish the run with the retrain that started it, or start again",
                path.display(),
                env!("CARGO_PKG_VERSION")
            );
        }
        let mut sections = Vec::with_capacity(SECTIONS);
        for _ in 0..SECTIONS {
            let (len, tail) = rest.split_at_checked(8).ok_or_else(damaged)?;
            let len = usize::try_from(u64::from_le_bytes(len.try_into().expect("8 bytes")))
                .map_err(|_| damaged())?;
            let (section, tail) = tail.split_at_checked(len).ok_or_else(damaged)?;
            sections.push(section.to_vec());
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(damaged());
        }
        let best = sections.pop().filter(|b| !b.is_empty());
        let optimizer = sections.pop().expect("4 sections");
        let model = sections.pop().expect("4 sections");
        let state: State = serde_json::from_slice(&sections[0]).map_err(|_| damaged())?;
        Ok(Self {
            state,
            model,
            optimizer,
            best,
        })
    }
}

/// A module's tensors with their parameter ids.
pub fn module_bytes<M: Module + ModuleSnapshot>(m: &M) -> Result<Vec<u8>> {
    let mut store = BurnpackStore::from_bytes(None);
    m.save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot serialise the model: {e}"))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| anyhow::anyhow!("cannot serialise the model: {e}"))?;
    Ok(bytes.to_vec())
}

/// Loads `bytes` from [`module_bytes`] into a module of the same structure, parameter ids
/// included.
pub fn load_module<M: Module + ModuleSnapshot>(m: &mut M, bytes: &[u8]) -> Result<()> {
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes.to_vec())));
    let applied = m
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("the checkpoint does not fit this model: {e}"))?;
    if !applied.errors.is_empty() || !applied.missing.is_empty() {
        bail!(
            "the checkpoint does not fit this model ({} missing, {} wrong tensors)",
            applied.missing.len(),
            applied.errors.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let run = RunIdentity {
            model: crate::zoo::resolve("resnet18").unwrap(),
            pretrained_sha256: "00".into(),
            train: "t".into(),
            val: "v".into(),
            strategy: crate::strategy::Strategy::freeze(),
            seed: 1,
            batch_size: 32,
        };
        Checkpoint {
            state: State {
                epochs_done: 2,
                step: 30,
                ..State::new(run)
            },
            model: vec![1, 2, 3],
            optimizer: vec![4],
            best: None,
        }
    }

    #[test]
    fn round_trip_and_every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.checkpoint");
        sample().write(&p).unwrap();
        let back = Checkpoint::read(&p).unwrap();
        assert_eq!(back.model, vec![1, 2, 3]);
        assert_eq!(back.optimizer, vec![4]);
        assert!(back.best.is_none());
        assert_eq!(back.state.epochs_done, 2);
        let whole = std::fs::read(&p).unwrap();
        for cut in 0..whole.len() {
            std::fs::write(&p, &whole[..cut]).unwrap();
            let e = Checkpoint::read(&p)
                .err()
                .expect("a cut checkpoint is refused");
            assert!(format!("{e}").contains("damaged"), "{e}");
        }
    }
}
