//! Early stopping on the validation loss: keep the epoch with the lowest one, stop after
//! `patience` epochs without a lower one.

use super::checkpoint::EpochScore;

/// What to do after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The lowest validation loss so far: keep this epoch.
    Improved,
    /// Not better than the best, but within the patience.
    Continue,
    /// `patience` epochs without a lower validation loss: stop here.
    Stop,
}

/// Off when `patience` is 0 (every epoch runs and the last is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyStopping {
    pub patience: usize,
}

impl EarlyStopping {
    pub fn is_on(&self) -> bool {
        self.patience > 0
    }

    /// Judges `score` against the best epoch so far (`best`, updated when improved).
    pub fn judge(&self, best: &mut Option<EpochScore>, score: &EpochScore) -> Verdict {
        if !self.is_on() {
            return Verdict::Continue;
        }
        match best {
            Some(b) if score.val.loss >= b.val.loss => {
                if score.epoch - b.epoch >= self.patience {
                    Verdict::Stop
                } else {
                    Verdict::Continue
                }
            }
            _ => {
                *best = Some(score.clone());
                Verdict::Improved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Report;

    fn score(epoch: usize, loss: f64) -> EpochScore {
        EpochScore {
            epoch,
            val: Report {
                accuracy: 0.5,
                images: 2,
                loss,
                confusion: vec![],
                per_class: vec![],
            },
            train_accuracy: 0.5,
            train_images: 2,
        }
    }

    #[test]
    fn keeps_the_lowest_loss_and_stops_after_patience() {
        let es = EarlyStopping { patience: 2 };
        let mut best = None;
        assert_eq!(es.judge(&mut best, &score(0, 1.0)), Verdict::Improved);
        assert_eq!(es.judge(&mut best, &score(1, 0.5)), Verdict::Improved);
        assert_eq!(es.judge(&mut best, &score(2, 0.7)), Verdict::Continue);
        assert_eq!(es.judge(&mut best, &score(3, 0.5)), Verdict::Stop);
        assert_eq!(best.unwrap().epoch, 1);
        let off = EarlyStopping { patience: 0 };
        let mut none = None;
        assert_eq!(off.judge(&mut none, &score(0, 1.0)), Verdict::Continue);
        assert!(none.is_none());
    }
}
