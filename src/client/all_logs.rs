//! `clusterctl logs` without a unit, as `pm2 logs`: every unit's history merged by time, then
//! every new line as it comes, each line prefixed by its unit. clusterd serves one unit per
//! request; the merging is the client's.

/// A line of one unit's log.
pub struct UnitLine {
    pub unit: String,
    pub line: Vec<u8>,
}

/// Units followed at once, at most: each takes one of clusterd's connection slots for as long
/// as it follows.
pub const MAX_FOLLOWED_UNITS: usize = 32;

/// The histories of several units, merged by the lines' leading timestamps (RFC 3339 UTC, which
/// sort as text); a unit's own order is kept, and lines without a timestamp stay behind the
/// line before them.
pub fn merge_by_time(histories: Vec<(String, Vec<Vec<u8>>)>) -> Vec<UnitLine> {
    let mut keyed: Vec<(Vec<u8>, UnitLine)> = Vec::new();
    for (unit, lines) in histories {
        let mut key = Vec::new();
        for line in lines {
            if let Some(stamp) = timestamp(&line) {
                key = stamp.to_vec();
            }
            keyed.push((
                key.clone(),
                UnitLine {
                    unit: unit.clone(),
                    line,
                },
            ));
        }
    }
    // Stable: equal keys keep each unit's order, and units their order.
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, line)| line).collect()
}

/// `2026-11-29T21:05:03.123456Z` at the start of a line, if there is one.
fn timestamp(line: &[u8]) -> Option<&[u8]> {
    let first = line.split(|&b| b == b' ').next()?;
    (first.len() >= 20 && first.first()?.is_ascii_digit() && first.get(10) == Some(&b'T'))
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_interleave_by_time_and_keep_each_units_order() {
        let merged = merge_by_time(vec![
            (
                "api".into(),
                vec![
                    b"2026-11-29T21:05:01.000000Z api[0] out | a1\n".to_vec(),
                    b"2026-11-29T21:05:03.000000Z api[0] out | a3\n".to_vec(),
                ],
            ),
            (
                "web".into(),
                vec![
                    b"2026-11-29T21:05:02.000000Z web[0] out | w2\n".to_vec(),
                    b"no timestamp\n".to_vec(),
                ],
            ),
        ]);
        let order: Vec<String> = merged
            .iter()
            .map(|l| format!("{} {}", l.unit, String::from_utf8_lossy(&l.line).trim()))
            .collect();
        assert_eq!(
            order,
            [
                "api 2026-11-29T21:05:01.000000Z api[0] out | a1",
                "web 2026-11-29T21:05:02.000000Z web[0] out | w2",
                "web no timestamp",
                "api 2026-11-29T21:05:03.000000Z api[0] out | a3",
            ]
        );
    }
}
