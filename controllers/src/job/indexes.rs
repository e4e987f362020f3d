//! Completed-index sets in Kubernetes' compressed form (`1,3-5,7`).

use std::collections::BTreeSet;

/// Parses `1,3-5,7`; malformed parts are skipped (the field is written by controllers only).
pub fn parse(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats a set as `1,3-5,7` (`None` when empty).
pub fn format(set: &BTreeSet<i32>) -> Option<String> {
    (!set.is_empty()).then(|| drover_api::ranges::format(set.iter().map(|&i| i64::from(i))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (text, set) in [
            ("1,3-5,7", vec![1, 3, 4, 5, 7]),
            ("0-2", vec![0, 1, 2]),
            ("4", vec![4]),
        ] {
            let parsed = parse(text);
            assert_eq!(parsed.iter().copied().collect::<Vec<_>>(), set, "{text}");
            assert_eq!(format(&parsed).as_deref(), Some(text));
        }
        assert_eq!(format(&BTreeSet::new()), None);
        assert!(parse("x,1-").is_empty());
    }
}
