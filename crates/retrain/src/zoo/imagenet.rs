//! The 1000 ImageNet-1k class names, in the index order every zoo's classifier uses
//! (generated from torchvision's `_IMAGENET_CATEGORIES` by scripts/make_fixtures.py).

use std::sync::OnceLock;

const CLASSES: &str = include_str!("imagenet_classes.txt");

pub fn labels() -> &'static [&'static str] {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    LABELS.get_or_init(|| CLASSES.lines().collect())
}

/// The label of class `i` when the classifier is ImageNet's 1000-way head, or the 1001-way
/// head of TF-slim models (class 0 is "background", then the 1000 in the same order).
pub fn label(i: usize, num_classes: usize) -> Option<&'static str> {
    match (num_classes, i) {
        (1000, i) => labels().get(i).copied(),
        (1001, 0) => Some("background"),
        (1001, i) => labels().get(i - 1).copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousand_labels_with_ant_and_bee_where_torchvision_has_them() {
        let l = super::labels();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[309], "bee");
        assert_eq!(l[310], "ant");
        assert_eq!(super::label(310, 1000), Some("ant"));
        assert_eq!(super::label(311, 1001), Some("ant"));
        assert_eq!(super::label(0, 1001), Some("background"));
        assert_eq!(super::label(0, 10), None);
    }
}
