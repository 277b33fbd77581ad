//! Classification metrics: accuracy, confusion matrix, per-class precision/recall/F1.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassScores {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub accuracy: f64,
    pub images: usize,
    /// Mean cross-entropy of the predicted probabilities.
    pub loss: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassScores>,
}

/// The `k` best classes of one logit row: (index, probability), best first.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let p = softmax_rows(logits, logits.len());
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, p[i])).collect()
}

/// Scores predictions `probs` (row-major n × k) against `labels`.
pub fn report(classes: &[String], probs: &[f32], labels: &[usize]) -> Report {
    let k = classes.len();
    let n = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut loss = 0.0;
    for (row, &y) in probs.chunks(k).zip(labels) {
        confusion[y][argmax(row)] += 1;
        loss -= (row[y].max(1e-12) as f64).ln();
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let per_class = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let precision = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassScores {
                class: classes[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    Report {
        accuracy: if n > 0 {
            correct as f64 / n as f64
        } else {
            0.0
        },
        images: n,
        loss: if n > 0 { loss / n as f64 } else { 0.0 },
        confusion,
        per_class,
    }
}

pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// Softmax of each row of a row-major n × k matrix.
pub fn softmax_rows(logits: &[f32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks(k) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let s: f32 = e.iter().sum();
        out.extend(e.into_iter().map(|v| v / s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_a_small_confusion() {
        let classes = vec!["a".to_string(), "b".to_string()];
        // true a,a,b,b ; predicted a,b,b,b
        let probs = [0.9, 0.1, 0.4, 0.6, 0.2, 0.8, 0.3, 0.7];
        let r = report(&classes, &probs, &[0, 0, 1, 1]);
        assert_eq!(r.confusion, vec![vec![1, 1], vec![0, 2]]);
        assert_eq!(r.accuracy, 0.75);
        assert!((r.per_class[0].precision - 1.0).abs() < 1e-12);
        assert!((r.per_class[0].recall - 0.5).abs() < 1e-12);
        assert!((r.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.per_class[1].f1 - 0.8).abs() < 1e-12);
    }
}
