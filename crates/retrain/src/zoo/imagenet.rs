//! The 1000 ImageNet-1k class names, in the index order every zoo's classifier uses
//! (generated from torchvision's `_IMAGENET_CATEGORIES` by scripts/make_fixtures.py).

use std::sync::OnceLock;

const CLASSES: &str = include_str!("imagenet_classes.txt");

pub fn labels() -> &'static [&'static str] {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    LABELS.get_or_init(|| CLASSES.lines().collect())
}

/// The label of class `i` when the classifier is ImageNet's 1000-way head.
pub fn label(i: usize, num_classes: usize) -> Option<&'static str> {
    (num_classes == 1000)
        .then(|| labels().get(i).copied())
        .flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousand_labels_with_ant_and_bee_where_torchvision_has_them() {
        let l = super::labels();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[309], "bee");
        assert_eq!(l[310], "ant");
    }
}
