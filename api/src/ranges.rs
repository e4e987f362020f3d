//! Integer lists in range form (`1,3-5,7`), as Kubernetes writes a Job's completed indexes and
//! Linux writes CPU lists.

/// Formats ascending integers as `1,3-5,7` (repeats are folded in; empty gives "").
pub fn format(ascending: impl IntoIterator<Item = i64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    let close = |(start, end): (i64, i64), parts: &mut Vec<String>| {
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    };
    for n in ascending {
        run = match run {
            Some((start, end)) if n == end || n == end + 1 => Some((start, n)),
            Some(done) => {
                close(done, &mut parts);
                Some((n, n))
            }
            None => Some((n, n)),
        };
    }
    if let Some(done) = run {
        close(done, &mut parts);
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_become_ranges() {
        let cases: &[(&[i64], &str)] = &[
            (&[], ""),
            (&[4], "4"),
            (&[0, 1, 2], "0-2"),
            (&[1, 3, 4, 5, 7], "1,3-5,7"),
            (&[1, 1, 2, 2, 9], "1-2,9"),
        ];
        for (input, want) in cases {
            assert_eq!(super::format(input.iter().copied()), *want, "{input:?}");
        }
    }
}
