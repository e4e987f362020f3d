//! Linux CPU lists (`0-15,32-47`) and CPU bitmasks, as sysfs and NVML write them.

/// Parses a CPU list like `0-3,8,10-11` (whitespace around it allowed, empty means none).
pub fn parse(text: &str) -> Result<Vec<u32>, String> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    for part in text.split(',') {
        let part = part.trim();
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} in cpu list {text:?} is not a cpu number"))
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    return Err(format!(
                        "range {part:?} in cpu list {text:?} runs backwards"
                    ));
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(number(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats CPUs as a list with ranges (`0-3,8`), the inverse of [`parse`].
pub fn format(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    drover_api::ranges::format(sorted.into_iter().map(i64::from))
}

/// CPUs set in a bitmask of 64-bit words, lowest word first (NVML's CPU affinity).
pub fn from_mask(words: &[u64]) -> Vec<u32> {
    let mut cpus = Vec::new();
    for (w, word) in words.iter().enumerate() {
        for bit in 0..64u32 {
            if word & (1u64 << bit) != 0 {
                cpus.push(w as u32 * 64 + bit);
            }
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let cases: &[(&str, &[u32], &str)] = &[
            ("0-3,8,10-11\n", &[0, 1, 2, 3, 8, 10, 11], "0-3,8,10-11"),
            ("", &[], ""),
            ("5", &[5], "5"),
            ("2,0,1", &[0, 1, 2], "0-2"),
        ];
        for (text, cpus, formatted) in cases {
            assert_eq!(parse(text).as_deref(), Ok(*cpus), "{text:?}");
            assert_eq!(format(cpus), *formatted);
        }
    }

    #[test]
    fn parse_rejects_garbage() {
        for text in ["a-b", "3-1", "1,,2", "0-"] {
            assert!(parse(text).is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn mask_words() {
        assert_eq!(from_mask(&[0b1011, 1]), vec![0, 1, 3, 64]);
        assert_eq!(format(&from_mask(&[u64::MAX, 0])), "0-63");
    }
}
